"""Spark operators for Azure: a Livy batch that reattaches on retry, and Synapse's Spark batch, both checked at the end.

The provider's ``LivyOperator`` posts a new batch on every try: when a worker dies while a batch
runs, or a deferred task times out while the batch goes on, the retry starts a second batch
writing the same partitions (apache/airflow 42401, 60517 for the same on EMR). Livy assigns batch
ids itself, so ``ReattachingLivyOperator`` names every batch ``short_job_name`` of DAG, task,
interval, run and try (a digest ties the name to the run), lists the server's batches
(``GET /batches``) and lets ``include.targets.cloud.reattach.classify`` decide:

* a batch of this attempt still starting or running: wait for it instead of submitting;
* a batch of this attempt that succeeded: return it, submitting nothing (Livy keeps a finished
  batch for ``livy.server.session.state-retain.sec``, 10 minutes by default; later the retry submits);
* a batch from before the task was cleared, still running: delete it, then submit.

The wait is deferred (``CancellingLivyTrigger``, which deletes the batch when the deferred task is
killed) or polls in the worker. Afterwards success needs the batch's final state as the server
reports it *and* the job's output in the lake (apache/airflow 69042); a batch that ended otherwise
fails the task with the tail of its log (``GET /batches/{id}/log``), and one whose driver reported
bad input (``PERMANENT FAILURE``, ``spark_jobs.session.run_job``) fails it without retries. A
killed task, or a batch past its timeout, is deleted (``DELETE /batches/{id}``), which kills it.

``SynapseSparkBatchOperator`` is the Azure provider's Synapse Spark batch operator with its payload
rendered at run time (the arguments carry Jinja), named the same way, cancelled when its wait
times out, and checked for its output. The provider polls Synapse from the worker and has no
trigger for Spark batches; it does not reattach.

This module imports the Livy and Azure providers; DAG files reach it only through
``include.targets.azure.livy`` specs and ``instantiate``.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any, Callable

from airflow.providers.apache.livy.operators.livy import LivyOperator
from airflow.providers.apache.livy.triggers.livy import LivyTrigger
from airflow.providers.common.compat.sdk import AirflowException, AirflowTaskTimeout
from airflow.providers.microsoft.azure.operators.synapse import AzureSynapseRunSparkBatchOperator

from include.targets.cloud import checks
from include.targets.cloud.checks import CodeMissing  # noqa: F401 (re-exported)
from include.targets.cloud.naming import short_job_name
from include.targets.cloud.reattach import (ACTIVE, FAILED, SUCCEEDED, Found, Identity, JobRef, JobStateError,
                                            classify, identity, require_output)
from include.targets.errors import PERMANENT_EXIT_CODES, SparkJobRejected

# Livy's session states: a batch goes starting -> running -> success | dead | killed (error for sessions).
LIVY_ACTIVE = ("not_started", "starting", "recovering", "running", "idle", "busy", "shutting_down")
LIVY_SUCCEEDED = "success"
LIVY_HEADERS = {"X-Requested-By": "airflow"}
LIST_PAGE_SIZE = 100
LOG_TAIL_LINES = 40
DEFERRAL_MARGIN_MINUTES = 10  # the deferral outlives the trigger's own timeout, which deletes the batch
PERMANENT_MARK = "PERMANENT FAILURE"  # what spark_jobs.session.run_job prints before its permanent exit
# YARN's diagnostics of a driver that exited with one of those statuses (Spark's ApplicationMaster words).
YARN_PERMANENT_EXIT = re.compile(r"User application exited with status (%s)\b"
                                 % "|".join(map(str, PERMANENT_EXIT_CODES)))


# --- Livy client calls ------------------------------------------------------------------------------


def _json(response, what: str):
    if response.status_code >= 400:
        raise AirflowException(f"Livy: could not {what}: HTTP {response.status_code} {response.text[:500]}")
    return response.json()


def list_batches(hook) -> list[dict]:
    """Every batch the Livy server holds (``GET /batches``, page by page), oldest first."""
    batches: list[dict] = []
    while True:
        page = _json(hook.run_method(endpoint=f"{hook.endpoint_prefix}/batches", headers=hook.extra_headers,
                                     data={"from": len(batches), "size": LIST_PAGE_SIZE}), "list batches")
        sessions = page.get("sessions") or []
        batches += sessions
        if not sessions or len(batches) >= int(page.get("total") or 0):
            return batches


def get_batch(hook, batch_id: int | str) -> dict:
    return _json(hook.run_method(endpoint=f"{hook.endpoint_prefix}/batches/{batch_id}", headers=hook.extra_headers),
                 f"read batch {batch_id}")


def log_tail(hook, batch_id: int | str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of the batch's log (``GET /batches/{id}/log?size=``, no ``from``: the tail)."""
    try:
        page = _json(hook.run_method(endpoint=f"{hook.endpoint_prefix}/batches/{batch_id}/log",
                                     headers=hook.extra_headers, data={"size": lines}), f"read the log of {batch_id}")
    except Exception as exc:  # the failure being reported matters more than its log
        return [f"(the log could not be read: {exc})"]
    return [str(line) for line in page.get("log") or []]


def delete_batch(hook, batch_id: int | str) -> bool:
    """Delete (and so kill) the batch; False when the server no longer has it."""
    response = hook.run_method(method="DELETE", endpoint=f"{hook.endpoint_prefix}/batches/{batch_id}",
                               headers=hook.extra_headers)
    if response.status_code == 404:
        return False
    _json(response, f"delete batch {batch_id}")
    return True


# --- the shared control flow, fed with Livy's batches -----------------------------------------------


def status_of(state: str | None) -> str:
    """``classify``'s word for a Livy state: active, succeeded or failed (dead, killed, error)."""
    return ACTIVE if state in LIVY_ACTIVE else SUCCEEDED if state == LIVY_SUCCEEDED else FAILED


def batch_names(dag_id: str, task_id: str, interval_key: str, ident: Identity) -> dict[str, int]:
    """The name each try up to this one gave (or gives) its batch, with its try number."""
    return {short_job_name(dag_id, task_id, interval_key, ident.run_id, n): n for n in range(1, ident.try_number + 1)}


def decide(batches: list[dict], names: dict[str, int], ident: Identity) -> Found:
    """``classify`` by name: a batch is this task's and run's when its name is one of ``names``."""
    refs = [JobRef(id=str(b["id"]), name=str(b.get("name") or ""),
                   run_id=ident.run_id if b.get("name") in names else "", status=status_of(b.get("state")),
                   state=str(b.get("state")), raw=b) for b in batches]
    return classify(refs, ident.stem, ident.run_id, ident.tries, try_number_of=lambda j: names.get(j.name))


def permanent(log: list[str]) -> bool:
    """Whether the driver failed for a reason a retry cannot fix: ``run_job``'s mark in the log (client
    mode), or YARN's report of its permanent exit status (cluster mode, HDInsight's default)."""
    return any(line.lstrip().startswith(PERMANENT_MARK) or YARN_PERMANENT_EXIT.search(line) for line in log)


def driver_log(batch: dict) -> str:
    """Where the driver's own output is: the YARN container log of the application, when Livy knows it."""
    info = batch.get("appInfo") or {}
    if info.get("driverLogUrl"):
        return str(info["driverLogUrl"])
    if batch.get("appId"):
        return f"`yarn logs -applicationId {batch['appId']}` on the cluster"
    return "in the Livy log below"


class _OutputMixin:
    """The output check both operators share: through ``exists``, the ``lake``, or the Azure lake of the settings."""

    job_output: str | None
    _exists_fn: Callable[[str], bool] | None
    _lake: Any

    def _exists(self, uri: str) -> bool:
        if self._exists_fn is None:
            lake = self._lake if self._lake is not None else default_lake()
            self._exists_fn = lake.exists
        return self._exists_fn(uri)


def default_lake():
    """The azure target's lake (``AdlsLake``) from the ``FLIGHTS_AZURE_*`` settings of the worker."""
    from include.config import settings
    from include.targets.azure.adls import AdlsLake
    from include.targets.azure.settings import load_azure_settings

    return AdlsLake(load_azure_settings(), settings().home / "cache" / "adls")


# --- HDInsight: Livy batches -----------------------------------------------------------------------


class CancellingLivyTrigger(LivyTrigger):
    """``LivyTrigger`` that deletes the batch when the deferred task is killed (Airflow 3.3+)."""

    def __init__(self, batch_id: int | str, spark_params: dict, cancel_on_kill: bool = True, **kwargs: Any) -> None:
        super().__init__(batch_id=batch_id, spark_params=spark_params, **kwargs)
        self.cancel_on_kill = cancel_on_kill

    @property
    def batch_id(self) -> int | str:
        return self._batch_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", {**kwargs, "cancel_on_kill": self.cancel_on_kill}

    async def on_kill(self) -> None:
        if not self.cancel_on_kill:
            return
        self.log.info("Deleting Livy batch %s", self._batch_id)
        result = await self._get_async_hook().run_method(endpoint=f"batches/{self._batch_id}", method="DELETE")
        if result.get("status") != "success":
            self.log.warning("Livy batch %s was not deleted: %s", self._batch_id, result)


class ReattachingLivyOperator(_OutputMixin, LivyOperator):
    """``LivyOperator`` with a batch name per run and try that reattaches on retry and deletes its batch on kill.

    Args:
        interval_key: the interval's key (templated).
        job_output: what the job writes (templated URI). When set, success also needs that output to
            exist, and the task returns it (downstream tasks read it) instead of the batch id.
        timeout_minutes: how long the batch may run; then it is deleted and the task fails.
        cancel_on_kill: delete the batch when the task is killed (default True).
        require_code: check before submitting that the entry point, the Python files and the jars exist.
        lake: what reads the outputs (anything with ``exists(uri)``); default ``AdlsLake`` of the settings.
        exists: instead of ``lake``, a function telling whether a URI exists.
        log_tail_lines: how many lines of a failed batch's log the error shows.
        Every other argument is ``LivyOperator``'s; ``name`` is set at run time, ``X-Requested-By`` is
        always sent, and ``polling_interval`` must be positive (the task always waits for its batch).
    """

    template_fields = (*LivyOperator.template_fields, "interval_key", "job_output")
    template_ext = ()

    def __init__(self, *, interval_key: str, job_output: str | None = None, timeout_minutes: int = 120,
                 cancel_on_kill: bool = True, require_code: bool = False, lake: Any = None,
                 exists: Callable[[str], bool] | None = None, log_tail_lines: int = LOG_TAIL_LINES,
                 extra_headers: dict[str, Any] | None = None, polling_interval: int = 30, **kwargs: Any) -> None:
        if polling_interval <= 0:
            raise ValueError("ReattachingLivyOperator always waits for its batch: give a positive polling_interval.")
        super().__init__(extra_headers={**LIVY_HEADERS, **(extra_headers or {})}, polling_interval=polling_interval,
                         **kwargs)
        self.interval_key = interval_key
        self.job_output = job_output
        self.timeout_minutes = int(timeout_minutes)
        self.cancel_on_kill = cancel_on_kill
        self.require_code = require_code
        self._lake = lake
        self._exists_fn = exists
        self.log_tail_lines = int(log_tail_lines)
        self.batch_name: str | None = None
        self.reattached: int | None = None

    def execute(self, context) -> Any:
        ti = context["ti"]
        ident = identity(context, self.interval_key, self.retries)
        names = batch_names(ti.dag_id, ti.task_id, self.interval_key, ident)
        self.batch_name = next(name for name, n in names.items() if n == ident.try_number)
        if self.require_code:
            self._check_code()
        found = decide(list_batches(self.hook), names, ident)
        for job in found.stale:
            self.log.warning("Deleting batch %s (%s): started before this task was cleared, still %s.", job.id,
                             job.name, job.state)
            delete_batch(self.hook, job.id)
        if found.reattach is not None:
            self._batch_id = self.reattached = int(found.reattach.id)
            if found.reattach.status == SUCCEEDED:
                self.log.info("Batch %s (%s) already succeeded for this run: not submitting again.", self._batch_id,
                              found.reattach.name)
                return self._finish(context, found.reattach.raw)
            self.log.info("Reattaching to batch %s (%s, %s) instead of submitting a second one.", self._batch_id,
                          found.reattach.name, found.reattach.state)
        else:
            self._submit(context)
        return self._wait(context)

    def _check_code(self) -> None:
        params = self.spark_params
        uris = [params["file"], *(params.get("py_files") or []), *(params.get("jars") or [])]
        scheme = str(params["file"]).partition("://")[0]
        checks.require_code(uris, self._exists, scheme=f"{scheme}://", storage="Azure Storage",
                            upload="python -m include.targets.azure.artifact", doc="docs/running-on-azure.md")

    def _submit(self, context) -> None:
        from airflow.providers.common.compat.openlineage.utils.spark import (
            inject_parent_job_information_into_spark_properties,
            inject_transport_information_into_spark_properties,
        )

        if self.openlineage_inject_parent_job_info:
            self.spark_params["conf"] = inject_parent_job_information_into_spark_properties(
                dict(self.spark_params["conf"] or {}), context)
        if self.openlineage_inject_transport_info:
            self.spark_params["conf"] = inject_transport_information_into_spark_properties(
                dict(self.spark_params["conf"] or {}), context)
        self.spark_params = {**self.spark_params, "name": self.batch_name}
        try:
            self._batch_id = self.hook.post_batch(**self.spark_params)
            self.log.info("Submitted batch %s (%s).", self._batch_id, self.batch_name)
        except AirflowException as exc:
            # This try's name is taken (a listing that missed it): wait for that batch, as it is.
            same = [b for b in list_batches(self.hook) if b.get("name") == self.batch_name]
            if "Duplicate session name" not in str(exc) or not same:
                raise
            self._batch_id = int(same[-1]["id"])
            self.log.info("Batch %s already holds the name %s: waiting for it.", self._batch_id, self.batch_name)

    def _wait(self, context) -> Any:
        if self.deferrable:
            self.defer(
                trigger=CancellingLivyTrigger(
                    batch_id=self._batch_id, spark_params=self.spark_params, livy_conn_id=self._livy_conn_id,
                    polling_interval=self._polling_interval, extra_options=self._extra_options,
                    extra_headers=self._extra_headers, execution_timeout=timedelta(minutes=self.timeout_minutes),
                    endpoint_prefix=self._livy_endpoint_prefix, cancel_on_kill=self.cancel_on_kill),
                method_name="execute_complete",
                timeout=timedelta(minutes=self.timeout_minutes + DEFERRAL_MARGIN_MINUTES))
        return self._poll(context)

    def _poll(self, context) -> Any:
        deadline = time.monotonic() + self.timeout_minutes * 60
        while True:
            batch = get_batch(self.hook, self._batch_id)
            if status_of(batch.get("state")) != ACTIVE:
                return self._finish(context, batch)
            if time.monotonic() > deadline:
                self._timed_out()
            time.sleep(self._polling_interval)

    def _timed_out(self) -> None:
        delete_batch(self.hook, self._batch_id)
        raise JobStateError(f"Livy batch {self._batch_id} ({self.batch_name}) still running after "
                            f"{self.timeout_minutes} minutes: deleted it.")

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> Any:
        event = event or {}
        batch_id = event.get("batch_id", self._batch_id)
        if batch_id is None:
            raise JobStateError(f"The wait for the Livy batch ended without naming it: {event}.")
        self._batch_id = int(batch_id)
        if event.get("status") == "timeout":
            self._timed_out()
        # The server's state, not the event's: a success event for a failed batch must fail the task.
        batch = get_batch(self.hook, self._batch_id)
        self.batch_name = self.batch_name or batch.get("name")
        if status_of(batch.get("state")) == ACTIVE:
            self.log.warning("The deferred wait ended (%s) while batch %s is still %s: waiting in the worker.",
                             event.get("response"), self._batch_id, batch.get("state"))
            return self._poll(context)
        return self._finish(context, batch)

    def _finish(self, context, batch: dict) -> Any:
        batch_id, state = batch["id"], batch.get("state")
        what = f"Livy batch {batch_id} ({batch.get('name') or self.batch_name})"
        if state != LIVY_SUCCEEDED:
            tail = log_tail(self.hook, batch_id, self.log_tail_lines)
            message = (f"{what} ended {state}. Driver log: {driver_log(batch)}. The last lines of its Livy log:\n"
                       + "\n".join(tail))
            if permanent(tail):
                raise SparkJobRejected(message)  # bad input: a retry fails the same way
            raise JobStateError(message)
        require_output(self._exists, self.job_output, what)
        context["ti"].xcom_push(key="app_id", value=batch.get("appId"))
        return self.job_output or batch_id

    def on_kill(self) -> None:
        if self._batch_id is not None and self.cancel_on_kill:
            self.log.info("Deleting Livy batch %s", self._batch_id)
            if not delete_batch(self.hook, self._batch_id):
                self.log.info("Livy batch %s was already gone.", self._batch_id)


# --- Synapse: Spark batch jobs on a pool -----------------------------------------------------------


class SynapseSparkBatchOperator(_OutputMixin, AzureSynapseRunSparkBatchOperator):
    """``AzureSynapseRunSparkBatchOperator`` with a templated payload, a name per run and try, and an output check.

    Args:
        payload: ``SparkBatchJobOptions`` as a dict of its attribute names (templated); ``name`` is set
            at run time (``job_payload``).
        interval_key: the interval's key (templated).
        job_output: what the job writes (templated URI); success needs it, and the task returns it.
        lake, exists: what reads the outputs, as for ``ReattachingLivyOperator``.
        require_code: check before submitting that the entry point, the Python files and the jars exist.
        Every other argument is the provider operator's; ``timeout`` (seconds) ends the wait and
        cancels the job.
    """

    template_fields = (*AzureSynapseRunSparkBatchOperator.template_fields, "payload", "interval_key", "job_output")
    template_fields_renderers = {"payload": "json"}
    template_ext = ()

    def __init__(self, *, interval_key: str, job_output: str | None = None, lake: Any = None,
                 exists: Callable[[str], bool] | None = None, require_code: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.require_code = require_code
        self.interval_key = interval_key
        self.job_output = job_output
        self._lake = lake
        self._exists_fn = exists

    def job_payload(self, context) -> dict:
        """The rendered payload with this try's name."""
        ti = context["ti"]
        ident = identity(context, self.interval_key, self.retries)
        return {**self.payload, "name": short_job_name(ti.dag_id, ti.task_id, self.interval_key, ident.run_id,
                                                        ident.try_number)}

    def execute(self, context) -> Any:
        self.payload = self.job_payload(context)
        if self.require_code:
            p = self.payload
            uris = [p["file"], *(p.get("python_files") or []), *(p.get("jars") or [])]
            checks.require_code(uris, self._exists, scheme=f"{str(p['file']).partition('://')[0]}://",
                                storage="Azure Storage", upload="python -m include.targets.azure.artifact",
                                doc="docs/running-on-azure.md")
        try:
            super().execute(context)
        except AirflowTaskTimeout:
            if self.job_id is not None:
                self.log.info("Cancelling Synapse Spark batch %s: still running after %ss.", self.job_id, self.timeout)
                self.hook.cancel_job_run(job_id=self.job_id)
            raise
        require_output(self._exists, self.job_output, f"Synapse Spark batch {self.job_id} ({self.payload['name']})")
        return self.job_output or self.job_id
