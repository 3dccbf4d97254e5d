"""The Vertex AI custom job operator: reattach on retry, cancel stale jobs, cancel on kill, check the end.

The provider's Vertex AI training operators create a training pipeline on every try. This
operator creates a ``CustomJob`` through the JobService (the provider's ``CustomJobHook`` gives
the client and its credentials) under the shared control flow of
``include.targets.cloud.reattach``:

* every job carries the labels ``flights_job`` (a digest of DAG, task, interval and run) and
  ``flights_try``; before creating one, the jobs with this task's ``flights_job`` label are
  listed and ``classify`` decides: wait for (or return) the job of a try of the current attempt,
  cancel running ones from before the task was cleared;
* the display name is ``short_job_name`` of DAG, task, interval, run and try;
* deferred, ``VertexCustomJobTrigger`` polls the job and cancels it when the task is killed;
* success needs ``JOB_STATE_SUCCEEDED`` *and* ``<base_output_directory>/model/metrics.json``.

The task returns ``{"job_name", "display_name", "state", "model_dir"}`` for
``VertexTrainer.collect``. This module imports Airflow and the Google provider; DAG files
reach it only through ``include.targets.gcp.vertex.custom_job``, which names it as a string.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any, AsyncIterator, Sequence

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from include.targets.cloud.naming import short_job_name
from include.targets.cloud.reattach import (ACTIVE, FAILED, SUCCEEDED, JobRef, JobStateError, classify, identity,
                                            require_output, wait_for_end)
from include.targets.gcp.vertex import (LABEL_DAG, LABEL_JOB, LABEL_TASK, LABEL_TRY, job_key, label_value,
                                       with_identity)

ACTIVE_STATES = ("JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_UPDATING")
SUCCEEDED_STATE = "JOB_STATE_SUCCEEDED"
# A job in any other state is over for us: failed, cancelled (or being cancelled), expired, paused.
TERMINAL_STATES = (SUCCEEDED_STATE, "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
                   "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_PAUSED")


def state_of(job) -> str:
    """The job's state name, e.g. ``JOB_STATE_RUNNING``."""
    return job.state.name


def status_of(job) -> str:
    """``classify``'s word for the job's state: active, succeeded or failed (cancelling counts as failed)."""
    state = state_of(job)
    if state == SUCCEEDED_STATE:
        return SUCCEEDED
    return ACTIVE if state in ACTIVE_STATES else FAILED


def job_ref(job, run_id: str) -> JobRef:
    """A listed job as ``classify`` reads it; its run is this task's when its ``flights_job`` label matched."""
    return JobRef(id=job.name, name=job.display_name, run_id=run_id, status=status_of(job), state=state_of(job),
                  raw=job)


def try_label(ref: JobRef) -> int | None:
    value = ref.raw.labels.get(LABEL_TRY, "") if ref.raw is not None else ""
    return int(value) if value.isdigit() else None


def job_client(gcp_conn_id: str, impersonation_chain, region: str):
    """A JobServiceClient for ``region`` with the connection's credentials (the provider's hook)."""
    from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook

    hook = CustomJobHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
    return hook.get_job_service_client(region)


def cancel(client, name: str, log) -> None:
    """Ask Vertex AI to cancel the job; a job already over (FailedPrecondition) is left as it is."""
    from google.api_core.exceptions import FailedPrecondition, NotFound

    try:
        client.cancel_custom_job(name=name)
        log.info("Cancelling Vertex AI custom job %s", name)
    except (FailedPrecondition, NotFound) as exc:
        log.info("Vertex AI custom job %s not cancelled: %s", name, exc)


class VertexCustomJobTrigger(BaseTrigger):
    """Polls a Vertex AI custom job until it ends; cancels it when the deferred task is killed (Airflow 3.3+).

    Events: ``{"status": "success" | "failed", "job_name", "state", "message"}`` when the job ended, or
    ``{"status": "error", ...}`` after ``max_poll_errors`` failed polls in a row (the job goes on).
    """

    def __init__(self, *, job_name: str, region: str, gcp_conn_id: str = "google_cloud_default",
                 impersonation_chain: str | Sequence[str] | None = None, poll_interval: float = 30,
                 max_poll_errors: int = 5):
        super().__init__()
        self.job_name, self.region, self.gcp_conn_id = job_name, region, gcp_conn_id
        self.impersonation_chain, self.poll_interval, self.max_poll_errors = (
            impersonation_chain, poll_interval, max_poll_errors)
        self._client = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "job_name": self.job_name, "region": self.region, "gcp_conn_id": self.gcp_conn_id,
            "impersonation_chain": self.impersonation_chain, "poll_interval": self.poll_interval,
            "max_poll_errors": self.max_poll_errors})

    def client(self):
        if self._client is None:
            self._client = job_client(self.gcp_conn_id, self.impersonation_chain, self.region)
        return self._client

    async def run(self) -> AsyncIterator[TriggerEvent]:
        def ended(job):
            state = state_of(job)
            return (state == SUCCEEDED_STATE, state, job.error.message) if state in TERMINAL_STATES else None

        yield TriggerEvent(await wait_for_end(
            lambda: self.client().get_custom_job(name=self.job_name), ended, log=self.log,
            what="Vertex AI custom job", job_name=self.job_name, state_key="state",
            poll_interval=self.poll_interval, max_poll_errors=self.max_poll_errors))

    async def on_kill(self) -> None:
        self.log.info("Task killed: cancelling Vertex AI custom job %s", self.job_name)
        await asyncio.to_thread(cancel, self.client(), self.job_name, self.log)


class ReattachingVertexCustomJobOperator(BaseOperator):
    """Create (or reattach to) a Vertex AI custom job named per run and try; wait; check state and output.

    Args:
        custom_job: the ``CustomJob`` as a dict (``vertex.custom_job_body``; templated). Its display name,
            run labels and output directory are set per try.
        project_id, region: where the job runs.
        interval_key: the interval's key (templated, e.g. from the ``resolve_interval`` XCom).
        output_root: the folder under which each job gets ``<display name>/`` as its base output directory.
        deferrable: wait in the triggerer (default) or poll in the worker.
        poll_interval: seconds between polls.
        wait_timeout_s: how long a deferred wait may last before the task fails (the job is not cancelled:
            the retry reattaches to it).
        gcp_conn_id, impersonation_chain: the Google connection, as the provider's operators take them.
    """

    template_fields: Sequence[str] = ("custom_job", "interval_key", "project_id", "region", "output_root",
                                      "impersonation_chain")
    ui_color = "#e8f0fe"

    def __init__(self, *, custom_job: dict, project_id: str, region: str, interval_key: str, output_root: str,
                 gcp_conn_id: str = "google_cloud_default",
                 impersonation_chain: str | Sequence[str] | None = None, deferrable: bool = True,
                 poll_interval: float = 30, wait_timeout_s: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.custom_job, self.project_id, self.region = custom_job, project_id, region
        self.interval_key, self.output_root = interval_key, output_root
        self.gcp_conn_id, self.impersonation_chain = gcp_conn_id, impersonation_chain
        self.deferrable, self.poll_interval, self.wait_timeout_s = deferrable, poll_interval, wait_timeout_s
        self.job_name: str | None = None
        self.reattached: str | None = None
        self._client = None

    # --- the client calls -----------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = job_client(self.gcp_conn_id, self.impersonation_chain, self.region)
        return self._client

    @property
    def parent(self) -> str:
        return f"projects/{self.project_id}/locations/{self.region}"

    def _list(self, key: str) -> list:
        return list(self.client.list_custom_jobs(request={"parent": self.parent,
                                                          "filter": f'labels.{LABEL_JOB}="{key}"'}))

    def _exists(self, uri: str) -> bool:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        bucket, _, key = uri[len("gs://"):].partition("/")
        return GCSHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain).exists(bucket, key)

    def _create(self, body: dict):
        from google.cloud.aiplatform_v1 import CustomJob

        job = CustomJob(body)  # a misspelt field fails here, before anything is created
        return self.client.create_custom_job(parent=self.parent, custom_job=job)

    # --- control flow ---------------------------------------------------------------------
    def execute(self, context) -> dict:
        ident = identity(context, self.interval_key, self.retries)
        ti = context["ti"]
        key = job_key(ti.dag_id, ti.task_id, self.interval_key, ident.run_id)
        found = classify([job_ref(j, ident.run_id) for j in self._list(key)], ident.stem, ident.run_id,
                         ident.tries, try_number_of=try_label)
        for stale in found.stale:
            self.log.warning("Cancelling Vertex AI custom job %s (%s, try %s): started before this task was "
                             "cleared, still %s", stale.id, stale.name, try_label(stale), stale.state)
            cancel(self.client, stale.id, self.log)
        if found.reattach is not None:
            job = found.reattach.raw
            self.reattached = job.name
            self.log.info("Vertex AI custom job %s (%s) of try %s is %s: reattaching instead of creating another.",
                          job.name, job.display_name, try_label(found.reattach), state_of(job))
        else:
            display = short_job_name(ti.dag_id, ti.task_id, self.interval_key, ident.run_id, ident.try_number)
            labels = {LABEL_JOB: key, LABEL_TRY: str(ident.try_number), LABEL_DAG: label_value(ti.dag_id),
                      LABEL_TASK: label_value(ti.task_id)}
            job = self._create(with_identity(self.custom_job, display_name=display, output_root=self.output_root,
                                             labels=labels))
            self.log.info("Created Vertex AI custom job %s (%s)", job.name, display)
        self.job_name = job.name
        if state_of(job) in TERMINAL_STATES:
            return self._finish(job)
        if self.deferrable:
            self.defer(
                trigger=VertexCustomJobTrigger(job_name=job.name, region=self.region, gcp_conn_id=self.gcp_conn_id,
                                               impersonation_chain=self.impersonation_chain,
                                               poll_interval=self.poll_interval),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.wait_timeout_s) if self.wait_timeout_s else None)
        while state_of(job) not in TERMINAL_STATES:
            time.sleep(self.poll_interval)
            job = self.client.get_custom_job(name=job.name)
        return self._finish(job)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        """Resume after the trigger: read the job again and check its state and output (never trust the event)."""
        event = event or {}
        name = event.get("job_name")
        if not name:
            raise JobStateError(f"The wait for the Vertex AI custom job ended without naming the job: {event}.")
        self.job_name = name
        job = self.client.get_custom_job(name=name)
        if event.get("status") == "error" and state_of(job) not in TERMINAL_STATES:
            raise JobStateError(f"Waiting for Vertex AI custom job {name} failed: {event.get('message')}. The job "
                                f"was not cancelled (it is {state_of(job)}); the retry reattaches to it.")
        return self._finish(job)

    def _finish(self, job) -> dict:
        state = state_of(job)
        what = f"Vertex AI custom job {job.display_name} ({job.name})"
        if state != SUCCEEDED_STATE:
            detail = job.error.message or "no error message"
            raise JobStateError(f"{what} ended {state}: {detail}. See its log in Cloud Logging "
                                f"(resource.labels.job_id=\"{job.name.rsplit('/', 1)[-1]}\").")
        base = job.job_spec.base_output_directory.output_uri_prefix
        if not base:
            raise JobStateError(f"{what} succeeded but has no base_output_directory: no model folder to read.")
        model_dir = base.rstrip("/") + "/model"
        require_output(self._exists, f"{model_dir}/metrics.json", what)
        return {"job_name": job.name, "display_name": job.display_name, "state": state, "model_dir": model_dir}

    def on_kill(self) -> None:
        if self.job_name:
            cancel(self.client, self.job_name, self.log)
