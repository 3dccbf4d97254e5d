"""Azure ML training: the rendered command job, its names, and the operator's submit / reattach / cancel / check.

Azure ML is answered at the client boundary: ``FakeMLClient`` stands in for the ``MLClient`` the
operator builds (``azure.ai.ml.MLClient`` is replaced by its ``connect``), validates every job with
the SDK's own validation and REST conversion, and answers with real SDK entities. Job outputs are
local folders behind the fake's datastores.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest

from include.targets.azure import azureml
from include.targets.azure.settings import AzureSettings
from include.targets.cloud.artifact import pinned_requirements
from include.targets.cloud.naming import training_job_name
from include.targets.cloud.reattach import JobStateError
from include.targets.cloud.spec import instantiate
from tests.azure.azureml_fakes import USER_ERROR, FakeMLClient

PARAMS = {"n_estimators": 400, "max_depth": 6, "learning_rate": 0.08, "device": "cuda"}
TEMPLATED = {k: "{{ params.%s }}" % k for k in PARAMS}  # what the step factory passes
DATASET = "abfss://lake@flightsexample.dfs.core.windows.net/lake/exports/training/20130101_20130228/manual__2013-03-01"
CODE = {"sourcedir": "abfss://artifacts@flightsexample.dfs.core.windows.net/artifacts/code/abc/sourcedir.tar.gz",
        "sha256": "abc"}
INTERVAL = "20130101_20130228"
RUN_ID = "manual__2013-03-01T00:00:00+00:00"
DAG, TASK = "flights_training", "train_models"


def _request(azure, **kw) -> dict:
    kw = {"name": "train-models-t1", "dataset_uri": DATASET, "sourcedir_uri": CODE["sourcedir"], "params": PARAMS,
          "requirements": pinned_requirements(), **kw}
    return azureml.job_request(azureml.command_job(azure, **kw))


# --- the rendered job ------------------------------------------------------------------------------


def test_the_rendered_job_is_a_valid_command_job_on_the_gpu_cluster():
    azure = AzureSettings.example()
    spec = azureml.training_job(azure, task_id=TASK, dataset_uri=DATASET, interval_key=INTERVAL, params=TEMPLATED,
                                code=CODE, execution_timeout=timedelta(hours=2))
    kw = spec.kwargs
    assert spec.operator == azureml.TRAINING_OPERATOR and kw["execution_timeout"] == timedelta(hours=2)
    assert kw["deferrable"] is True and kw["wait_timeout_s"] == 3600 + 900 and kw["hyperparameters"] == TEMPLATED
    assert AzureSettings(**kw["settings"]) == azure  # the operator rebuilds the job from these settings

    body = _request(azure)["properties"]  # the SDK's REST body: every field and enum value exists
    assert body["jobType"] == "Command" and body["computeId"] == "gpu-cluster"
    assert body["resources"] == {"instanceCount": 1, "properties": {}}  # the cluster's VM size is the cluster's
    assert body["limits"] == {"timeout": "PT1H", "jobLimitsType": "Command"} and "queueSettings" not in body
    assert body["inputs"]["dataset"] == {"uri": DATASET, "mode": "ReadOnlyMount", "jobInputType": "uri_folder"}
    assert body["inputs"]["code"] == {"uri": CODE["sourcedir"], "mode": "Download", "jobInputType": "uri_file"}
    assert {k: body["inputs"][k]["value"] for k in PARAMS} == {k: str(v) for k, v in PARAMS.items()}
    assert body["outputs"] == {"model": {
        "uri": "azureml://datastores/flights_artifacts/paths/artifacts/training/train-models-t1/model/",
        "mode": "ReadWriteMount", "jobOutputType": "uri_folder"}}  # the artifacts container, through a datastore
    command = body["command"]
    assert f"exec python {azureml.ENTRY_POINT} " in command  # a file: the image has no Airflow
    assert '--data-dir "${{inputs.dataset}}/data" --model-dir "${{outputs.model}}"' in command
    assert "--device ${{inputs.device}}" in command and "--checkpoint-dir" not in command
    assert body["tags"] == {"project": "flights-lakehouse"}


def test_the_task_spec_is_built_at_parse_time_without_the_sdk():
    import subprocess
    import sys

    probe = ("import json, sys; from include.targets.azure import azureml; "
             "from include.targets.azure.settings import AzureSettings; "
             f"azureml.training_job(AzureSettings.example(), task_id='t', dataset_uri={DATASET!r}, "
             f"interval_key='{{{{ k }}}}', params={TEMPLATED!r}, code={CODE!r}); "
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('azure.ai', 'azure.identity', "
             "'airflow')))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # the SDK's import alone takes seconds


def test_the_environment_installs_the_requirements_shipped_with_the_code():
    import io
    import tarfile

    from include.targets.cloud.artifact import build_artifact

    job = azureml.command_job(AzureSettings.example(), name="n", dataset_uri=DATASET, sourcedir_uri=CODE["sourcedir"],
                              params={}, requirements=pinned_requirements())
    env = job.environment
    assert env.image == azureml.DEFAULT_IMAGE and "cuda" in env.image
    with tarfile.open(fileobj=io.BytesIO(build_artifact().sourcedir_bytes), mode="r:gz") as tf:
        shipped = tf.extractfile("requirements.txt").read().decode().split()
    python, pip, pins = env.conda_file["dependencies"]
    assert python == "python=3.11" and pip == "pip" and pins == {"pip": shipped}  # the same pins, xgboost included
    custom = azureml.command_job(AzureSettings.example(training_environment_image="myacr.azurecr.io/train:1"),
                                 name="n", dataset_uri=DATASET, sourcedir_uri=CODE["sourcedir"], params={},
                                 requirements=pinned_requirements())
    assert custom.environment.image == "myacr.azurecr.io/train:1"
    assert custom.environment.version != env.version  # another image, another (content-addressed) environment


def test_low_priority_on_serverless_compute_gets_spot_tier_checkpoints_and_a_vm_size():
    azure = AzureSettings.example(training_low_priority=True, training_compute="", training_instance_count=2,
                                  training_max_runtime_s=600)
    body = _request(azure, params={})["properties"]
    assert body["queueSettings"] == {"jobTier": "Spot"} and "computeId" not in body  # serverless
    assert body["resources"]["instanceType"] == "Standard_NC4as_T4_v3" and body["resources"]["instanceCount"] == 2
    assert body["outputs"]["checkpoints"]["uri"].endswith("/training/train-models-t1/checkpoints/")
    assert '--checkpoint-dir "${{outputs.checkpoints}}"' in body["command"]
    assert body["limits"]["timeout"] == "PT10M"
    spec = azureml.training_job(azure, task_id=TASK, dataset_uri=DATASET, interval_key=INTERVAL, params={}, code=CODE)
    assert spec.kwargs["wait_timeout_s"] == 600 + 3600  # low-priority nodes may queue for a while


def test_what_the_sdk_or_azure_would_refuse_fails_here():
    from azure.ai.ml.exceptions import ValidationException

    azure = AzureSettings.example()
    with pytest.raises(ValueError, match="Unknown hyperparameters"):  # when the DAG is parsed
        azureml.training_job(azure, task_id=TASK, dataset_uri=DATASET, interval_key=INTERVAL, params={"eta": 0.1},
                             code=CODE)
    with pytest.raises(ValueError, match="max_depth='deep' is not a int"):
        _request(azure, params={"max_depth": "deep"})
    with pytest.raises(ValueError, match="not an Azure ML job name"):
        _request(azure, name="train models.try1")
    with pytest.raises(ValueError, match="through the datastore flights_artifacts"):  # outputs go nowhere else
        azureml.datastore_uri(azure, "abfss://lake@flightsexample.dfs.core.windows.net/lake/x")
    job = azureml.command_job(azure, name="n", dataset_uri=DATASET, sourcedir_uri=CODE["sourcedir"], params={},
                              requirements=pinned_requirements())
    job.command += " --extra ${{inputs.extra}}"
    with pytest.raises(ValidationException, match="'extra' referenced in command"):
        azureml.job_request(job)
    with pytest.raises(ValueError, match="pin no xgboost"):
        azureml.conda_file("pandas==2.2.3\n")


def test_job_names_are_deterministic_per_try_and_valid_in_azure_ml():
    first = training_job_name(DAG, TASK, INTERVAL, RUN_ID, 1)
    assert first == training_job_name(DAG, TASK, INTERVAL, RUN_ID, 1)  # a retry computes the same name
    assert training_job_name(DAG, TASK, INTERVAL, RUN_ID, 2) != first and first.endswith("-t1")
    assert training_job_name(DAG, TASK, INTERVAL, "manual__other", 1) != first  # unique per run
    assert azureml.JOB_NAME.match(first) and re.fullmatch(r"[A-Za-z0-9-]{1,63}", first)


# --- the operator against an MLClient answered at the boundary -------------------------------------


@pytest.fixture()
def ml(monkeypatch, tmp_path):
    """The workspace; ``MLClient(...)`` (as the operator and the trigger build it) returns it."""
    import azure.ai.ml

    fake = FakeMLClient(tmp_path / "datastores")
    monkeypatch.setattr(azure.ai.ml, "MLClient", fake.connect)
    return fake


def _trains(fake: FakeMLClient):
    """The job's program: what the entry point leaves in the model output."""
    def program(name, outputs):
        outputs["model"].mkdir(parents=True, exist_ok=True)
        (outputs["model"] / "metrics.json").write_text(json.dumps({"metrics": {}, "params": {}}))
    fake.jobs.program = program


def _context(try_number, max_tries=2, run_id=RUN_ID):
    ti = SimpleNamespace(dag_id=DAG, task_id=TASK, try_number=try_number, max_tries=max_tries, run_id=run_id,
                         xcom_push=lambda *a, **k: None)
    return {"ti": ti, "run_id": run_id, "task_instance": ti}


def _operator(**kw):
    kw.setdefault("deferrable", False)
    spec = azureml.training_job(AzureSettings.example(), task_id=TASK, dataset_uri=DATASET, interval_key=INTERVAL,
                                params=PARAMS, code=CODE, retries=2, poll_interval=0, **kw)
    return instantiate(spec)


def _name(try_number, run_id=RUN_ID) -> str:
    return training_job_name(DAG, TASK, INTERVAL, run_id, try_number)


def _earlier(fake, try_number, status, run_id=RUN_ID) -> str:
    """A job an earlier try submitted."""
    job = azureml.command_job(AzureSettings.example(), name=_name(try_number, run_id), dataset_uri=DATASET,
                              sourcedir_uri=CODE["sourcedir"], params=PARAMS, requirements=pinned_requirements())
    return fake.jobs.add(job, status)


def _deferral(op, context):
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    return deferred.value


def test_submit_waits_and_returns_the_model_output(ml):
    _trains(ml)
    result = _operator().execute(_context(1))
    [name] = ml.jobs.created
    stored = ml.jobs.stored[name]["properties"]
    assert name == _name(1) and stored["displayName"] == f"{DAG}.{TASK}.{INTERVAL}.try1"
    assert stored["experimentName"] == DAG and stored["status"] == "Completed"
    assert stored["tags"] == {"project": "flights-lakehouse", "airflow_dag": DAG, "airflow_task": TASK,
                              "airflow_run_id": RUN_ID, "airflow_try": "1", "interval": INTERVAL,
                              "code_sha256": "abc"}
    assert stored["environmentId"] in ml.jobs.environments  # the inline environment was registered with it
    assert result == {"job_name": name, "status": "Completed",
                      "model_uri": f"azureml://datastores/flights_artifacts/paths/artifacts/training/{name}/model",
                      "studio_url": f"https://ml.azure.com/runs/{name}?wsid=/subscriptions/"
                                    f"{ml.subscription_id}/resourcegroups/flights-rg/workspaces/flights-ml"}
    assert ml.connections and ml.connections[0]["credential"].__class__.__name__ == "DefaultAzureCredential"


def test_a_retry_reattaches_to_the_running_job_of_its_attempt(ml):
    first = _operator(deferrable=True)
    deferral = _deferral(first, _context(1))
    [name] = ml.jobs.created
    assert deferral.trigger.job_name == name and first.job_name == name

    retry = _operator(deferrable=True)  # the worker died; try 2 of the same attempt
    deferral = _deferral(retry, _context(2))
    assert ml.jobs.created == [name] and retry.reattached == name  # no second job
    assert deferral.trigger.job_name == name and deferral.method_name == "execute_complete"
    assert deferral.timeout.total_seconds() == 3600 + 900


def test_a_retry_returns_the_job_that_already_completed(ml):
    name = _earlier(ml, 1, "Completed")
    out = ml.jobs.outputs(name)["model"]
    out.mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    op = _operator(deferrable=True)
    result = op.execute(_context(2))  # returns at once: nothing to wait for
    assert ml.jobs.created == [] and op.reattached == name and result["job_name"] == name


def test_a_cleared_task_cancels_the_stale_job_and_submits_anew(ml):
    _trains(ml)
    stale = _earlier(ml, 2, "Running")
    other_run = _earlier(ml, 2, "Running", run_id="manual__other")
    ml.jobs.final.update({stale: "Running", other_run: "Running"})  # both go on running
    result = _operator().execute(_context(3, max_tries=5))  # cleared after try 2: this attempt is try 3 only
    assert ml.jobs.cancelled == [stale]  # the old attempt's job stops writing the same outputs
    assert other_run not in ml.jobs.cancelled  # another run's job is none of this task's business
    assert ml.jobs.created == [_name(3)] and result["job_name"] == _name(3)


def test_a_failed_job_fails_the_task_with_its_error_and_studio_link(ml):
    ml.jobs.final[_name(1)] = "Failed"
    with pytest.raises(JobStateError, match=re.escape(f"ended Failed: UserError: {USER_ERROR}")) as failed:
        _operator().execute(_context(1))
    assert f"https://ml.azure.com/runs/{_name(1)}?wsid=" in str(failed.value)


def test_a_retry_of_a_try_whose_job_failed_submits_a_new_one(ml):
    _trains(ml)
    _earlier(ml, 1, "Failed")
    assert _operator().execute(_context(2))["job_name"] == _name(2) and ml.jobs.created == [_name(2)]


def test_a_try_whose_own_job_already_failed_reports_it_and_submits_nothing(ml):
    _earlier(ml, 1, "Failed")  # the same try runs execute() again: its job name is taken
    with pytest.raises(JobStateError, match=f"{_name(1)} ended Failed: UserError: "):
        _operator().execute(_context(1))
    assert ml.jobs.created == []


def test_completion_without_metrics_json_fails_the_task(ml):
    with pytest.raises(JobStateError, match=r"succeeded but wrote nothing at azureml://.*/model/metrics.json"):
        _operator().execute(_context(1))


def test_a_success_event_for_a_job_that_failed_fails_the_task(ml):
    op = _operator(deferrable=True)
    _deferral(op, _context(1))
    [name] = ml.jobs.created
    ml.jobs.set_status(name, "Failed")
    ml.jobs.errors[name] = "CUDA out of memory"
    with pytest.raises(JobStateError, match="ended Failed: UserError: CUDA out of memory"):
        op.execute_complete(_context(1), {"status": "success", "job_name": name, "job_status": "Completed"})


def test_a_failed_wait_leaves_the_job_for_the_retry(ml):
    op = _operator(deferrable=True)
    _deferral(op, _context(1))
    [name] = ml.jobs.created
    ml.jobs.final[name] = "Running"  # still running when the task resumes
    ml.jobs.set_status(name, "Running")
    with pytest.raises(JobStateError, match="was not cancelled .* the retry reattaches"):
        op.execute_complete(_context(1), {"status": "error", "job_name": name, "message": "ServiceResponseError"})
    assert ml.jobs.cancelled == []


def test_on_kill_cancels_the_job(ml):
    op = _operator(deferrable=True)
    _deferral(op, _context(1))
    [name] = ml.jobs.created
    op.on_kill()
    assert ml.jobs.cancelled == [name] and ml.jobs.status(name) == "CancelRequested"
    ml.jobs.set_status(name, "Canceled")
    op.on_kill()  # the job is over: Azure ML refuses, the kill goes on without error
    assert ml.jobs.cancelled == [name]


# --- the trigger -------------------------------------------------------------------------------------


def _rebuilt(trigger):
    """The trigger as the triggerer runs it: from its serialized classpath and kwargs."""
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)  # stored in the metadata database
    return import_string(classpath)(**kwargs)


def _first_event(trigger) -> dict:
    async def wait():
        return (await asyncio.wait_for(anext(trigger.run()), 10)).payload

    return asyncio.run(wait())


def test_the_trigger_polls_until_the_job_ends_and_the_task_resumes(ml):
    _trains(ml)
    trigger = _rebuilt(_deferral(_operator(deferrable=True), _context(1)).trigger)
    trigger.poll_interval = 0
    ml.jobs.fail_gets = 2  # transient API errors do not end the wait
    gets = ml.jobs.gets
    event = _first_event(trigger)
    assert event["status"] == "success" and event["job_status"] == "Completed" and ml.jobs.gets - gets >= 5
    resumed = _operator(deferrable=True)  # a new operator instance, as after deferral
    assert resumed.execute_complete(_context(1), event)["job_name"] == _name(1)


def test_the_trigger_reports_a_failed_job_and_gives_up_after_repeated_poll_errors(ml):
    trigger = _rebuilt(_deferral(_operator(deferrable=True), _context(1)).trigger)
    trigger.poll_interval = 0
    ml.jobs.final[_name(1)] = "Failed"
    event = _first_event(trigger)
    assert (event["status"], event["job_name"], event["job_status"]) == ("failed", _name(1), "Failed")
    ml.jobs.fail_gets = 10
    trigger.max_poll_errors = 3
    event = _first_event(trigger)
    assert event["status"] == "error" and "ServiceResponseError" in event["message"]


def test_killing_the_deferred_task_cancels_the_job(ml):
    trigger = _rebuilt(_deferral(_operator(deferrable=True), _context(1)).trigger)
    asyncio.run(trigger.on_kill())
    assert ml.jobs.cancelled == [_name(1)]


# --- collect -----------------------------------------------------------------------------------------


def test_collect_refuses_a_job_that_did_not_complete(tmp_path):
    from include.config import ConfigError

    trainer = azureml.AzureMLTrainer(AzureSettings.example(), tmp_path, client=FakeMLClient(tmp_path / "ds"))
    with pytest.raises(ConfigError, match="is Failed, not Completed"):
        trainer.collect({"job_name": "j", "status": "Failed"})
    with pytest.raises(ConfigError, match="Azure ML command job of the train_models task"):
        trainer.train(None)


def test_collect_names_the_job_when_its_output_is_empty(ml, tmp_path):
    from include.config import ConfigError

    name = _earlier(ml, 1, "Completed")
    trainer = azureml.AzureMLTrainer(AzureSettings.example(), tmp_path / "cache", client=ml)
    with pytest.raises(ConfigError, match=f"{name} has no files in its 'model' output"):
        trainer.collect({"job_name": name, "status": "Completed", "model_uri": "azureml://x", "studio_url": "u"})
