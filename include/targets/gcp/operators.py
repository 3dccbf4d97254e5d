"""Dataproc operators that reattach to the job an earlier try started, cancel it on kill, and check the end.

The provider's operators submit a new batch or job on every try; with a static batch id a
retry fails with ALREADY_EXISTS (apache/airflow PR 69855), with a generated one it starts a
second job writing the same partitions (apache/airflow 42401, 60517). These subclasses label
every batch or job with digests of the DAG run and of ``<dag>.<task>.<interval>.try`` and with
the try number, list this task's batches or jobs by those labels, and let
``include.targets.cloud.reattach.classify`` decide:

* one of this attempt still pending or running: wait for it instead of submitting;
* one of this attempt succeeded: return it, submitting nothing;
* one from before the task was cleared still running: cancel it, then submit.

A new batch is ``short_job_name(..., lower=True)``: Dataproc batch ids allow only
``[a-z0-9-]`` (4-63 characters). After the wait, success needs the batch's or job's final state
as the server reports it *and* the job's output in Cloud Storage (apache/airflow 69042). A
killed task cancels its batch or job, in the worker (``on_kill``) and in the triggerer
(``CancellingDataprocBatchTrigger.on_kill``; the provider's job trigger cancels on its own).

This module imports the Google provider; DAG files reach it only through
``include.targets.gcp.dataproc`` specs and ``instantiate``.
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from typing import Any

from airflow.providers.google.cloud.hooks.dataproc import DataprocHook
from airflow.providers.google.cloud.links.dataproc import DataprocBatchLink, DataprocJobLink
from airflow.providers.google.cloud.operators.dataproc import (
    DataprocCreateBatchOperator,
    DataprocCreateClusterOperator,
    DataprocDeleteClusterOperator,
    DataprocSubmitJobOperator,
)
from airflow.providers.google.cloud.triggers.dataproc import DataprocBatchTrigger, DataprocSubmitTrigger

from include.targets.cloud import checks
from include.targets.cloud.checks import CodeMissing  # noqa: F401 (re-exported)
from include.targets.cloud.naming import short_job_name
from include.targets.cloud.reattach import (
    ACTIVE,
    FAILED,
    SUCCEEDED,
    Found,
    Identity,
    JobRef,
    JobStateError,
    classify,
    identity,
    require_output,
)
from include.targets.gcp.dataproc import CLUSTER_NAME_KEY, DEFERRAL_MARGIN_MINUTES, cluster_name

RUN_LABEL, STEM_LABEL, TRY_LABEL = "airflow_run", "airflow_stem", "airflow_try"
BATCH_ACTIVE, BATCH_SUCCEEDED = ("PENDING", "RUNNING"), "SUCCEEDED"
JOB_ACTIVE, JOB_SUCCEEDED = ("PENDING", "SETUP_DONE", "RUNNING", "ATTEMPT_FAILURE"), "DONE"
LIST_PAGE_SIZE = 100


# --- shared by batches and cluster jobs ------------------------------------------------------------


def label_digest(text: str) -> str:
    """A label value standing for ``text``: 20 hex digits of its SHA-256 (labels allow [a-z0-9_-], ≤ 63)."""
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def run_labels(ident: Identity) -> dict[str, str]:
    """The labels that find a task's batches or jobs again: run, stem and try."""
    return {RUN_LABEL: label_digest(ident.run_id), STEM_LABEL: label_digest(ident.stem),
            TRY_LABEL: str(ident.try_number)}


def label_filter(ident: Identity) -> str:
    """The list filter for batches or jobs of this task and run, any try (``labels.<key> = <value>``)."""
    return f"labels.{STEM_LABEL} = {label_digest(ident.stem)} AND labels.{RUN_LABEL} = {label_digest(ident.run_id)}"


def job_ref(resource, resource_id: str, state: str, active: tuple[str, ...], succeeded: str) -> JobRef:
    """A batch or job as ``JobRef``: its id, its run label, and its state mapped to ACTIVE/SUCCEEDED/FAILED."""
    labels = dict(resource.labels)
    status = ACTIVE if state in active else SUCCEEDED if state == succeeded else FAILED
    return JobRef(id=resource_id, name=resource_id, run_id=labels.get(RUN_LABEL, ""), status=status, state=state,
                  raw=resource)


def decide(refs: list[JobRef], ident: Identity) -> Found:
    """``classify`` by labels: a job is this task's when its stem label matches; its try is its try label."""
    stem = label_digest(ident.stem)

    def try_number(job: JobRef) -> int | None:
        labels = dict(job.raw.labels)
        tried = labels.get(TRY_LABEL, "")
        return int(tried) if labels.get(STEM_LABEL) == stem and tried.isdigit() else None

    return classify(refs, ident.stem, label_digest(ident.run_id), ident.tries, try_number_of=try_number)


def with_labels(request: dict, labels: dict[str, str]) -> dict:
    return {**request, "labels": {**(request.get("labels") or {}), **labels}}


def gcs_exists(uri: str, gcp_conn_id: str, impersonation_chain=None) -> bool:
    """Whether any object's name starts with the ``gs://`` URI's key (an object, or a folder holding objects)."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    if not uri.startswith("gs://"):
        raise ValueError(f"{uri!r} is not a gs://<bucket>/<key> URI; the gcp target writes its outputs to GCS.")
    bucket, _, key = uri[len("gs://"):].partition("/")
    client = GCSHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain).get_conn()
    return any(True for _ in client.list_blobs(bucket, prefix=key, max_results=1))


def require_code(uris: list[str], exists) -> None:
    """The code, its zip and the runtime's Delta jars must be in Cloud Storage (``cloud.checks``)."""
    checks.require_code(uris, exists, scheme="gs://", storage="Cloud Storage",
                        upload="python -m include.targets.gcp.artifact", doc="docs/running-on-gcp.md")


def read_retry():
    """Retry for the reads of Dataproc batches (get, list), which the client library does not retry by default:
    throttling (429), unavailability (503) and internal errors (500), with backoff, for up to five minutes."""
    from google.api_core.exceptions import InternalServerError, ServiceUnavailable, TooManyRequests
    from google.api_core.retry import Retry, if_exception_type

    return Retry(predicate=if_exception_type(ServiceUnavailable, TooManyRequests, InternalServerError),
                 initial=1.0, maximum=20.0, multiplier=2.0, timeout=300.0)


def cancel_batch(hook: DataprocHook, batch_id: str, project_id: str, region: str) -> str | None:
    """Cancel the batch's operation when the batch is still pending or running; returns the operation name."""
    batch = hook.get_batch(batch_id=batch_id, region=region, project_id=project_id, retry=read_retry())
    if batch.state.name not in BATCH_ACTIVE or not batch.operation:
        return None
    hook.get_operations_client(region=region).cancel_operation(name=batch.operation)
    return batch.operation


class _ReattachMixin:
    """What both operators share: identity, the output check, the code check."""

    interval_key: str
    job_output: str | None

    def _identity(self, context) -> tuple[Identity, str]:
        ident = identity(context, self.interval_key, self.retries)
        ti = context["ti"]
        return ident, short_job_name(ti.dag_id, ti.task_id, self.interval_key, ident.run_id, ident.try_number,
                                     lower=True)

    def _exists(self, uri: str) -> bool:
        return gcs_exists(uri, self.gcp_conn_id, self.impersonation_chain)

    def _deferral_timeout(self) -> timedelta:
        return timedelta(minutes=self.timeout_minutes + DEFERRAL_MARGIN_MINUTES)


# --- Serverless batches ----------------------------------------------------------------------------


class CancellingDataprocBatchTrigger(DataprocBatchTrigger):
    """``DataprocBatchTrigger`` that cancels the batch when the deferred task is killed (Airflow 3.3+)."""

    def __init__(self, batch_id: str, cancel_on_kill: bool = True, **kwargs: Any) -> None:
        super().__init__(batch_id=batch_id, cancel_on_kill=cancel_on_kill, **kwargs)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", {**kwargs, "cancel_on_kill": self.cancel_on_kill}

    async def on_kill(self) -> None:
        from asgiref.sync import sync_to_async

        if self.cancel_on_kill:
            self.log.info("Cancelling Dataproc batch %s", self.batch_id)
            await sync_to_async(cancel_batch)(self.get_sync_hook(), self.batch_id, self.project_id, self.region)


class ReattachingDataprocBatchOperator(_ReattachMixin, DataprocCreateBatchOperator):
    """``DataprocCreateBatchOperator`` with a batch id per run and try that reattaches on retry.

    Args:
        interval_key: the interval's key (templated).
        job_output: what the job writes (templated ``gs://`` URI). When set, success also needs that
            output to exist, and the task returns it (downstream tasks read it) instead of the batch id.
        timeout_minutes: the batch's TTL; the deferral waits that long plus a margin.
        cancel_on_kill: cancel the batch when the task is killed (default True).
        require_code: check before submitting that the entry point, the code zip and the jars are in GCS.
        Every other argument is the provider operator's; ``batch_id`` is set at run time.
    """

    template_fields = (*DataprocCreateBatchOperator.template_fields, "interval_key", "job_output")
    template_ext = ()  # the batch is a dict, never a file; job_output may end in .json

    def __init__(self, *, interval_key: str, job_output: str | None = None, timeout_minutes: int = 120,
                 cancel_on_kill: bool = True, require_code: bool = False, **kwargs: Any) -> None:
        if kwargs.get("asynchronous") or kwargs.get("batch_id_prefix"):
            raise ValueError("ReattachingDataprocBatchOperator always waits for its own batch id: leave asynchronous "
                             "and batch_id_prefix unset.")
        super().__init__(**kwargs)
        self.interval_key = interval_key
        self.job_output = job_output
        self.timeout_minutes = int(timeout_minutes)
        self.cancel_on_kill = cancel_on_kill
        self.require_code = require_code
        self.reattached: str | None = None

    def _refs(self, ident: Identity) -> list[JobRef]:
        pages = self.hook.list_batches(region=self.region, project_id=self.project_id, page_size=LIST_PAGE_SIZE,
                                       retry=read_retry(),
                                       filter=label_filter(ident))
        return [job_ref(b, b.name.rsplit("/", 1)[-1], b.state.name, BATCH_ACTIVE, BATCH_SUCCEEDED) for b in pages]

    def execute(self, context) -> str:
        ident, self.batch_id = self._identity(context)
        self.batch = with_labels(self.batch, run_labels(ident))
        if self.require_code:
            spark = self.batch["pyspark_batch"]
            require_code([spark["main_python_file_uri"], *spark.get("python_file_uris", []),
                          *spark.get("jar_file_uris", [])], self._exists)
        found = decide(self._refs(ident), ident)
        for job in found.stale:
            self.log.warning("Cancelling batch %s: started before this task was cleared, still %s.", job.id, job.state)
            cancel_batch(self.hook, job.id, self.project_id, self.region)
        if found.reattach is not None:
            self.batch_id = self.reattached = found.reattach.id
            if found.reattach.status == SUCCEEDED:
                self.log.info("Batch %s already succeeded for this run: not submitting again.", self.batch_id)
                return self._finish(found.reattach.raw)
            self.log.info("Reattaching to batch %s (%s) instead of submitting a second one.", self.batch_id,
                          found.reattach.state)
        else:
            self._submit(context)
        DataprocBatchLink.persist(context=context, project_id=self.project_id, region=self.region,
                                  batch_id=self.batch_id)
        return self._wait(self.batch_id)

    def _submit(self, context) -> None:
        from google.api_core.exceptions import AlreadyExists

        if self.openlineage_inject_parent_job_info or self.openlineage_inject_transport_info:
            self._inject_openlineage_properties_into_dataproc_batch(context)
        try:
            self.operation = self.hook.create_batch(
                region=self.region, project_id=self.project_id, batch=self.batch, batch_id=self.batch_id,
                request_id=self.request_id, retry=self.retry, timeout=self.timeout, metadata=self.metadata)
            self.log.info("Submitted batch %s.", self.batch_id)
        except AlreadyExists:
            # This try's id exists (a listing that missed it): the wait and the final check read it as it is.
            self.log.info("Batch %s already exists: waiting for it.", self.batch_id)

    def _wait(self, batch_id: str) -> str:
        if self.deferrable:
            self.defer(
                trigger=CancellingDataprocBatchTrigger(
                    batch_id=batch_id, project_id=self.project_id, region=self.region, gcp_conn_id=self.gcp_conn_id,
                    impersonation_chain=self.impersonation_chain,
                    polling_interval_seconds=self.polling_interval_seconds, cancel_on_kill=self.cancel_on_kill),
                method_name="execute_complete", timeout=self._deferral_timeout())
        batch = self.hook.wait_for_batch(batch_id=batch_id, region=self.region, project_id=self.project_id,
                                         wait_check_interval=self.polling_interval_seconds, metadata=self.metadata)
        return self._finish(batch)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> str:
        batch_id = (event or {}).get("batch_id") or self.batch_id
        if not batch_id:
            raise JobStateError(f"The wait for the Dataproc batch ended without naming it: {event}.")
        self.batch_id = batch_id
        # The server's state, not the event's: a success event for a failed batch must fail the task.
        return self._finish(self.hook.get_batch(batch_id=batch_id, region=self.region, project_id=self.project_id,
                                                retry=read_retry()))

    def _finish(self, batch) -> str:
        batch_id = batch.name.rsplit("/", 1)[-1] or self.batch_id
        state = batch.state.name
        if state != BATCH_SUCCEEDED:
            where = batch.runtime_info.output_uri or f"the batch {batch_id} in the Dataproc console"
            message = batch.state_message or "no state message"
            raise JobStateError(f"Dataproc batch {batch_id} ended {state}: {message}. "
                                f"Driver output: {where}.")
        require_output(self._exists, self.job_output, f"Dataproc batch {batch_id}")
        return self.job_output or batch_id

    def on_kill(self) -> None:
        if self.batch_id and self.cancel_on_kill:
            self.log.info("Cancelling Dataproc batch %s", self.batch_id)
            cancel_batch(self.hook, self.batch_id, self.project_id, self.region)


# --- Dataproc on Compute Engine --------------------------------------------------------------------


class ReattachingDataprocClusterOperator(DataprocCreateClusterOperator):
    """Creates the run's cluster, named from DAG, interval and run, or uses it when it already exists.

    The name is pushed to XCom (key ``cluster_name``) before anything is created, so the jobs and
    the teardown find the cluster even when this task failed half-way. The task returns the name.
    """

    template_fields = (*DataprocCreateClusterOperator.template_fields, "interval_key")

    def __init__(self, *, interval_key: str, cluster_name: str = "", **kwargs: Any) -> None:
        super().__init__(cluster_name=cluster_name, **kwargs)
        self.interval_key = interval_key

    def execute(self, context) -> str:
        self.cluster_name = cluster_name(context["ti"].dag_id, self.interval_key, context["run_id"])
        context["ti"].xcom_push(key=CLUSTER_NAME_KEY, value=self.cluster_name)
        super().execute(context)
        return self.cluster_name

    def execute_complete(self, context, event: dict[str, Any]) -> str:
        super().execute_complete(context, event)
        return event["cluster_name"]


class DataprocDeleteRunClusterOperator(DataprocDeleteClusterOperator):
    """``DataprocDeleteClusterOperator`` that does nothing when the run never named a cluster."""

    def execute(self, context) -> None:
        if not self.cluster_name or self.cluster_name == "None":
            self.log.info("No cluster was named for this run: nothing to delete.")
            return None
        return super().execute(context)


class ReattachingDataprocJobOperator(_ReattachMixin, DataprocSubmitJobOperator):
    """One Spark job on the run's cluster: submitted once per try, waited for, reattached on retry, cancelled on kill.

    Args:
        job: the ``Job`` (``dataproc.job_request``); its reference is set at run time.
        interval_key: the interval's key (templated).
        job_output: what the job writes (templated ``gs://`` URI); success needs it, and the task returns it.
        timeout_minutes: how long the task waits for the job (a cluster job has no TTL of its own);
            a job still running then is cancelled.
        require_code: check before submitting that the entry point, the code zip and the jars are in GCS.
        Every other argument is ``DataprocSubmitJobOperator``'s.
    """

    template_fields = (*DataprocSubmitJobOperator.template_fields, "interval_key", "job_output")
    template_ext = ()

    def __init__(self, *, interval_key: str, job_output: str | None = None, timeout_minutes: int = 120,
                 require_code: bool = False, **kwargs: Any) -> None:
        if kwargs.get("asynchronous") or kwargs.get("start_from_trigger"):
            raise ValueError("ReattachingDataprocJobOperator waits for its job in the task: leave asynchronous and "
                             "start_from_trigger unset.")
        super().__init__(**kwargs)
        self.interval_key = interval_key
        self.job_output = job_output
        self.timeout_minutes = int(timeout_minutes)
        self.require_code = require_code
        self.reattached: str | None = None

    def _hook(self) -> DataprocHook:
        if self.hook is None:
            self.hook = DataprocHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)
        return self.hook

    def _refs(self, ident: Identity) -> list[JobRef]:
        client = self._hook().get_job_client(region=self.region)
        pages = client.list_jobs(request={"project_id": self.project_id, "region": self.region,
                                          "page_size": LIST_PAGE_SIZE, "filter": label_filter(ident)})
        return [job_ref(j, j.reference.job_id, j.status.state.name, JOB_ACTIVE, JOB_SUCCEEDED) for j in pages]

    def execute(self, context) -> str:
        from google.api_core.exceptions import AlreadyExists

        hook = self._hook()
        ident, job_id = self._identity(context)
        if self.require_code:
            spark = self.job["pyspark_job"]
            require_code([spark["main_python_file_uri"], *spark.get("python_file_uris", []),
                          *spark.get("jar_file_uris", [])], self._exists)
        found = decide(self._refs(ident), ident)
        for job in found.stale:
            self.log.warning("Cancelling job %s: started before this task was cleared, still %s.", job.id, job.state)
            hook.cancel_job(job_id=job.id, project_id=self.project_id, region=self.region)
        if found.reattach is not None:
            self.job_id = self.reattached = found.reattach.id
            if found.reattach.status == SUCCEEDED:
                self.log.info("Job %s already succeeded for this run: not submitting again.", self.job_id)
                return self._finish(found.reattach.raw)
            self.log.info("Reattaching to job %s (%s) instead of submitting a second one.", self.job_id,
                          found.reattach.state)
        else:
            self.job = with_labels({**self.job, "reference": {"project_id": self.project_id, "job_id": job_id}},
                                   run_labels(ident))
            if self.openlineage_inject_parent_job_info or self.openlineage_inject_transport_info:
                self._inject_openlineage_properties_into_dataproc_job(context)
            try:
                hook.submit_job(project_id=self.project_id, region=self.region, job=self.job, retry=self.retry,
                                timeout=self.timeout, metadata=self.metadata)
                self.log.info("Submitted job %s to cluster %s.", job_id, self.job["placement"]["cluster_name"])
            except AlreadyExists:
                self.log.info("Job %s already exists: waiting for it.", job_id)
            self.job_id = job_id
        DataprocJobLink.persist(context=context, job_id=self.job_id, region=self.region, project_id=self.project_id)
        return self._wait()

    def _wait(self) -> str:
        if self.deferrable:
            self.defer(
                trigger=DataprocSubmitTrigger(  # cancels the job when the deferred task is killed (Airflow 3.3+)
                    job_id=self.job_id, project_id=self.project_id, region=self.region, gcp_conn_id=self.gcp_conn_id,
                    impersonation_chain=self.impersonation_chain,
                    polling_interval_seconds=self.polling_interval_seconds, cancel_on_kill=self.cancel_on_kill),
                method_name="execute_complete", timeout=self._deferral_timeout())
        deadline = time.monotonic() + self.timeout_minutes * 60
        while True:
            job = self._hook().get_job(job_id=self.job_id, project_id=self.project_id, region=self.region)
            if job.status.state.name not in JOB_ACTIVE:
                return self._finish(job)
            if time.monotonic() > deadline:
                self._hook().cancel_job(job_id=self.job_id, project_id=self.project_id, region=self.region)
                raise JobStateError(f"Dataproc job {self.job_id} still {job.status.state.name} after "
                                    f"{self.timeout_minutes} minutes: cancelled it.")
            time.sleep(self.polling_interval_seconds)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> str:
        self.job_id = (event or {}).get("job_id") or self.job_id
        if not self.job_id:
            raise JobStateError(f"The wait for the Dataproc job ended without naming it: {event}.")
        return self._finish(self._hook().get_job(job_id=self.job_id, project_id=self.project_id, region=self.region))

    def _finish(self, job) -> str:
        job_id = job.reference.job_id or self.job_id
        state = job.status.state.name
        if state != JOB_SUCCEEDED:
            raise JobStateError(f"Dataproc job {job_id} on cluster {job.placement.cluster_name} ended {state}: "
                                f"{job.status.details or 'no details'}. Driver output: "
                                f"{job.driver_output_resource_uri or 'the job in the Dataproc console'}.")
        require_output(self._exists, self.job_output, f"Dataproc job {job_id}")
        return self.job_output or job_id

    def on_kill(self) -> None:
        if self.job_id and self.cancel_on_kill:
            self.log.info("Cancelling Dataproc job %s", self.job_id)
            self._hook().cancel_job(job_id=self.job_id, project_id=self.project_id, region=self.region)
