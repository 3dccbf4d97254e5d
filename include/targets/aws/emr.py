"""Job specs for Spark on EMR: Serverless job runs, or steps on an EMR cluster on EC2.

Each builder returns the keyword arguments of one operator (plain dicts, no AWS call and
no provider import), and ``instantiate`` turns a spec into the operator. The CLI
arguments are passed through as given, so they may be Jinja strings that render the
interval from XCom at run time, exactly like the local ``spark-submit`` arguments.

* Serverless: ``ReattachingEmrServerlessStartJobOperator`` (deferrable, named
  ``<dag>.<task>.<interval>.try<n>``, reattaches on retry, cancels on kill).
* EC2: one transient cluster per DAG run (a setup task) → one task per job that adds its step
  and waits for it (deferrable, reattaches on retry, cancels on kill) → terminate (the
  teardown, run when all steps are done whatever their outcome). See ``cluster.py``.

Versions come from ``include.targets.aws.releases``: the release label and the Delta jars
of the EMR runtime the jobs run on.
"""

from __future__ import annotations

from typing import Any

from include.targets.aws.releases import runtime
from include.targets.aws.settings import AwsSettings
from include.targets.cloud.spec import OperatorSpec, instantiate  # noqa: F401 (re-exported)

# Jinja that renders the run's interval from the first task of flights_daily / flights_training.
INTERVAL_KEY = ("{{ (ti.xcom_pull(task_ids='%s')['start'] | replace('-', '')) ~ '_' ~ "
                "(ti.xcom_pull(task_ids='%s')['end'] | replace('-', '')) }}")
SERVERLESS_OPERATOR = "include.targets.aws.operators.ReattachingEmrServerlessStartJobOperator"
WAITER_DELAY_S = 30


def interval_key_template(task_id: str = "resolve_interval") -> str:
    return INTERVAL_KEY % (task_id, task_id)


def spark_conf(aws: AwsSettings) -> dict[str, str]:
    """Spark settings every job needs on EMR: Delta from the runtime, and the local session's defaults."""
    rt = runtime(aws.emr_release)
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "static",
        # Delta on S3: one writer per table at a time (see docs/running-on-aws.md); the S3 log store is the default.
        "spark.delta.logStore.s3.impl": "io.delta.storage.S3SingleDriverLogStore",
    }
    jars = list(rt.delta_jars)
    if aws.delta_log_table:
        # Concurrent writers per table (parallel backfills): commits are made atomic through a DynamoDB table.
        if not rt.dynamodb_log_store_jar:
            raise ValueError(f"FLIGHTS_AWS_DELTA_LOG_TABLE is set, but releases.py names no delta-storage-s3-dynamodb "
                             f"jar for {rt.name}; add it to the release's row.")
        conf.update({
            "spark.delta.logStore.s3.impl": "io.delta.storage.S3DynamoDBLogStore",
            "spark.delta.logStore.s3a.impl": "io.delta.storage.S3DynamoDBLogStore",
            "spark.io.delta.storage.S3DynamoDBLogStore.ddb.tableName": aws.delta_log_table,
            "spark.io.delta.storage.S3DynamoDBLogStore.ddb.region": aws.region,
        })
        jars.append(rt.dynamodb_log_store_jar)
    if jars:
        conf["spark.jars"] = ",".join(jars)
    return conf


def py_files(aws: AwsSettings, zip_uri: str) -> str:
    """``--py-files``: the code zip, and the release's Delta jar for ``import delta`` (it holds the package)."""
    return ",".join(filter(None, (zip_uri, runtime(aws.emr_release).delta_python)))


def submit_parameters(aws: AwsSettings, zip_uri: str) -> str:
    """``sparkSubmitParameters``: the code zip (and Delta's Python) on the Python path and the Spark settings."""
    parts = [f"--py-files {py_files(aws, zip_uri)}"]
    parts += [f"--conf {k}={v}" for k, v in sorted(spark_conf(aws).items())]
    return " ".join(parts)


def serverless_job(aws: AwsSettings, *, task_id: str, job: str, args: list[str], code: dict[str, str],
                   interval_key: str, timeout_minutes: int | None = None, **operator_kwargs) -> OperatorSpec:
    """One Spark job as an EMR Serverless job run.

    Args:
        task_id: the Airflow task id (the job name is derived from it at run time).
        job: ``spark_jobs/<job>.py``.
        args: the job's CLI arguments, as the local target passes them (may be Jinja strings).
        code: the URIs returned by ``artifact.upload`` (``zip`` and ``prefix``).
        interval_key: the interval's key or a template rendering it (``interval_key_template()``).
    """
    if not aws.emr_application_id:
        raise ValueError("EMR Serverless needs FLIGHTS_AWS_EMR_APPLICATION_ID (or FLIGHTS_AWS_SPARK_MODE=ec2).")
    minutes = int(timeout_minutes or aws.emr_job_timeout_minutes)
    kwargs = {
        "task_id": task_id,
        "application_id": aws.emr_application_id,
        "execution_role_arn": aws.emr_job_role_arn,
        "job_driver": {"sparkSubmit": {
            "entryPoint": f"{code['prefix']}/spark_jobs/{job}.py",
            "entryPointArguments": [str(a) for a in args],
            "sparkSubmitParameters": submit_parameters(aws, code["zip"]),
        }},
        "configuration_overrides": {"monitoringConfiguration": {
            "s3MonitoringConfiguration": {"logUri": aws.emr_logs_uri}}},
        "config": {"executionTimeoutMinutes": minutes, "tags": dict(aws.tags)},
        "interval_key": interval_key,
        "deferrable": True,
        "wait_for_completion": True,
        "cancel_on_kill": True,
        "waiter_delay": WAITER_DELAY_S,
        # The deferral's own timeout: the job's timeout plus a margin, so EMR stops the job first.
        "waiter_max_attempts": (minutes + 10) * 60 // WAITER_DELAY_S,
        "region_name": aws.region,
        "botocore_config": aws.botocore_config,  # retries of every call the operator and its trigger make
    }
    kwargs.update(operator_kwargs)
    return OperatorSpec(SERVERLESS_OPERATOR, kwargs)


# --- EMR on EC2 ----------------------------------------------------------------------------------


def cluster_config(aws: AwsSettings, name: str) -> dict:
    """``job_flow_overrides`` of a transient cluster for one DAG run: pinned release, instance types from settings."""
    instances: dict[str, Any] = {
        "InstanceGroups": [
            {"Name": "primary", "Market": "ON_DEMAND", "InstanceRole": "MASTER",
             "InstanceType": aws.emr_primary_instance_type, "InstanceCount": 1},
            {"Name": "core", "Market": "ON_DEMAND", "InstanceRole": "CORE",
             "InstanceType": aws.emr_core_instance_type, "InstanceCount": aws.emr_core_instance_count},
        ],
        "KeepJobFlowAliveWhenNoSteps": True,  # steps are added by the DAG; the terminate task ends it
        "TerminationProtected": False,
    }
    if aws.emr_subnet_id:
        instances["Ec2SubnetId"] = aws.emr_subnet_id
    return {
        "Name": name,
        "ReleaseLabel": runtime(aws.emr_release).name,
        "Applications": [{"Name": "Spark"}],
        "Configurations": [
            {"Classification": "spark-defaults", "Properties": spark_conf(aws)},
            {"Classification": "delta-defaults", "Properties": {"delta.enabled": "true"}},
        ],
        "Instances": instances,
        "LogUri": aws.emr_logs_uri,
        "ServiceRole": aws.emr_service_role,
        "JobFlowRole": aws.emr_instance_profile,
        "VisibleToAllUsers": True,
        "AutoTerminationPolicy": {"IdleTimeout": 3600},  # a backstop if the terminate task never runs
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(aws.tags.items())],
    }


def step(aws: AwsSettings, *, name: str, job: str, args: list[str], code: dict[str, str]) -> dict:
    """One spark-submit step (cluster deploy mode) running the job from the code artefact."""
    conf = [item for k, v in sorted(spark_conf(aws).items()) for item in ("--conf", f"{k}={v}")]
    return {
        "Name": name,
        "ActionOnFailure": "CONTINUE",  # the step's task fails; the teardown terminates the cluster
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": [
            "spark-submit", "--deploy-mode", "cluster", "--py-files", py_files(aws, code["zip"]), *conf,
            f"{code['prefix']}/spark_jobs/{job}.py", *[str(a) for a in args]]},
    }


CLUSTER_OPERATOR = "include.targets.aws.cluster.ReattachingEmrCreateJobFlowOperator"
STEP_OPERATOR = "include.targets.aws.cluster.ReattachingEmrStepOperator"
TERMINATE_OPERATOR = "airflow.providers.amazon.aws.operators.emr.EmrTerminateJobFlowOperator"
CREATE_CLUSTER_TASK, TERMINATE_CLUSTER_TASK = "emr_create_cluster", "emr_terminate_cluster"
CLUSTER_ID = "{{ ti.xcom_pull(task_ids='%s') }}" % CREATE_CLUSTER_TASK


def create_cluster(aws: AwsSettings, *, interval_key: str, name: str = "<dag>.<interval>.<run digest>",
                   **operator_kwargs) -> OperatorSpec:
    """The run's cluster (a setup task); its name is set at run time from DAG, interval and run."""
    return OperatorSpec(CLUSTER_OPERATOR, {
        "task_id": CREATE_CLUSTER_TASK, "job_flow_overrides": cluster_config(aws, name),
        "interval_key": interval_key, "region_name": aws.region, "wait_for_completion": False,
        "botocore_config": aws.botocore_config, **operator_kwargs})


def cluster_step(aws: AwsSettings, *, task_id: str, job: str, args: list[str], code: dict[str, str],
                 interval_key: str, **operator_kwargs) -> OperatorSpec:
    """One Spark job as a step of the run's cluster: added and waited for by one task (``cluster.py``)."""
    return OperatorSpec(STEP_OPERATOR, {
        "task_id": task_id, "job_flow_id": CLUSTER_ID, "region_name": aws.region,
        "step": step(aws, name="<dag>.<task>.<interval>.try<n>", job=job, args=args, code=code),
        "interval_key": interval_key, "deferrable": True, "waiter_delay": WAITER_DELAY_S,
        "timeout_minutes": aws.emr_job_timeout_minutes, "botocore_config": aws.botocore_config, **operator_kwargs})


def terminate_cluster(aws: AwsSettings, **operator_kwargs) -> OperatorSpec:
    """The teardown: ends the run's cluster once every step is done, whatever their outcome."""
    return OperatorSpec(TERMINATE_OPERATOR, {
        "task_id": TERMINATE_CLUSTER_TASK, "job_flow_id": CLUSTER_ID, "region_name": aws.region,
        "trigger_rule": "all_done", "botocore_config": aws.botocore_config, **operator_kwargs})


def ec2_jobs(aws: AwsSettings, *, jobs: list[dict], code: dict[str, str], interval_key: str) -> list[OperatorSpec]:
    """Create cluster → one step task per job, in order → terminate (what the DAG builds, for the plan).

    Args:
        jobs: ``{"task_id", "job", "args"}`` per Spark job, in order.
    """
    return [create_cluster(aws, interval_key=interval_key),
            *[cluster_step(aws, task_id=j["task_id"], job=j["job"], args=j["args"], code=code,
                           interval_key=interval_key) for j in jobs],
            terminate_cluster(aws)]
