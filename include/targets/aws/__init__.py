"""The AWS target: S3 lake, EMR Spark, SageMaker training and registry, Redshift, SNS.

``step_backend(cfg)`` tells the one step factory (``include.steps``) which operator runs each step
(``steps.AwsSteps``: deferrable EMR Serverless, SageMaker and Redshift Data operators). ``build(cfg)`` returns
the six seams of ``include.targets.base`` for the Python tasks around them: reading the
lake, the model registry, the warehouse's ``ops`` records, collecting training outputs,
alerts, and a blocking Spark runner for the odd job run from a Python task. Nothing here
needs AWS credentials until a method is called.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
from pathlib import Path

from include.config import ConfigError, Settings
from include.targets.aws.artifact import split_s3
from include.targets.aws.settings import AwsSettings, load_aws_settings
from include.targets.base import Target, TrainingOutputs
from include.targets.cloud.artifact import checkout_code_uris as code_uris
from include.training.outputs import read_outputs

log = logging.getLogger(__name__)


def _client(aws: AwsSettings, service: str):
    """A boto3 client with the settings' region, endpoint, retries and timeouts (``AwsSettings.client_kwargs``)."""
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
        from include.targets.cloud.mirror import mirror

        bucket, prefix = split_s3(uri.rstrip("/") + "/")
        objects = (obj for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                   for obj in page.get("Contents", []))
        return mirror(((o["Key"][len(prefix):], o["Size"], o["Key"]) for o in objects),
                      self.cache_dir / bucket / prefix, lambda key, path: self.s3.download_file(bucket, key, str(path)))


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
            from include.targets.errors import SparkJobFailed

            raise SparkJobFailed(f"EMR Serverless job {name} ({job_id}) ended {state['state']}: "
                                 f"{state.get('stateDetails', '')}; logs under {self.aws.emr_logs_uri}")


class SageMakerTrainer:
    """Training runs as the ``train_models`` SageMaker operator; ``collect`` reads what it produced."""

    def __init__(self, aws: AwsSettings, cache_dir: Path, s3_client=None):
        self.aws, self.cache_dir, self._s3 = aws, Path(cache_dir), s3_client

    def train(self, request):
        raise ConfigError("On the aws target training runs as the SageMaker training job of the train_models task "
                          "(include.targets.aws.sagemaker), not inside a Python task.")

    def collect(self, trained: dict) -> TrainingOutputs:
        """Download and unpack the job's model.tar.gz once; its metrics.json holds metrics and params."""
        job = (trained or {}).get("Training") or {}
        name, status = job.get("TrainingJobName", "?"), job.get("TrainingJobStatus")
        if status != "Completed":
            raise ConfigError(f"Training job {name} is {status}, not Completed: there is no model to register. "
                              "Clear train_models to train again.")
        url = job["ModelArtifacts"]["S3ModelArtifacts"]
        out = self.cache_dir / name
        if not (out / "metrics.json").exists():
            s3 = self._s3 or _client(self.aws, "s3")
            bucket, key = split_s3(url)
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            out.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tf:
                tf.extractall(out, filter="data")
        try:
            return read_outputs(out, model_uri=url, where=url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def step_backend(cfg: Settings, aws: AwsSettings | None = None):
    """What runs each step on AWS (``include.targets.aws.steps.AwsSteps``), from settings only."""
    from include.targets.aws.steps import AwsSteps

    aws = aws or load_aws_settings()
    return AwsSteps(aws, code_uris(aws.artifacts_root), cfg.warehouse)


def build(cfg: Settings, aws: AwsSettings | None = None, code: dict[str, str] | None = None) -> Target:
    from include.notify import ChannelNotifier
    from include.targets.aws.redshift import RedshiftWarehouse
    from include.targets.aws.registry import SageMakerModelRegistry
    from include.warehouse import make_warehouse

    aws = aws or load_aws_settings()
    code = code or code_uris(aws.artifacts_root)
    lake = S3Lake(aws, cfg.home / "cache" / "s3")
    return Target(
        name="aws",
        lake=lake,
        spark=EmrServerlessSparkRunner(aws, code),
        trainer=SageMakerTrainer(aws, cfg.home / "cache" / "training"),
        registry=SageMakerModelRegistry(aws, cfg.home / "models"),
        warehouse=RedshiftWarehouse(aws) if cfg.warehouse == "redshift" else make_warehouse(cfg, lake),
        notifier=ChannelNotifier(cfg),
    )
