"""Spark on a transient EMR cluster (``FLIGHTS_AWS_SPARK_MODE=ec2``): one cluster per DAG run.

The DAG gets three kinds of task (``include.targets.aws.steps``):

* ``emr_create_cluster`` (an Airflow *setup* task): creates the run's cluster, named
  ``<dag>.<interval>.<run digest>``. A retry, or a cleared task whose setup is cleared with
  it, finds the run's cluster when it is still starting or running instead of creating a
  second one.
* one ``ReattachingEmrStepOperator`` per Spark job: adds the job as a step named
  ``<dag>.<task>.<interval>.try<n>`` and waits for it (deferred by default). Adding and waiting
  are one task on purpose: with a separate step sensor, the sensor's retry would only look at
  the failed step again, while here a retry runs the job again, or reattaches to the step an
  earlier try of the same attempt left running. A kill (or a killed deferral) cancels the
  step, and success is checked against the step's final state and the job's output.
* ``emr_terminate_cluster`` (the *teardown*): runs once every step is done, whatever their
  outcome, so a failed run never leaves the cluster up. The cluster's idle auto-termination
  (``emr.cluster_config``) is the backstop when even the teardown cannot run.

This module imports the Amazon provider; DAG files reach it through ``emr.instantiate``.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator, EmrCreateJobFlowOperator
from airflow.providers.amazon.aws.triggers.emr import EmrAddStepsTrigger

from include.targets.aws.operators import _s3_exists, require_code, s3_client_of
from include.targets.cloud.reattach import ACTIVE, SUCCEEDED, JobRef, JobStateError, classify, identity, require_output

CLUSTER_ACTIVE = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
STEP_ACTIVE = ("PENDING", "RUNNING", "CANCEL_PENDING")


def cluster_name(dag_id: str, interval_key: str, run_id: str) -> str:
    """``<dag>.<interval>.<digest of the run id>``: one cluster per DAG run, found again by name."""
    return f"{dag_id}.{interval_key}.{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"


class ReattachingEmrCreateJobFlowOperator(EmrCreateJobFlowOperator):
    """Creates the run's cluster, or returns the run's cluster that is already starting or running."""

    template_fields = (*EmrCreateJobFlowOperator.template_fields, "interval_key")

    def __init__(self, *, interval_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interval_key = interval_key

    def execute(self, context) -> str | None:
        name = cluster_name(context["ti"].dag_id, self.interval_key, context["run_id"])
        self.job_flow_overrides = {**self.job_flow_overrides, "Name": name}
        existing = self.hook.get_cluster_id_by_name(name, CLUSTER_ACTIVE)
        if existing:
            self.log.info("Cluster %s (%s) of this run is still up: using it instead of creating another.",
                          existing, name)
            return existing
        return super().execute(context)


class CancellingEmrStepTrigger(EmrAddStepsTrigger):
    """``EmrAddStepsTrigger`` that cancels the step when the deferred task is killed (Airflow 3.3+)."""

    async def on_kill(self) -> None:
        from asgiref.sync import sync_to_async

        job_flow_id, step_ids = self.serialized_fields["job_flow_id"], self.serialized_fields["step_ids"]
        await sync_to_async(self.hook().conn.cancel_steps)(
            ClusterId=job_flow_id, StepIds=step_ids, StepCancellationOption="SEND_INTERRUPT")


class ReattachingEmrStepOperator(EmrAddStepsOperator):
    """One Spark job as a step of the run's cluster: added once per try, waited for, cancelled on kill.

    Args:
        step: the step request (``emr.step``); its ``Name`` is set at run time.
        interval_key: the interval's key (templated).
        job_output: what the job writes (templated S3 URI). When set, success also needs that
            output, and the task returns it (downstream tasks read it) instead of the step id.
        require_code: check before adding the step that the entry point and the code zip are in S3.
        Every other argument is ``EmrAddStepsOperator``'s.
    """

    template_fields = (*EmrAddStepsOperator.template_fields, "interval_key", "job_output")
    template_ext = ()  # the step is a dict, never a file; job_output may end in .json

    def __init__(self, *, step: dict, interval_key: str, job_output: str | None = None, require_code: bool = False,
                 timeout_minutes: int = 120, **kwargs: Any) -> None:
        kwargs.setdefault("waiter_delay", 30)
        kwargs.setdefault("waiter_max_attempts", (timeout_minutes + 10) * 60 // kwargs["waiter_delay"])
        super().__init__(steps=[step], **kwargs)
        self.interval_key = interval_key
        self.job_output = job_output
        self.require_code = require_code
        self.step_id: str | None = None
        self.reattached: str | None = None

    # --- helpers -------------------------------------------------------------------------------
    def _s3(self):
        return s3_client_of(self)

    def _check_code(self) -> None:
        args = self.steps[0]["HadoopJarStep"]["Args"]
        entry = next(a for a in args if str(a).endswith(".py") and str(a).startswith("s3://"))
        uris = [entry] + [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--py-files"]
        require_code(self._s3(), uris)

    def _find(self, context) -> tuple[dict | None, list[dict]]:
        """The step to reattach to (newest try of this attempt, active or completed), and stale active steps."""
        me = identity(context, self.interval_key, self.retries)
        pages = self.hook.conn.get_paginator("list_steps").paginate(
            ClusterId=self.job_flow_id, StepStates=[*STEP_ACTIVE, "COMPLETED"])
        # the cluster belongs to this DAG run, so every step on it is of this run
        refs = [JobRef(s["Id"], s.get("Name", ""), me.run_id,
                       ACTIVE if s["Status"]["State"] in STEP_ACTIVE else SUCCEEDED, s["Status"]["State"], raw=s)
                for page in pages for s in page.get("Steps", [])]
        found = classify(refs, me.stem, me.run_id, me.tries)
        return (found.reattach.raw if found.reattach else None), [j.raw for j in found.stale]

    def _failure(self, step_id: str) -> str:
        step = self.hook.conn.describe_step(ClusterId=self.job_flow_id, StepId=step_id)["Step"]
        status = step["Status"]
        details = status.get("FailureDetails") or {}
        where = f" (log: {details['LogFile']})" if details.get("LogFile") else ""
        reason = details.get("Message") or details.get("Reason") or (status.get("StateChangeReason") or {}).get(
            "Message", "")
        return f"EMR step {step_id} ({step.get('Name')}) on cluster {self.job_flow_id} is {status['State']}" + (
            f": {reason}" if reason else "") + where

    def _finish(self, step_id: str) -> str:
        state = self.hook.conn.describe_step(ClusterId=self.job_flow_id, StepId=step_id)["Step"]["Status"]["State"]
        if state != "COMPLETED":
            raise JobStateError(self._failure(step_id) + "; see the step's stderr under the cluster's LogUri.")
        require_output(lambda uri: _s3_exists(self._s3(), uri), self.job_output,
                       f"EMR step {step_id} (stderr under the cluster's LogUri)")
        return self.job_output or step_id

    # --- the operator --------------------------------------------------------------------------
    def execute(self, context) -> str:
        name = identity(context, self.interval_key, self.retries).name
        self.steps = [{**self.steps[0], "Name": name}]
        if self.require_code:
            self._check_code()
        reattach, stale = self._find(context)
        if stale:
            ids = [s["Id"] for s in stale]
            self.log.warning("Cancelling steps %s: started before this task was cleared, still active.", ids)
            self.hook.conn.cancel_steps(ClusterId=self.job_flow_id, StepIds=ids,
                                        StepCancellationOption="SEND_INTERRUPT")
        if reattach is not None:
            self.step_id = self.reattached = reattach["Id"]
            if reattach["Status"]["State"] == "COMPLETED":
                self.log.info("Step %s (%s) already completed for this run: not adding it again.",
                              self.step_id, reattach["Name"])
                return self._finish(self.step_id)
            self.log.info("Reattaching to step %s (%s), %s, instead of adding a second one.",
                          self.step_id, reattach["Name"], reattach["Status"]["State"])
        else:
            self.step_id = self.hook.add_job_flow_steps(job_flow_id=self.job_flow_id, steps=self.steps,
                                                        execution_role_arn=self.execution_role_arn)[0]
            self.log.info("Added step %s (%s) to cluster %s.", self.step_id, name, self.job_flow_id)
        if self.deferrable:
            self.defer(
                trigger=CancellingEmrStepTrigger(
                    job_flow_id=self.job_flow_id, step_ids=[self.step_id], waiter_delay=self.waiter_delay,
                    waiter_max_attempts=self.waiter_max_attempts, aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name, verify=self.verify, botocore_config=self.botocore_config),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.waiter_max_attempts * self.waiter_delay))
        from botocore.exceptions import WaiterError

        try:
            self.hook.conn.get_waiter("step_complete").wait(
                ClusterId=self.job_flow_id, StepId=self.step_id,
                WaiterConfig={"Delay": self.waiter_delay, "MaxAttempts": self.waiter_max_attempts})
        except WaiterError:
            pass  # _finish names the state and the reason
        return self._finish(self.step_id)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> str:
        event = event or {}
        step_ids = event.get("value") or ([self.step_id] if self.step_id else [])
        if not step_ids:
            raise JobStateError(f"Waiting for the EMR step failed before it reported a step id: {event}.")
        self.step_id = step_ids[0]
        if event.get("status") != "success":
            self.log.error("The wait for step %s ended with %s", self.step_id, event)
        return self._finish(self.step_id)

    def on_kill(self) -> None:
        if self.step_id and self.job_flow_id:
            self.log.info("Cancelling EMR step %s on cluster %s", self.step_id, self.job_flow_id)
            self.hook.conn.cancel_steps(ClusterId=self.job_flow_id, StepIds=[self.step_id],
                                        StepCancellationOption="SEND_INTERRUPT")
