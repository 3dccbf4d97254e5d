"""Spark on Azure through Livy: the rendered requests, and the operator's submit / poll / reattach / cancel / final
checks against Livy's REST API on loopback with real Spark behind it; Synapse by its rendered arguments.

``tests/azure/livy_server.py`` answers Livy's batch API and runs every batch with spark-submit. The
artifacts container is a local folder here (the server resolves ``abfss://`` URIs of the artifacts
root into it): the code zip and entry points are this checkout's artefact, and the runtime's Delta
jars stand for this machine's (``make jars``), since the local Spark is not the runtime's. The
control-plane tests run a small probe script; ``test_abfs_data_plane.py`` runs the real jobs through the
same operator and server, on Azurite.
The Synapse pool has no emulator: its operator is checked by the payload it would send, in the
Synapse client's own wire form.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred

from include.config import REPO_ROOT
from include.targets.azure import livy
from include.targets.azure.settings import AzureSettings
from include.targets.cloud.naming import short_job_name
from include.targets.cloud.reattach import JobStateError
from tests.azure.livy_server import REQUEST_FIELDS, LivyServer, group_alive
from tests.lake_data_plane import connector_jars

KEY = "20130102_20130102"
RUN = "scheduled__2013-01-02T00:00:00+00:00"
DAG = "flights_daily"
TASK = "ingest_bronze"
LIVY_CONN = "AIRFLOW_CONN_AZURE_HDINSIGHT_LIVY"
NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

PROBE = '''"""The Livy tests' probe: prints what Spark was given, then sleeps, writes its output, fails or rejects."""
import argparse, json, sys, time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--out")
p.add_argument("--sleep", type=float, default=0)
p.add_argument("--fail")
p.add_argument("--reject")
a = p.parse_args()
if a.fail:
    raise RuntimeError(a.fail)
if a.reject:
    from spark_jobs.session import JobInputError, run_job

    def main(argv):
        raise JobInputError(a.reject)

    run_job(main, [])
import include.jobs  # from the code zip (pyFiles): the batch has no PYTHONPATH
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
conf = dict(spark.sparkContext.getConf().getAll())
print("PROBE app", conf.get("spark.app.name"), flush=True)
print("PROBE code", include.jobs.__file__, flush=True)
print("PROBE conf", json.dumps({k: v for k, v in conf.items() if k.startswith(("spark.sql.", "spark.hadoop.fs.azure",
                                                                             "spark.delta."))}), flush=True)
print("PROBE rows", spark.range(5).count(), flush=True)
time.sleep(a.sleep)
if a.out:
    Path(a.out).write_text(json.dumps({"app": conf.get("spark.app.name")}))
spark.stop()
'''


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azure() -> AzureSettings:
    return AzureSettings.example(spark_driver_memory="1g", spark_executor_memory="1g", spark_executor_cores=1,
                                 spark_num_executors=1, poll_s=1)


@pytest.fixture(scope="module")
def container(azure, tmp_path_factory):
    """The artifacts container as the cluster sees it: this checkout's code artefact, the probe, the resolver."""
    from include.targets.cloud import artifact

    folder = tmp_path_factory.mktemp("artifacts-container")
    built = artifact.build_artifact()
    code = artifact.code_uris(built, azure.artifacts_root)
    root = azure.artifacts_root + "/"
    local = folder / code["prefix"][len(root):]
    (local / "spark_jobs").mkdir(parents=True)
    (local / artifact.ZIP_NAME).write_bytes(built.zip_bytes)
    for job, body in built.scripts.items():
        (local / "spark_jobs" / f"{job}.py").write_bytes(body)
    (local / "spark_jobs" / "probe.py").write_text(PROBE)
    jars = sorted(str(p) for p in connector_jars("FLIGHTS_JARS_DIR", REPO_ROOT / ".cache" / "jars",
                                                 "delta-spark*.jar", "jars").glob("*.jar"))

    def resolve(uri: str):
        if uri.startswith(root + "jars/"):
            return jars  # the runtime's Delta jars, as this machine's Spark needs them
        return str(folder / uri[len(root):]) if uri.startswith(root) else uri

    def exists(uri: str) -> bool:
        found = resolve(uri)
        return all(Path(p).exists() for p in ([found] if isinstance(found, str) else found))

    return SimpleNamespace(folder=folder, code=code, resolve=resolve, exists=exists)  # also a lake: .exists(uri)


@pytest.fixture(scope="module")
def server(container):
    with LivyServer(master="local[1]", resolve=container.resolve) as running:
        yield running


@pytest.fixture()
def livy_conn(server, monkeypatch):
    monkeypatch.setenv(LIVY_CONN, server.url)
    return server


def _context(try_number: int = 1, max_tries: int = 3, run_id: str = RUN, task_id: str = TASK):
    pushed = {}
    ti = SimpleNamespace(dag_id=DAG, task_id=task_id, try_number=try_number, max_tries=max_tries, run_id=run_id,
                         map_index=-1, xcom_push=lambda key, value: pushed.__setitem__(key, value))
    return {"ti": ti, "run_id": run_id, "task_instance": ti, "pushed": pushed}


def _op(azure, container, args, job="probe", **kw):
    kw = {"deferrable": False, "retries": 3, "exists": container.exists, **kw}
    return livy.instantiate(livy.batch(azure, task_id=TASK, job=job, args=args, code=container.code,
                                       interval_key=KEY, **kw))


def _run(test: str) -> str:
    """A run id of the test's own: Livy keeps finished batches, and a name is one per run and try."""
    return f"manual__2013-01-02T00:00:00+00:00_{test}"


def _name(try_number: int, run_id: str = RUN) -> str:
    return short_job_name(DAG, TASK, KEY, run_id, try_number)


def _first_event(trigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


def _gone(pgid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not group_alive(pgid)


def _http(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- the rendered request -------------------------------------------------------------------------


def test_a_batch_runs_the_job_from_the_artifacts_container_with_the_runtimes_delta(azure):
    from airflow.providers.apache.livy.hooks.livy import LivyHook

    from include.targets.azure.adls import spark_azure_conf
    from include.targets.azure.runtimes import runtime

    code = {"prefix": f"{azure.artifacts_root}/code/abc123", "zip": f"{azure.artifacts_root}/code/abc123/flights.zip"}
    args = ["--lake", azure.lake_root, "--start", "{{ ti.xcom_pull(task_ids='resolve_interval')['start'] }}",
            "--run-id", "{{ run_id }}"]
    spec = livy.batch(azure, task_id=TASK, job="bronze_landing", args=args, code=code, interval_key=KEY,
                      job_output=f"{azure.lake_root}/_quality/x.json")
    assert spec.class_name == "ReattachingLivyOperator"
    op = livy.instantiate(spec)  # every kwarg is accepted by the installed provider
    body = LivyHook.build_post_batch_body(**op.spark_params)  # the provider's own validation of sizes and lists
    assert set(body) <= set(REQUEST_FIELDS)  # Livy refuses any other field
    rt = runtime(azure.spark_runtime)
    jars = [f"{azure.artifacts_root}/jars/{name}" for name in rt.delta_jar_names()]
    assert body["file"] == "abfss://artifacts@flightsexample.dfs.core.windows.net/artifacts/code/abc123/spark_jobs/" \
                           "bronze_landing.py"
    assert body["args"] == args  # the same CLI as spark-submit locally, templates untouched until run time
    assert body["jars"] == jars and body["pyFiles"] == [code["zip"], jars[0]]  # the jar holds `import delta`
    assert (body["driverMemory"], body["executorMemory"], body["executorCores"], body["numExecutors"]) == \
        ("1g", "1g", 1, 1)
    conf = body["conf"]
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert (conf["spark.sql.session.timeZone"], conf["spark.sql.sources.partitionOverwriteMode"]) == ("UTC", "static")
    assert spark_azure_conf(azure).items() <= conf.items()  # ABFS with the cluster's managed identity
    assert "name" not in body  # set per try when the batch is submitted
    assert op.deferrable and op._polling_interval == azure.poll_s and op._livy_conn_id == azure.livy_conn_id
    assert op._extra_headers["X-Requested-By"] and {"interval_key", "job_output"} <= set(op.template_fields)


def test_the_arguments_render_from_the_interval_at_run_time(azure):
    import jinja2

    code = {"prefix": f"{azure.artifacts_root}/code/abc123", "zip": f"{azure.artifacts_root}/code/abc123/flights.zip"}
    op = livy.instantiate(livy.batch(
        azure, task_id=TASK, job="bronze_landing", code=code,
        args=["--start", "{{ ti.xcom_pull(task_ids='resolve_interval')['start'] }}", "--run-id", "{{ run_id }}"],
        interval_key="{{ ti.xcom_pull(task_ids='resolve_interval')['key'] }}",
        job_output="{{ ti.xcom_pull(task_ids='resolve_interval')['key'] }}.json"))
    ti = SimpleNamespace(xcom_pull=lambda task_ids: {"start": "2013-01-02", "key": KEY})
    op.render_template_fields({"ti": ti, "run_id": RUN}, jinja2.Environment())
    assert op.spark_params["args"] == ["--start", "2013-01-02", "--run-id", RUN]
    assert (op.interval_key, op.job_output) == (KEY, f"{KEY}.json")


@pytest.mark.parametrize("dag_id,task_id,key", [
    (DAG, TASK, KEY),
    ("a" * 200, "B" * 250, "20130101_20131231"),
    ("Flights.Training_DAG", "__weird__.TASK__", "{{ not rendered }}"),
    ("x", "y", ""),
])
def test_batch_names_are_deterministic_and_one_per_run_and_try(dag_id, task_id, key):
    from include.targets.azure.livy_operators import batch_names
    from include.targets.cloud.reattach import Identity

    def names(run_id: str, try_number: int) -> dict[str, int]:
        ident = Identity("stem", "name", run_id, try_number, range(1, try_number + 1))
        return batch_names(dag_id, task_id, key, ident)

    first, again = names(RUN, 12), names(RUN, 12)
    other_run = names("manual__2013-01-02T00:00:00+00:00", 12)
    assert first == again and list(first.values()) == list(range(1, 13))  # every try, by the same name each time
    assert not set(first) & set(other_run)  # a run never takes another run's batch
    assert all(NAME.match(n) for n in [*first, *other_run])


def test_only_this_runs_batches_count_and_running_ones_from_before_a_clear_are_stale():
    from include.targets.azure.livy_operators import batch_names, decide
    from include.targets.cloud.reattach import identity

    ctx = _context(try_number=3, max_tries=1 + 3)  # cleared after try 1: tries 2 and 3 are this attempt's
    ident = identity(ctx, KEY, 3)
    names = batch_names(DAG, TASK, KEY, ident)
    batches = [{"id": 0, "name": _name(1), "state": "running"},  # before the clear: stale
               {"id": 1, "name": _name(2), "state": "dead"},
               {"id": 2, "name": _name(2, "manual__x"), "state": "running"},  # another run of the task
               {"id": 3, "name": short_job_name(DAG, "build_features", KEY, RUN, 2), "state": "running"},
               {"id": 4, "name": None, "state": "running"}]  # someone's unnamed batch
    found = decide(batches, names, ident)
    assert found.reattach is None and found.latest.id == "1"
    assert [j.id for j in found.stale] == ["0"]
    found = decide([*batches, {"id": 5, "name": _name(3), "state": "starting"}], names, ident)
    assert found.reattach.id == "5"


def test_livy_refuses_a_misspelt_field_and_a_request_without_its_csrf_header(server):
    before = len(server.posted)
    status, body = _http(f"{server.url}/batches", "POST", {"file": "x.py", "pyfiles": ["a.zip"]},
                         {"X-Requested-By": "t"})
    assert status == 400 and 'Unrecognized field "pyfiles"' in body["msg"]
    status, body = _http(f"{server.url}/batches", "POST", {"file": "x.py"})
    assert status == 400 and "CSRF" in body["msg"]
    assert len(server.posted) == before  # nothing ran


def test_a_missing_code_artefact_fails_at_once_naming_it(azure, container, livy_conn):
    from include.targets.azure.livy_operators import CodeMissing

    code = {**container.code, "zip": container.code["prefix"] + "/missing.zip"}
    op = livy.instantiate(livy.batch(azure, task_id=TASK, job="probe", args=[], code=code, interval_key=KEY,
                                     require_code=True, exists=container.exists, deferrable=False))
    before = len(livy_conn.posted)
    with pytest.raises(CodeMissing, match=r"code/[0-9a-f]+/missing\.zip.*python -m include\.targets\.azure\.artifact"):
        op.execute(_context())
    assert len(livy_conn.posted) == before  # nothing submitted


def test_a_permanent_exit_is_read_from_the_driver_or_from_yarns_diagnostics():
    from include.targets.azure.livy_operators import permanent

    assert permanent(["stdout: ", "PERMANENT FAILURE JobInputError: no landing file"])  # client mode
    assert permanent(["\t diagnostics: User application exited with status 3"])  # YARN cluster mode
    assert permanent(["diagnostics: User application exited with status 2"])  # argparse
    assert not permanent(["diagnostics: User application exited with status 1", "ExitCodeException exitCode=13"])
    assert not permanent(["diagnostics: User application exited with status 30"])


# --- the operator against Livy with Spark behind it -----------------------------------------------


@pytest.fixture(scope="module")
def succeeded(azure, container, server, tmp_path_factory):
    """Try 1 submits, defers, the trigger polls Livy to the end, a resumed operator checks state and output."""
    out = tmp_path_factory.mktemp("probe-out") / "out.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(LIVY_CONN, server.url)
        op = _op(azure, container, ["--out", str(out)], deferrable=True, job_output=str(out))
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(_context())
        trigger = deferred.value.trigger
        from airflow.sdk._shared.module_loading import import_string

        classpath, kwargs = trigger.serialize()
        rebuilt = import_string(classpath)(**kwargs)  # as the triggerer rebuilds it
        event = _first_event(rebuilt)
        resumed = _op(azure, container, ["--out", str(out)], deferrable=True, job_output=str(out))
        context = _context()
        result = resumed.execute_complete(context, event)
    return SimpleNamespace(op=op, deferred=deferred.value, rebuilt=rebuilt, event=event, result=result, out=out,
                           context=context, batch=server.batch(op._batch_id))


@pytest.mark.slow
def test_first_try_submits_a_batch_named_for_its_run_and_try_and_returns_its_output(succeeded, server):
    assert succeeded.result == str(succeeded.out) and succeeded.out.exists()
    batch = succeeded.batch
    assert batch.name == _name(1) and batch.state == "success" and succeeded.op.reattached is None
    assert succeeded.event["status"] == "success" and succeeded.event["batch_id"] == batch.id
    assert type(succeeded.rebuilt).__name__ == "CancellingLivyTrigger" and succeeded.rebuilt.cancel_on_kill
    assert succeeded.deferred.timeout.total_seconds() == (120 + 10) * 60  # outlives the trigger's own timeout
    log = "\n".join(batch.log())
    assert f"PROBE app {_name(1)}" in log  # the batch name reached spark-submit
    assert re.search(r"PROBE code \S+flights\.zip/include/jobs\.py", log)  # the project's code came from pyFiles
    conf = json.loads(next(line for line in batch.log() if line.startswith("PROBE conf "))[len("PROBE conf "):])
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.delta.logStore.abfss.impl"] == "io.delta.storage.AzureLogStore"
    assert succeeded.context["pushed"]["app_id"] is None  # Livy's appId (a YARN id on HDInsight) goes to XCom


@pytest.mark.slow
def test_a_retry_returns_the_succeeded_batch_of_its_first_try_without_submitting(succeeded, azure, container,
                                                                                livy_conn):
    before = len(livy_conn.posted)
    retry = _op(azure, container, ["--out", str(succeeded.out)], job_output=str(succeeded.out))
    assert retry.execute(_context(try_number=2)) == str(succeeded.out)
    assert retry.reattached == succeeded.batch.id and len(livy_conn.posted) == before


@pytest.mark.slow
def test_a_succeeded_batch_without_its_output_fails_the_task(succeeded, azure, container, livy_conn):
    missing = succeeded.out.with_name("missing.json")
    retry = _op(azure, container, ["--out", str(succeeded.out)], job_output=str(missing))
    with pytest.raises(JobStateError, match=rf"Livy batch {succeeded.batch.id} \({_name(1)}\) succeeded but wrote "
                                            rf"nothing at {re.escape(str(missing))}"):
        retry.execute(_context(try_number=2))


@pytest.mark.slow
def test_a_retry_reattaches_to_the_running_batch_of_its_first_try_and_a_kill_deletes_it(azure, container, livy_conn):
    run = _run("reattach")
    first = _op(azure, container, ["--sleep", "600"], deferrable=True)
    with pytest.raises(TaskDeferred):  # try 1 submits and defers; then its worker dies
        first.execute(_context(run_id=run))
    livy_conn.wait_for_log(first._batch_id, "PROBE rows")  # Spark is up and running the job
    pgid = livy_conn.batch(first._batch_id).pgid
    assert group_alive(pgid)
    before = len(livy_conn.posted)

    retry = _op(azure, container, ["--sleep", "600"], deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        retry.execute(_context(try_number=2, run_id=run))
    assert retry.reattached == first._batch_id == deferred.value.trigger.batch_id
    assert len(livy_conn.posted) == before  # no second batch writing the same partitions

    retry.on_kill()  # the task is killed: its batch is deleted, and Spark with it
    assert ("DELETE", f"/batches/{first._batch_id}") in livy_conn.requests
    assert _gone(pgid), f"Spark processes left: {group_alive(pgid)}"
    assert livy_conn.batch(first._batch_id).state == "killed"
    assert _http(f"{livy_conn.url}/batches/{first._batch_id}")[0] == 404
    retry.on_kill()  # a batch already gone is not an error


@pytest.mark.slow
def test_a_running_batch_from_before_a_clear_is_deleted_before_the_new_one(azure, container, livy_conn):
    run = _run("clear")
    old = _op(azure, container, ["--sleep", "600"], deferrable=True)
    with pytest.raises(TaskDeferred):
        old.execute(_context(run_id=run))
    old_pgid = None
    for _ in range(100):
        old_pgid = livy_conn.batch(old._batch_id).pgid
        if old_pgid:
            break
        time.sleep(0.1)
    cleared = _op(azure, container, ["--sleep", "600"], deferrable=True)  # cleared after try 1: try 2 is new
    with pytest.raises(TaskDeferred) as deferred:
        cleared.execute(_context(try_number=2, max_tries=1 + 3, run_id=run))
    assert cleared.reattached is None and old._batch_id in livy_conn.deleted  # two writers never run at once
    assert _gone(old_pgid)
    new = livy_conn.batch(cleared._batch_id)
    assert new.name == _name(2, run) and new.state in ("starting", "running")

    asyncio.run(deferred.value.trigger.on_kill())  # killed while deferred: the triggerer deletes the batch
    assert cleared._batch_id in livy_conn.deleted
    livy_conn.wait_done(cleared._batch_id, 30)
    assert new.pgid is None or _gone(new.pgid)


@pytest.mark.slow
def test_a_batch_past_its_timeout_is_deleted_whichever_way_the_wait_ended(azure, container, livy_conn):
    timed_out = _op(azure, container, ["--sleep", "600"], deferrable=True)
    with pytest.raises(TaskDeferred):
        timed_out.execute(_context(run_id=_run("timeout")))
    with pytest.raises(JobStateError, match=r"still running after 120 minutes: deleted it"):  # the trigger's timeout
        timed_out.execute_complete(_context(run_id=_run("timeout")),
                                   {"status": "timeout", "batch_id": timed_out._batch_id})
    assert timed_out._batch_id in livy_conn.deleted

    polled = _op(azure, container, ["--sleep", "600"], deferrable=True)
    with pytest.raises(TaskDeferred):
        polled.execute(_context(run_id=_run("poll-error")))
    # The trigger gave up on an error while the batch runs on: the worker polls it, here past a zero timeout.
    polled.timeout_minutes = 0
    with pytest.raises(JobStateError, match=r"still running after 0 minutes: deleted it"):
        polled.execute_complete(_context(run_id=_run("poll-error")),
                                {"status": "error", "batch_id": polled._batch_id, "response": "poll failed"})
    assert polled._batch_id in livy_conn.deleted
    for batch_id in (timed_out._batch_id, polled._batch_id):
        batch = livy_conn.wait_done(batch_id, 30)
        assert batch.state == "killed" and (batch.pgid is None or _gone(batch.pgid))


@pytest.mark.slow
def test_a_dead_batch_fails_the_task_with_the_tail_of_its_log(azure, container, livy_conn):
    from airflow.sdk.exceptions import AirflowFailException

    op = _op(azure, container, ["--fail", "boom: the lake answered 503"])
    with pytest.raises(JobStateError, match=r"(?s)Livy batch \d+ \(.*-t1\) ended dead\. Driver log: in the Livy log "
                                            r"below\. The last lines of its Livy log:"
                                            r".*RuntimeError: boom: the lake answered 503") as failed:
        op.execute(_context(run_id=_run("dead")))
    assert not isinstance(failed.value, AirflowFailException)  # retried: the next try may succeed


@pytest.mark.slow
def test_bad_input_fails_the_task_without_retries(azure, container, livy_conn):
    from airflow.sdk.exceptions import AirflowFailException

    op = _op(azure, container, ["--reject", "no landing file for 2013-01-02"])
    with pytest.raises(AirflowFailException, match=r"(?s)ended dead.*PERMANENT FAILURE JobInputError: no landing "
                                                   r"file for 2013-01-02"):
        op.execute(_context(run_id=_run("reject")))


# --- Synapse: the rendered payload ----------------------------------------------------------------


def test_on_synapse_the_payload_renders_the_same_job_named_for_its_run_and_try():
    import jinja2
    from azure.synapse.spark import models
    from azure.synapse.spark.models import SparkBatchJobOptions
    from msrest import Serializer

    from include.targets.azure.adls import spark_azure_conf

    synapse = AzureSettings.example(spark_service="synapse", spark_runtime="synapse-3.5")
    code = {"prefix": f"{synapse.artifacts_root}/code/abc123",
            "zip": f"{synapse.artifacts_root}/code/abc123/flights.zip"}
    spec = livy.batch(synapse, task_id=TASK, job="bronze_landing", code=code, interval_key="{{ params.key }}",
                      args=["--start", "{{ params.start }}", "--run-id", "{{ run_id }}"],
                      job_output="{{ params.out }}", retries=3)
    assert spec.class_name == "SynapseSparkBatchOperator"
    assert set(spec.kwargs["payload"]) <= set(SparkBatchJobOptions._attribute_map)  # no field the client drops
    op = livy.instantiate(spec)
    assert (op.spark_pool, op.azure_synapse_conn_id) == ("flightspool", "azure_synapse_default")
    assert (op.check_interval, op.timeout) == (synapse.poll_s, 120 * 60)
    context = {**_context(try_number=2), "params": {"key": KEY, "start": "2013-01-02", "out": "abfss://o"}}
    op.render_template_fields(context, jinja2.Environment())
    payload = op.job_payload(context)
    wire = Serializer({k: v for k, v in models.__dict__.items() if isinstance(v, type)}).body(
        payload, "SparkBatchJobOptions")  # what the Synapse client sends
    jars = [f"{synapse.artifacts_root}/jars/delta-spark_2.12-3.2.1.jar",
            f"{synapse.artifacts_root}/jars/delta-storage-3.2.1.jar"]
    assert wire["name"] == _name(2) and NAME.match(wire["name"])
    assert wire["file"] == code["prefix"] + "/spark_jobs/bronze_landing.py"
    assert wire["args"] == ["--start", "2013-01-02", "--run-id", RUN]
    assert wire["jars"] == jars and wire["pyFiles"] == [code["zip"], jars[0]]
    assert wire["conf"]["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert spark_azure_conf(synapse).items() <= wire["conf"].items()
    assert (wire["driverMemory"], wire["driverCores"], wire["executorMemory"], wire["executorCores"],
            wire["numExecutors"]) == ("4g", 2, "4g", 2, 2)
    assert wire["tags"] == {"project": "flights-lakehouse"}
    assert (op.interval_key, op.job_output) == (KEY, "abfss://o")
    assert op.job_payload(context) == payload  # the same name on every call of the same try
    assert op.job_payload({**context, **_context(try_number=3)})["name"] == _name(3)
