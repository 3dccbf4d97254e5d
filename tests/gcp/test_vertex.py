"""Vertex AI training: the rendered CustomJob, its names, and the operator's create / reattach / cancel / check.

The Google API is answered at the client boundary: ``FakeJobService`` stands in for the
``JobServiceClient`` the provider's hook returns, validates every request with the real
``aiplatform_v1`` request types and answers with real ``CustomJob`` messages. Outputs are
checked in the Cloud Storage emulator (``tests/gcp/conftest.py``) through the provider's GCS hook.
"""

from __future__ import annotations

import asyncio
import copy
import re
from types import SimpleNamespace

import pytest

from include.targets.cloud.naming import short_job_name
from include.targets.cloud.reattach import JobStateError
from include.targets.cloud.spec import instantiate
from include.targets.gcp import vertex
from include.targets.gcp.settings import GcpSettings
from tests.gcp.fakes import FakeJobService

PARAMS = {"n_estimators": 400, "max_depth": 6, "learning_rate": 0.08, "device": "cuda"}
DATASET = "gs://flights-lake-example/lake/exports/training/20130101_20130228/manual__2013-03-01"
SOURCEDIR = "gs://flights-artifacts-example/artifacts/code/abc/sourcedir.tar.gz"
INTERVAL = "20130101_20130228"
RUN_ID = "manual__2013-03-01T00:00:00+00:00"
DAG, TASK = "flights_training", "train_models"


def _job(body: dict):
    from google.cloud.aiplatform_v1 import CustomJob

    return CustomJob(body)


# --- the rendered job ------------------------------------------------------------------------------


def test_the_rendered_job_is_a_valid_custom_job_on_a_gpu():
    gcp = GcpSettings.example()
    spec = vertex.custom_job(gcp, task_id=TASK, interval_key=INTERVAL, dataset_uri=DATASET, sourcedir_uri=SOURCEDIR,
                             params=PARAMS)
    job = _job(spec.kwargs["custom_job"])  # the real message type: every field name and enum value must exist
    [pool] = job.job_spec.worker_pool_specs
    assert (pool.machine_spec.machine_type, pool.machine_spec.accelerator_type.name,
            pool.machine_spec.accelerator_count) == ("g2-standard-8", "NVIDIA_L4", 1)
    assert pool.replica_count == 1
    container = pool.container_spec
    assert container.image_uri == "us-docker.pkg.dev/vertex-ai/training/xgboost-gpu.2-1:latest"
    assert list(container.command[:2]) == ["/bin/bash", "-c"] and container.command[2] == vertex.BOOTSTRAP
    assert "exec python3 include/targets/gcp/vertex_entry.py \"$@\"" in vertex.BOOTSTRAP  # a file: no Airflow import
    assert list(container.args) == ["--data-dir", DATASET + "/data", "--n_estimators", "400", "--max_depth", "6",
                                    "--learning_rate", "0.08", "--device", "cuda"]
    assert {e.name: e.value for e in container.env} == {
        "FLIGHTS_SOURCEDIR": "/gcs/flights-artifacts-example/artifacts/code/abc/sourcedir.tar.gz"}  # FUSE path
    assert job.job_spec.scheduling.timeout.total_seconds() == 3600
    assert job.job_spec.scheduling.strategy.name == "STRATEGY_UNSPECIFIED"  # on-demand unless spot is asked for
    assert job.job_spec.service_account == "flights-vertex@flights-example.iam.gserviceaccount.com"
    assert job.job_spec.base_output_directory.output_uri_prefix.startswith(
        "gs://flights-artifacts-example/artifacts/training/")
    assert dict(job.labels) == {"project": "flights-lakehouse"}
    assert spec.kwargs["deferrable"] is True and spec.kwargs["wait_timeout_s"] == 3600 + 900


def test_spot_and_cpu_only_settings_render():
    gcp = GcpSettings.example(training_spot=True, training_accelerator_count=0, training_max_runtime_s=600,
                              training_machine_type="n2-standard-8", region="europe-west4")
    spec = vertex.custom_job(gcp, task_id=TASK, interval_key=INTERVAL, dataset_uri=DATASET, sourcedir_uri=SOURCEDIR,
                             params={})
    job = _job(spec.kwargs["custom_job"])
    machine = job.job_spec.worker_pool_specs[0].machine_spec
    assert machine.accelerator_count == 0 and machine.accelerator_type.name == "ACCELERATOR_TYPE_UNSPECIFIED"
    assert job.job_spec.scheduling.strategy.name == "SPOT" and job.job_spec.scheduling.timeout.total_seconds() == 600
    assert job.job_spec.worker_pool_specs[0].container_spec.image_uri.startswith("europe-docker.pkg.dev/")
    assert spec.kwargs["wait_timeout_s"] == 600 + 3600  # a spot GPU may queue for a while


def test_a_misspelt_field_fails_validation():
    body = vertex.custom_job_body(GcpSettings.example(), display_name="x", dataset_uri=DATASET,
                                  sourcedir_uri=SOURCEDIR, params={})
    bad = copy.deepcopy(body)
    machine = bad["job_spec"]["worker_pool_specs"][0]["machine_spec"]
    machine["acelerator_type"] = machine.pop("accelerator_type")
    with pytest.raises(ValueError, match="acelerator_type"):
        _job(bad)
    _job(body)  # the same body, spelt right, is accepted


def test_unknown_hyperparameters_and_non_gcs_code_are_refused():
    with pytest.raises(ValueError, match="Unknown hyperparameters"):
        vertex.custom_job_body(GcpSettings.example(), display_name="x", dataset_uri=DATASET, sourcedir_uri=SOURCEDIR,
                               params={"eta": 0.1})
    with pytest.raises(ValueError, match="gs://"):
        vertex.custom_job_body(GcpSettings.example(), display_name="x", dataset_uri=DATASET,
                               sourcedir_uri="s3://b/sourcedir.tar.gz", params={})


def test_display_names_are_deterministic_per_try_and_valid_labels():
    first = short_job_name(DAG, TASK, INTERVAL, RUN_ID, 1)
    assert first == short_job_name(DAG, TASK, INTERVAL, RUN_ID, 1)  # a retry computes the same name
    assert short_job_name(DAG, TASK, INTERVAL, RUN_ID, 2) != first and first.endswith("-t1")
    assert short_job_name(DAG, TASK, INTERVAL, "manual__other", 1) != first
    assert len(first) <= 63 and re.fullmatch(r"[A-Za-z0-9-]+", first)
    key = vertex.job_key(DAG, TASK, INTERVAL, RUN_ID)
    assert key == vertex.job_key(DAG, TASK, INTERVAL, RUN_ID) and re.fullmatch(r"[a-z0-9_-]{1,63}", key)
    assert vertex.label_value("Manual__2013-03-01T00:00:00+00:00") == "manual__2013-03-01t00-00-00-00-00"


# --- a JobServiceClient answered at the boundary ---------------------------------------------------


@pytest.fixture()
def jobs(monkeypatch):
    from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook

    fake = FakeJobService()
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", '{"conn_type": "google_cloud_platform"}')
    monkeypatch.setattr(CustomJobHook, "get_job_service_client", lambda self, region=None: fake)
    return fake


@pytest.fixture()
def storage(monkeypatch, buckets):
    """The provider's GCS hook answered by the Cloud Storage emulator."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", '{"conn_type": "google_cloud_platform"}')
    monkeypatch.setattr(GCSHook, "get_conn", lambda self: buckets)
    gcp = GcpSettings.example()
    for blob in buckets.list_blobs(gcp.artifacts_bucket, prefix="artifacts/training/"):
        blob.delete()  # the emulator lives for the whole test run: each test starts with no outputs
    return buckets


def _context(try_number, max_tries=2, run_id=RUN_ID):
    ti = SimpleNamespace(dag_id=DAG, task_id=TASK, try_number=try_number, max_tries=max_tries, run_id=run_id,
                         xcom_push=lambda *a, **k: None)
    return {"ti": ti, "run_id": run_id, "task_instance": ti}


def _operator(gcp, **kw):
    kw.setdefault("deferrable", False)
    spec = vertex.custom_job(gcp, task_id=TASK, interval_key=INTERVAL, dataset_uri=DATASET, sourcedir_uri=SOURCEDIR,
                             params=PARAMS, retries=2, poll_interval=0, **kw)
    return instantiate(spec)


def _model_dir(gcp, try_number, run_id=RUN_ID) -> str:
    return f"{gcp.training_output_uri}{short_job_name(DAG, TASK, INTERVAL, run_id, try_number)}/model"


def _write_metrics(client, model_dir: str) -> None:
    bucket, _, key = model_dir[len("gs://"):].partition("/")
    client.bucket(bucket).blob(f"{key}/metrics.json").upload_from_string(b'{"metrics": {}, "params": {}}')


def _deferral(op, context):
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    return deferred.value


# --- the operator ------------------------------------------------------------------------------------


def test_submit_waits_and_returns_the_model_folder(gcp, jobs, storage):
    _write_metrics(storage, _model_dir(gcp, 1))
    result = _operator(gcp).execute(_context(1))
    [name] = jobs.created
    job = jobs.jobs[name]
    assert job.display_name == short_job_name(DAG, TASK, INTERVAL, RUN_ID, 1)
    assert job.labels["flights_try"] == "1" and job.labels["flights_job"] == vertex.job_key(DAG, TASK, INTERVAL, RUN_ID)
    assert job.labels["airflow_task"] == "train_models" and job.labels["project"] == "flights-lakehouse"
    assert job.job_spec.base_output_directory.output_uri_prefix == _model_dir(gcp, 1)[:-len("model")]
    assert result == {"job_name": name, "display_name": job.display_name, "state": "JOB_STATE_SUCCEEDED",
                      "model_dir": _model_dir(gcp, 1)}


def test_a_retry_reattaches_to_the_running_job_of_its_attempt(gcp, jobs, storage):
    first = _operator(gcp, deferrable=True)
    deferral = _deferral(first, _context(1))
    [name] = jobs.created
    assert deferral.trigger.job_name == name and first.job_name == name

    retry = _operator(gcp, deferrable=True)  # the worker died; try 2 of the same attempt
    deferral = _deferral(retry, _context(2))
    assert jobs.created == [name] and retry.reattached == name  # no second job
    assert deferral.trigger.job_name == name and deferral.method_name == "execute_complete"
    assert deferral.timeout.total_seconds() == 3600 + 900


def test_a_retry_returns_the_job_that_already_succeeded(gcp, jobs, storage):
    _write_metrics(storage, _model_dir(gcp, 1))
    body = vertex.with_identity(_operator(gcp).custom_job, display_name=short_job_name(DAG, TASK, INTERVAL, RUN_ID, 1),
                                output_root=gcp.training_output_uri,
                                labels={"flights_job": vertex.job_key(DAG, TASK, INTERVAL, RUN_ID), "flights_try": "1"})
    name = jobs.add(body, "JOB_STATE_SUCCEEDED")
    op = _operator(gcp, deferrable=True)
    result = op.execute(_context(2))  # returns at once: nothing to wait for
    assert jobs.created == [] and op.reattached == name and result["model_dir"] == _model_dir(gcp, 1)


def test_a_cleared_task_cancels_the_stale_job_and_submits_anew(gcp, jobs, storage):
    key = vertex.job_key(DAG, TASK, INTERVAL, RUN_ID)
    base = _operator(gcp).custom_job
    stale = jobs.add(vertex.with_identity(base, display_name="old-t2", output_root=gcp.training_output_uri,
                                          labels={"flights_job": key, "flights_try": "2"}), "JOB_STATE_RUNNING")
    other_run = jobs.add(vertex.with_identity(base, display_name="other-t3", output_root=gcp.training_output_uri,
                                              labels={"flights_job": "another-run", "flights_try": "3"}),
                         "JOB_STATE_RUNNING")
    _write_metrics(storage, _model_dir(gcp, 3))
    result = _operator(gcp).execute(_context(3, max_tries=5))  # cleared after try 2: this attempt is try 3 only
    assert jobs.cancelled == [stale]  # the old attempt's job stops writing the same outputs
    assert other_run not in jobs.cancelled  # another run's job is none of this task's business
    [new] = jobs.created
    assert jobs.jobs[new].labels["flights_try"] == "3" and result["job_name"] == new


def test_a_failed_job_fails_the_task_with_its_error(gcp, jobs, storage):
    op = _operator(gcp)
    jobs.final = {"projects/flights-example/locations/us-central1/customJobs/4000": "JOB_STATE_FAILED"}
    with pytest.raises(JobStateError, match="ended JOB_STATE_FAILED: The replica workerpool0-0 exited"):
        op.execute(_context(1))


def test_success_without_metrics_json_fails_the_task(gcp, jobs, storage):
    with pytest.raises(JobStateError, match=r"succeeded but wrote nothing at gs://.*/model/metrics.json"):
        _operator(gcp).execute(_context(1))


def test_a_success_event_for_a_job_that_failed_fails_the_task(gcp, jobs, storage):
    op = _operator(gcp, deferrable=True)
    _deferral(op, _context(1))
    [name] = jobs.created
    jobs.jobs[name].state = "JOB_STATE_FAILED"
    jobs.jobs[name].error.message = "out of memory"
    with pytest.raises(JobStateError, match="ended JOB_STATE_FAILED: out of memory"):
        op.execute_complete(_context(1), {"status": "success", "job_name": name, "state": "JOB_STATE_SUCCEEDED"})


def test_a_failed_wait_leaves_the_job_for_the_retry(gcp, jobs, storage):
    op = _operator(gcp, deferrable=True)
    _deferral(op, _context(1))
    [name] = jobs.created
    jobs.jobs[name].state = "JOB_STATE_RUNNING"
    jobs.final[name] = "JOB_STATE_RUNNING"  # still running when the task resumes
    with pytest.raises(JobStateError, match="was not cancelled .* the retry reattaches"):
        op.execute_complete(_context(1), {"status": "error", "job_name": name, "message": "ServiceUnavailable"})
    assert jobs.cancelled == []


def test_on_kill_cancels_the_job(gcp, jobs, storage):
    op = _operator(gcp, deferrable=True)
    _deferral(op, _context(1))
    [name] = jobs.created
    op.on_kill()
    assert jobs.cancelled == [name] and jobs.jobs[name].state.name == "JOB_STATE_CANCELLING"
    jobs.jobs[name].state = "JOB_STATE_CANCELLED"
    op.on_kill()  # the job is over: the service refuses (FailedPrecondition), the kill goes on without error
    assert jobs.cancelled == [name]


# --- the trigger -------------------------------------------------------------------------------------


def _rebuilt(trigger):
    """The trigger as the triggerer runs it: from its serialized classpath and kwargs."""
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**kwargs)


def _first_event(trigger) -> dict:
    async def wait():
        return (await asyncio.wait_for(anext(trigger.run()), 10)).payload

    return asyncio.run(wait())


def test_the_trigger_polls_until_the_job_ends_and_the_task_resumes(gcp, jobs, storage):
    _write_metrics(storage, _model_dir(gcp, 1))
    op = _operator(gcp, deferrable=True)
    deferral = _deferral(op, _context(1))
    trigger = _rebuilt(deferral.trigger)
    trigger.poll_interval = 0
    jobs.fail_gets = 2  # transient API errors do not end the wait
    event = _first_event(trigger)
    assert event["status"] == "success" and event["state"] == "JOB_STATE_SUCCEEDED" and jobs.gets >= 4
    resumed = _operator(gcp, deferrable=True)  # a new operator instance, as after deferral
    assert resumed.execute_complete(_context(1), event)["model_dir"] == _model_dir(gcp, 1)


def test_the_trigger_reports_a_failed_job_and_gives_up_after_repeated_poll_errors(gcp, jobs, storage):
    op = _operator(gcp, deferrable=True)
    trigger = _rebuilt(_deferral(op, _context(1)).trigger)
    trigger.poll_interval = 0
    [name] = jobs.created
    jobs.final[name] = "JOB_STATE_FAILED"
    assert _first_event(trigger) == {"status": "failed", "job_name": name, "state": "JOB_STATE_FAILED",
                                     "message": "The replica workerpool0-0 exited with a non-zero status of 1."}
    jobs.fail_gets = 10
    trigger.max_poll_errors = 3
    event = _first_event(trigger)
    assert event["status"] == "error" and "ServiceUnavailable" in event["message"]


def test_killing_the_deferred_task_cancels_the_job(gcp, jobs, storage):
    op = _operator(gcp, deferrable=True)
    trigger = _rebuilt(_deferral(op, _context(1)).trigger)
    [name] = jobs.created
    asyncio.run(trigger.on_kill())
    assert jobs.cancelled == [name]


# --- collect -----------------------------------------------------------------------------------------


def test_collect_refuses_a_job_that_did_not_succeed(gcp, tmp_path):
    from include.config import ConfigError

    with pytest.raises(ConfigError, match="JOB_STATE_FAILED, not JOB_STATE_SUCCEEDED"):
        vertex.VertexTrainer(gcp, tmp_path).collect({"job_name": "j", "state": "JOB_STATE_FAILED"})
    with pytest.raises(ConfigError, match="Vertex AI custom job of the train_models task"):
        vertex.VertexTrainer(gcp, tmp_path).train(None)
