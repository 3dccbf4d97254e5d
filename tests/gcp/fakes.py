"""Google APIs answered at the client boundary, for the GCP tests: Dataproc, Vertex AI jobs and models.

Dataproc and Vertex AI have no emulator. Each fake implements the client calls the project
makes, validates every request with the client library's own request message (a misspelt
field fails), answers with real ``dataproc_v1`` / ``aiplatform_v1`` messages, and keeps the
service's rules that the code relies on (job states, alias uniqueness, cancel semantics).
"""

from __future__ import annotations

import contextlib
import json
import re
from concurrent import futures
from types import SimpleNamespace

from google.api_core.exceptions import AlreadyExists, NotFound
from google.cloud import dataproc_v1

PROJECT, REGION = "flights-example", "us-central1"
BATCH_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,61}[a-z0-9]$")  # Dataproc's rule for batch ids
ALIAS = re.compile(r"[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]")  # Vertex AI's rule for version aliases


# --- Dataproc -----------------------------------------------------------------------------------------


def _labels_of(flt: str) -> dict[str, str]:
    """The ``labels.k = v AND ...`` filter the operators send, parsed strictly: anything else fails the test."""
    clauses = [c.strip() for c in flt.split(" AND ")]
    parsed = [re.fullmatch(r"labels\.([a-z0-9_-]+) = ([a-z0-9_-]+)", c) for c in clauses]
    assert all(parsed), f"unexpected filter {flt!r}"
    return {m.group(1): m.group(2) for m in parsed}


class FakeOperations:
    def __init__(self, api):
        self.api = api

    def cancel_operation(self, name, **_):
        self.api.cancelled.append(name)
        for b in self.api.batches.values():
            if b.operation == name and b.state in (dataproc_v1.Batch.State.PENDING, dataproc_v1.Batch.State.RUNNING):
                b.state = dataproc_v1.Batch.State.CANCELLING


class FakeDataproc:
    """Batch and job controllers in memory: requests validated by the library's types, answers are real messages."""

    def __init__(self):
        self.batches: dict[str, dataproc_v1.Batch] = {}
        self.jobs: dict[str, dataproc_v1.Job] = {}
        self.cancelled: list[str] = []
        self.read: list[str] = []  # batch ids read with get_batch
        self.outcome: tuple[str, str] | None = None  # what a read batch that is still running ends as
        self.unavailable = 0  # the next reads of a batch answered 503
        self.transport = SimpleNamespace(operations_client=FakeOperations(self))

    # batches
    def create_batch(self, request, **_):
        req = dataproc_v1.CreateBatchRequest(**{k: v for k, v in request.items() if v is not None})
        assert req.parent == f"projects/{PROJECT}/regions/{REGION}" and BATCH_ID.match(req.batch_id)
        if req.batch_id in self.batches:
            raise AlreadyExists(f"batch {req.batch_id}")
        batch = dataproc_v1.Batch(req.batch)
        batch.name = f"projects/{PROJECT}/locations/{REGION}/batches/{req.batch_id}"
        batch.operation = f"projects/{PROJECT}/regions/{REGION}/operations/op-{req.batch_id}"
        batch.state = dataproc_v1.Batch.State.PENDING
        self.batches[req.batch_id] = batch
        return SimpleNamespace(operation=SimpleNamespace(name=batch.operation))

    def get_batch(self, request, retry=None, **_):
        """Like the client library: the call goes through ``retry`` when one is given."""
        wrap = retry if callable(retry) else (lambda f: f)  # the hook's default is a sentinel, not a Retry
        return wrap(self._get_batch)(request)

    def _get_batch(self, request):
        if self.unavailable:
            self.unavailable -= 1
            from google.api_core.exceptions import ServiceUnavailable

            raise ServiceUnavailable("The service is currently unavailable.")
        req = dataproc_v1.GetBatchRequest(**request)
        batch_id = req.name.rsplit("/", 1)[-1]
        if batch_id not in self.batches:
            raise NotFound(req.name)
        self.read.append(batch_id)
        if self.outcome and self.batches[batch_id].state.name in ("PENDING", "RUNNING"):
            self.set_batch(batch_id, *self.outcome)
        return dataproc_v1.Batch(self.batches[batch_id])

    def list_batches(self, request, **_):
        req = dataproc_v1.ListBatchesRequest(**{k: v for k, v in request.items() if v is not None})
        wanted = _labels_of(req.filter)
        return [dataproc_v1.Batch(b) for b in self.batches.values()
                if all(b.labels.get(k) == v for k, v in wanted.items())]

    # jobs
    def submit_job(self, request, **_):
        req = dataproc_v1.SubmitJobRequest(**{k: v for k, v in request.items() if v is not None})
        job_id = req.job.reference.job_id
        assert BATCH_ID.match(job_id) and req.job.placement.cluster_name
        if job_id in self.jobs:
            raise AlreadyExists(f"job {job_id}")
        job = dataproc_v1.Job(req.job)
        job.status = dataproc_v1.JobStatus(state=dataproc_v1.JobStatus.State.PENDING)
        self.jobs[job_id] = job
        return dataproc_v1.Job(job)

    def get_job(self, request, **_):
        req = dataproc_v1.GetJobRequest(**request)
        return dataproc_v1.Job(self.jobs[req.job_id])

    def list_jobs(self, request, **_):
        req = dataproc_v1.ListJobsRequest(**request)
        wanted = _labels_of(req.filter)
        return [dataproc_v1.Job(j) for j in self.jobs.values() if all(j.labels.get(k) == v for k, v in wanted.items())]

    def cancel_job(self, request, **_):
        req = dataproc_v1.CancelJobRequest(**request)
        self.cancelled.append(req.job_id)
        self.jobs[req.job_id].status.state = dataproc_v1.JobStatus.State.CANCEL_PENDING
        return dataproc_v1.Job(self.jobs[req.job_id])

    # test helpers: what Dataproc does meanwhile
    def set_batch(self, batch_id: str, state: str, message: str = "") -> None:
        self.batches[batch_id].state = dataproc_v1.Batch.State[state]
        self.batches[batch_id].state_message = message

    def set_job(self, job_id: str, state: str, details: str = "") -> None:
        self.jobs[job_id].status = dataproc_v1.JobStatus(state=dataproc_v1.JobStatus.State[state], details=details)

    def only_batch(self) -> str:
        [batch_id] = self.batches
        return batch_id


CONNECTION = ('{"conn_type": "google_cloud_platform", '
              f'"extra": {{"is_anonymous": true, "project": "{PROJECT}"}}}}')


# --- Vertex AI custom jobs ----------------------------------------------------------------------------


def _job(body: dict):
    from google.cloud.aiplatform_v1 import CustomJob

    return CustomJob(body)


def _copy_job(job):
    from google.cloud.aiplatform_v1 import CustomJob

    return CustomJob.deserialize(CustomJob.serialize(job))


class FakeJobService:
    """The JobServiceClient calls the operator and the trigger make, with the service's semantics.

    Jobs go PENDING -> RUNNING -> ``final[name]`` (default SUCCEEDED) one step per ``get_custom_job``;
    cancelling a job that is over fails with FailedPrecondition, as the service does.
    """

    TERMINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")

    def __init__(self):
        self.jobs: dict = {}
        self.created: list[str] = []
        self.cancelled: list[str] = []
        self.final: dict[str, str] = {}
        self.gets = 0
        self.fail_gets = 0

    def add(self, body: dict, state: str, parent="projects/flights-example/locations/us-central1"):
        """A job that exists already (started by an earlier try)."""
        job = self.create_custom_job(parent=parent, custom_job=_job(body))
        self.jobs[job.name].state = state
        self.created.remove(job.name)
        return job.name

    def create_custom_job(self, *, parent, custom_job):
        from google.cloud.aiplatform_v1 import CreateCustomJobRequest, JobState

        request = CreateCustomJobRequest(parent=parent, custom_job=custom_job)
        job = _copy_job(request.custom_job)
        job.name = f"{parent}/customJobs/{4000 + len(self.jobs)}"
        job.state = JobState.JOB_STATE_PENDING
        self.jobs[job.name] = job
        self.created.append(job.name)
        return _copy_job(job)

    def list_custom_jobs(self, request):
        from google.cloud.aiplatform_v1 import ListCustomJobsRequest

        request = ListCustomJobsRequest(request)
        wanted = dict(re.findall(r'labels\.([a-z0-9_-]+)="([^"]*)"', request.filter))
        assert wanted, f"the operator must filter by label, not list every job: {request.filter!r}"
        return [_copy_job(j) for name, j in self.jobs.items() if name.startswith(request.parent + "/")
                and all(j.labels.get(k) == v for k, v in wanted.items())]

    def get_custom_job(self, *, name):
        from google.api_core.exceptions import NotFound, ServiceUnavailable

        self.gets += 1
        if self.fail_gets:
            self.fail_gets -= 1
            raise ServiceUnavailable("try again")
        if name not in self.jobs:
            raise NotFound(f"{name} not found")
        job = self.jobs[name]
        step = {"JOB_STATE_PENDING": "JOB_STATE_RUNNING",
                "JOB_STATE_RUNNING": self.final.get(name, "JOB_STATE_SUCCEEDED"),
                "JOB_STATE_CANCELLING": "JOB_STATE_CANCELLED"}
        if job.state.name in step:
            job.state = step[job.state.name]
            if job.state.name == "JOB_STATE_FAILED":
                job.error.message = "The replica workerpool0-0 exited with a non-zero status of 1."
        return _copy_job(job)

    def cancel_custom_job(self, *, name):
        from google.api_core.exceptions import FailedPrecondition

        job = self.jobs[name]
        if job.state.name in self.TERMINAL:
            raise FailedPrecondition(f"{name} is already {job.state.name}")
        job.state = "JOB_STATE_CANCELLING"
        self.cancelled.append(name)


# --- Vertex AI Model Registry -------------------------------------------------------------------------


def _copy_model(model):
    from google.cloud.aiplatform_v1 import Model

    return Model.deserialize(Model.serialize(model))


class _Operation:
    def __init__(self, response):
        self.response = response

    def result(self, timeout=None):
        return self.response


class FakeModelService:
    def __init__(self):
        self.models: dict[str, list] = {}  # model resource name -> versions, oldest first
        self.uploads: list = []

    def _split(self, name: str):
        from google.api_core.exceptions import NotFound

        model, _, ref = name.partition("@")
        if model not in self.models:
            raise NotFound(f"Model {model} not found")
        versions = self.models[model]
        if not ref:
            ref = "default"
        for v in versions:
            if v.version_id == ref or ref in v.version_aliases:
                return model, v
        raise NotFound(f"Model {name} not found")

    def upload_model(self, request):
        from google.api_core.exceptions import AlreadyExists, NotFound
        from google.cloud.aiplatform_v1 import UploadModelRequest, UploadModelResponse

        request = UploadModelRequest(request)
        self.uploads.append(request)
        model = _copy_model(request.model)
        if request.parent_model:
            if request.parent_model not in self.models:
                raise NotFound(f"parent_model {request.parent_model} not found")
            name = request.parent_model
            model.version_aliases = []
        else:
            name = f"{request.parent}/models/{request.model_id or len(self.models) + 1}"
            if name in self.models:
                raise AlreadyExists(f"Model {name} already exists")
            self.models[name] = []
            model.version_aliases = ["default"]
        model.name = name
        model.version_id = str(len(self.models[name]) + 1)
        self.models[name].append(model)
        return _Operation(UploadModelResponse(model=name, model_version_id=model.version_id))

    def get_model(self, *, name):
        return _copy_model(self._split(name)[1])

    def list_model_versions(self, *, name):
        from google.api_core.exceptions import NotFound

        if name not in self.models:
            raise NotFound(f"Model {name} not found")
        return [_copy_model(v) for v in self.models[name]]

    def update_model(self, *, model, update_mask):
        from google.api_core.exceptions import FailedPrecondition, InvalidArgument
        from google.cloud.aiplatform_v1 import UpdateModelRequest

        request = UpdateModelRequest(model=model, update_mask=update_mask)
        if "@" not in request.model.name:
            raise FailedPrecondition("a model-level update: the registry must update versions")
        paths = set(request.update_mask.paths)
        if not paths or paths - {"labels", "version_description"}:
            raise InvalidArgument(f"version-level updates take labels and version_description, not {paths}")
        _, stored = self._split(request.model.name)
        if "labels" in paths:
            stored.labels.clear()
            stored.labels.update(dict(request.model.labels))
        if "version_description" in paths:
            stored.version_description = request.model.version_description
        return _copy_model(stored)

    def merge_version_aliases(self, *, name, version_aliases):
        from google.api_core.exceptions import InvalidArgument
        from google.cloud.aiplatform_v1 import MergeVersionAliasesRequest

        request = MergeVersionAliasesRequest(name=name, version_aliases=version_aliases)
        if "@" not in request.name:
            raise InvalidArgument("name must hold a version: models/<id>@<version>")
        model, version = self._split(request.name)
        for alias in request.version_aliases:
            remove, bare = alias.startswith("-"), alias.lstrip("-")
            if not ALIAS.fullmatch(bare):
                raise InvalidArgument(f"alias {bare!r} must match {ALIAS.pattern}")
            if remove:
                if bare in version.version_aliases:
                    version.version_aliases.remove(bare)
                continue
            for other in self.models[model]:  # unique within the model: it moves
                if bare in other.version_aliases:
                    other.version_aliases.remove(bare)
            version.version_aliases.append(bare)
        return _copy_model(version)

    def aliases(self) -> dict[str, list[str]]:
        [versions] = self.models.values()
        return {v.version_id: sorted(v.version_aliases) for v in versions}


# --- Pub/Sub ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def pubsub_server(monkeypatch, project: str = PROJECT):
    """``google.pubsub.v1.Publisher/Publish`` served with gRPC on 127.0.0.1; yields the requests received.

    There is no Pub/Sub emulator on PyPI; the real client reaches this one through
    ``PUBSUB_EMULATOR_HOST``, exactly as it reaches Google's emulator.
    """
    import grpc
    from google.pubsub_v1.types import PublishRequest, PublishResponse

    received: list = []

    def publish(request, context):
        received.append(request)
        return PublishResponse(message_ids=[str(i) for i, _ in enumerate(request.messages)])

    handler = grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", {
        "Publish": grpc.unary_unary_rpc_method_handler(
            publish, request_deserializer=PublishRequest.deserialize, response_serializer=PublishResponse.serialize)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(
        {"conn_type": "google_cloud_platform", "extra": {"project": project}}))
    try:
        yield received
    finally:
        server.stop(0)
