"""The Vertex AI custom job that trains the model on a GPU machine, and what reads its outputs.

The job runs on Vertex AI's prebuilt XGBoost training image (``GcpSettings.training_image``, or
the image set in ``FLIGHTS_GCP_TRAINING_IMAGE_URI``) as a *container spec*, not a Python package
spec: a package spec makes the image ``pip install`` each package URI, which needs a Python
source distribution (``setup.py`` / ``pyproject.toml``) and ignores a ``requirements.txt``.
Our ``sourcedir.tar.gz`` (``include.targets.cloud.artifact``) is the source tree plus pinned
training requirements, the same file SageMaker runs, so the container's command does what a
package spec cannot:

1. unpack ``sourcedir.tar.gz`` from the Cloud Storage FUSE mount (``/gcs/<bucket>/<key>``);
2. ``pip install -r requirements.txt`` (the versions of the project's lock);
3. run ``include/targets/gcp/vertex_entry.py --data-dir <dataset>/data <hyperparameters>``.

The entry point runs as a file, as SageMaker runs its own; the ``include.targets`` packages it
sits in import nothing that needs Airflow, absent from the image. Vertex AI sets ``AIP_MODEL_DIR`` to
``<base_output_directory>/model``; everything the trainer writes (bundle, baseline,
``metrics.json``, ``report.png``) lands there, and ``VertexTrainer.collect`` reads it back.

``custom_job`` returns an ``OperatorSpec``; the operator (``vertex_operators``) names the job
per try, reattaches on retry and cancels on kill.
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

from include.config import ConfigError
from include.targets.cloud.spec import OperatorSpec
from include.targets.gcp.settings import GcpSettings
from include.training import hyperparameters
from include.training.hyperparameters import HYPERPARAMETERS
from include.training.outputs import METRICS_FILE, TrainingOutputs, read_outputs

TRAINING_OPERATOR = "include.targets.gcp.vertex_operators.ReattachingVertexCustomJobOperator"
ENTRY_POINT = "include/targets/gcp/vertex_entry.py"
NAME_AT_RUN_TIME = "set-at-run-time"
SOURCEDIR_ENV = "FLIGHTS_SOURCEDIR"
SUCCEEDED = "JOB_STATE_SUCCEEDED"
# Labels the operator sets on every job: which task, interval and run it belongs to, and its try.
LABEL_JOB, LABEL_TRY, LABEL_DAG, LABEL_TASK = "flights_job", "flights_try", "airflow_dag", "airflow_task"
MIN_PYTHON = (3, 11)  # the pinned training requirements (scikit-learn, matplotlib) need it

# Run by /bin/bash -c; "$@" are the container args (the entry point's arguments).
BOOTSTRAP = f"""set -euo pipefail
if [ ! -f "${SOURCEDIR_ENV}" ]; then
  echo "The code artefact ${SOURCEDIR_ENV} is not in Cloud Storage: upload this checkout's artefact \
(python -m include.targets.gcp.artifact) under the artifacts root, then clear the task." >&2
  exit 3
fi
python3 -c 'import sys; sys.exit(0 if sys.version_info >= {MIN_PYTHON} else 1)' || {{
  echo "$(python3 -V) in this image is older than {'.'.join(map(str, MIN_PYTHON))}, which the pinned training \
requirements need: set FLIGHTS_GCP_TRAINING_IMAGE_URI to an image with Python >= {'.'.join(map(str, MIN_PYTHON))} and \
CUDA." >&2
  exit 3
}}
code="$(mktemp -d)"
tar -xzf "${SOURCEDIR_ENV}" -C "$code"
python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check -r "$code/requirements.txt"
cd "$code"
exec python3 {ENTRY_POINT} "$@"
"""


def fuse_path(uri: str) -> str:
    """``gs://bucket/key`` -> ``/gcs/bucket/key``: where Vertex AI mounts Cloud Storage in a training container."""
    if not uri.startswith("gs://") or not uri[len("gs://"):].split("/", 1)[0]:
        raise ValueError(f"{uri!r} is not a gs://<bucket>/<key> URI; Vertex AI jobs read their inputs from Cloud "
                         "Storage.")
    return "/gcs/" + uri[len("gs://"):]


def label_value(text: str) -> str:
    """A Vertex AI label value: at most 63 of lower-case letters, digits, ``_`` and ``-``."""
    return re.sub(r"[^a-z0-9_-]+", "-", str(text).lower()).strip("-")[:63]


def job_key(dag_id: str, task_id: str, interval_key: str, run_id: str) -> str:
    """The label value every try of one task, interval and run shares (run ids hold characters labels cannot)."""
    return hashlib.sha256(f"{dag_id}|{task_id}|{interval_key}|{run_id}".encode()).hexdigest()[:20]


def hyperparameter_args(params: dict[str, Any]) -> list[str]:
    hyperparameters.check(params)
    return [a for k in HYPERPARAMETERS if k in params for a in (f"--{k}", str(params[k]))]


def output_directory(output_root: str, display_name: str) -> str:
    """The job's ``base_output_directory``; Vertex AI sets ``AIP_MODEL_DIR`` to ``<it>model/``."""
    return f"{output_root.rstrip('/')}/{display_name}/"


def custom_job_body(gcp: GcpSettings, *, display_name: str, dataset_uri: str, sourcedir_uri: str,
                    params: dict[str, Any], labels: dict[str, str] | None = None) -> dict:
    """The ``CustomJob`` resource, as the dict ``aiplatform_v1.CustomJob(...)`` takes.

    Args:
        display_name: the job's name (``short_job_name``; the operator sets it per try).
        dataset_uri: the exported training set folder (its ``data/`` holds the Parquet files).
        sourcedir_uri: the code artefact's ``sourcedir.tar.gz`` (``gs://``).
        params: n_estimators, max_depth, learning_rate, device.
        labels: added to ``gcp.labels`` (the operator adds the run's and the try's).
    """
    machine: dict[str, Any] = {"machine_type": gcp.training_machine_type}
    if gcp.training_accelerator_count > 0:
        machine.update(accelerator_type=gcp.training_accelerator_type,
                       accelerator_count=gcp.training_accelerator_count)
    scheduling: dict[str, Any] = {"timeout": {"seconds": gcp.training_max_runtime_s}}
    if gcp.training_spot:
        scheduling["strategy"] = "SPOT"
    args = ["--data-dir", dataset_uri.rstrip("/") + "/data", *hyperparameter_args(params)]
    return {
        "display_name": display_name,
        "labels": {**{k: label_value(v) for k, v in gcp.labels.items()}, **(labels or {})},
        "job_spec": {
            "worker_pool_specs": [{
                "machine_spec": machine,
                "replica_count": 1,
                "container_spec": {
                    "image_uri": gcp.training_image,
                    "command": ["/bin/bash", "-c", BOOTSTRAP, "vertex_entry"],  # "vertex_entry" is $0
                    "args": args,
                    "env": [{"name": SOURCEDIR_ENV, "value": fuse_path(sourcedir_uri)}],
                },
            }],
            "scheduling": scheduling,
            "service_account": gcp.vertex_service_account,
            "base_output_directory": {"output_uri_prefix": output_directory(gcp.training_output_uri, display_name)},
        },
    }


def custom_job(gcp: GcpSettings, *, task_id: str, interval_key: str, dataset_uri: str, sourcedir_uri: str,
               params: dict[str, Any], **operator_kwargs) -> OperatorSpec:
    """The training task: a deferrable Vertex AI custom job that reattaches on retry and is cancelled on kill.

    ``dataset_uri`` and ``interval_key`` may be templates (rendered by the operator); the display name,
    labels and output directory are set per try when the task runs.
    """
    body = custom_job_body(gcp, display_name=NAME_AT_RUN_TIME, dataset_uri=dataset_uri,
                           sourcedir_uri=sourcedir_uri, params=params)
    queue_s = 3600 if gcp.training_spot else 900  # waiting for a (spot) GPU is not covered by scheduling.timeout
    kwargs = {
        "task_id": task_id,
        "custom_job": body,
        "project_id": gcp.project,
        "region": gcp.region,
        "interval_key": interval_key,
        "output_root": gcp.training_output_uri,
        "deferrable": gcp.deferrable,
        "poll_interval": gcp.poll_s,
        "wait_timeout_s": gcp.training_max_runtime_s + queue_s,
    }
    kwargs.update(operator_kwargs)
    return OperatorSpec(TRAINING_OPERATOR, kwargs)


class VertexTrainer:
    """Training runs as the ``train_models`` Vertex AI custom job; ``collect`` reads what it produced."""

    FILES_LAST = METRICS_FILE  # downloaded last: its presence marks a complete local copy

    def __init__(self, gcp: GcpSettings, cache_dir: Path, storage_client=None):
        self.gcp, self.cache_dir, self._storage = gcp, Path(cache_dir), storage_client

    @property
    def storage(self):
        if self._storage is None:
            from include.targets.gcp.gcs import storage_client

            self._storage = storage_client(self.gcp)
        return self._storage

    def train(self, request):
        raise ConfigError("On the gcp target training runs as the Vertex AI custom job of the train_models task "
                          "(include.targets.gcp.vertex), not inside a Python task.")

    def collect(self, trained: dict) -> TrainingOutputs:
        """Download the job's model folder once (bundle, baseline, metrics.json, report.png) and read metrics.json.

        Args:
            trained: what the training operator returned: ``job_name``, ``state``, ``model_dir`` (gs://).
        """
        from include.targets.gcp.gcs import split_gs

        trained = trained or {}
        name, state, model_dir = trained.get("job_name", "?"), trained.get("state"), trained.get("model_dir", "")
        if state != SUCCEEDED:
            raise ConfigError(f"Vertex AI custom job {name} is {state}, not {SUCCEEDED}: there is no model to "
                              "register. Clear train_models to train again.")
        bucket, prefix = split_gs(model_dir.rstrip("/") + "/")
        out = self.cache_dir / (trained.get("display_name") or name.rsplit("/", 1)[-1])
        if not (out / self.FILES_LAST).exists():
            from include.targets.cloud.mirror import mirror

            mirror(((b.name[len(prefix):], b.size, b) for b in self.storage.list_blobs(bucket, prefix=prefix)), out,
                   lambda blob, path: blob.download_to_filename(str(path)), last=self.FILES_LAST)
        try:
            return read_outputs(out, model_uri=model_dir.rstrip("/"), where=model_dir)
        except ValueError as exc:
            raise ConfigError(f"{exc} (Cloud Logging has the job's log)") from None


def with_identity(body: dict, *, display_name: str, output_root: str, labels: dict[str, str]) -> dict:
    """A copy of ``body`` named ``display_name``, with ``labels`` added and its own output directory."""
    out = copy.deepcopy(body)
    out["display_name"] = display_name
    out["labels"] = {**out.get("labels", {}), **labels}
    out.setdefault("job_spec", {})["base_output_directory"] = {
        "output_uri_prefix": output_directory(output_root, display_name)}
    return out
