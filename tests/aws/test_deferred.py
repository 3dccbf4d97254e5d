"""The deferred waits, run for real: each trigger polls the moto server through aiobotocore.

The tasks defer (``TaskDeferred``), the trigger is rebuilt from its serialized form as the
triggerer rebuilds it, its ``run()`` polls moto until the job is done, and the task resumes
with the event. moto completes jobs at once or never, so a job is put in a running state on
the server and finished there while the trigger waits.

moto has no ``StopTrainingJob``: stopping a training job on kill is checked against a real
botocore client with ``Stubber``, which asserts the exact request.
"""

from __future__ import annotations

import asyncio

import pytest

from include.targets.aws import emr, sagemaker
from include.targets.aws.emr import instantiate
from include.targets.cloud.naming import training_job_name
from tests.aws.conftest import ACCOUNT, REGION, jobs_run_for_one_poll
from tests.aws.test_emr import ARGS, CODE, _context as _emr_context
from tests.aws.test_sagemaker import DATASET, PARAMS, SOURCEDIR, _context as _training_context

INTERVAL = "20130101_20130228"


def _rebuilt(trigger):
    """The trigger as the triggerer runs it: from its serialized classpath and kwargs."""
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**kwargs)


def _first_event(trigger, finish=None, timeout: float = 20) -> dict:
    """The payload of the trigger's first event; ``finish`` ends the job once the trigger has polled it running."""

    async def wait():
        waiting = asyncio.ensure_future(anext(trigger.run()))
        if finish is not None:
            await asyncio.sleep(1.5)  # the first poll, and one waiter delay
            assert not waiting.done(), "the trigger returned while the job was still running"
            finish()
        return (await asyncio.wait_for(waiting, timeout)).payload

    return asyncio.run(wait())


def _deferral(op, context):
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    return deferred.value


# --- EMR Serverless ------------------------------------------------------------------------------


@pytest.fixture()
def app_id(boto):
    return boto("emr-serverless").create_application(name="flights-deferred", releaseLabel="emr-7.12.0",
                                                     type="SPARK")["applicationId"]


def _emr_operator(aws, app_id, **kw):
    spec = emr.serverless_job(aws.__class__.example(emr_application_id=app_id), task_id="ingest_bronze",
                              job="bronze_landing", args=ARGS[:2], code=CODE, interval_key="20130101_20130101",
                              retries=3, waiter_delay=1, waiter_max_attempts=30, **kw)
    return instantiate(spec)


def _emr_job(app_id, job_id):
    from moto.emrserverless.models import emrserverless_backends

    return next(j for j in emrserverless_backends[ACCOUNT][REGION].job_runs[app_id] if j.id == job_id)


def test_a_submitted_job_run_defers_and_resumes_when_the_trigger_sees_it_succeed(aws, app_id, boto):
    from airflow.providers.amazon.aws.triggers.emr import EmrServerlessStartJobTrigger

    op = _emr_operator(aws, app_id, deferrable=True)
    deferred = _deferral(op, _emr_context(1))
    trigger = _rebuilt(deferred.trigger)
    assert type(trigger) is EmrServerlessStartJobTrigger and deferred.method_name == "execute_complete"
    [run] = boto("emr-serverless").list_job_runs(applicationId=app_id)["jobRuns"]
    assert trigger.job_id == run["id"] and trigger.waiter_delay == 1
    job = _emr_job(app_id, run["id"])
    job.state = "RUNNING"  # moto finishes at once; a real job runs for a while

    event = _first_event(trigger, finish=lambda: setattr(job, "state", "SUCCESS"))
    assert event == {"status": "success", "job_details": {"application_id": app_id, "job_id": run["id"]}}
    assert op.execute_complete(_emr_context(1), event) == run["id"]


def test_a_retry_defers_on_the_running_job_of_its_first_try(aws, app_id, boto):
    from airflow.providers.amazon.aws.triggers.emr import EmrServerlessStartJobTrigger

    first = _emr_operator(aws, app_id, deferrable=False, wait_for_completion=False).execute(_emr_context(1))
    job = _emr_job(app_id, first)
    job.state = "RUNNING"
    retry = _emr_operator(aws, app_id, deferrable=True)
    deferred = _deferral(retry, _emr_context(2))
    trigger = _rebuilt(deferred.trigger)
    assert type(trigger) is EmrServerlessStartJobTrigger and trigger.job_id == first and trigger.cancel_on_kill
    assert retry.reattached == first and deferred.timeout.total_seconds() == 30  # waiter_delay * max attempts

    event = _first_event(trigger, finish=lambda: setattr(job, "state", "SUCCESS"))
    assert retry.execute_complete(_emr_context(2), event) == first
    assert len(boto("emr-serverless").list_job_runs(applicationId=app_id)["jobRuns"]) == 1  # nothing resubmitted


def test_a_job_run_that_fails_while_deferred_fails_the_task_with_its_state(aws, app_id):
    from include.targets.aws.operators import JobStateError

    op = _emr_operator(aws, app_id, deferrable=True)
    trigger = _rebuilt(_deferral(op, _emr_context(1)).trigger)
    job = _emr_job(app_id, trigger.job_id)
    job.state = "RUNNING"

    def fail():
        job.state, job.state_details = "FAILED", "Job failed, ExitCode: 1"

    event = _first_event(trigger, finish=fail)
    assert event["status"] == "failure" and "Serverless Job failed" in event["message"]
    resumed = _emr_operator(aws, app_id, deferrable=True)  # a resumed task: a new operator, no job id
    with pytest.raises(JobStateError, match=r"ended FAILED: Job failed, ExitCode: 1"):
        resumed.execute_complete(_emr_context(1), event)


# --- SageMaker training ----------------------------------------------------------------------------


@pytest.fixture()
def dataset(aws, buckets):
    buckets.put_object(Bucket=aws.lake_bucket, Key=DATASET.split("/", 3)[3] + "/data/part-0.parquet", Body=b"PAR1")


def _training_operator(aws, **kw):
    spec = sagemaker.training_job(aws, task_id="train_models", interval_key=INTERVAL, dataset_uri=DATASET,
                                  sourcedir_uri=SOURCEDIR, params=PARAMS, retries=2, check_interval=1, **kw)
    return instantiate(spec)


def _training_job(name):
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION].training_jobs[name]


def test_training_defers_to_the_stopping_trigger_and_resumes(aws, dataset, monkeypatch):
    from include.targets.aws.operators import StoppingSageMakerTrigger

    jobs_run_for_one_poll(monkeypatch)  # InProgress when the operator checks it after creating it
    run_id = "manual__2013-03-02"
    op = _training_operator(aws)
    deferred = _deferral(op, _training_context(1, run_id))
    name = training_job_name("flights_training", "train_models", INTERVAL, run_id, 1)
    classpath, _ = deferred.trigger.serialize()
    assert classpath == "include.targets.aws.operators.StoppingSageMakerTrigger"  # the provider's, routed
    trigger = _rebuilt(deferred.trigger)
    assert type(trigger) is StoppingSageMakerTrigger and trigger.job_name == name and trigger.waiter_delay == 1

    event = _first_event(trigger)
    assert event == {"status": "success", "job_name": name}
    result = op.execute_complete(_training_context(1, run_id), event)
    assert result["Training"]["TrainingJobName"] == name and result["Training"]["TrainingJobStatus"] == "Completed"


def test_a_training_retry_defers_on_the_job_of_its_first_try(aws, dataset, boto):
    from include.targets.aws.operators import StoppingSageMakerTrigger

    run_id = "manual__2013-03-03"
    _training_operator(aws, deferrable=False).execute(_training_context(1, run_id))
    name = training_job_name("flights_training", "train_models", INTERVAL, run_id, 1)
    job = _training_job(name)
    job.training_job_status = "InProgress"  # the worker of try 1 died while the job trained
    retry = _training_operator(aws, deferrable=True)
    trigger = _rebuilt(_deferral(retry, _training_context(2, run_id)).trigger)
    assert type(trigger) is StoppingSageMakerTrigger and trigger.job_name == name and retry.reattached == name

    event = _first_event(trigger, finish=lambda: setattr(job, "training_job_status", "Completed"))
    assert event == {"status": "success", "job_name": name}
    assert retry.execute_complete(_training_context(2, run_id), event)["Training"]["TrainingJobName"] == name
    names = [j["TrainingJobName"] for j in boto("sagemaker").list_training_jobs()["TrainingJobSummaries"]]
    assert names.count(name) == 1 and name[:-1] + "2" not in names  # no job for try 2


def test_a_training_job_that_fails_while_deferred_fails_the_task(aws, dataset):
    run_id = "manual__2013-03-04"
    _training_operator(aws, deferrable=False).execute(_training_context(1, run_id))
    name = training_job_name("flights_training", "train_models", INTERVAL, run_id, 1)
    job = _training_job(name)
    job.training_job_status = "InProgress"
    trigger = _rebuilt(_deferral(_training_operator(aws, deferrable=True), _training_context(2, run_id)).trigger)

    event = _first_event(trigger, finish=lambda: setattr(job, "training_job_status", "Failed"))
    assert event["status"] == "failed" and event["job_name"] == name
    with pytest.raises(Exception, match="Error while waiting for Training job"):
        _training_operator(aws).execute_complete(_training_context(2, run_id), event)


def test_killing_a_deferred_training_stops_the_job(moto_endpoint, monkeypatch):
    from botocore.stub import Stubber

    from include.targets.aws.operators import StoppingSageMakerTrigger

    trigger = StoppingSageMakerTrigger(job_name="flights-training-train-models-x-t1", job_type="Training",
                                       region_name=REGION)
    hook = trigger.hook()
    monkeypatch.setattr(trigger, "hook", lambda: hook)
    with Stubber(hook.conn) as stub:  # a real botocore client: the request is validated against the API model
        stub.add_response("stop_training_job", {}, {"TrainingJobName": "flights-training-train-models-x-t1"})
        asyncio.run(trigger.on_kill())  # what the triggerer calls when a deferred task is killed
        stub.assert_no_pending_responses()

    transform = StoppingSageMakerTrigger(job_name="a-transform", job_type="Transform", region_name=REGION)
    monkeypatch.setattr(transform, "hook", lambda: hook)
    with Stubber(hook.conn):  # no response queued: any request would raise
        asyncio.run(transform.on_kill())  # only training jobs are stopped


def test_killing_a_training_task_stops_its_job(aws):
    from botocore.stub import Stubber

    op = _training_operator(aws)
    op.config["TrainingJobName"] = name = training_job_name("flights_training", "train_models", INTERVAL, "r", 1)
    with Stubber(op.hook.conn) as stub:
        stub.add_response("stop_training_job", {}, {"TrainingJobName": name})
        op.on_kill()
        stub.assert_no_pending_responses()


# --- Redshift Data API ---------------------------------------------------------------------------


def _statement(boto, sql="SELECT 1"):
    from moto.redshiftdata.models import redshiftdata_backends

    sid = boto("redshift-data").execute_statement(Sql=sql, Database="dev", WorkgroupName="flights")["Id"]
    return sid, redshiftdata_backends[ACCOUNT][REGION].statements[sid]


def _redshift_trigger(sid):
    from airflow.providers.amazon.aws.triggers.redshift_data import RedshiftDataTrigger

    return _rebuilt(RedshiftDataTrigger(statement_id=sid, task_id="load_flight_outcomes", poll_interval=1,
                                        region_name=REGION))


def test_the_redshift_data_trigger_waits_for_the_statement(boto):
    sid, statement = _statement(boto)
    assert statement.status == "STARTED"  # and stays so on moto until changed
    event = _first_event(_redshift_trigger(sid), finish=lambda: setattr(statement, "status", "FINISHED"))
    assert event == {"status": "success", "statement_id": sid}


def test_a_failed_statement_ends_the_wait_with_an_error(boto):
    sid, statement = _statement(boto)

    event = _first_event(_redshift_trigger(sid), finish=lambda: setattr(statement, "status", "FAILED"))
    assert event["status"] == "error" and event["type"] == "FAILED" and f"Statement {sid}" in event["message"]


def test_killing_a_deferred_load_cancels_the_statement(boto):
    sid, statement = _statement(boto)
    asyncio.run(_redshift_trigger(sid).on_kill())
    assert boto("redshift-data").describe_statement(Id=sid)["Status"] == "ABORTED"
