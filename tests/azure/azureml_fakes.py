"""Azure ML answered at the client boundary, for the Azure ML tests: an ``MLClient`` with ``jobs`` and ``models``.

Azure ML has no emulator. ``FakeMLClient`` implements the ``MLClient`` calls the project makes
(``jobs.get / create_or_update / begin_cancel / download``, the run history's error, and
``models.create_or_update / get / list / download``) the way the SDK's operations do them:
every job goes through the SDK's own validation (``_validate``) and REST conversion
(``to_rest_job_object``), every model through ``Model._to_rest_object``; what is stored is the
REST body, and every answer is a real SDK entity rebuilt from it (``Job._from_rest_object``,
``Model._from_rest_object``). The service's rules the code relies on are kept: job names are
unique in the workspace, outputs go to registered datastores, statuses move on, a job that is
over cannot be cancelled, only finished jobs can be downloaded, a registered version's path
cannot change. Datastore folders are local folders under ``root/<datastore>/``.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Callable

from include.targets.azure.settings import AzureSettings

EXAMPLE = AzureSettings.example()
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
TERMINAL = ("Completed", "Failed", "Canceled", "NotResponding", "Paused")
USER_ERROR = ("Execution failed. User process 'python' exited with status code 1. Please check log file "
              "'user_logs/std_log.txt' for more details.")


class FakeMLClient:
    """One workspace: its jobs, its models, its datastores (local folders) and its compute clusters."""

    def __init__(self, root: Path, *, subscription_id: str = EXAMPLE.subscription_id,
                 resource_group: str = EXAMPLE.resource_group, workspace: str = EXAMPLE.ml_workspace,
                 datastores: tuple[str, ...] = ("flights_artifacts", "workspaceblobstore"),
                 computes: tuple[str, ...] = ("gpu-cluster",)):
        from azure.ai.ml._scope_dependent_operations import OperationScope

        self.root = Path(root)
        self.subscription_id, self.resource_group_name, self.workspace_name = subscription_id, resource_group, workspace
        self.scope = OperationScope(subscription_id, resource_group, workspace)
        self.datastores, self.computes = set(datastores), set(computes)
        self.connections: list[dict] = []  # how MLClient was constructed, when the fake stands in for the class
        self.jobs = FakeJobs(self)
        self.models = FakeModels(self)

    def connect(self, credential, subscription_id, resource_group_name, workspace_name, **kwargs):
        """Stands in for ``MLClient(...)``: checks what it is built with, returns this workspace."""
        assert hasattr(credential, "get_token"), f"MLClient needs a TokenCredential, got {credential!r}"
        assert (subscription_id, resource_group_name, workspace_name) == (
            self.subscription_id, self.resource_group_name, self.workspace_name), "another workspace"
        self.connections.append({"credential": credential, **kwargs})
        return self

    @property
    def workspace_id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group_name}/providers/"
                f"Microsoft.MachineLearningServices/workspaces/{self.workspace_name}")

    def local(self, uri: str) -> Path:
        """The local folder of an ``azureml://`` datastore path (short or long form)."""
        from azure.ai.ml._utils._storage_utils import AzureMLDatastorePathUri
        from azure.core.exceptions import ResourceNotFoundError

        parsed = AzureMLDatastorePathUri(str(uri))
        if parsed.uri_type != "Datastore":
            raise ValueError(f"{uri} is not a datastore path")
        if parsed.datastore not in self.datastores:
            raise ResourceNotFoundError(f"Datastore {parsed.datastore} not found in workspace {self.workspace_name}")
        return self.root / parsed.datastore / parsed.path.strip("/")


# --- jobs -------------------------------------------------------------------------------------------------


class FakeRuns:
    """The run history's ``get_run_details``: the status and the error Azure ML recorded for a job."""

    def __init__(self, jobs: "FakeJobs"):
        self._jobs = jobs

    def get_run_details(self, run_id: str):
        from azure.ai.ml._restclient.runhistory.models import RunDetails
        from azure.core.exceptions import ResourceNotFoundError

        if run_id not in self._jobs.stored:
            raise ResourceNotFoundError(f"Run {run_id} not found")
        status = self._jobs.status(run_id)
        body = {"runId": run_id, "status": status}
        if status == "Failed":
            body["error"] = {"error": {"code": "UserError", "message": self._jobs.errors.get(run_id, USER_ERROR)}}
        return RunDetails(body)


class FakeJobs:
    """``MLClient.jobs``. Jobs go Starting -> Queued -> Running -> ``final[name]`` (default Completed), one step per
    ``get``; CancelRequested -> Canceled. When a job completes, ``program`` (if set) is called with the local
    folders of its outputs, as the job's command would write them."""

    def __init__(self, client: FakeMLClient):
        self.client = client
        self.stored: dict[str, dict] = {}  # job name -> REST body (JobBase.as_dict())
        self.environments: dict[str, object] = {}  # anonymous environments registered with the jobs
        self.created: list[str] = []
        self.cancelled: list[str] = []
        self.final: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.gets = 0
        self.fail_gets = 0
        self.program: Callable[[str, dict[str, Path]], None] | None = None
        self._runs_operations = FakeRuns(self)

    # service side
    def status(self, name: str) -> str:
        return self.stored[name]["properties"]["status"]

    def set_status(self, name: str, status: str) -> None:
        self.stored[name]["properties"]["status"] = status

    def outputs(self, name: str) -> dict[str, Path]:
        return {k: self.client.local(v["uri"]) for k, v in self.stored[name]["properties"].get("outputs", {}).items()}

    def _entity(self, name: str):
        from azure.ai.ml._restclient.arm_ml_service.models import JobBase
        from azure.ai.ml.entities import Job

        return Job._from_rest_object(JobBase(copy.deepcopy(self.stored[name])))

    # the SDK's calls
    def create_or_update(self, job, **kwargs):
        from azure.ai.ml.entities import Command, CommandJob, Environment
        from azure.ai.ml.entities._job.to_rest_functions import to_rest_job_object
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        assert not kwargs, f"unexpected create_or_update arguments {kwargs}"
        assert isinstance(job, (Command, CommandJob)), f"not a command job: {type(job)}"
        job._validate(raise_error=True)  # as JobOperations.create_or_update does before anything is sent
        if not JOB_NAME.match(job.name or ""):
            raise HttpResponseError(message=f"(UserError) Invalid job name {job.name!r}")
        if job.name in self.stored:
            raise HttpResponseError(message=f"(UserError) A job named {job.name} already exists in the workspace; "
                                            "job names are unique.")
        if job.compute and job.compute.removeprefix("azureml:") not in self.client.computes:
            raise ResourceNotFoundError(f"Compute {job.compute} not found in workspace {self.client.workspace_name}")
        env = job.environment
        if isinstance(env, Environment):  # the SDK registers an inline environment, the job refers to it by id
            env._to_rest_object()
            assert env.image and env.conda_file, "an inline environment needs an image and a conda file"
            self.environments[f"azureml:{env.name}:{env.version}"] = env
            job.environment = f"azureml:{env.name}:{env.version}"
        body = to_rest_job_object(job).as_dict()  # raises on an input the command does not have
        for output in body["properties"].get("outputs", {}).values():
            if not str(output.get("uri", "")).startswith("azureml://"):
                raise HttpResponseError(message="(UserError) Job outputs must be datastore paths "
                                                f"(azureml://datastores/...), not {output.get('uri')}")
            self.client.local(output["uri"])  # the datastore must exist
        body["id"] = f"{self.client.workspace_id}/jobs/{job.name}"
        body["properties"]["status"] = "Starting"
        self.stored[job.name] = body
        self.created.append(job.name)
        return self._entity(job.name)

    def get(self, name: str):
        from azure.core.exceptions import ResourceNotFoundError, ServiceResponseError

        self.gets += 1
        if self.fail_gets:
            self.fail_gets -= 1
            raise ServiceResponseError("Connection reset by peer")
        if name not in self.stored:
            raise ResourceNotFoundError(f"(UserError) Job {name} not found")
        status = self.status(name)
        step = {"NotStarted": "Starting", "Starting": "Queued", "Queued": "Running",
                "Running": self.final.get(name, "Completed"), "CancelRequested": "Canceled"}
        if status in step:
            self.set_status(name, step[status])
            if step[status] == "Completed" and self.program is not None:
                self.program(name, self.outputs(name))
        return self._entity(name)

    def begin_cancel(self, name: str, **kwargs):
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        from azure.core.polling import LROPoller, NoPolling

        if name not in self.stored:
            raise ResourceNotFoundError(f"(UserError) Job {name} not found")
        if self.status(name) in TERMINAL:
            raise HttpResponseError(message=f"(UserError) Job {name} is {self.status(name)}: it cannot be canceled")
        self.set_status(name, "CancelRequested")
        self.cancelled.append(name)
        return LROPoller(None, None, lambda response: None, NoPolling())

    def download(self, name: str, *, download_path=".", output_name: str | None = None, all: bool = False):
        from azure.ai.ml.exceptions import JobException
        from azure.core.exceptions import ResourceNotFoundError

        if name not in self.stored:
            raise ResourceNotFoundError(f"(UserError) Job {name} not found")
        if self.status(name) not in TERMINAL:
            raise JobException(message=f"This job is in state {self.status(name)}. Download is allowed only in "
                                       f"states {list(TERMINAL)}", no_personal_data_message="not terminal")
        assert output_name and not all, "the project downloads one named output"
        outputs = self.outputs(name)
        if output_name in outputs and outputs[output_name].is_dir():  # an output nothing was written to: no files
            shutil.copytree(outputs[output_name], Path(download_path) / "named-outputs" / output_name,
                            dirs_exist_ok=True)

    def resolved_command(self, name: str, mounts: dict[str, Path]) -> str:
        """The job's command with its bindings replaced as Azure ML does on the node: ``${{inputs.<uri input>}}``
        by where the input is mounted or downloaded (``mounts``), a literal input by its value,
        ``${{outputs.<name>}}`` by the output's folder (here: its datastore folder, created)."""
        props = self.stored[name]["properties"]
        inputs, outputs = props.get("inputs", {}), self.outputs(name)

        def bind(m: re.Match) -> str:
            kind, key = m.group(1), m.group(2)
            if kind == "outputs":
                outputs[key].mkdir(parents=True, exist_ok=True)
                return str(outputs[key])
            if inputs[key]["jobInputType"] == "literal":
                return str(inputs[key]["value"])
            return str(mounts[key])

        return re.sub(r"\$\{\{(inputs|outputs)\.([A-Za-z0-9_]+)\}\}", bind, props["command"])

    # test helpers: what happened before the test, or meanwhile
    def add(self, job, status: str) -> str:
        """A job that exists already (submitted by an earlier try)."""
        self.create_or_update(job)
        self.created.remove(job.name)
        self.set_status(job.name, status)
        return job.name


# --- models -----------------------------------------------------------------------------------------------


class FakeModels:
    """``MLClient.models``: versions numbered 1, 2, ... per name; tags, description and stage can change,
    the path cannot."""

    def __init__(self, client: FakeMLClient):
        self.client = client
        self.stored: dict[str, dict[str, dict]] = {}  # model name -> version -> REST body
        self.puts: list[tuple[str, str]] = []
        self.refuse: Callable[[object], bool] | None = None  # a put the service fails (e.g. a lost connection)

    def _entity(self, name: str, version: str):
        from azure.ai.ml._restclient.arm_ml_service.models import ModelVersion
        from azure.ai.ml.entities import Model

        return Model._from_rest_object(ModelVersion(copy.deepcopy(self.stored[name][version])))

    def create_or_update(self, model):
        from azure.ai.ml._artifacts._constants import CHANGED_ASSET_PATH_MSG, CHANGED_ASSET_PATH_MSG_NO_PERSONAL_DATA
        from azure.ai.ml._utils.utils import resolve_short_datastore_url
        from azure.ai.ml.entities import Model
        from azure.ai.ml.exceptions import AssetPathException, ErrorCategory, ErrorTarget
        from azure.core.exceptions import HttpResponseError

        assert isinstance(model, Model), f"not a Model: {type(model)}"
        if self.refuse is not None and self.refuse(model):
            raise HttpResponseError(message="(ServiceError) The request timed out")
        versions = self.stored.setdefault(model.name, {})
        if not model.version:
            model.version = str(max(map(int, versions), default=0) + 1)  # the SDK's auto-increment
        model.path = resolve_short_datastore_url(model.path, self.client.scope)
        self.client.local(model.path)  # a datastore of this workspace
        body = model._to_rest_object().as_dict()
        props = body["properties"]
        props.setdefault("flavors", {})
        old = versions.get(model.version)
        if old is not None:
            if old["properties"]["modelUri"] != props["modelUri"]:
                raise AssetPathException(message=CHANGED_ASSET_PATH_MSG, target=ErrorTarget.MODEL,
                                         no_personal_data_message=CHANGED_ASSET_PATH_MSG_NO_PERSONAL_DATA,
                                         error_category=ErrorCategory.USER_ERROR)
            changed = {k for k, v in (old["properties"].get("properties") or {}).items()
                       if (props.get("properties") or {}).get(k) != v}
            if changed:
                raise HttpResponseError(message=f"(UserError) Properties are immutable: {sorted(changed)}")
            body["systemData"] = old["systemData"]
        else:
            body["systemData"] = {"createdAt": f"2026-01-01T00:00:{len(self.puts):02d}Z"}
        body["name"] = model.version
        body["id"] = f"{self.client.workspace_id}/models/{model.name}/versions/{model.version}"
        versions[model.version] = body
        self.puts.append((model.name, model.version))
        return self._entity(model.name, model.version)

    def get(self, name: str, version: str | None = None, label: str | None = None):
        from azure.ai.ml.exceptions import ValidationException
        from azure.core.exceptions import ResourceNotFoundError

        if bool(version) == bool(label):
            raise ValidationException(message="Must provide either version or label", no_personal_data_message="")
        versions = self.stored.get(name, {})
        if label == "latest" and versions:
            version = max(versions, key=int)
        if version not in versions:
            raise ResourceNotFoundError(f"(UserError) Model {name}:{version or label} not found")
        return self._entity(name, version)

    def list(self, name: str | None = None, stage: str | None = None, **kwargs):
        assert name, "the project lists the versions of its model"
        out = [self._entity(name, v) for v in sorted(self.stored.get(name, {}), key=int)]
        return [m for m in out if stage is None or m.stage == stage]

    def download(self, name: str, version: str, download_path=".") -> None:
        """As the SDK: a folder model lands in ``<download_path>/<name>/<last folder of its path>/``."""
        model = self.get(name, version=version)
        src = self.client.local(model.path)
        dest = Path(download_path) / name
        if src.is_dir():
            shutil.copytree(src, dest / Path(str(model.path).rstrip("/")).name, dirs_exist_ok=True)

    # test helpers
    def tags(self, name: str) -> dict[str, dict[str, str]]:
        return {v: dict(body["properties"].get("tags") or {}) for v, body in self.stored.get(name, {}).items()}
