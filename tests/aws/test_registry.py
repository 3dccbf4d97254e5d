"""The SageMaker model registry against a moto server: register, champion, promote, roll back, download."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest

from include.targets.aws.registry import RegistryError, SageMakerModelRegistry
from include.targets.base import TrainingOutputs


def _model_tar(version: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, body in {"bundle/model.json": json.dumps({"v": version}),
                           "bundle/feature_spec.json": "{}", "metrics.json": "{}"}.items():
            data = body.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture()
def registry(aws, boto, buckets, tmp_path):
    aws = aws.__class__.example(endpoint_url=aws.endpoint_url, model_package_group=f"flights-{uuid.uuid4().hex[:8]}")
    return SageMakerModelRegistry(aws, tmp_path / "cache", boto("sagemaker"), buckets)


def _register(registry, buckets, auc: float):
    n = len(registry.versions()) + 1
    key = f"artifacts/training/{registry.group}-{n}/output/model.tar.gz"
    buckets.put_object(Bucket=registry.aws.artifacts_bucket, Key=key, Body=_model_tar(n))
    outputs = TrainingOutputs(Path("/unused"), {"xgboost": {"auc": auc, "log_loss": 0.5},
                                                "baseline": {"auc": 0.6, "log_loss": 0.6}}, {}, "cuda")
    return registry.register(outputs, {"model_data_url": f"s3://{registry.aws.artifacts_bucket}/{key}",
                                       "training_window": f"2013-01-01..2013-0{n}-28",
                                       "airflow_run_id": f"manual__{n}"})


def test_register_creates_a_pending_version_with_metrics(registry, buckets):
    v1 = _register(registry, buckets, 0.71)
    assert (v1.version, v1.metrics["auc"]) == ("1", 0.71)
    assert registry.status("1")[0] == "PendingManualApproval"
    assert registry.champion() is None  # pending is not champion
    assert registry.training_window("1") == "2013-01-01..2013-01-28"
    stats = registry.sm.describe_model_package(ModelPackageName=v1.run_id)["ModelMetrics"]
    uri = stats["ModelQuality"]["Statistics"]["S3Uri"]
    body = buckets.get_object(Bucket=registry.aws.artifacts_bucket, Key=uri.split("/", 3)[3])["Body"].read()
    assert json.loads(body)["xgboost"]["auc"] == 0.71


def test_promotion_and_rollback_record_who_and_why(registry, buckets):
    v1, v2 = _register(registry, buckets, 0.70), _register(registry, buckets, 0.74)
    registry.set_champion(v1, "first model beats the baseline")
    registry.set_champion(v2, "AUC 0.74 > 0.70")
    assert registry.champion().version == "2"
    assert registry.champion().metrics["auc"] == 0.74  # metadata survives the approval update
    with pytest.raises(RegistryError, match="older than the champion"):
        registry.set_champion(v1, "no")
    old, new = registry.rollback(None, "over-predicts at EWR", by="alice")
    assert (old.version, new.version) == ("2", "1") and registry.champion().version == "1"
    status, why = registry.status("2")
    assert status == "Rejected" and "alice" in why and "over-predicts at EWR" in why
    assert "rolled back by alice" in registry.status("1")[1]
    with pytest.raises(RegistryError, match="only Approved version"):
        registry.rollback(None, "again", by="alice")


def test_bundle_dir_downloads_and_caches(registry, buckets):
    v1 = _register(registry, buckets, 0.7)
    bundle = registry.bundle_dir(v1)
    assert json.loads((bundle / "model.json").read_text()) == {"v": 1}
    (bundle / "model.json").write_text('{"cached": true}')
    assert json.loads((registry.bundle_dir(v1) / "model.json").read_text()) == {"cached": True}  # no re-download


def test_register_refuses_without_the_model_location(registry):
    with pytest.raises(RegistryError, match="model_data_url"):
        registry.register(TrainingOutputs(Path("/x"), {"xgboost": {}}, {}, "cpu"), {})
