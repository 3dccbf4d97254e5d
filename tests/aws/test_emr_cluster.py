"""Spark on a transient EMR cluster: rendered requests, and create / step / reattach / cancel on a moto server.

moto accepts the requests and keeps each cluster's steps RUNNING or PENDING forever, so a
test that needs a step to end sets its state in moto's backend, as the cluster would.
moto has no ``CancelSteps``: cancellation is asserted on the exact request a botocore
``Stubber`` receives.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred

from include.targets.aws import emr
from include.targets.aws.cluster import cluster_name
from tests.aws.conftest import ACCOUNT, REGION

CODE = {"prefix": "s3://flights-artifacts-example/artifacts/code/abc123",
        "zip": "s3://flights-artifacts-example/artifacts/code/abc123/flights.zip"}
ARGS = ["--lake", "s3://flights-lake-example/lake", "--start", "{{ ti.xcom_pull(task_ids='resolve_interval')['start'] }}",
        "--end", "2013-01-01", "--run-id", "{{ run_id }}", "--landing", "s3://flights-lake-example/landing"]
KEY = "20130101_20130101"
RUN = "scheduled__2013-01-01T00:00:00+00:00"
MOTO_RELEASE = "emr-7.12.0"  # moto validates labels against emr-X.Y.Z; the pinned release is checked below


def test_specs_pin_the_release_and_end_with_an_all_done_teardown(aws):
    specs = emr.ec2_jobs(aws, code=CODE, interval_key=KEY, jobs=[
        {"task_id": "ingest_bronze", "job": "bronze_landing", "args": ARGS},
        {"task_id": "build_features", "job": "gold_flight_features", "args": ARGS}])
    assert [s.class_name for s in specs] == ["ReattachingEmrCreateJobFlowOperator", "ReattachingEmrStepOperator",
                                            "ReattachingEmrStepOperator", "EmrTerminateJobFlowOperator"]
    create, bronze, _, terminate = specs
    cfg = create.kwargs["job_flow_overrides"]
    assert cfg["ReleaseLabel"] == aws.emr_release == "emr-spark-8.0.0"
    groups = {g["InstanceRole"]: g for g in cfg["Instances"]["InstanceGroups"]}
    assert groups["MASTER"]["InstanceType"] == "m6i.xlarge"
    assert (groups["CORE"]["InstanceType"], groups["CORE"]["InstanceCount"]) == ("m6i.2xlarge", 2)
    assert cfg["AutoTerminationPolicy"]["IdleTimeout"] == 3600  # the backstop if the teardown never runs
    props = next(c for c in cfg["Configurations"] if c["Classification"] == "spark-defaults")["Properties"]
    assert props["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    step_args = bronze.kwargs["step"]["HadoopJarStep"]["Args"]
    assert step_args[:5] == ["spark-submit", "--deploy-mode", "cluster", "--py-files",
                             f"{CODE['zip']},/usr/share/aws/delta/lib/delta-spark.jar"]
    assert step_args[-len(ARGS) - 1:] == [CODE["prefix"] + "/spark_jobs/bronze_landing.py", *ARGS]
    assert bronze.kwargs["deferrable"] is True and bronze.kwargs["job_flow_id"] == emr.CLUSTER_ID
    assert terminate.kwargs["trigger_rule"] == "all_done"
    ops = [emr.instantiate(s) for s in specs]  # every kwarg is accepted by the installed provider
    assert ops[1].waiter_delay * ops[1].waiter_max_attempts == (aws.emr_job_timeout_minutes + 10) * 60
    assert "steps" in ops[1].template_fields and "interval_key" in ops[1].template_fields


def test_cluster_names_are_per_run_and_deterministic():
    a = cluster_name("flights_daily", KEY, RUN)
    assert a == cluster_name("flights_daily", KEY, RUN) and a.startswith(f"flights_daily.{KEY}.")
    assert a != cluster_name("flights_daily", KEY, "manual__2013-01-01T00:00:00+00:00")


# --- against the moto server ------------------------------------------------------------------


def _context(try_number: int = 1, max_tries: int = 3, task_id: str = "ingest_bronze", run_id: str = RUN):
    ti = SimpleNamespace(dag_id="flights_daily", task_id=task_id, try_number=try_number, max_tries=max_tries,
                         run_id=run_id, xcom_push=lambda *a, **k: None, map_index=-1)
    return {"ti": ti, "run_id": run_id, "task_instance": ti}


def _backend():
    from moto.emr.models import emr_backends

    return emr_backends[ACCOUNT][REGION]


def _create(aws, **kw):
    spec = emr.create_cluster(aws, interval_key=KEY, **kw)
    spec.kwargs["job_flow_overrides"] = {**spec.kwargs["job_flow_overrides"], "ReleaseLabel": MOTO_RELEASE}
    return emr.instantiate(spec)


def _step(aws, cluster: str, **kw):
    spec = emr.cluster_step(aws, task_id="ingest_bronze", job="bronze_landing", args=ARGS[:2], code=CODE,
                            interval_key=KEY, **{"deferrable": False, "retries": 3, "waiter_delay": 1, **kw})
    spec.kwargs["job_flow_id"] = cluster
    return emr.instantiate(spec)


def _finish_steps(cluster: str, state: str = "COMPLETED") -> None:
    for s in _backend().clusters[cluster].steps:
        if s.state in ("PENDING", "RUNNING"):
            s.state = state


@pytest.fixture()
def cluster(aws, boto):
    """The run's cluster, terminated after the test (the next test's run gets a new one)."""
    cluster_id = _create(aws).execute(_context())
    yield cluster_id
    boto("emr").terminate_job_flows(JobFlowIds=[cluster_id])


def test_the_run_gets_one_named_cluster_and_a_retry_finds_it(aws, boto, cluster):
    desc = boto("emr").describe_cluster(ClusterId=cluster)["Cluster"]
    assert desc["Name"] == cluster_name("flights_daily", KEY, RUN)
    assert {t["Key"]: t["Value"] for t in desc["Tags"]}["project"] == "flights-lakehouse"
    assert _create(aws).execute(_context(try_number=2)) == cluster  # no second cluster
    other = _create(aws).execute(_context(run_id="manual__2013-01-01T00:00:00+00:00"))
    assert other != cluster
    boto("emr").terminate_job_flows(JobFlowIds=[other])


def test_a_step_is_added_named_waited_for_and_its_output_checked(aws, boto, buckets, cluster, monkeypatch):
    from include.targets.aws.operators import JobStateError

    output = f"s3://{aws.lake_bucket}/lake/_runs/gate/{KEY}.json"
    op = _step(aws, cluster, job_output=output)
    waited = []
    real = op.hook.conn.get_waiter

    def waiter(name):  # the cluster runs the step while the task waits
        w = real(name)
        return SimpleNamespace(wait=lambda **kw: (waited.append(kw["StepId"]), _finish_steps(cluster), w.wait(**kw)))

    monkeypatch.setattr(op.hook.conn, "get_waiter", waiter)
    with pytest.raises(JobStateError, match="wrote nothing at"):
        op.execute(_context())
    steps = boto("emr").list_steps(ClusterId=cluster)["Steps"]
    assert [s["Name"] for s in steps] == [f"flights_daily.ingest_bronze.{KEY}.try1"] and waited == [steps[0]["Id"]]
    assert steps[0]["Config"]["Args"][-2:] == ARGS[:2]
    bucket, _, key = output[len("s3://"):].partition("/")
    buckets.put_object(Bucket=bucket, Key=key, Body=b"{}")
    retry = _step(aws, cluster, job_output=output)
    assert retry.execute(_context(try_number=2)) == output and retry.reattached == steps[0]["Id"]
    assert len(boto("emr").list_steps(ClusterId=cluster)["Steps"]) == 1  # completed: not added again


def test_a_retry_reattaches_to_the_running_step_of_its_first_try(aws, boto, cluster, monkeypatch):
    first = _step(aws, cluster, wait_for_completion=False, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:  # the first try defers, then its worker dies
        first.execute(_context())
    assert deferred.value.trigger.serialize()[0] == "include.targets.aws.cluster.CancellingEmrStepTrigger"
    retry = _step(aws, cluster)
    monkeypatch.setattr(retry.hook.conn, "get_waiter", lambda name: SimpleNamespace(
        wait=lambda **kw: _finish_steps(cluster)))
    assert retry.execute(_context(try_number=2)) == first.step_id == retry.reattached
    assert len(boto("emr").list_steps(ClusterId=cluster)["Steps"]) == 1


def test_a_failed_step_fails_the_task_naming_the_reason_and_the_retry_runs_it_again(aws, boto, cluster, monkeypatch):
    from include.targets.aws.operators import JobStateError

    op = _step(aws, cluster)
    monkeypatch.setattr(op.hook.conn, "get_waiter", lambda name: SimpleNamespace(
        wait=lambda **kw: _finish_steps(cluster, "FAILED")))
    with pytest.raises(JobStateError, match=r"ingest_bronze.*is FAILED"):
        op.execute(_context())
    retry = _step(aws, cluster)
    monkeypatch.setattr(retry.hook.conn, "get_waiter", lambda name: SimpleNamespace(
        wait=lambda **kw: _finish_steps(cluster)))
    assert retry.execute(_context(try_number=2)) != op.step_id  # a failed step is not reattached: try 2 runs
    names = sorted(s["Name"] for s in boto("emr").list_steps(ClusterId=cluster)["Steps"])
    assert names == [f"flights_daily.ingest_bronze.{KEY}.try1", f"flights_daily.ingest_bronze.{KEY}.try2"]


def _stub_cancel(client, step_ids: list[str], cluster: str):
    from botocore.stub import Stubber

    stub = Stubber(client)
    stub.add_response("cancel_steps", {"CancelStepsInfoList": [
        {"StepId": s, "Status": "SUBMITTED"} for s in step_ids]},
        {"ClusterId": cluster, "StepIds": step_ids, "StepCancellationOption": "SEND_INTERRUPT"})
    stub.activate()
    return stub


def test_kill_cancels_the_step_in_the_worker_and_in_the_triggerer(aws, cluster):
    op = _step(aws, cluster, wait_for_completion=False, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context())
    trigger = deferred.value.trigger
    stub = _stub_cancel(op.hook.conn, [op.step_id], cluster)
    op.on_kill()
    stub.assert_no_pending_responses()

    hook = trigger.hook()  # the triggerer's on_kill (Airflow 3.3+) goes through the trigger's hook
    stub = _stub_cancel(hook.conn, [op.step_id], cluster)
    trigger.hook = lambda: hook
    asyncio.run(trigger.on_kill())
    stub.assert_no_pending_responses()


def test_a_running_step_from_before_a_clear_is_cancelled_before_the_new_one(aws, cluster, monkeypatch):
    old = _step(aws, cluster, wait_for_completion=False, deferrable=True)
    with pytest.raises(TaskDeferred):
        old.execute(_context())
    cleared = _step(aws, cluster)  # cleared after try 1: max_tries = 1 + retries, so try 2 starts afresh
    cancelled = []

    def cancel(**kw):  # moto has no CancelSteps: record the request, cancel in the backend
        cancelled.append(kw)
        _finish_steps(cluster, "CANCELLED")
    monkeypatch.setattr(cleared.hook.conn, "cancel_steps", cancel)
    monkeypatch.setattr(cleared.hook.conn, "get_waiter", lambda name: SimpleNamespace(
        wait=lambda **kw: _finish_steps(cluster)))
    new = cleared.execute(_context(try_number=2, max_tries=4))
    assert cancelled == [{"ClusterId": cluster, "StepIds": [old.step_id], "StepCancellationOption": "SEND_INTERRUPT"}]
    assert new != old.step_id and cleared.reattached is None


def test_missing_code_fails_before_adding_a_step(aws, buckets, cluster):
    from include.targets.aws.operators import CodeMissing

    code = {"prefix": f"s3://{aws.artifacts_bucket}/artifacts/code/none",
            "zip": f"s3://{aws.artifacts_bucket}/artifacts/code/none/flights.zip"}
    spec = emr.cluster_step(aws, task_id="ingest_bronze", job="bronze_landing", args=ARGS[:2], code=code,
                            interval_key=KEY, deferrable=False, require_code=True)
    spec.kwargs["job_flow_id"] = cluster
    with pytest.raises(CodeMissing, match="include.targets.aws.artifact"):
        emr.instantiate(spec).execute(_context())
    assert _backend().clusters[cluster].steps == []


def test_a_deferred_step_resumes_when_the_trigger_sees_it_complete(aws, boto, cluster):
    from tests.aws.test_deferred import _first_event, _rebuilt

    op = _step(aws, cluster, deferrable=True, waiter_max_attempts=30)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context())
    trigger = _rebuilt(deferred.value.trigger)  # as the triggerer rebuilds it; it polls moto through aiobotocore
    assert type(trigger).__name__ == "CancellingEmrStepTrigger" and deferred.value.method_name == "execute_complete"
    event = _first_event(trigger, finish=lambda: _finish_steps(cluster))
    assert event == {"status": "success", "value": [op.step_id]}
    resumed = _step(aws, cluster, deferrable=True)  # a fresh operator, as after a deferral
    assert resumed.execute_complete(_context(), event) == op.step_id
