"""The Azure ML command job operator: reattach on retry, cancel stale jobs, cancel on kill, check the end.

The official Azure provider has no Azure ML operator. This one submits the command job of
``include.targets.azure.azureml`` through the SDK's ``MLClient`` under the shared control flow of
``include.targets.cloud.reattach``:

* the job name is ``training_job_name`` of DAG, task, interval, run and try, so every try of the
  current run has a known name; before submitting, ``jobs.get`` looks each of them up and
  ``classify`` decides: wait for (or return) the job of a try of the current attempt, cancel
  running ones from before the task was cleared;
* submitted with ``jobs.create_or_update``; deferred, ``AzureMLJobTrigger`` polls
  ``jobs.get(name).status`` in a thread until the job is over, and cancels it
  (``jobs.begin_cancel``) when the task is killed; not deferred, the worker polls;
* success needs the status ``Completed`` *and* a ``metrics.json`` in the job's ``model`` output;
  a failure names Azure ML's error for the job and its studio URL.

The task returns ``{"job_name", "status", "model_uri", "studio_url"}`` for
``AzureMLTrainer.collect``. This module imports Airflow; DAG files reach it only through
``include.targets.azure.azureml.training_job``, which names it as a string.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from include.targets.azure import azureml
from include.targets.azure.azureml import (COMPLETED, MODEL_OUTPUT, TAG_CODE, TAG_DAG, TAG_INTERVAL, TAG_RUN,
                                           TAG_TASK, TAG_TRY, TERMINAL_STATUSES, status_of)
from include.targets.azure.settings import AzureSettings
from include.targets.cloud.naming import training_job_name
from include.targets.cloud.reattach import (ACTIVE, FAILED, SUCCEEDED, JobRef, JobStateError, classify, identity,
                                            require_output, wait_for_end)
from include.training.outputs import METRICS_FILE


def classify_status(status: str) -> str:
    """``classify``'s word for an Azure ML status: active, succeeded or failed (a cancel on its way is a failure)."""
    if status == COMPLETED:
        return SUCCEEDED
    return FAILED if status in TERMINAL_STATUSES or status == "CancelRequested" else ACTIVE


def get_job(client, name: str):
    """The job named ``name``, or None when the workspace has none."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return client.jobs.get(name)
    except ResourceNotFoundError:
        return None


def cancel(client, name: str, log) -> None:
    """Ask Azure ML to cancel the job; a job that is already over (or gone) is left as it is."""
    from azure.core.exceptions import HttpResponseError

    try:
        client.jobs.begin_cancel(name)  # the request is sent here; the poller only waits for it
        log.info("Cancelling Azure ML job %s", name)
    except HttpResponseError as exc:  # ResourceNotFoundError included
        log.info("Azure ML job %s not cancelled: %s", name, exc)


def studio_url(job) -> str:
    return getattr(job, "studio_url", None) or ""


class AzureMLJobTrigger(BaseTrigger):
    """Polls an Azure ML job until it is over; cancels it when the deferred task is killed (Airflow 3.3+).

    Events: ``{"status": "success" | "failed", "job_name", "job_status", "message"}`` when the job ended, or
    ``{"status": "error", ...}`` after ``max_poll_errors`` failed polls in a row (the job goes on).
    """

    def __init__(self, *, job_name: str, subscription_id: str, resource_group: str, workspace: str,
                 managed_identity_client_id: str = "", poll_interval: float = 30, max_poll_errors: int = 5):
        super().__init__()
        self.job_name, self.subscription_id, self.resource_group, self.workspace = (
            job_name, subscription_id, resource_group, workspace)
        self.managed_identity_client_id = managed_identity_client_id
        self.poll_interval, self.max_poll_errors = poll_interval, max_poll_errors
        self._client = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "job_name": self.job_name, "subscription_id": self.subscription_id,
            "resource_group": self.resource_group, "workspace": self.workspace,
            "managed_identity_client_id": self.managed_identity_client_id, "poll_interval": self.poll_interval,
            "max_poll_errors": self.max_poll_errors})

    def client(self):
        if self._client is None:
            self._client = azureml.ml_client(self.subscription_id, self.resource_group, self.workspace,
                                             self.managed_identity_client_id)
        return self._client

    async def run(self) -> AsyncIterator[TriggerEvent]:
        def ended(job):
            status = status_of(job)
            return (status == COMPLETED, status, studio_url(job)) if status in TERMINAL_STATUSES else None

        yield TriggerEvent(await wait_for_end(
            lambda: self.client().jobs.get(self.job_name), ended, log=self.log, what="Azure ML job",
            job_name=self.job_name, state_key="job_status", poll_interval=self.poll_interval,
            max_poll_errors=self.max_poll_errors))

    async def on_kill(self) -> None:
        self.log.info("Task killed: cancelling Azure ML job %s", self.job_name)
        await asyncio.to_thread(cancel, self.client(), self.job_name, self.log)


class AzureMLCommandJobOperator(BaseOperator):
    """Submit (or reattach to) the Azure ML training job named per run and try; wait; check status and output.

    Args:
        settings: ``dataclasses.asdict`` of the ``AzureSettings`` the job is built from.
        dataset_uri: the exported training set folder (templated).
        hyperparameters: n_estimators, max_depth, learning_rate, device (templated).
        interval_key: the interval's key (templated, e.g. from the ``resolve_interval`` XCom).
        sourcedir_uri, code_sha256: the code artefact the job unpacks and runs.
        requirements: the pinned training requirements (the environment's conda file).
        deferrable: wait in the triggerer (default) or poll in the worker.
        poll_interval: seconds between polls.
        wait_timeout_s: how long a deferred wait may last before the task fails (the job is not cancelled:
            the retry reattaches to it).
    """

    template_fields: Sequence[str] = ("dataset_uri", "hyperparameters", "interval_key")
    ui_color = "#e5f1fb"

    def __init__(self, *, settings: dict, dataset_uri: str, hyperparameters: dict, interval_key: str,
                 sourcedir_uri: str, requirements: str, code_sha256: str = "", deferrable: bool = True,
                 poll_interval: float = 30, wait_timeout_s: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings, self.dataset_uri, self.hyperparameters = settings, dataset_uri, hyperparameters
        self.interval_key, self.sourcedir_uri, self.requirements = interval_key, sourcedir_uri, requirements
        self.code_sha256, self.deferrable = code_sha256, deferrable
        self.poll_interval, self.wait_timeout_s = poll_interval, wait_timeout_s
        self.job_name: str | None = None
        self.reattached: str | None = None
        self._client = None

    @property
    def azure(self) -> AzureSettings:
        return AzureSettings(**self.settings)

    @property
    def client(self):
        if self._client is None:
            self._client = azureml.client_for(self.azure)
        return self._client

    # --- control flow ---------------------------------------------------------------------
    def execute(self, context) -> dict:
        ident = identity(context, self.interval_key, self.retries)
        ti = context["ti"]
        names = {training_job_name(ti.dag_id, ti.task_id, self.interval_key, ident.run_id, n): n
                 for n in range(1, ident.try_number + 1)}
        refs = []
        for name in names:
            job = get_job(self.client, name)
            if job is not None:
                status = status_of(job)
                refs.append(JobRef(id=name, name=name, run_id=ident.run_id, status=classify_status(status),
                                    state=status, raw=job))
        found = classify(refs, ident.stem, ident.run_id, ident.tries, try_number_of=lambda ref: names[ref.id])
        for stale in found.stale:
            self.log.warning("Cancelling Azure ML job %s (try %s): started before this task was cleared, still %s",
                             stale.id, names[stale.id], stale.state)
            cancel(self.client, stale.id, self.log)
        this_try = training_job_name(ti.dag_id, ti.task_id, self.interval_key, ident.run_id, ident.try_number)
        if found.reattach is not None:
            job = found.reattach.raw
            self.reattached = job.name
            self.log.info("Azure ML job %s of try %s is %s: reattaching instead of submitting another.", job.name,
                          names[job.name], status_of(job))
        elif found.latest is not None and found.latest.id == this_try:
            job = found.latest.raw  # this try's job already ended badly: its name cannot be used again
        else:
            tags = {TAG_DAG: ti.dag_id, TAG_TASK: ti.task_id, TAG_RUN: ident.run_id, TAG_TRY: str(ident.try_number),
                    TAG_INTERVAL: str(self.interval_key), TAG_CODE: self.code_sha256}
            new = azureml.command_job(self.azure, name=this_try, display_name=ident.name,
                                      dataset_uri=self.dataset_uri, sourcedir_uri=self.sourcedir_uri,
                                      params=self.hyperparameters, requirements=self.requirements, tags=tags,
                                      experiment=ti.dag_id)
            azureml.job_request(new)  # the SDK's serialisation refuses a bad job before anything is created
            job = self.client.jobs.create_or_update(new)
            self.log.info("Submitted Azure ML job %s (%s): %s", job.name, ident.name, studio_url(job))
        self.job_name = job.name
        if status_of(job) in TERMINAL_STATUSES:
            return self._finish(job)
        if self.deferrable:
            azure = self.azure
            self.defer(
                trigger=AzureMLJobTrigger(job_name=job.name, subscription_id=azure.subscription_id,
                                          resource_group=azure.resource_group, workspace=azure.ml_workspace,
                                          managed_identity_client_id=azure.managed_identity_client_id,
                                          poll_interval=self.poll_interval),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.wait_timeout_s) if self.wait_timeout_s else None)
        while status_of(job) not in TERMINAL_STATUSES:
            time.sleep(self.poll_interval)
            job = self.client.jobs.get(job.name)
        return self._finish(job)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        """Resume after the trigger: read the job again and check its status and output (never trust the event)."""
        event = event or {}
        name = event.get("job_name")
        if not name:
            raise JobStateError(f"The wait for the Azure ML job ended without naming the job: {event}.")
        self.job_name = name
        job = self.client.jobs.get(name)
        if event.get("status") == "error" and status_of(job) not in TERMINAL_STATUSES:
            raise JobStateError(f"Waiting for Azure ML job {name} failed: {event.get('message')}. The job was not "
                                f"cancelled (it is {status_of(job)}); the retry reattaches to it.")
        return self._finish(job)

    def _finish(self, job) -> dict:
        status, url = status_of(job), studio_url(job)
        what = f"Azure ML job {job.name}"
        if status != COMPLETED:
            raise JobStateError(f"{what} ended {status}: {azureml.job_error(self.client, job.name)}. Its logs: "
                                f"{url or 'Azure ML studio'}.")
        output = (job.outputs or {}).get(MODEL_OUTPUT)
        model_uri = str(getattr(output, "path", "") or "").rstrip("/")
        if not model_uri:
            raise JobStateError(f"{what} completed but has no {MODEL_OUTPUT!r} output: no model folder to read.")
        with tempfile.TemporaryDirectory(prefix="azureml-output-") as tmp:
            local = Path(tmp) / MODEL_OUTPUT

            def exists(_uri: str) -> bool:
                try:
                    azureml.download_output(self.client, job.name, MODEL_OUTPUT, local)
                except ValueError:
                    return False
                return (local / METRICS_FILE).is_file()

            require_output(exists, f"{model_uri}/{METRICS_FILE}", f"{what} ({url})")
        return {"job_name": job.name, "status": status, "model_uri": model_uri, "studio_url": url}

    def on_kill(self) -> None:
        if self.job_name:
            cancel(self.client, self.job_name, self.log)
