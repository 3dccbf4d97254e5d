"""The AWS target: S3 lake, EMR Spark, SageMaker training and registry, Redshift, SNS.

``build(cfg)`` returns the six seams of ``include.targets.base``. Long cloud work is meant
to run as deferrable operators built by ``emr``, ``sagemaker`` and ``redshift`` (specs,
no AWS call at import); the seams here serve the Python tasks: reading the lake, the
model registry, alerts, and a blocking Spark runner for the odd job run from a
Python task. Nothing here needs AWS credentials until a method is called.

Not registered in ``include/targets/__init__.py`` yet: see docs/running-on-aws.md for
what is wired and what is not.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from include.config import ConfigError, Settings
from include.targets.aws.artifact import split_s3
from include.targets.aws.settings import AwsSettings, load_aws_settings
from include.targets.base import SparkJobFailed, Target

log = logging.getLogger(__name__)


def _client(aws: AwsSettings, service: str):
    import boto3

    return boto3.client(service, **aws.client_kwargs())


class S3Lake:
    """The lake under ``s3://<lake bucket>/<prefix>``; ``local_dir`` downloads a prefix into a cache."""

    def __init__(self, aws: AwsSettings, cache_dir: Path, s3_client=None):
        self.aws, self.cache_dir = aws, Path(cache_dir)
        self.root, self.landing_root = aws.lake_root, aws.landing_root
        self._s3 = s3_client

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = _client(self.aws, "s3")
        return self._s3

    def exists(self, uri: str) -> bool:
        bucket, key = split_s3(uri)
        return bool(self.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount"))

    def read_json(self, uri: str) -> dict:
        bucket, key = split_s3(uri)
        return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def local_dir(self, uri: str) -> Path:
        bucket, prefix = split_s3(uri.rstrip("/") + "/")
        target = self.cache_dir / bucket / prefix
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                dest = target / obj["Key"][len(prefix):]
                if dest.exists() and dest.stat().st_size == obj["Size"]:
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, obj["Key"], str(dest))
        return target


class EmrServerlessSparkRunner:
    """Blocking ``SparkRunner``: start one job run and poll it to the end (for Python tasks).

    DAG tasks should use the deferrable operator from ``emr.serverless_job`` instead, which
    frees the worker while the job runs and reattaches on retry.
    """

    TERMINAL = {"SUCCESS", "FAILED", "CANCELLED"}

    def __init__(self, aws: AwsSettings, code: dict[str, str], client=None, poll_s: float = 30.0):
        self.aws, self.code, self.poll_s = aws, code, poll_s
        self._client = client

    def submit(self, job: str, args: list[str], *, name: str) -> None:
        from include.targets.aws.emr import submit_parameters

        client = self._client or _client(self.aws, "emr-serverless")
        run = client.start_job_run(
            applicationId=self.aws.emr_application_id, executionRoleArn=self.aws.emr_job_role_arn, name=name,
            clientToken=name,  # idempotent: the same name submitted twice is one job run
            jobDriver={"sparkSubmit": {"entryPoint": f"{self.code['prefix']}/spark_jobs/{job}.py",
                                       "entryPointArguments": [str(a) for a in args],
                                       "sparkSubmitParameters": submit_parameters(self.aws, self.code["zip"])}},
            executionTimeoutMinutes=self.aws.emr_job_timeout_minutes, tags=dict(self.aws.tags))
        job_id = run["jobRunId"]
        try:
            while True:
                state = client.get_job_run(applicationId=self.aws.emr_application_id,
                                           jobRunId=job_id)["jobRun"]
                if state["state"] in self.TERMINAL:
                    break
                time.sleep(self.poll_s)
        except BaseException:
            client.cancel_job_run(applicationId=self.aws.emr_application_id, jobRunId=job_id)
            raise
        if state["state"] != "SUCCESS":
            raise SparkJobFailed(f"EMR Serverless job {name} ({job_id}) ended {state['state']}: "
                                 f"{state.get('stateDetails', '')}; logs under {self.aws.emr_logs_uri}")


class NotWired:
    """A seam the AWS target provides as operators, not as an in-process object."""

    def __init__(self, seam: str, instead: str):
        self.seam, self.instead = seam, instead

    def __getattr__(self, name):
        raise ConfigError(f"The AWS target's {self.seam} runs as {self.instead}, not inside a Python task; "
                          "see docs/running-on-aws.md (What is wired).")


def build(cfg: Settings, aws: AwsSettings | None = None, code: dict[str, str] | None = None) -> Target:
    from include.alerts import ChannelNotifier
    from include.targets.aws.registry import SageMakerModelRegistry

    aws = aws or load_aws_settings()
    if code is None:  # the URIs of this checkout's code (uploaded by `artifact.upload` before a run)
        from include.targets.aws.artifact import build_artifact

        artifact = build_artifact()
        code = {"prefix": artifact.prefix(aws.artifacts_root), "zip": artifact.zip_uri(aws.artifacts_root)}
    return Target(
        name="aws",
        lake=S3Lake(aws, cfg.home / "cache" / "s3"),
        spark=EmrServerlessSparkRunner(aws, code),
        trainer=NotWired("trainer", "include.targets.aws.sagemaker.training_job (SageMakerTrainingOperator)"),
        registry=SageMakerModelRegistry(aws, cfg.home / "models"),
        warehouse=NotWired("warehouse", "include.targets.aws.redshift.load_job (RedshiftDataOperator)"),
        notifier=ChannelNotifier(cfg),
    )
