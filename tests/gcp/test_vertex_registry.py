"""The Vertex AI model registry: versions under one model, the champion alias, promotion and rollback.

``FakeModelService`` answers the ``ModelServiceClient`` calls at the client boundary with real
``aiplatform_v1.Model`` messages, validating each request with its real request type, and keeps
the service's alias rules: the first version gets ``default``, an alias is unique within a model
(adding it to a version takes it off the version that held it), ``-alias`` removes it, and a
version-level update may change only labels and the version description. Bundles live in the
Cloud Storage emulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.targets.gcp.vertex_registry import VertexModelRegistry
from include.training.outputs import RegistryError, TrainingOutputs
from include.training.registry import RollbackError
from tests.gcp.fakes import FakeModelService



def test_the_fake_keeps_aliases_unique_and_removes_with_a_minus():
    from google.cloud.aiplatform_v1 import Model

    svc = FakeModelService()
    parent = "projects/p/locations/us-central1"
    svc.upload_model({"parent": parent, "model_id": "m", "model": Model(display_name="m")})
    svc.upload_model({"parent": parent, "parent_model": f"{parent}/models/m", "model": Model(display_name="m")})
    svc.merge_version_aliases(name=f"{parent}/models/m@1", version_aliases=["champion"])
    svc.merge_version_aliases(name=f"{parent}/models/m@2", version_aliases=["champion"])
    assert svc.aliases() == {"1": ["default"], "2": ["champion"]}
    svc.merge_version_aliases(name=f"{parent}/models/m@2", version_aliases=["-champion"])
    assert svc.aliases() == {"1": ["default"], "2": []}


@pytest.fixture()
def registry(gcp, buckets, tmp_path):
    return VertexModelRegistry(gcp, tmp_path / "cache", client=FakeModelService(), storage_client=buckets)


def _register(registry, buckets, auc: float):
    n = len(registry.versions()) + 1
    model_dir = f"{registry.gcp.training_output_uri}train-models-{n}-t1/model"
    bucket, _, key = model_dir[len("gs://"):].partition("/")
    for name, body in {"bundle/model.json": json.dumps({"v": n}), "bundle/feature_spec.json": "{}",
                       "metrics.json": "{}"}.items():
        buckets.bucket(bucket).blob(f"{key}/{name}").upload_from_string(body.encode())
    outputs = TrainingOutputs(Path("/unused"), {"xgboost": {"auc": auc, "log_loss": 0.5},
                                                "baseline": {"auc": 0.6, "log_loss": 0.6}}, {}, "cuda",
                              model_uri=model_dir)
    return registry.register(outputs, {"training_window": f"2013-01-01..2013-0{n}-28",
                                       "airflow_run_id": f"manual__2013-0{n}-01T00:00:00+00:00"})


def test_register_creates_the_model_then_adds_versions_with_parent_model(registry, buckets):
    v1, v2 = _register(registry, buckets, 0.71), _register(registry, buckets, 0.74)
    first, second = registry.client.uploads
    assert first.model_id == "flights-delay-xgboost" and not first.parent_model  # the first upload creates it
    assert second.parent_model == registry.model_name and not second.model_id
    assert (v1.version, v2.version, v2.metrics["auc"]) == ("1", "2", 0.74)
    assert v2.run_id == f"{registry.model_name}@2" and "versions/2" in v2.url
    assert registry.versions() == ["1", "2"] and registry.champion() is None  # registered is not champion
    assert registry.training_window("2") == "2013-01-01..2013-02-28"
    model = registry.client.get_model(name=f"{registry.model_name}@2")
    assert model.artifact_uri.endswith("/train-models-2-t1/model")
    assert "prediction/xgboost" in model.container_spec.image_uri
    assert model.labels["training_window"] == "2013-01-01-2013-02-28" and model.labels["project"] == "flights-lakehouse"


def test_register_needs_the_model_folder(registry):
    with pytest.raises(RegistryError, match="gs://.../model"):
        registry.register(TrainingOutputs(Path("/x"), {"xgboost": {}}, {}, "cpu"), {})


def test_promotion_moves_the_alias_and_rollback_moves_it_back(registry, buckets):
    v1, v2 = _register(registry, buckets, 0.70), _register(registry, buckets, 0.74)
    registry.set_champion(v1, "first model beats the baseline")
    registry.set_champion(v2, "AUC 0.74 > 0.70")
    assert registry.champion().version == "2" and registry.champion().metrics["auc"] == 0.74
    assert registry.client.aliases() == {"1": ["default"], "2": ["champion"]}  # one champion, moved
    assert [h["reason"] for h in registry.history("2")] == ["AUC 0.74 > 0.70"]

    old, new = registry.rollback(None, "over-predicts at EWR", by="alice")
    assert (old.version, new.version) == ("2", "1") and registry.champion().version == "1"
    assert registry.client.aliases() == {"1": ["champion", "default"], "2": []}
    assert registry.history("2")[-1] | {"at": ""} == {"action": "rolled_back", "to": "1", "by": "alice",
                                                      "reason": "over-predicts at EWR", "at": ""}
    assert registry.history("1")[-1]["action"] == "restored_by_rollback"
    assert registry.training_window("1") == "2013-01-01..2013-01-28"  # the record survives the updates

    with pytest.raises(RollbackError, match="first champion"):  # v1 replaced nobody: nothing further back
        registry.rollback(None, "again", by="alice")
    assert registry.champion().version == "1"


def test_rollback_goes_one_step_back_per_call(registry, buckets):
    versions = [_register(registry, buckets, auc) for auc in (0.70, 0.72, 0.74)]
    for v in versions:
        registry.set_champion(v, f"v{v.version} is better")
    assert [registry.rollback(None, "bad", by="bob")[1].version for _ in range(2)] == ["2", "1"]
    old, new = registry.rollback("v3", "it was fine after all", by="bob")  # an explicit version
    assert (old.version, new.version) == ("1", "3")


def test_rollback_refusals_change_nothing(registry, buckets):
    with pytest.raises(RollbackError, match="has no champion: there is nothing to roll back"):
        registry.rollback(None, "why", by="alice")
    v1 = _register(registry, buckets, 0.70)
    registry.set_champion(v1, "first")
    with pytest.raises(RollbackError, match="no previous champion is recorded"):
        registry.rollback(None, "why", by="alice")
    with pytest.raises(RollbackError, match="Say why"):
        registry.rollback("1", " ", by="alice")
    with pytest.raises(RollbackError, match="has no version '7'"):
        registry.rollback("7", "why", by="alice")
    with pytest.raises(RollbackError, match="already is champion"):
        registry.rollback("1", "why", by="alice")
    assert registry.client.aliases() == {"1": ["champion", "default"]} and registry.history("1")[-1]["action"] == \
        "promoted"


def test_bundles_are_published_in_place_and_downloaded_once(registry, buckets):
    v1 = _register(registry, buckets, 0.7)
    uri = registry.publish_bundle(v1)
    assert uri.startswith("gs://flights-artifacts-example/") and uri.endswith("/train-models-1-t1/model/bundle")
    bundle = registry.bundle_dir(v1)
    assert json.loads((bundle / "model.json").read_text()) == {"v": 1}
    (bundle / "model.json").write_text('{"cached": true}')
    assert json.loads((registry.bundle_dir(v1) / "model.json").read_text()) == {"cached": True}  # no re-download
    bucket, _, key = uri[len("gs://"):].partition("/")
    buckets.bucket(bucket).blob(f"{key}/model.json").delete()
    with pytest.raises(RegistryError, match="holds no model.json"):
        registry.publish_bundle(v1)
