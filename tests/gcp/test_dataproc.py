"""Spark on Dataproc: rendered requests validated by the client library, and the operators' reattach / cancel /
final-state paths with the Dataproc API answered at the client boundary.

The Dataproc API has no emulator. The hook's ``get_batch_client`` / ``get_job_client`` return an
in-memory fake that validates every request it receives with ``google.cloud.dataproc_v1``'s own
request messages and answers with real ``Batch`` / ``Job`` messages; the tests move their states
as Dataproc would. Job outputs live on the Cloud Storage emulator (``tests/gcp/conftest.py``),
read through the provider's ``GCSHook`` with an anonymous connection.
"""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred
from google.cloud import dataproc_v1

from include.targets.cloud.reattach import JobStateError
from include.targets.gcp import dataproc, runtimes
from include.targets.gcp.settings import GcpSettings
from tests.gcp.fakes import BATCH_ID, CONNECTION, PROJECT, REGION, FakeDataproc  # noqa: F401

CODE = {"prefix": "gs://flights-artifacts-example/artifacts/code/abc123",
        "zip": "gs://flights-artifacts-example/artifacts/code/abc123/flights.zip"}
ARGS = ["--lake", "gs://flights-lake-example/lake",
        "--start", "{{ ti.xcom_pull(task_ids='resolve_interval')['start'] }}",
        "--end", "2013-01-01", "--run-id", "{{ run_id }}"]
KEY = "20130101_20130101"
RUN = "scheduled__2013-01-01T00:00:00+00:00"
CLUSTER = re.compile(r"^[a-z](?:[-a-z0-9]{0,49}[a-z0-9])?$")  # and for cluster names


@pytest.fixture()
def settings() -> GcpSettings:
    return GcpSettings.example(dataproc_runtime=runtimes.DEFAULT_RUNTIME)


# --- (a) every rendered request is a valid client-library message ----------------------------------


def test_a_batch_is_a_valid_dataproc_batch_running_the_job_as_locally(settings):
    spec = dataproc.batch(settings, task_id="ingest_bronze", job="bronze_landing", args=ARGS, code=CODE,
                          interval_key=KEY, job_output="gs://flights-lake-example/lake/_runs/x.json")
    assert spec.class_name == "ReattachingDataprocBatchOperator"
    batch = dataproc_v1.Batch(**spec.kwargs["batch"])  # raises on any field the API does not have
    rt = runtimes.runtime(settings.dataproc_runtime)
    spark = batch.pyspark_batch
    assert spark.main_python_file_uri == CODE["prefix"] + "/spark_jobs/bronze_landing.py"
    assert list(spark.args) == ARGS  # the same CLI as spark-submit locally, templates untouched
    jars = [f"gs://flights-artifacts-example/artifacts/jars/delta-spark_2.13-{rt.delta}.jar",
            f"gs://flights-artifacts-example/artifacts/jars/delta-storage-{rt.delta}.jar"]
    assert list(spark.jar_file_uris) == jars  # Delta is not on the Serverless runtime: both jars travel
    assert list(spark.python_file_uris) == [CODE["zip"], jars[0]]  # the jar holds `import delta`
    props = batch.runtime_config.properties
    assert batch.runtime_config.version == "3.0"
    assert props["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert props["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert (props["spark.sql.session.timeZone"], props["spark.sql.sources.partitionOverwriteMode"]) == ("UTC", "static")
    assert props["spark.delta.logStore.gs.impl"] == "io.delta.storage.GCSLogStore"
    execution = batch.environment_config.execution_config
    assert execution.service_account == settings.dataproc_service_account
    assert execution.staging_bucket == "flights-artifacts-example"  # a bucket name, as the API wants
    assert execution.ttl.total_seconds() == 120 * 60 and not execution.subnetwork_uri
    assert dict(batch.labels) == {"project": "flights-lakehouse"}
    op = dataproc.instantiate(spec)  # every kwarg is accepted by the installed provider
    assert {"batch", "interval_key", "job_output"} <= set(op.template_fields)
    assert op.deferrable and op.polling_interval_seconds == settings.poll_s and op.batch_id is None


def test_a_subnet_and_a_short_timeout_reach_the_batch_within_the_apis_limits():
    gcp = GcpSettings.example(dataproc_subnet="projects/flights-example/regions/us-central1/subnetworks/dataproc",
                              dataproc_job_timeout_minutes=5)
    execution = dataproc_v1.Batch(**dataproc.batch_request(gcp, job="j", args=[], code=CODE)).environment_config \
        .execution_config
    assert execution.subnetwork_uri.endswith("/subnetworks/dataproc")
    assert execution.ttl.total_seconds() == 10 * 60  # Dataproc's minimum TTL, not the 5 minutes asked


def test_a_misspelt_field_is_rejected_by_the_message_types(settings):
    request = dataproc.batch_request(settings, job="bronze_landing", args=ARGS, code=CODE)
    request["pyspark_batch"]["jar_files_uris"] = request["pyspark_batch"].pop("jar_file_uris")
    with pytest.raises(ValueError, match="jar_files_uris"):
        dataproc_v1.Batch(**request)
    job = dataproc.job_request(settings, job="bronze_landing", args=ARGS, code=CODE)
    job["pyspark_job"]["property"] = job["pyspark_job"].pop("properties")
    with pytest.raises(ValueError, match="property"):
        dataproc_v1.Job(**job)


def test_cluster_mode_is_create_then_jobs_then_an_all_done_delete(settings):
    specs = dataproc.cluster_jobs(settings, code=CODE, interval_key=KEY, jobs=[
        {"task_id": "ingest_bronze", "job": "bronze_landing", "args": ARGS},
        {"task_id": "build_features", "job": "gold_flight_features", "args": ARGS}])
    assert [s.class_name for s in specs] == ["ReattachingDataprocClusterOperator", "ReattachingDataprocJobOperator",
                                            "ReattachingDataprocJobOperator", "DataprocDeleteRunClusterOperator"]
    create, bronze, _, delete = specs
    assert create.kwargs["task_id"] == "dataproc_create_cluster"
    assert delete.kwargs["task_id"] == "dataproc_delete_cluster"
    rt = runtimes.runtime(settings.dataproc_runtime)
    cluster = dataproc_v1.Cluster(project_id=PROJECT, cluster_name="c", config=create.kwargs["cluster_config"],
                                  labels=create.kwargs["labels"])
    assert cluster.config.software_config.image_version == rt.image_version
    assert cluster.config.lifecycle_config.idle_delete_ttl.total_seconds() == 3600  # the backstop
    assert (cluster.config.worker_config.num_instances, cluster.config.master_config.machine_type_uri) == \
        (2, "n2-standard-4")
    job = dataproc_v1.Job(**bronze.kwargs["job"])
    assert job.placement.cluster_name == dataproc.CLUSTER_NAME == delete.kwargs["cluster_name"]
    assert list(job.pyspark_job.args) == ARGS and job.pyspark_job.main_python_file_uri.endswith("/bronze_landing.py")
    assert list(job.pyspark_job.jar_file_uris)[0].endswith(f"/delta-spark_{rt.image_scala}-{rt.delta}.jar")
    assert job.pyspark_job.properties["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert delete.kwargs["trigger_rule"] == "all_done"
    ops = [dataproc.instantiate(s) for s in specs]
    assert ops[0].use_if_exists and "interval_key" in ops[0].template_fields and ops[0].cluster_name == ""
    assert ops[1].deferrable and ops[1].cancel_on_kill and "job" in ops[1].template_fields


def test_spark_3_images_take_the_scala_2_12_delta_jar():
    gcp = GcpSettings.example(dataproc_runtime="2.3")
    job = dataproc.job_request(gcp, job="j", args=[], code=CODE)
    assert job["pyspark_job"]["jar_file_uris"][0].endswith("/delta-spark_2.12-3.3.2.jar")
    assert dataproc.batch_request(gcp, job="j", args=[], code=CODE)["pyspark_batch"]["jar_file_uris"][0] \
        .endswith("/delta-spark_2.13-3.3.2.jar")  # the Serverless runtime of the same version is Scala 2.13


# --- (c) names Dataproc accepts --------------------------------------------------------------------


@pytest.mark.parametrize("dag_id,task_id,key", [
    ("flights_daily", "ingest_bronze", KEY),
    ("a" * 200, "B" * 250, "20130101_20131231"),
    ("Flights.Training_DAG", "__weird__.TASK__", "{{ not rendered }}"),
    ("x", "y", ""),
    ("9_starts_with_digit", "-leading-dash", "--"),
])
def test_batch_ids_and_cluster_names_are_valid_for_any_dag_and_task(dag_id, task_id, key):
    from include.targets.cloud.naming import short_job_name

    ids = {short_job_name(dag_id, task_id, key, run, t, lower=True)
           for run in (RUN, "manual__2013-01-01T00:00:00+00:00") for t in (1, 2, 10, 999)}
    assert len(ids) == 8  # one id per run and try
    bad = [i for i in ids if not BATCH_ID.match(i)]
    assert bad == []
    name = dataproc.cluster_name(dag_id, key, RUN)
    assert CLUSTER.match(name) and name == dataproc.cluster_name(dag_id, key, RUN)
    assert name != dataproc.cluster_name(dag_id, key, "manual__2013-01-01T00:00:00+00:00")


# --- (d) the runtime table -------------------------------------------------------------------------


def test_the_default_runtime_runs_the_spark_and_delta_the_jobs_are_verified_on():
    from include.targets.aws import releases

    verified = releases.runtime(releases.DEFAULT_EMR_RELEASE)  # checked with pyspark 4.0.2 + delta-spark 4.0.0
    default = runtimes.runtime(runtimes.DEFAULT_RUNTIME)
    assert default.spark_line == verified.spark_line == "4.0"
    assert default.delta == verified.delta.split("-")[0] and default.scala == "2.13"
    assert runtimes.compatible_with_jobs(runtimes.DEFAULT_RUNTIME)
    assert not runtimes.compatible_with_jobs("2.3")  # Spark 3.5 / Delta 3.3


def test_the_settings_default_is_the_runtime_the_jobs_run_on():
    from include.targets.gcp import settings as gcp_settings

    assert gcp_settings.DEFAULT_DATAPROC_RUNTIME == runtimes.DEFAULT_RUNTIME, (
        "GcpSettings defaults to a runtime whose Spark the jobs are not verified on; set "
        "DEFAULT_DATAPROC_RUNTIME to runtimes.DEFAULT_RUNTIME")


def test_an_unknown_runtime_names_the_supported_ones():
    with pytest.raises(ValueError, match=r"'9\.9' is not in include/targets/gcp/runtimes\.py; use one of 3\.0, 2\.3"):
        runtimes.runtime("9.9")
    from include.config import ConfigError
    from include.targets.gcp.settings import load_gcp_settings

    env = {"FLIGHTS_GCP_PROJECT": PROJECT, "FLIGHTS_GCP_REGION": REGION, "FLIGHTS_GCP_LAKE_BUCKET": "flights-lake",
           "FLIGHTS_GCP_DATAPROC_SERVICE_ACCOUNT": "flights-dataproc@flights-example.iam.gserviceaccount.com",
           "FLIGHTS_GCP_VERTEX_SERVICE_ACCOUNT": "flights-vertex@flights-example.iam.gserviceaccount.com",
           "FLIGHTS_GCP_DATAPROC_RUNTIME": "1.1"}
    with pytest.raises(ConfigError, match="FLIGHTS_GCP_DATAPROC_RUNTIME: Dataproc runtime '1.1'"):
        load_gcp_settings(env)
    assert load_gcp_settings({**env, "FLIGHTS_GCP_DATAPROC_RUNTIME": "3.0"}).dataproc_runtime == "3.0"


# --- (b) the operators, with the Dataproc API answered at the client boundary ----------------------


@pytest.fixture()
def api(monkeypatch):
    """The fake controllers behind the real ``DataprocHook``; the hook's connection is anonymous."""
    from airflow.providers.google.cloud.hooks.dataproc import DataprocHook

    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", CONNECTION)
    fake = FakeDataproc()
    monkeypatch.setattr(DataprocHook, "get_batch_client", lambda self, region=None: fake)
    monkeypatch.setattr(DataprocHook, "get_job_client", lambda self, region=None: fake)
    return fake


@pytest.fixture()
def outputs(gcs, monkeypatch):
    """The lake bucket on the emulator, read by the operators through GCSHook with an anonymous connection."""
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", CONNECTION)
    if gcs.lookup_bucket("flights-lake-example") is None:
        gcs.create_bucket("flights-lake-example")
    return gcs.bucket("flights-lake-example")


def _context(try_number: int = 1, max_tries: int = 3, run_id: str = RUN, task_id: str = "ingest_bronze"):
    pushed = {}
    ti = SimpleNamespace(dag_id="flights_daily", task_id=task_id, try_number=try_number, max_tries=max_tries,
                         run_id=run_id, map_index=-1, xcom_push=lambda key, value: pushed.__setitem__(key, value))
    return {"ti": ti, "run_id": run_id, "task_instance": ti, "pushed": pushed}


def _batch_op(settings, **kw):
    kw = {"deferrable": False, "retries": 3, "polling_interval_seconds": 1, **kw}
    return dataproc.instantiate(dataproc.batch(settings, task_id="ingest_bronze", job="bronze_landing", args=ARGS[:2],
                                               code=CODE, interval_key=KEY, **kw))


def _batches_end_as(api, state="SUCCEEDED", message=""):
    """Dataproc runs pending or running batches to ``state`` when the worker next reads them (its wait polls).

    Returns the ids of the batches read, in order."""
    api.outcome = (state, message)
    return api.read


OUTPUT = "gs://flights-lake-example/lake/_runs/ingest_bronze/20130101_20130101.json"


def test_first_try_submits_a_labelled_batch_and_returns_its_checked_output(settings, api, outputs, monkeypatch):
    waited = _batches_end_as(api)
    outputs.blob(OUTPUT.split("/", 3)[3]).upload_from_string(b"{}")
    op = _batch_op(settings, job_output=OUTPUT)
    context = _context()
    assert op.execute(context) == OUTPUT and op.reattached is None
    batch_id = api.only_batch()
    assert waited == [batch_id] == [op.batch_id] and BATCH_ID.match(batch_id) and batch_id.endswith("-t1")
    labels = api.batches[batch_id].labels
    assert labels["airflow_try"] == "1" and labels["project"] == "flights-lakehouse"
    assert len(labels["airflow_run"]) == 20 and labels["airflow_run"] != labels["airflow_stem"]
    assert context["pushed"]["dataproc_batch"]["batch_id"] == batch_id  # the console link


def test_a_succeeded_batch_without_its_output_fails_the_task(settings, api, outputs, monkeypatch):
    _batches_end_as(api)
    with pytest.raises(JobStateError, match=r"Dataproc batch ingest-bronze-.*-t1 succeeded but wrote nothing at "
                                            + re.escape(OUTPUT.replace("20130101.json", "missing.json"))):
        _batch_op(settings, job_output=OUTPUT.replace("20130101.json", "missing.json")).execute(_context())


def test_reading_a_batch_survives_a_503(settings, api, monkeypatch):
    """Batch reads are retried on 429/503/500 (the client library retries none of them by default)."""
    from google.api_core.exceptions import ServiceUnavailable

    op = _batch_op(settings, deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute(_context())
    api.set_batch(op.batch_id, "SUCCEEDED")
    api.unavailable = 2
    assert op.execute_complete(_context(), {"batch_id": op.batch_id}) == op.batch_id
    assert api.unavailable == 0  # both 503s were answered, then the read went through
    api.unavailable = 1
    with pytest.raises(ServiceUnavailable):  # what the same read did without a retry
        api.get_batch({"name": f"projects/{PROJECT}/locations/{REGION}/batches/{op.batch_id}"})


def test_a_failed_batch_fails_the_task_with_its_id_and_state_message(settings, api, monkeypatch):
    _batches_end_as(api, "FAILED", "Job failed with message [ModuleNotFoundError: delta]")
    with pytest.raises(JobStateError, match=r"batch ingest-bronze-\S+-t1 ended FAILED: Job failed with message "
                                            r"\[ModuleNotFoundError: delta\]"):
        _batch_op(settings).execute(_context())


def test_a_retry_returns_the_succeeded_batch_of_its_first_try_without_submitting(settings, api, monkeypatch):
    _batches_end_as(api)
    first = _batch_op(settings).execute(_context())
    retry = _batch_op(settings)
    assert retry.execute(_context(try_number=2)) == first == retry.reattached
    assert list(api.batches) == [first]


def test_a_retry_reattaches_to_the_running_batch_of_its_first_try(settings, api, monkeypatch):
    first = _batch_op(settings, deferrable=True)
    with pytest.raises(TaskDeferred):  # try 1 submits and defers; then its worker dies
        first.execute(_context())
    api.set_batch(first.batch_id, "RUNNING")
    waited = _batches_end_as(api)
    retry = _batch_op(settings)
    assert retry.execute(_context(try_number=2)) == first.batch_id == retry.reattached
    assert waited == [first.batch_id] and list(api.batches) == [first.batch_id]


def test_a_failed_first_try_is_not_reattached_the_retry_submits_its_own(settings, api, monkeypatch):
    _batches_end_as(api, "FAILED", "boom")
    with pytest.raises(JobStateError):
        _batch_op(settings).execute(_context())
    _batches_end_as(api)
    second = _batch_op(settings).execute(_context(try_number=2))
    assert second.endswith("-t2") and len(api.batches) == 2


def test_a_running_batch_from_before_a_clear_is_cancelled_before_the_new_one(settings, api, monkeypatch):
    old = _batch_op(settings, deferrable=True)
    with pytest.raises(TaskDeferred):
        old.execute(_context())
    api.set_batch(old.batch_id, "RUNNING")
    other_run = _batch_op(settings, deferrable=True)
    with pytest.raises(TaskDeferred):  # the same task in another DAG run: never touched
        other_run.execute(_context(run_id="manual__2013-01-01T00:00:00+00:00"))
    cleared = _batch_op(settings, deferrable=True)  # cleared after try 1: max_tries = 1 + retries, try 2 is new
    with pytest.raises(TaskDeferred):
        cleared.execute(_context(try_number=2, max_tries=1 + 3))
    assert cleared.reattached is None and cleared.batch_id.endswith("-t2") and len(api.batches) == 3
    assert api.cancelled == [api.batches[old.batch_id].operation]  # two writers never run at once
    assert api.batches[old.batch_id].state.name == "CANCELLING"
    assert api.batches[other_run.batch_id].state.name == "PENDING"


def test_deferred_batch_goes_to_the_cancelling_trigger_and_the_end_is_read_from_the_server(settings, api):
    from airflow.sdk._shared.module_loading import import_string

    from include.targets.gcp.operators import CancellingDataprocBatchTrigger

    op = _batch_op(settings, deferrable=True, polling_interval_seconds=7)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context())
    classpath, kwargs = deferred.value.trigger.serialize()
    trigger = import_string(classpath)(**kwargs)  # as the triggerer rebuilds it
    assert type(trigger) is CancellingDataprocBatchTrigger and trigger.cancel_on_kill
    assert (trigger.batch_id, trigger.project_id, trigger.region, trigger.polling_interval_seconds) == \
        (op.batch_id, PROJECT, REGION, 7)
    assert deferred.value.timeout.total_seconds() == (120 + 10) * 60  # outlives the batch's TTL
    api.set_batch(op.batch_id, "FAILED", "Executor lost")
    resumed = _batch_op(settings, deferrable=True)  # a resumed task: a new operator, the id from the event
    event = {"batch_id": op.batch_id, "batch_state": "SUCCEEDED", "batch_state_message": ""}
    with pytest.raises(JobStateError, match="ended FAILED: Executor lost"):
        resumed.execute_complete(_context(), event)  # a success event for a failed batch fails the task
    api.set_batch(op.batch_id, "SUCCEEDED")
    assert resumed.execute_complete(_context(), event) == op.batch_id


def test_kill_cancels_the_batch_in_the_worker_and_in_the_triggerer(settings, api, monkeypatch):
    op = _batch_op(settings, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context())
    operation = api.batches[op.batch_id].operation
    op.on_kill()
    assert api.cancelled == [operation]

    api.set_batch(op.batch_id, "RUNNING")
    asyncio.run(deferred.value.trigger.on_kill())  # what the triggerer calls when a deferred task is killed
    assert api.cancelled == [operation, operation]
    api.set_batch(op.batch_id, "SUCCEEDED")
    asyncio.run(deferred.value.trigger.on_kill())  # a finished batch is left alone
    assert len(api.cancelled) == 2


def test_a_batch_id_taken_by_a_listing_miss_is_waited_for_not_resubmitted(settings, api, monkeypatch):
    op = _batch_op(settings)
    monkeypatch.setattr(api, "list_batches", lambda request, **_: [])  # the listing lags behind the create
    api.create_batch({"parent": f"projects/{PROJECT}/regions/{REGION}", "batch": dict(op.batch),
                      "batch_id": _own_batch_id(op)})
    _batches_end_as(api)
    assert op.execute(_context()) == _own_batch_id(op) and len(api.batches) == 1


def _own_batch_id(op) -> str:
    from include.targets.cloud.naming import short_job_name

    return short_job_name("flights_daily", op.task_id, KEY, RUN, 1, lower=True)


def test_a_missing_code_artefact_fails_at_once_naming_it(settings, api, outputs):
    from include.targets.gcp.operators import CodeMissing

    gcp = GcpSettings.example(dataproc_runtime=runtimes.DEFAULT_RUNTIME, artifacts_bucket="flights-lake-example")
    code = {"prefix": "gs://flights-lake-example/artifacts/code/abc123",
            "zip": "gs://flights-lake-example/artifacts/code/abc123/flights.zip"}
    outputs.blob("artifacts/code/abc123/flights.zip").upload_from_string(b"PK")
    op = dataproc.instantiate(dataproc.batch(gcp, task_id="ingest_bronze", job="bronze_landing", args=[], code=code,
                                             interval_key=KEY, require_code=True, deferrable=False))
    missing = r"spark_jobs/bronze_landing\.py, gs://.*/jars/delta-spark_2\.13-4\.0\.0\.jar"
    with pytest.raises(CodeMissing, match=missing):
        op.execute(_context())
    assert api.batches == {}  # nothing submitted


# --- cluster mode ----------------------------------------------------------------------------------


def _job_op(settings, cluster="flights-daily-x", **kw):
    spec = dataproc.cluster_job(settings, "ingest_bronze", "bronze_landing", ARGS[:2], CODE, KEY,
                                **{"deferrable": False, "retries": 3, "polling_interval_seconds": 1, **kw})
    spec.kwargs["job"]["placement"]["cluster_name"] = cluster  # rendered from the create task's XCom in a run
    return dataproc.instantiate(spec)


def _run_jobs_to(monkeypatch, api, state="DONE", details=""):
    """The cluster runs every pending job to ``state`` when the worker polls."""
    real = api.get_job

    def get_job(request, **kw):
        job_id = request["job_id"]
        if api.jobs[job_id].status.state.name in ("PENDING", "RUNNING"):
            api.set_job(job_id, state, details)
        return real(request, **kw)

    monkeypatch.setattr(api, "get_job", get_job)


def test_a_cluster_job_is_submitted_with_its_id_waited_for_and_reattached_on_retry(settings, api, outputs,
                                                                                 monkeypatch):
    _run_jobs_to(monkeypatch, api)
    outputs.blob(OUTPUT.split("/", 3)[3]).upload_from_string(b"{}")
    op = _job_op(settings, job_output=OUTPUT)
    assert op.execute(_context()) == OUTPUT
    [job_id] = api.jobs
    job = api.jobs[job_id]
    assert job_id == op.job_id and job_id.endswith("-t1") and job.labels["airflow_try"] == "1"
    assert job.placement.cluster_name == "flights-daily-x" and list(job.pyspark_job.args) == ARGS[:2]
    retry = _job_op(settings, job_output=OUTPUT)
    assert retry.execute(_context(try_number=2)) == OUTPUT and retry.reattached == job_id
    assert len(api.jobs) == 1  # done: not submitted again


def test_a_failed_cluster_job_fails_with_its_details_and_a_killed_one_is_cancelled(settings, api, monkeypatch):
    _run_jobs_to(monkeypatch, api, "ERROR", "Google Cloud Dataproc Agent reports job failure.")
    op = _job_op(settings)
    with pytest.raises(JobStateError, match=r"job ingest-bronze-\S+-t1 on cluster flights-daily-x ended ERROR: "
                                            r"Google Cloud Dataproc Agent reports job failure"):
        op.execute(_context())
    deferred_op = _job_op(settings, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        deferred_op.execute(_context(try_number=2))
    assert deferred.value.trigger.serialize()[1]["cancel_on_kill"] is True  # the provider's trigger cancels on kill
    assert deferred.value.trigger.job_id == deferred_op.job_id
    deferred_op.on_kill()
    assert api.cancelled == [deferred_op.job_id] and deferred_op.job_id.endswith("-t2")


def test_a_running_cluster_job_from_before_a_clear_is_cancelled(settings, api, monkeypatch):
    old = _job_op(settings, deferrable=True)
    with pytest.raises(TaskDeferred):
        old.execute(_context())
    api.set_job(old.job_id, "RUNNING")
    _run_jobs_to(monkeypatch, api)
    new = _job_op(settings).execute(_context(try_number=2, max_tries=1 + 3))
    assert api.cancelled == [old.job_id] and new != old.job_id


def test_the_create_task_names_the_runs_cluster_before_creating_it(settings, monkeypatch):
    from airflow.providers.google.cloud.operators.dataproc import DataprocCreateClusterOperator

    created = []
    monkeypatch.setattr(DataprocCreateClusterOperator, "execute", lambda self, context: created.append(
        (self.cluster_name, dataproc_v1.Cluster(project_id=PROJECT, cluster_name=self.cluster_name,
                                                config=self.cluster_config, labels=self.labels))))
    op = dataproc.instantiate(dataproc.create_cluster(settings, KEY))
    context = _context()
    name = op.execute(context)
    assert name == dataproc.cluster_name("flights_daily", KEY, RUN) == context["pushed"]["cluster_name"]
    assert created[0][0] == name and CLUSTER.match(name)
    assert op.execute_complete(_context(), {"cluster_state": "RUNNING", "cluster_name": name, "cluster": {}}) == name

    delete = dataproc.instantiate(dataproc.delete_cluster(settings))
    delete.cluster_name = "None"  # the create task never ran: xcom_pull rendered None
    assert delete.execute(_context()) is None  # nothing to delete, no API call (no hook is patched here)
