"""The model registry on AWS: a SageMaker model package group.

Every trained model becomes a new version (model package) of the group, registered as
``PendingManualApproval`` with its holdout metrics. The *champion* is the newest
``Approved`` version: promotion approves the challenger, and a rollback rejects the
current champion (and any newer approved version) and re-approves the one to go back
to, writing who and why into the approval description. ``bundle_dir`` downloads a
version's ``model.tar.gz`` (the trainer's output) into a local cache.
"""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

from include.targets.aws.artifact import split_s3
from include.targets.aws.settings import AwsSettings
from include.training.outputs import ModelVersion, RegistryError, RollbackError, TrainingOutputs

log = logging.getLogger(__name__)

APPROVED, PENDING, REJECTED = "Approved", "PendingManualApproval", "Rejected"
MODEL_DATA_URL = "model_data_url"  # tag key register() needs: the training job's S3ModelArtifacts


class SageMakerModelRegistry:
    def __init__(self, aws: AwsSettings, cache_dir: Path, sagemaker_client=None, s3_client=None):
        self.aws = aws
        self.group = aws.model_package_group
        self.cache_dir = Path(cache_dir)
        self._sm, self._s3 = sagemaker_client, s3_client

    # --- clients -------------------------------------------------------------------------
    @property
    def sm(self):
        if self._sm is None:
            import boto3

            self._sm = boto3.client("sagemaker", **self.aws.client_kwargs())
        return self._sm

    @property
    def s3(self):
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3", **self.aws.client_kwargs())
        return self._s3

    def console_url(self, version: str) -> str:
        return (f"https://{self.aws.region}.console.aws.amazon.com/sagemaker/home?region={self.aws.region}"
                f"#/model-registry/{self.group}/{version}")

    # --- helpers -------------------------------------------------------------------------
    def ensure_group(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.sm.describe_model_package_group(ModelPackageGroupName=self.group)
        except ClientError:
            self.sm.create_model_package_group(
                ModelPackageGroupName=self.group,
                ModelPackageGroupDescription="flights delay model (XGBoost); champion = newest Approved version",
                Tags=[{"Key": k, "Value": v} for k, v in sorted(self.aws.tags.items())])

    def _packages(self, status: str | None = None) -> list[dict]:
        kwargs = {"ModelPackageGroupName": self.group, "SortBy": "CreationTime", "SortOrder": "Descending"}
        if status:
            kwargs["ModelApprovalStatus"] = status
        pages = self.sm.get_paginator("list_model_packages").paginate(**kwargs)
        out = [p for page in pages for p in page.get("ModelPackageSummaryList", [])]
        return sorted(out, key=lambda p: int(p.get("ModelPackageVersion") or 0), reverse=True)

    def _arn(self, version: str) -> str:
        return (f"arn:aws:sagemaker:{self.aws.region}:{self.aws.account_id}:model-package/"
                f"{self.group.lower()}/{int(version)}")

    def _describe(self, version: str) -> dict:
        from botocore.exceptions import ClientError

        for p in self._packages():
            if str(p.get("ModelPackageVersion")) == str(version):
                return self.sm.describe_model_package(ModelPackageName=p["ModelPackageArn"])
        try:
            return self.sm.describe_model_package(ModelPackageName=self._arn(version))
        except ClientError:
            raise RegistryError(f"{self.group} has no version {version!r}; versions: "
                                f"{', '.join(self.versions()) or 'none'}.") from None

    def _version(self, desc: dict) -> ModelVersion:
        meta = desc.get("CustomerMetadataProperties") or {}
        version = str(desc["ModelPackageVersion"])
        return ModelVersion(self.group, version, desc["ModelPackageArn"], self.console_url(version),
                            json.loads(meta.get("holdout_metrics", "{}")))

    def _set_status(self, desc: dict, status: str, description: str) -> None:
        # CustomerMetadataProperties are passed back unchanged so an update never drops them.
        self.sm.update_model_package(ModelPackageArn=desc["ModelPackageArn"], ModelApprovalStatus=status,
                                     ApprovalDescription=description[:1000],
                                     CustomerMetadataProperties=desc.get("CustomerMetadataProperties") or {})

    # --- the ModelRegistry protocol --------------------------------------------------------
    def register(self, outputs: TrainingOutputs, tags: dict[str, str]) -> ModelVersion:
        model_data = tags.get(MODEL_DATA_URL) or outputs.model_uri
        if not model_data.startswith("s3://"):
            raise RegistryError(f"register() needs tags[{MODEL_DATA_URL!r}] = the training job's "
                                "ModelArtifacts.S3ModelArtifacts (s3://.../model.tar.gz).")
        self.ensure_group()
        metrics = outputs.metrics["xgboost"]
        meta = {"holdout_metrics": json.dumps(metrics, sort_keys=True),
                "baseline_metrics": json.dumps(outputs.metrics.get("baseline", {}), sort_keys=True),
                "device": outputs.device,
                **{k: str(v)[:256] for k, v in tags.items() if k != MODEL_DATA_URL}}
        metrics_uri = model_data.rsplit("/", 1)[0] + "/holdout_metrics.json"
        bucket, key = split_s3(metrics_uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(outputs.metrics, indent=2).encode(),
                           ContentType="application/json")
        response = self.sm.create_model_package(
            ModelPackageGroupName=self.group,
            ModelPackageDescription=(f"trained on {tags.get('training_window', '?')} "
                                     f"by {tags.get('airflow_run_id', '?')}"),
            InferenceSpecification={
                "Containers": [{"Image": self.aws.training_image, "ModelDataUrl": model_data}],
                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
            ModelApprovalStatus=PENDING,
            ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}}},
            CustomerMetadataProperties=meta,
            Tags=[{"Key": k, "Value": v} for k, v in sorted(self.aws.tags.items())],
        )
        desc = self.sm.describe_model_package(ModelPackageName=response["ModelPackageArn"])
        return self._version(desc)

    def champion(self) -> ModelVersion | None:
        approved = self._packages(APPROVED)
        if not approved:
            return None
        return self._version(self.sm.describe_model_package(ModelPackageName=approved[0]["ModelPackageArn"]))

    def set_champion(self, version: ModelVersion, reason: str) -> None:
        """Approve ``version``; it becomes champion as the newest Approved version."""
        current = self.champion()
        if current is not None and int(version.version) < int(current.version):
            raise RegistryError(f"v{version.version} is older than the champion v{current.version}: approving it "
                                "would not make it champion; use rollback(to_version=...) instead.")
        self._set_status(self._describe(version.version), APPROVED, f"promoted: {reason}")
        log.info("%s v%s approved (champion): %s", self.group, version.version, reason)

    def rollback(self, to_version: str | None, reason: str, by: str) -> tuple[ModelVersion, ModelVersion]:
        """Reject the champion (and newer approved versions), re-approve the previous one or ``to_version``."""
        if not reason or not reason.strip():
            raise RollbackError("Say why you roll back: it is recorded in the approval description.")
        approved = self._packages(APPROVED)
        if not approved:
            raise RollbackError(f"{self.group} has no Approved version: there is nothing to roll back.")
        current = str(approved[0]["ModelPackageVersion"])
        if to_version is None:
            if len(approved) < 2:
                raise RollbackError(f"v{current} is the only Approved version of {self.group}; pass to_version.")
            to_version = str(approved[1]["ModelPackageVersion"])
        to_version = str(to_version).lstrip("vV")
        if to_version == current:
            raise RollbackError(f"v{to_version} already is the champion of {self.group}: nothing to roll back.")
        target = self._describe(to_version)
        old = self._version(self._describe(current))
        note = f"rolled back by {by}: {reason} (champion v{current} -> v{to_version})"
        for p in approved:
            if int(p["ModelPackageVersion"]) > int(to_version):
                self._set_status(self._describe(str(p["ModelPackageVersion"])), REJECTED, note)
        self._set_status(target, APPROVED, note)
        log.warning("%s %s", self.group, note)
        return old, self._version(self._describe(to_version))

    def bundle_dir(self, version: ModelVersion) -> Path:
        """Download and unpack the version's model.tar.gz once; return its ``bundle`` folder."""
        target = self.cache_dir / self.group / version.version
        bundle = target / "bundle"
        if (bundle / "model.json").exists():
            return bundle
        url = self._describe(version.version)["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
        bucket, key = split_s3(url)
        target.mkdir(parents=True, exist_ok=True)
        archive = target / "model.tar.gz"
        self.s3.download_file(bucket, key, str(archive))
        with tarfile.open(archive, "r:gz") as tf:
            tf.extractall(target, filter="data")
        if not (bundle / "model.json").exists():
            raise RegistryError(f"{url} holds no bundle/model.json: it was not written by the project's trainer.")
        return bundle

    def bundle_uri(self, version: ModelVersion) -> str:
        return f"{self.aws.artifacts_root}/models/{self.group}/{version.version}/bundle"

    def publish_bundle(self, version: ModelVersion) -> str:
        """Put the version's unpacked scoring bundle on S3 (once) for Spark jobs; returns its folder URI."""
        from include.targets.aws.artifact import S3Store
        from include.targets.cloud.publish import publish_folder

        uri = self.bundle_uri(version)
        store = S3Store(self.s3)
        if store.exists(f"{uri}/model.json"):
            return uri
        return publish_folder(self.bundle_dir(version), uri, store)

    def training_window(self, version: str) -> str:
        return (self._describe(version).get("CustomerMetadataProperties") or {}).get("training_window", "")

    def versions(self) -> list[str]:
        return sorted((str(p["ModelPackageVersion"]) for p in self._packages()), key=int)

    def status(self, version: str) -> tuple[str, str]:
        desc = self._describe(version)
        return desc["ModelApprovalStatus"], desc.get("ApprovalDescription", "")
