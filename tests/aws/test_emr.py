"""EMR Serverless specs: rendered requests, and reattach / cancel against a moto server (EC2: test_emr_cluster)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from include.targets.aws import emr
from include.targets.aws.releases import RUNTIMES

CODE = {"prefix": "s3://flights-artifacts-example/artifacts/code/abc123",
        "zip": "s3://flights-artifacts-example/artifacts/code/abc123/flights.zip"}
ARGS = ["--lake", "s3://flights-lake-example/lake", "--start", "{{ ti.xcom_pull(task_ids='resolve_interval')['start'] }}",
        "--end", "2013-01-01", "--run-id", "{{ run_id }}", "--landing", "s3://flights-lake-example/landing"]


def test_serverless_spec_renders_the_job_as_run_locally(aws):
    spec = emr.serverless_job(aws, task_id="ingest_bronze", job="bronze_landing", args=ARGS, code=CODE,
                              interval_key="20130101_20130101")
    kw = spec.kwargs
    driver = kw["job_driver"]["sparkSubmit"]
    assert spec.class_name == "ReattachingEmrServerlessStartJobOperator"
    assert driver["entryPoint"] == CODE["prefix"] + "/spark_jobs/bronze_landing.py"
    assert driver["entryPointArguments"] == ARGS  # the same CLI as spark-submit locally, templates untouched
    params = driver["sparkSubmitParameters"]
    # The code zip, and the release's Delta jar: it holds Delta's Python package for `import delta`.
    assert params.startswith(f"--py-files {CODE['zip']},{RUNTIMES[aws.emr_release].delta_python} ")
    assert RUNTIMES[aws.emr_release].delta_python in RUNTIMES[aws.emr_release].delta_jars
    assert "--conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in params
    assert "--conf spark.jars=" + ",".join(RUNTIMES[aws.emr_release].delta_jars) in params
    assert kw["application_id"] == aws.emr_application_id and kw["execution_role_arn"] == aws.emr_job_role_arn
    assert kw["deferrable"] is True and kw["cancel_on_kill"] is True
    assert kw["config"]["executionTimeoutMinutes"] == aws.emr_job_timeout_minutes == 120
    assert kw["waiter_max_attempts"] * kw["waiter_delay"] == (120 + 10) * 60  # deferral outlives the job timeout
    assert kw["configuration_overrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"] == \
        "s3://flights-artifacts-example/artifacts/logs/emr/"


def test_concurrent_writers_switch_delta_to_the_dynamodb_log_store(aws):
    from include.targets.aws.settings import load_aws_settings

    assert emr.spark_conf(aws)["spark.delta.logStore.s3.impl"] == "io.delta.storage.S3SingleDriverLogStore"
    conf = emr.spark_conf(aws.__class__.example(delta_log_table="flights_delta_log"))
    assert conf["spark.delta.logStore.s3.impl"] == "io.delta.storage.S3DynamoDBLogStore"
    assert conf["spark.io.delta.storage.S3DynamoDBLogStore.ddb.tableName"] == "flights_delta_log"
    assert conf["spark.io.delta.storage.S3DynamoDBLogStore.ddb.region"] == "us-east-1"
    assert conf["spark.jars"].endswith(",/usr/share/aws/delta/lib/delta-storage-s3-dynamodb.jar")
    env = {"FLIGHTS_AWS_REGION": "us-east-1", "FLIGHTS_AWS_ACCOUNT_ID": "123456789012",
           "FLIGHTS_AWS_LAKE_BUCKET": "acme-lake", "FLIGHTS_AWS_EMR_APPLICATION_ID": "app",
           "FLIGHTS_AWS_EMR_JOB_ROLE_ARN": "arn:aws:iam::123456789012:role/a",
           "FLIGHTS_AWS_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/b",
           "FLIGHTS_AWS_REDSHIFT_WORKGROUP": "w", "FLIGHTS_AWS_DELTA_LOG_TABLE": "delta log!"}
    with pytest.raises(Exception, match="FLIGHTS_AWS_DELTA_LOG_TABLE='delta log!' is not a DynamoDB table name"):
        load_aws_settings(env)


def test_serverless_operator_templates_the_interval(aws):
    op = emr.instantiate(emr.serverless_job(aws, task_id="build_features", job="gold_flight_features", args=ARGS,
                                            code=CODE, interval_key=emr.interval_key_template()))
    assert "interval_key" in op.template_fields and "job_driver" in op.template_fields
    assert op.deferrable and op.cancel_on_kill
    from jinja2 import Environment

    ti = SimpleNamespace(xcom_pull=lambda task_ids: {"start": "2013-03-01", "end": "2013-03-07"})
    assert Environment().from_string(op.interval_key).render(ti=ti) == "20130301_20130307"


# --- reattach and cancel against the moto server ----------------------------------------------


@pytest.fixture()
def app_id(boto):
    # moto validates release labels against the emr-X.Y.0 pattern; the release itself is irrelevant here.
    return boto("emr-serverless").create_application(name="flights", releaseLabel="emr-7.12.0", type="SPARK")[
        "applicationId"]


def _context(try_number: int, max_tries: int = 3, run_id: str = "scheduled__2013-01-01T00:00:00+00:00"):
    ti = SimpleNamespace(dag_id="flights_daily", task_id="ingest_bronze", try_number=try_number,
                         max_tries=max_tries, run_id=run_id, xcom_push=lambda *a, **k: None, map_index=-1)
    return {"ti": ti, "run_id": run_id, "task_instance": ti}


def _operator(aws, app_id, **kw):
    spec = emr.serverless_job(aws.__class__.example(emr_application_id=app_id), task_id="ingest_bronze",
                              job="bronze_landing", args=ARGS[:2], code=CODE, interval_key="20130101_20130101",
                              deferrable=False, retries=3, waiter_delay=1, **kw)
    return emr.instantiate(spec)


def _runs(boto, app_id):
    return boto("emr-serverless").list_job_runs(applicationId=app_id)["jobRuns"]


def test_first_try_submits_a_named_tagged_job(aws, app_id, boto):
    op = _operator(aws, app_id)
    job_id = op.execute(_context(1))
    runs = _runs(boto, app_id)
    assert [r["name"] for r in runs] == ["flights_daily.ingest_bronze.20130101_20130101.try1"]
    run = boto("emr-serverless").get_job_run(applicationId=app_id, jobRunId=job_id)["jobRun"]
    assert run["tags"]["airflow_run_id"] == "scheduled__2013-01-01T00:00:00+00:00"
    assert run["tags"]["airflow_try"] == "1" and op.reattached is None


def test_retry_reuses_the_succeeded_job_instead_of_submitting(aws, app_id, boto):
    first = _operator(aws, app_id).execute(_context(1))
    retry = _operator(aws, app_id)
    assert retry.execute(_context(2)) == first and retry.reattached == first
    assert len(_runs(boto, app_id)) == 1  # no second job


def test_retry_reattaches_to_a_running_job(aws, app_id, boto, monkeypatch):
    first = _operator(aws, app_id).execute(_context(1))
    from moto.emrserverless.models import emrserverless_backends

    # moto finishes jobs at once: put the first try's job back to RUNNING, as a real job would be.
    backend = emrserverless_backends["123456789012"]["us-east-1"]
    job = next(j for j in backend.job_runs[app_id] if j.id == first)
    job.state = "RUNNING"
    retry = _operator(aws, app_id)
    waited = []
    monkeypatch.setattr(type(retry.hook), "get_waiter", lambda self, name: SimpleNamespace(
        wait=lambda **kw: (waited.append(kw["jobRunId"]), setattr(job, "state", "SUCCESS"))))
    assert retry.execute(_context(2)) == first
    assert waited == [first] and len(_runs(boto, app_id)) == 1


def test_other_runs_and_cleared_attempts_are_not_reused(aws, app_id, boto):
    _operator(aws, app_id).execute(_context(1, run_id="manual__other"))
    own = _operator(aws, app_id).execute(_context(1))
    # The task was cleared after try 1 (max_tries = 1 + retries): the next try recomputes.
    fresh = _operator(aws, app_id)
    new = fresh.execute(_context(2, max_tries=1 + 3))
    assert new != own and fresh.reattached is None
    assert len(_runs(boto, app_id)) == 3


def test_a_stale_running_job_from_before_a_clear_is_cancelled(aws, app_id, boto):
    old = _operator(aws, app_id).execute(_context(1))
    from moto.emrserverless.models import emrserverless_backends

    backend = emrserverless_backends["123456789012"]["us-east-1"]
    next(j for j in backend.job_runs[app_id] if j.id == old).state = "RUNNING"
    _operator(aws, app_id).execute(_context(2, max_tries=4))
    state = boto("emr-serverless").get_job_run(applicationId=app_id, jobRunId=old)["jobRun"]["state"]
    assert state == "CANCELLED"  # two writers on the same partitions never run at once


def test_on_kill_cancels_the_job_run(aws, app_id, boto):
    op = _operator(aws, app_id, wait_for_completion=False)
    job_id = op.execute(_context(1))
    op.on_kill()  # provider behaviour, kept by the subclass
    assert boto("emr-serverless").get_job_run(applicationId=app_id, jobRunId=job_id)["jobRun"]["state"] == "CANCELLED"


def test_deferred_kill_cancels_through_the_trigger(aws, app_id, boto):
    from airflow.providers.amazon.aws.triggers.emr import EmrServerlessStartJobTrigger

    job_id = _operator(aws, app_id, wait_for_completion=False).execute(_context(1))
    trigger = EmrServerlessStartJobTrigger(application_id=app_id, job_id=job_id, cancel_on_kill=True,
                                           region_name="us-east-1")
    asyncio.run(trigger.on_kill())  # what the triggerer calls when a deferred task is killed (Airflow 3.3+)
    assert boto("emr-serverless").get_job_run(applicationId=app_id, jobRunId=job_id)["jobRun"]["state"] == "CANCELLED"


def test_success_event_for_a_failed_job_fails_the_task(aws, app_id, boto):
    from include.targets.aws.operators import JobStateError

    op = _operator(aws, app_id, wait_for_completion=False)
    job_id = op.execute(_context(1))
    boto("emr-serverless").cancel_job_run(applicationId=app_id, jobRunId=job_id)
    with pytest.raises(JobStateError, match="CANCELLED"):
        op.execute_complete(_context(1), {"status": "success", "job_details": {
            "application_id": app_id, "job_id": job_id}})
