"""The Azure ML model registry: versions of one model, the champion tag, promotion, rollback, bundles.

``FakeMLClient`` answers ``MLClient.models`` at the client boundary: every version goes through
``Model._to_rest_object`` and comes back as a real ``Model``; versions auto-increment, tags can
change and paths cannot, and a folder model downloads to ``<path>/<name>/<folder>/`` as the SDK
does. Published bundles go to the Azure Storage emulator through ``BlobStore`` (Azurite,
``tests/azure/conftest.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.targets.azure.azureml_registry import CHAMPION, PREVIOUS_CHAMPION, AzureMLModelRegistry
from include.targets.azure.settings import AzureSettings
from include.training.outputs import RegistryError, RollbackError, TrainingOutputs
from tests.azure.azureml_fakes import FakeMLClient

MODEL = "flights-delay-xgboost"


def _no_store():
    raise AssertionError("this test publishes nothing")


@pytest.fixture()
def ml(tmp_path):
    return FakeMLClient(tmp_path / "datastores")


@pytest.fixture()
def registry(ml, tmp_path):
    return AzureMLModelRegistry(AzureSettings.example(), tmp_path / "cache", store=_no_store, client=ml)


def _register(registry, auc: float):
    """A training job's model output in the artifacts datastore, registered."""
    n = len(registry.versions()) + 1
    path = f"artifacts/training/train-models-{n}-t1/model"
    folder = registry.client.root / "flights_artifacts" / path
    for name, body in {"bundle/model.json": json.dumps({"v": n}), "bundle/feature_spec.json": "{}",
                       "metrics.json": "{}"}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(body)
    outputs = TrainingOutputs(Path("/unused"), {"xgboost": {"auc": auc, "log_loss": 0.5},
                                                "baseline": {"auc": 0.6, "log_loss": 0.6}}, {}, "cuda",
                              model_uri=f"azureml://datastores/flights_artifacts/paths/{path}")
    return registry.register(outputs, {"training_window": f"2013-01-01..2013-0{n}-28",
                                       "airflow_run_id": f"manual__2013-0{n}-01T00:00:00+00:00"})


def _champions(ml) -> list[str]:
    return sorted(v for v, tags in ml.models.tags(MODEL).items() if CHAMPION in tags)


def test_register_adds_versions_with_their_record(registry, ml):
    v1, v2 = _register(registry, 0.71), _register(registry, 0.74)
    assert (v1.version, v2.version, v2.metrics) == ("1", "2", {"auc": 0.74, "log_loss": 0.5})
    assert v2.run_id == f"azureml:{MODEL}:2" and v2.url.startswith(f"https://ml.azure.com/model/{MODEL}:2/details")
    assert registry.versions() == ["1", "2"] and registry.champion() is None  # registered is not champion
    assert registry.training_window("2") == "2013-01-01..2013-02-28"
    model = ml.models.get(MODEL, version="2")
    assert model.type == "custom_model"  # the project's bundle, not an MLflow model
    assert model.path == (f"azureml://subscriptions/{ml.subscription_id}/resourcegroups/flights-rg/workspaces/"
                          "flights-ml/datastores/flights_artifacts/paths/artifacts/training/train-models-2-t1/model/")
    assert model.tags["airflow_run_id"] == "manual__2013-02-01T00:00:00+00:00"
    assert model.tags["project"] == "flights-lakehouse" and model.tags["device"] == "cuda"
    assert json.loads(model.tags["baseline_metrics"]) == {"auc": 0.6, "log_loss": 0.6}


def test_register_needs_the_model_output(registry):
    with pytest.raises(RegistryError, match="azureml://datastores/.../model"):
        registry.register(TrainingOutputs(Path("/x"), {"xgboost": {}}, {}, "cpu"), {})


def test_promotion_moves_the_tag_and_rollback_moves_it_back(registry, ml):
    v1, v2 = _register(registry, 0.70), _register(registry, 0.74)
    registry.set_champion(v1, "first model beats the baseline")
    registry.set_champion(v2, "AUC 0.74 > 0.70")
    assert registry.champion().version == "2" and registry.champion().metrics["auc"] == 0.74
    assert _champions(ml) == ["2"]  # one champion, moved
    tags = ml.models.tags(MODEL)
    assert tags["2"][PREVIOUS_CHAMPION] == "1" and tags["1"][PREVIOUS_CHAMPION] == "none"
    assert tags["2"]["promotion_reason"] == "AUC 0.74 > 0.70"
    puts = len(ml.models.puts)
    registry.set_champion(v2, "again")  # already champion: nothing changes
    assert len(ml.models.puts) == puts

    old, new = registry.rollback(None, "over-predicts at EWR", by="alice")
    assert (old.version, new.version) == ("2", "1") and registry.champion().version == "1"
    assert _champions(ml) == ["1"]
    tags = ml.models.tags(MODEL)
    assert tags["1"]["rollback_by"] == "alice" and tags["1"]["rollback_from"] == "2"
    assert tags["2"]["rolled_back"].startswith("to v1 by alice at ") and tags["2"]["rolled_back"].endswith(
        ": over-predicts at EWR")
    assert registry.training_window("1") == "2013-01-01..2013-01-28"  # the record survives the updates

    with pytest.raises(RollbackError, match="first champion"):  # v1 replaced nobody: nothing further back
        registry.rollback(None, "again", by="alice")
    assert registry.champion().version == "1"


def test_rollback_goes_one_step_back_per_call(registry):
    versions = [_register(registry, auc) for auc in (0.70, 0.72, 0.74)]
    for v in versions:
        registry.set_champion(v, f"v{v.version} is better")
    assert [registry.rollback(None, "bad", by="bob")[1].version for _ in range(2)] == ["2", "1"]
    old, new = registry.rollback("v3", "it was fine after all", by="bob")  # an explicit version
    assert (old.version, new.version) == ("1", "3") and registry.champion().version == "3"


def test_rollback_refusals_change_nothing(registry, ml):
    with pytest.raises(RollbackError, match="has no champion: there is nothing to roll back"):
        registry.rollback(None, "why", by="alice")
    v1 = _register(registry, 0.70)
    registry.set_champion(v1, "first")
    puts = len(ml.models.puts)
    with pytest.raises(RollbackError, match="no previous champion is recorded"):
        registry.rollback(None, "why", by="alice")
    with pytest.raises(RollbackError, match="Say why"):
        registry.rollback("1", " ", by="alice")
    with pytest.raises(RollbackError, match="has no version '7'"):
        registry.rollback("7", "why", by="alice")
    with pytest.raises(RollbackError, match="already is champion"):
        registry.rollback("1", "why", by="alice")
    assert len(ml.models.puts) == puts and _champions(ml) == ["1"]


def test_a_move_stopped_half_way_keeps_a_champion_and_the_newest_marking_wins(registry, ml):
    from azure.core.exceptions import HttpResponseError

    v1, v2, v3 = (_register(registry, auc) for auc in (0.70, 0.72, 0.74))
    registry.set_champion(v1, "first")
    ml.models.refuse = lambda model: CHAMPION not in (model.tags or {})  # clearing the old marking fails
    with pytest.raises(HttpResponseError):
        registry.set_champion(v2, "better")
    assert _champions(ml) == ["1", "2"]  # marked twice, never unmarked
    assert registry.champion().version == "2"  # the one marked last
    ml.models.refuse = None
    registry.set_champion(v3, "better still")  # the next move clears every other marking
    assert _champions(ml) == ["3"] and ml.models.tags(MODEL)["3"][PREVIOUS_CHAMPION] == "2"

    same = ml.models.tags(MODEL)["3"][CHAMPION]  # the same time on two versions: the higher version wins
    for version in ("1", "3"):
        model = ml.models.get(MODEL, version=version)
        model.tags = {**model.tags, CHAMPION: same}
        ml.models.create_or_update(model)
    assert registry.champion().version == "3"


def test_bundles_are_downloaded_once(registry, ml):
    v1 = _register(registry, 0.7)
    bundle = registry.bundle_dir(v1)
    assert json.loads((bundle / "model.json").read_text()) == {"v": 1}
    assert sorted(p.name for p in bundle.iterdir()) == ["feature_spec.json", "model.json"]
    (bundle / "model.json").write_text('{"cached": true}')
    assert json.loads((registry.bundle_dir(v1) / "model.json").read_text()) == {"cached": True}  # no re-download
    assert not list(registry.cache_dir.rglob("*.part"))

    v2 = _register(registry, 0.8)
    (ml.root / "flights_artifacts" / "artifacts/training/train-models-2-t1/model/bundle/model.json").unlink()
    with pytest.raises(RegistryError, match="holds no bundle/model.json"):
        registry.bundle_dir(v2)


def test_bundles_are_published_to_the_lake_with_the_marker_last(ml, tmp_path, azure, containers):
    from include.targets.azure.adls import BlobStore

    class Recording(BlobStore):
        puts: list[str] = []

        def put(self, uri, body, metadata):
            self.puts.append(uri)
            super().put(uri, body, metadata)

    registry = AzureMLModelRegistry(azure, tmp_path / "cache", store=lambda: Recording(containers), client=ml)
    v1 = _register(registry, 0.7)
    uri = registry.publish_bundle(v1)
    assert uri == f"abfss://lake@{azure.storage_account}.dfs.core.windows.net/lake/models/{MODEL}/1/bundle"
    assert [u.rsplit("/", 1)[1] for u in Recording.puts] == ["feature_spec.json", "model.json"]  # marker last
    blob = containers.get_blob_client("lake", f"lake/models/{MODEL}/1/bundle/model.json")
    assert json.loads(blob.download_blob().readall()) == {"v": 1}
    assert registry.publish_bundle(v1) == uri and len(Recording.puts) == 2  # published once
