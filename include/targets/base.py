"""The seams between the pipeline and where it runs.

A target bundles six objects, and a ``StepBackend`` for the step factory (``include.steps``).
DAG tasks talk only to these interfaces, so the same DAG runs on the laptop and in every cloud.

| seam          | local                               | what a cloud target provides              |
|---------------|-------------------------------------|-------------------------------------------|
| LakeStorage   | folders under FLIGHTS_HOME          | s3:// / gs:// / abfss:// URIs             |
| SparkRunner   | spark-submit subprocess, local[2]   | EMR / Dataproc / HDInsight (Livy) jobs    |
| Trainer       | in-process training                 | SageMaker / Vertex AI / Azure ML jobs     |
| ModelRegistry | MLflow (SQLite + local artefacts)   | SageMaker / Vertex / Azure ML registries  |
| Warehouse     | DuckDB file or PostgreSQL           | Redshift / BigQuery                       |
| Notifier      | alert file + log (+ Slack/SMTP/SNS) | same channels                             |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from include.targets.cloud.spec import OperatorSpec
from include.training.outputs import ModelVersion, TrainingOutputs, TrainingRequest  # noqa: F401 (re-exported)
from include.training.outputs import RegistryError, RollbackError  # noqa: F401 (re-exported)

# The Spark job errors need Airflow (a rejected job fails without retries): they live in
# ``include.targets.errors`` so that code shipped into training containers, which imports
# ``include.targets`` packages but has no Airflow, never pulls it in.
_ERRORS = ("PERMANENT_EXIT_CODES", "SparkJobFailed", "SparkJobRejected")


def __getattr__(name: str):
    if name in _ERRORS:
        from include.targets import errors

        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LakeStorage(Protocol):
    root: str
    landing_root: str

    def exists(self, uri: str) -> bool: ...

    def read_json(self, uri: str) -> dict: ...

    def local_dir(self, uri: str) -> Path:
        """A local folder holding the files under ``uri`` (downloaded when remote)."""
        ...


class SparkRunner(Protocol):
    def submit(self, job: str, args: list[str], *, name: str) -> None:
        """Run ``spark_jobs/<job>.py`` with ``args`` to completion; raise SparkJobFailed on failure."""
        ...


class Trainer(Protocol):
    def train(self, request: TrainingRequest) -> TrainingOutputs: ...

    def collect(self, trained: dict) -> TrainingOutputs:
        """The outputs of a finished ``train_models`` task (its XCom), in a local folder."""
        ...


class ModelRegistry(Protocol):
    """Versions of the model, and the ``champion`` among them. Errors: ``RegistryError`` (``RollbackError``)."""

    def register(self, outputs: TrainingOutputs, tags: dict[str, str]) -> ModelVersion: ...

    def champion(self) -> ModelVersion | None: ...

    def bundle_dir(self, version: ModelVersion) -> Path:
        """A local folder with the version's scoring bundle (model + feature spec)."""
        ...

    def publish_bundle(self, version: ModelVersion) -> str:
        """Where the scoring job reads the version's bundle: a lake URI (cloud) or a local folder (local)."""
        ...

    def set_champion(self, version: ModelVersion, reason: str) -> None: ...

    def rollback(self, to_version: str | None, reason: str, by: str) -> tuple[ModelVersion, ModelVersion]:
        """Move ``champion`` back (to ``to_version`` or the previous champion); returns (old, new).

        Raises ``RollbackError`` (a ``RegistryError``) naming why it cannot.
        """
        ...

    def training_window(self, version: str) -> str: ...

    def versions(self) -> list[str]: ...


class Warehouse(Protocol):
    def ensure_schema(self) -> None: ...

    def load_interval(self, table: str, source: str | Path, start, end) -> int:
        """Replace exactly ``start``..``end`` of ``table`` with the Parquet export at ``source``; rows loaded.

        ``source`` is the export's URI in the lake (a local folder on ``local``); a warehouse that
        reads local files fetches it through the lake (``LakeStorage.local_dir``).
        """
        ...

    def record(self, table: str, row: dict[str, Any]) -> None: ...

    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]: ...


class Notifier(Protocol):
    def send(self, alert: Any) -> None: ...


class StepBackend(Protocol):
    """What a target tells the step factory (``include.steps.Steps``): where the lake is, and per step
    the operator that runs it in the cloud (an ``OperatorSpec``), or ``None`` for a Python task.

    Built at parse time from settings only: no connection, no cloud call.
    """

    lake_root: str
    landing_root: str
    pii_key_secret: str  # the secret the ingest job reads the PII key from ("": the job's environment has it)

    def spark_job(self, *, task_id: str, job: str, args: list[str], output: str | None,
                  interval_key: str) -> OperatorSpec | None:
        """The operator running ``spark_jobs/<job>.py`` with ``args`` (Jinja strings); its XCom is ``output``."""
        ...

    def cluster(self, interval_key: str) -> tuple[OperatorSpec, OperatorSpec] | None:
        """(setup, teardown) of a per-run cluster the Spark jobs run on, or None (serverless, local)."""
        ...

    def training_job(self, *, task_id: str, dataset_uri: str, interval_key: str,
                     params: dict[str, str]) -> OperatorSpec | None:
        """The managed training job; its XCom is what the target's ``Trainer.collect`` reads."""
        ...

    def load_job(self, *, task_id: str, table: str, source: str, start: str, end: str) -> OperatorSpec | None:
        """The operator loading the interval into ``table`` (None: ``Warehouse.load_interval`` in a Python task)."""
        ...


@dataclass
class Target:
    name: str
    lake: LakeStorage
    spark: SparkRunner
    trainer: Trainer
    registry: ModelRegistry
    warehouse: Warehouse
    notifier: Notifier
