"""Operators that reattach to the job an earlier try started, and cancel it on kill.

The provider's operators submit a new job on every try. When a worker dies while a job is
running, or a deferred task times out while the job goes on, the retry would start a
second job writing the same partitions (apache/airflow 42401, 60517). These subclasses
look for a job of the same DAG, task, interval and run from the current attempt first:

* still running: wait for it (deferred) instead of submitting;
* succeeded: return it, submitting nothing;
* from before the task was cleared and still running: cancel it, then submit.

They also check the final state after a deferred wait, so a success event for a job
that did not succeed fails the task (apache/airflow 69042).

``RedshiftIntervalLoadOperator`` checks a warehouse load's rendered interval before its
batch reaches the Redshift Data API.

This module imports the Amazon provider; DAG files reach it only through
``include.targets.aws.emr`` / ``sagemaker`` builders, which import it lazily.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.amazon.aws.operators.emr import EmrServerlessStartJobOperator
from airflow.providers.amazon.aws.operators.redshift_data import RedshiftDataOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
from airflow.providers.amazon.aws.triggers.emr import EmrServerlessStartJobTrigger
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

from include.targets.aws.redshift import check_load, load_statements
from include.targets.cloud import checks
from include.targets.cloud.checks import CodeMissing  # noqa: F401 (re-exported)
from include.targets.cloud.naming import attempt_tries, training_job_name, try_of
from include.targets.cloud.reattach import (ACTIVE, FAILED, SUCCEEDED, JobRef, JobStateError, classify, identity,
                                            require_output)

log = logging.getLogger(__name__)

EMR_ACTIVE = ("SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "QUEUED")
EMR_FAILED = ("FAILED", "CANCELLED")
EMR_LOOKBACK = timedelta(days=7)
RUN_TAG, TRY_TAG = "airflow_run_id", "airflow_try"


def _emr_status(state: str) -> str:
    return ACTIVE if state in EMR_ACTIVE else SUCCEEDED if state == "SUCCESS" else FAILED


def find_emr_serverless_run(client, application_id: str, stem: str, run_id: str, tries: range,
                            states: tuple[str, ...] = (*EMR_ACTIVE, "SUCCESS")) -> dict:
    """Job runs of ``stem`` and ``run_id`` in ``states``: {"reattach": newest run of ``tries``, "stale": [...],
    "latest": newest run of ``tries`` whatever its state} (``include.targets.cloud.reattach.classify`` decides).

    ``list_job_runs`` cannot filter by name or tag, so runs of the last week are listed and
    matched by name; the run id is read from each candidate's tags (``get_job_run``).
    """
    from botocore.exceptions import ClientError

    since = datetime.now(timezone.utc) - EMR_LOOKBACK
    pages = client.get_paginator("list_job_runs").paginate(
        applicationId=application_id, createdAtAfter=since, states=list(states))
    try:
        candidates = [r for page in pages for r in page.get("jobRuns", []) if try_of(r.get("name", ""), stem)]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        candidates = []  # an application with no job run yet (moto); a missing one fails at submission, by name
    refs = []
    for summary in candidates:
        run = client.get_job_run(applicationId=application_id, jobRunId=summary["id"])["jobRun"]
        refs.append(JobRef(run["jobRunId"], run["name"], (run.get("tags") or {}).get(RUN_TAG, ""),
                           _emr_status(run["state"]), run["state"], raw=run))
    found = classify(refs, stem, run_id, tries)
    return {"reattach": found.reattach.raw if found.reattach else None, "stale": [j.raw for j in found.stale],
            "latest": found.latest.raw if found.latest else None}


def s3_client_of(op):
    """An S3 client with the operator's connection, region and botocore settings."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=op.aws_conn_id, region_name=op.region_name, verify=op.verify,
                  config=op.botocore_config).get_conn()


def _s3_exists(s3, uri: str) -> bool:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount"))


def require_code(s3, uris: list[str]) -> None:
    """Fail at once, naming the upload command, when the job's entry point or code zip is not in S3.

    ``uris`` may hold comma-separated lists (``--py-files``); paths in the runtime's image are not checked.
    """
    checks.require_code(uris, lambda u: _s3_exists(s3, u), scheme="s3://", storage="S3",
                        upload="python -m include.targets.aws.artifact", doc="docs/running-on-aws.md")


class ReattachingEmrServerlessStartJobOperator(EmrServerlessStartJobOperator):
    """``EmrServerlessStartJobOperator`` named ``<dag>.<task>.<interval>.try<n>`` that reattaches on retry.

    Args:
        interval_key: the interval's key (templated, e.g. from the ``resolve_interval`` XCom).
        job_output: what the job writes (templated S3 URI). When set, success also needs that output to
            exist, and the task returns it (downstream tasks read it) instead of the job run id.
        require_code: check before submitting that the entry point and the code zip are in S3.
        Every other argument is the provider operator's; ``name`` is set at run time.
    """

    template_fields = (*EmrServerlessStartJobOperator.template_fields, "interval_key", "job_output")

    def __init__(self, *, interval_key: str, job_output: str | None = None, require_code: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interval_key = interval_key
        self.job_output = job_output
        self.require_code = require_code
        self.reattached: str | None = None

    def _s3(self):
        return s3_client_of(self)

    def _check_code(self) -> None:
        submit = self.job_driver["sparkSubmit"]
        params = submit.get("sparkSubmitParameters", "").split()
        uris = [submit["entryPoint"]] + [params[i + 1] for i, p in enumerate(params[:-1]) if p == "--py-files"]
        require_code(self._s3(), uris)

    def _finish(self, job_id: str | None) -> str | None:
        """After a successful job: its output must exist; return it (or the job run id)."""
        if not self.job_output or not self.wait_for_completion:
            return job_id
        return require_output(lambda uri: _s3_exists(self._s3(), uri), self.job_output,
                              f"EMR Serverless job run {job_id} (driver log under the job's logUri)")

    def _identity(self, context) -> tuple[str, str, range, str]:
        me = identity(context, self.interval_key, self.retries)
        return me.stem, me.run_id, me.tries, me.name

    def _run_of_this_try(self, context) -> dict | None:
        """This try's job run, by name and run tag (a task resumed after deferring no longer holds the job id).

        None when it cannot be read: the caller then reports the failed wait as such.
        """
        try:
            if self.job_id:
                return self.hook.conn.get_job_run(applicationId=self.application_id, jobRunId=self.job_id)["jobRun"]
            stem, run_id, _, _ = self._identity(context)
            this_try = range(context["ti"].try_number, context["ti"].try_number + 1)
            return find_emr_serverless_run(self.hook.conn, self.application_id, stem, run_id, this_try,
                                           states=(*EMR_ACTIVE, "SUCCESS", *EMR_FAILED))["latest"]
        except Exception:
            self.log.warning("Could not read the job run of this try", exc_info=True)
        return None

    def execute(self, context, event: dict[str, Any] | None = None) -> str | None:
        stem, run_id, tries, name = self._identity(context)
        self.name = name
        self.config = {**(self.config or {}),
                       "tags": {**(self.config or {}).get("tags", {}), RUN_TAG: run_id,
                                TRY_TAG: str(context["ti"].try_number)}}
        if self.require_code and event is None:
            self._check_code()
        found = find_emr_serverless_run(self.hook.conn, self.application_id, stem, run_id, tries)
        for run in found["stale"]:
            self.log.warning("Cancelling job run %s (%s): started before this task was cleared, still %s",
                             run["jobRunId"], run["name"], run["state"])
            self.hook.conn.cancel_job_run(applicationId=self.application_id, jobRunId=run["jobRunId"])
        run = found["reattach"]
        if run is None:
            return self._finish(super().execute(context, event))
        self.job_id = self.reattached = run["jobRunId"]
        if run["state"] == "SUCCESS":
            self.log.info("Job run %s (%s) already succeeded for this run: not submitting again.",
                          self.job_id, run["name"])
            return self._finish(self.job_id)
        self.log.info("Reattaching to job run %s (%s), %s, instead of submitting a second one.",
                      self.job_id, run["name"], run["state"])
        if not self.wait_for_completion:
            return self.job_id
        if self.deferrable:
            self.defer(
                trigger=EmrServerlessStartJobTrigger(
                    application_id=self.application_id, job_id=self.job_id, waiter_delay=self.waiter_delay,
                    waiter_max_attempts=self.waiter_max_attempts, aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name, verify=self.verify, botocore_config=self.botocore_config,
                    cancel_on_kill=self.cancel_on_kill),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.waiter_max_attempts * self.waiter_delay),
            )
        self.hook.get_waiter("serverless_job_completed").wait(
            applicationId=self.application_id, jobRunId=self.job_id,
            WaiterConfig={"Delay": self.waiter_delay, "MaxAttempts": self.waiter_max_attempts})
        return self.execute_complete(context, {"status": "success", "job_details": {
            "application_id": self.application_id, "job_id": self.job_id}})

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> str | None:
        if (event or {}).get("status") != "success" and "job_details" not in (event or {}):
            run = self._run_of_this_try(context)
            if run is not None and run["state"] in EMR_FAILED:
                raise JobStateError(f"EMR Serverless job run {run['jobRunId']} ({run['name']}) ended {run['state']}: "
                                    f"{run.get('stateDetails') or 'no details'}; see its driver log under the job's "
                                    "logUri.")
            # The wait itself failed (the trigger could not poll): the job may still run; a retry reattaches to it.
            raise JobStateError(f"Waiting for EMR Serverless job run {self.job_id or '(unknown)'} failed: "
                                f"{(event or {}).get('message', event)}. The job was not cancelled; the retry "
                                "reattaches to it. If the message names aiobotocore, install "
                                "apache-airflow-providers-amazon[aiobotocore] where the triggerer runs.")
        job_id = super().execute_complete(context, event)
        state = self.hook.conn.get_job_run(applicationId=self.application_id, jobRunId=job_id)["jobRun"]["state"]
        if state != "SUCCESS":
            raise JobStateError(f"EMR Serverless job run {job_id} reported done but is {state}; see its driver log.")
        return self._finish(job_id)


class StoppingSageMakerTrigger(SageMakerTrigger):
    """``SageMakerTrigger`` that stops the training job when the deferred task is killed (Airflow 3.3+)."""

    async def on_kill(self) -> None:
        from asgiref.sync import sync_to_async

        if self.job_type.lower() == "training":
            log.info("Stopping SageMaker training job %s", self.job_name)
            await sync_to_async(self.hook().conn.stop_training_job)(TrainingJobName=self.job_name)


class ReattachingSageMakerTrainingOperator(SageMakerTrainingOperator):
    """``SageMakerTrainingOperator`` with a deterministic job name per run and try, reattach and stop-on-kill.

    The provider can only rename a clashing job with a timestamp (a second job) or fail; this
    operator names the job from DAG, task, interval, run and try, and on a retry waits for the
    job an earlier try of the same attempt started (or returns it when it completed).
    """

    template_fields = (*SageMakerTrainingOperator.template_fields, "interval_key")
    REATTACH_STATES = ("InProgress", "Completed")

    def __init__(self, *, interval_key: str, **kwargs: Any) -> None:
        kwargs.setdefault("check_if_job_exists", True)
        kwargs.setdefault("action_if_job_exists", "fail")  # never a timestamped second job
        super().__init__(**kwargs)
        self.interval_key = interval_key
        self.reattached: str | None = None

    def _name(self, context, try_number: int) -> str:
        ti = context["ti"]
        return training_job_name(ti.dag_id, ti.task_id, self.interval_key, context["run_id"], try_number)

    def _previous(self, context) -> dict | None:
        from botocore.exceptions import ClientError

        ti = context["ti"]
        tries = attempt_tries(ti.try_number, getattr(ti, "max_tries", None), self.retries or 0)
        for n in reversed(tries):
            try:
                desc = self.hook.describe_training_job(self._name(context, n))
            except ClientError:
                continue
            if desc.get("TrainingJobStatus") in self.REATTACH_STATES:
                return desc
        return None

    def execute(self, context) -> dict:
        self.config = {**self.config, "TrainingJobName": self._name(context, context["ti"].try_number)}
        previous = self._previous(context)
        if previous is None:
            return super().execute(context)
        name = self.reattached = previous["TrainingJobName"]
        self.config["TrainingJobName"] = name
        if previous["TrainingJobStatus"] == "Completed" or not self.wait_for_completion:
            self.log.info("Training job %s is %s: not starting another.", name, previous["TrainingJobStatus"])
            return self.serialize_result(name)
        self.log.info("Reattaching to training job %s (InProgress) instead of starting another.", name)
        if self.deferrable:
            self.defer(
                trigger=StoppingSageMakerTrigger(
                    job_name=name, job_type="Training", waiter_delay=self.check_interval,
                    waiter_max_attempts=self.max_attempts, aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name, verify=self.verify, botocore_config=self.botocore_config),
                method_name="execute_complete", timeout=self.execution_timeout)
        self.hook.check_training_status_with_log(name, self.hook.non_terminal_states, self.hook.failed_states,
                                                 False, self.check_interval)
        return self.serialize_result(name)

    def defer(self, *, trigger, method_name, kwargs=None, timeout=None):
        """Route the provider's own deferral through the trigger that stops the job on kill."""
        if type(trigger) is SageMakerTrigger:
            trigger = StoppingSageMakerTrigger(
                job_name=trigger.job_name, job_type=trigger.job_type, waiter_delay=trigger.waiter_delay,
                waiter_max_attempts=trigger.attempts, aws_conn_id=trigger.aws_conn_id,
                region_name=trigger.region_name, verify=trigger.verify, botocore_config=trigger.botocore_config)
        super().defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        result = super().execute_complete(context, event)
        status = result["Training"].get("TrainingJobStatus")
        if status != "Completed":
            raise JobStateError(f"SageMaker training job {self.config.get('TrainingJobName')} reported done but is "
                                f"{status}.")
        return result

    def on_kill(self) -> None:
        name = self.config.get("TrainingJobName")
        if name:
            self.log.info("Stopping SageMaker training job %s", name)
            self.hook.conn.stop_training_job(TrainingJobName=name)


class RedshiftIntervalLoadOperator(RedshiftDataOperator):
    """One interval's Redshift load, whose dates are checked after rendering.

    The dates and the export folder are rendered from the interval XCom, which the REST API
    can overwrite. ``execute`` refuses values that are not ISO dates, a reversed or too long
    range, or a folder of another interval (``include.targets.aws.redshift.check_load``), and
    sends the statements built from the checked dates, never the rendered ``sql`` text.
    """

    template_fields = (*RedshiftDataOperator.template_fields, "load")

    def __init__(self, *, load: dict[str, str], **kwargs):
        super().__init__(**kwargs)
        self.load = load  # table, s3_prefix, iam_role_arn, start, end (templates until rendered)

    def execute(self, context):
        load = self.load
        try:
            interval = check_load(load["s3_prefix"], load["start"], load["end"])
            self.sql = load_statements(load["table"], load["s3_prefix"], load["iam_role_arn"], interval.start,
                                       interval.end, explicit_transaction=False)
        except ValueError as exc:
            raise AirflowFailException(
                f"Refusing to run the Redshift load of {load['table']}: {exc} Its dates come from the run's "
                "interval XCom; clear the run's interval task so the interval is resolved again.") from exc
        return super().execute(context)
