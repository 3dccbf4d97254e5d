"""The AWS target's ``StepBackend``: EMR Serverless (or EMR on EC2), SageMaker and Redshift operators.

The task graph is built by the one step factory (``include.steps.Steps``); this module only
says which operator runs each step, as an ``OperatorSpec`` built at parse time from settings
(no AWS call). The arguments are the Jinja templates ``include.jobs.job_args`` renders from the
``resolve_interval`` / ``resolve_window`` XCom, exactly the ones the local target passes to
spark-submit:

* a Spark job: one EMR Serverless job run, named ``<dag>.<task>.<interval>.try<n>``; a retry
  reattaches, a kill cancels, success is checked against the job's final state and the
  presence of its output. With ``FLIGHTS_AWS_SPARK_MODE=ec2`` the job is instead a step of the
  run's transient EMR cluster, with the same names and guarantees; ``cluster()`` then gives
  ``emr_create_cluster`` (setup) and ``emr_terminate_cluster`` (teardown)
  (``include.targets.aws.cluster``).
* a warehouse load, when ``FLIGHTS_WAREHOUSE=redshift`` (the default on ``aws``): one deferrable
  Redshift Data API batch per table (delete and insert the interval in one transaction). With
  ``duckdb`` or ``postgres`` the load is the step factory's Python task.
* training: a deferrable SageMaker training job on a GPU instance.

Deferred waits need aiobotocore where the triggerer runs; ``FLIGHTS_AWS_DEFERRABLE=false``
waits inside the worker instead (every ``FLIGHTS_AWS_POLL_S`` seconds). Every operator gets the
settings' ``botocore_config`` (retry mode, attempts, timeouts) from its spec builder, and hands it
to its trigger and to the S3 client that checks code and outputs.
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta

from include.config import ConfigError
from include.targets.aws import emr, redshift, sagemaker
from include.targets.aws.settings import AwsSettings
from include.targets.cloud.spec import OperatorSpec


class AwsSteps:
    """``StepBackend`` of the aws target (``include.targets.base.StepBackend``)."""

    def __init__(self, aws: AwsSettings, code: dict[str, str], warehouse: str = "redshift"):
        if aws.deferrable and importlib.util.find_spec("aiobotocore") is None:
            raise ConfigError("FLIGHTS_AWS_DEFERRABLE=true needs aiobotocore where the triggerer runs (the Amazon "
                              "provider's async hooks): install apache-airflow-providers-amazon[aiobotocore], or set "
                              "FLIGHTS_AWS_DEFERRABLE=false to wait for cloud jobs inside the worker.")
        self.aws, self.code, self.warehouse = aws, code, warehouse
        self.lake_root, self.landing_root = aws.lake_root, aws.landing_root
        self.pii_key_secret = aws.pii_key_secret_arn

    def spark_job(self, *, task_id: str, job: str, args: list[str], output: str | None,
                  interval_key: str) -> OperatorSpec:
        minutes = self.aws.emr_job_timeout_minutes
        common = dict(task_id=task_id, job=job, args=args, code=self.code, interval_key=interval_key,
                      job_output=output, require_code=True, deferrable=self.aws.deferrable,
                      waiter_delay=self.aws.poll_s,
                      execution_timeout=timedelta(minutes=minutes + 15))  # EMR stops the job first (its own timeout)
        if self.aws.spark_mode == "ec2":
            return emr.cluster_step(self.aws, **common)
        return emr.serverless_job(self.aws, waiter_max_attempts=(minutes + 10) * 60 // self.aws.poll_s, **common)

    def cluster(self, interval_key: str) -> tuple[OperatorSpec, OperatorSpec] | None:
        if self.aws.spark_mode != "ec2":
            return None
        return emr.create_cluster(self.aws, interval_key=interval_key), emr.terminate_cluster(self.aws)

    def load_job(self, *, task_id: str, table: str, source: str, start: str, end: str) -> OperatorSpec | None:
        if self.warehouse != "redshift":
            return None  # DuckDB / PostgreSQL: the step factory's Python task, through the lake's local copy
        return redshift.load_job(self.aws, task_id=task_id, table=table, s3_prefix=source + "/", start=start, end=end,
                                 deferrable=self.aws.deferrable, poll_interval=self.aws.poll_s,
                                 execution_timeout=timedelta(minutes=30))

    def training_job(self, *, task_id: str, dataset_uri: str, interval_key: str,
                     params: dict[str, str]) -> OperatorSpec:
        aws = self.aws
        seconds = (aws.training_max_wait_s if aws.training_spot else aws.training_max_runtime_s) + 900
        return sagemaker.training_job(
            aws, task_id=task_id, interval_key=interval_key, dataset_uri=dataset_uri,
            sourcedir_uri=self.code["sourcedir"], params=params, deferrable=aws.deferrable,
            check_interval=aws.poll_s, execution_timeout=timedelta(seconds=seconds))
