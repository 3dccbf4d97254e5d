"""The Azure ML command job that trains the model on a GPU cluster, and what reads its outputs.

The job is built with the SDK's own entities (``azure.ai.ml.command``, ``Environment``, ``Input``,
``Output``) and serialised with the SDK's REST conversion (``job_request``) before it is submitted,
so a misspelt mode, type, job tier or an input the command does not have fails before anything is
created in Azure:

* **environment**: ``AzureSettings.training_environment_image`` (default: Azure ML's CUDA base
  image, which carries conda) plus a conda file made of the pinned training requirements, the
  same ``requirements.txt`` shipped in ``sourcedir.tar.gz``. Azure ML builds the image once per
  distinct environment (it is content-addressed) and reuses it;
* **inputs**: ``dataset`` (the exported training set, ``uri_folder``, read-only mount),
  ``code`` (the content-addressed ``sourcedir.tar.gz``, downloaded) and the hyperparameters as
  literal inputs, shown as the job's parameters in the studio;
* **outputs**: ``model`` (and ``checkpoints`` on low-priority VMs), ``uri_folder`` read-write
  mounts under ``training_output_uri``/<job name>/. Azure ML writes job outputs to datastores
  only, so the artifacts container is reached through the workspace datastore
  ``AzureSettings.ml_datastore`` (an ADLS Gen2 datastore over ``AzureSettings.artifacts_container``);
* **compute**: ``training_compute`` (a GPU cluster whose VM size and priority are the cluster's),
  or serverless compute when it is empty, then with ``training_vm_size`` as the instance type;
  ``instance_count``; ``queue_settings.job_tier = spot`` when ``training_low_priority``; the job
  then gets a checkpoint folder and ``azureml_entry`` resumes from it when Azure ML restarts the
  job after a preemption; ``limits.timeout = training_max_runtime_s``;
* **name**: ``include.targets.cloud.naming.training_job_name`` of DAG, task, interval, run and try
  (unique in the workspace, as Azure ML requires), set per try by the operator; the display name is
  the project's ``<dag>.<task>.<interval>.try<n>``.

The command unpacks the code and runs ``include/targets/azure/azureml_entry.py`` as a file: the
image has no Airflow. ``training_job`` returns the ``OperatorSpec`` of the task, in plain Python (it
runs when the DAG is parsed, where the SDK's import alone would take seconds); the operator builds
the job with the SDK per try. ``AzureMLTrainer.collect`` reads the finished job's ``model`` output
back through the SDK.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

from include.config import ConfigError
from include.targets.azure.settings import AzureSettings
from include.targets.cloud.spec import OperatorSpec
from include.training import hyperparameters
from include.training.hyperparameters import HYPERPARAMETERS
from include.training.outputs import METRICS_FILE, TrainingOutputs, read_outputs

TRAINING_OPERATOR = "include.targets.azure.azureml_operators.AzureMLCommandJobOperator"
ENTRY_POINT = "include/targets/azure/azureml_entry.py"
DEFAULT_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04:latest"
PYTHON = "3.11"  # the pinned training requirements (scikit-learn, matplotlib) need it
EXPERIMENT = "flights_training"
MODEL_OUTPUT, CHECKPOINT_OUTPUT = "model", "checkpoints"
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")  # Azure ML job names (unique in the workspace)
# Tags the operator sets on every job: which task, interval and run it belongs to, and its try.
TAG_DAG, TAG_TASK, TAG_RUN, TAG_TRY, TAG_INTERVAL, TAG_CODE = (
    "airflow_dag", "airflow_task", "airflow_run_id", "airflow_try", "interval", "code_sha256")

COMPLETED = "Completed"
ACTIVE_STATUSES = ("NotStarted", "Starting", "Provisioning", "Preparing", "Queued", "Running", "Finalizing",
                   "Scheduled")
# A job in any of these is over; CancelRequested is on its way to Canceled.
TERMINAL_STATUSES = (COMPLETED, "Failed", "Canceled", "NotResponding", "Paused")

_STORAGE_URI = re.compile(r"^(abfss|wasbs|wasb)://(?P<container>[^@/]+)@(?P<account>[^./]+)\.[^/]+/(?P<path>.*)$")


def status_of(job) -> str:
    """The job's status as Azure ML words it (``Running``, ``Completed``...), whether the SDK gives a str or an enum."""
    status = getattr(job, "status", None)
    return str(getattr(status, "value", status) or "")


def datastore_uri(azure: AzureSettings, uri: str) -> str:
    """``abfss://<artifacts container>@<account>.dfs.../<path>`` -> ``azureml://datastores/<datastore>/paths/<path>``.

    Azure ML job outputs must be datastore paths; ``azure.ml_datastore`` is registered over the artifacts
    container of the target's storage account.
    """
    m = _STORAGE_URI.match(uri)
    if not m or m["container"] != azure.artifacts_container or m["account"] != azure.storage_account:
        raise ValueError(f"{uri!r} is not in the artifacts container {azure.container_uri(azure.artifacts_container)}; "
                         f"Azure ML writes job outputs through the datastore {azure.ml_datastore} over that "
                         "container only.")
    return f"azureml://datastores/{azure.ml_datastore}/paths/{m['path']}"


def output_uri(azure: AzureSettings, job_name: str, output: str) -> str:
    """The datastore folder of one output of a job: ``training_output_uri``/<job name>/<output>/."""
    return datastore_uri(azure, f"{azure.training_output_uri.rstrip('/')}/{job_name}/{output}/")


def conda_file(requirements: str) -> dict:
    """The environment's conda specification: Python and the pinned training requirements, installed by pip."""
    pins = [line.strip() for line in requirements.splitlines() if line.strip() and not line.startswith("#")]
    if not any(p.startswith("xgboost==") for p in pins):
        raise ValueError("The training requirements pin no xgboost version: rebuild them from the lock "
                         "(include.targets.cloud.artifact.pinned_requirements).")
    return {"name": "flights-training", "channels": ["conda-forge"],
            "dependencies": [f"python={PYTHON}", "pip", {"pip": pins}]}


def environment(azure: AzureSettings, requirements: str):
    """The job's environment: the configured (or default CUDA) image with the pinned requirements on top."""
    from azure.ai.ml.entities import Environment

    return Environment(image=azure.training_environment_image or DEFAULT_IMAGE, conda_file=conda_file(requirements),
                       description="flights training: Azure ML CUDA base image + the lock's training requirements")


def hyperparameter_inputs(params: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters as typed literal inputs; a Jinja template (before rendering) stays a string."""
    hyperparameters.check(params)
    out: dict[str, Any] = {}
    for name, cast in HYPERPARAMETERS.items():
        if name not in params:
            continue
        value = params[name]
        if isinstance(value, str) and "{{" in value:
            out[name] = value
            continue
        try:
            out[name] = cast(value)
        except (TypeError, ValueError):
            raise ValueError(f"Hyperparameter {name}={value!r} is not a {cast.__name__}.") from None
    return out


def command_line(params: dict[str, Any], *, checkpoints: bool) -> str:
    """The job's command: unpack the code artefact, run the entry point on the mounted folders."""
    args = ['--data-dir "${{inputs.dataset}}/data"', f'--model-dir "${{{{outputs.{MODEL_OUTPUT}}}}}"']
    if checkpoints:
        args.append(f'--checkpoint-dir "${{{{outputs.{CHECKPOINT_OUTPUT}}}}}"')
    args += [f"--{k} ${{{{inputs.{k}}}}}" for k in HYPERPARAMETERS if k in params]
    return ('set -eu; code="$(mktemp -d)"; tar -xzf "${{inputs.code}}" -C "$code"; cd "$code"; '
            f"exec python {ENTRY_POINT} {' '.join(args)}")


def command_job(azure: AzureSettings, *, name: str, dataset_uri: str, sourcedir_uri: str, params: dict[str, Any],
                requirements: str, display_name: str | None = None, tags: dict[str, str] | None = None,
                experiment: str = EXPERIMENT):
    """The training job as the SDK's ``Command``.

    Args:
        name: the job name (``training_job_name``; unique in the workspace).
        dataset_uri: the exported training set folder (its ``data/`` holds the Parquet files).
        sourcedir_uri: the code artefact's ``sourcedir.tar.gz``.
        params: n_estimators, max_depth, learning_rate, device.
        requirements: the pinned training requirements (``requirements.txt`` of the code artefact).
        tags: added to ``azure.tags`` (the operator adds the run's and the try's).
    """
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.entities import JobResourceConfiguration

    if not JOB_NAME.match(name):
        raise ValueError(f"{name!r} is not an Azure ML job name (letters, digits, - and _, at most 255, starting "
                         "with a letter or digit).")
    low_priority = azure.training_low_priority
    hyper = hyperparameter_inputs(params)
    outputs = {MODEL_OUTPUT: Output(type="uri_folder", path=output_uri(azure, name, MODEL_OUTPUT), mode="rw_mount")}
    if low_priority:
        outputs[CHECKPOINT_OUTPUT] = Output(type="uri_folder", path=output_uri(azure, name, CHECKPOINT_OUTPUT),
                                            mode="rw_mount")
    serverless = not azure.training_compute
    job = command(
        name=name,
        display_name=display_name or name,
        experiment_name=experiment,
        description="Train the flights delay model (XGBoost + logistic-regression baseline) on one training window.",
        command=command_line(hyper, checkpoints=low_priority),
        environment=environment(azure, requirements),
        compute=None if serverless else azure.training_compute,
        inputs={"dataset": Input(type="uri_folder", path=dataset_uri, mode="ro_mount"),
                "code": Input(type="uri_file", path=sourcedir_uri, mode="download"),
                **hyper},
        outputs=outputs,
        timeout=azure.training_max_runtime_s,
        queue_settings={"job_tier": "spot"} if low_priority else None,
        tags={**{k: str(v) for k, v in azure.tags.items()}, **(tags or {})},
    )
    # A cluster's VM size is the cluster's; serverless compute is sized per job.
    job.resources = JobResourceConfiguration(instance_count=azure.training_instance_count,
                                             instance_type=azure.training_vm_size if serverless else None)
    return job


def job_request(job) -> dict:
    """The body ``jobs.create_or_update`` sends, from the SDK's own REST conversion (which validates the job).

    The inline environment is named as the anonymous environment the SDK registers for it.
    """
    from azure.ai.ml.entities._job.to_rest_functions import to_rest_job_object

    env = job.environment
    if not isinstance(env, str):
        job.environment = f"azureml:{env.name}:{env.version}"
    try:
        return to_rest_job_object(job).as_dict()
    finally:
        job.environment = env


def ml_client(subscription_id: str, resource_group: str, workspace: str, managed_identity_client_id: str = ""):
    """An ``MLClient`` for the workspace, with ``DefaultAzureCredential`` (the user-assigned identity when given)."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential(managed_identity_client_id=managed_identity_client_id or None)
    return MLClient(credential, subscription_id, resource_group, workspace)


def client_for(azure: AzureSettings):
    return ml_client(azure.subscription_id, azure.resource_group, azure.ml_workspace, azure.managed_identity_client_id)


def job_error(client, name: str) -> str:
    """The error Azure ML recorded for a job (run history), or a pointer to its logs when there is none."""
    try:
        details = client.jobs._runs_operations.get_run_details(name)  # what jobs.stream() reads on failure
        error = getattr(getattr(details, "error", None), "error", None)
        if error is not None and getattr(error, "message", None):
            code = getattr(error, "code", None)
            return f"{code}: {error.message}" if code else str(error.message)
    except Exception as exc:  # the run history is a second service: its absence must not hide the failure
        return f"no error recorded ({type(exc).__name__}: {exc}); see the job's user_logs"
    return "no error recorded; see the job's user_logs"


def download_output(client, job_name: str, output: str, dest: Path) -> Path:
    """Download one named output of a finished job into ``dest`` (replaced); returns ``dest``."""
    dest = Path(dest)
    partial = dest.with_name(dest.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    client.jobs.download(job_name, download_path=str(partial), output_name=output)
    got = partial / "named-outputs" / output  # where the SDK puts a named output
    if not got.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"Azure ML job {job_name} has no files in its {output!r} output.")
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    got.replace(dest)
    shutil.rmtree(partial, ignore_errors=True)
    return dest


def training_job(azure: AzureSettings, *, task_id: str, dataset_uri: str, interval_key: str, params: dict[str, Any],
                 code: dict[str, str], execution_timeout=None, **operator_kwargs) -> OperatorSpec:
    """The training task: a deferrable Azure ML command job that reattaches on retry and is cancelled on kill.

    Args:
        dataset_uri, interval_key, params: may be Jinja templates (rendered by the operator).
        code: the code artefact's URIs (``include.targets.cloud.artifact.code_uris``): ``sourcedir``, ``sha256``.
        execution_timeout: the task's ``execution_timeout`` (a ``timedelta``).

    Runs when the DAG is parsed, so it stays plain Python: the hyperparameter names and the output
    location are checked here; the operator builds the job with the SDK per try (``command_job``) and
    serialises it (``job_request``) before anything is submitted.
    """
    from include.targets.cloud.artifact import pinned_requirements

    hyperparameter_inputs(params)
    datastore_uri(azure, azure.training_output_uri)
    queue_s = 3600 if azure.training_low_priority else 900  # waiting for (low-priority) GPU nodes is not in the limit
    kwargs: dict[str, Any] = {
        "task_id": task_id,
        "settings": dataclasses.asdict(azure),
        "dataset_uri": dataset_uri,
        "hyperparameters": dict(params),
        "interval_key": interval_key,
        "sourcedir_uri": code["sourcedir"],
        "code_sha256": code.get("sha256", ""),
        "requirements": pinned_requirements(),
        "deferrable": azure.deferrable,
        "poll_interval": azure.poll_s,
        "wait_timeout_s": azure.training_max_runtime_s + queue_s,
    }
    if execution_timeout is not None:
        kwargs["execution_timeout"] = execution_timeout
    kwargs.update(operator_kwargs)
    return OperatorSpec(TRAINING_OPERATOR, kwargs)


class AzureMLTrainer:
    """Training runs as the ``train_models`` Azure ML command job; ``collect`` reads what it produced."""

    def __init__(self, azure: AzureSettings, cache_dir: Path, client=None):
        self.azure, self.cache_dir, self._client = azure, Path(cache_dir), client

    @property
    def client(self):
        if self._client is None:
            self._client = client_for(self.azure)
        return self._client

    def train(self, request):
        raise ConfigError("On the azure target training runs as the Azure ML command job of the train_models task "
                          "(include.targets.azure.azureml), not inside a Python task.")

    def collect(self, trained: dict) -> TrainingOutputs:
        """Download the job's ``model`` output once (bundle, baseline, metrics.json, report.png); read metrics.json.

        Args:
            trained: what the training operator returned: ``job_name``, ``status``, ``model_uri``, ``studio_url``.
        """
        trained = trained or {}
        name, status = trained.get("job_name", "?"), trained.get("status")
        model_uri, url = trained.get("model_uri", ""), trained.get("studio_url", "")
        if status != COMPLETED:
            raise ConfigError(f"Azure ML job {name} is {status}, not {COMPLETED}: there is no model to register. "
                              "Clear train_models to train again.")
        out = self.cache_dir / name
        try:
            if not (out / METRICS_FILE).exists():
                download_output(self.client, name, MODEL_OUTPUT, out)
            return read_outputs(out, model_uri=model_uri, where=model_uri or name)
        except ValueError as exc:
            raise ConfigError(f"{exc} (the job's logs: {url or 'Azure ML studio'})") from None
