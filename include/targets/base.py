"""The seams between the pipeline and where it runs.

A target bundles six objects. DAG tasks talk only to these interfaces, so the same DAG
runs on the laptop and in every cloud.

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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


from airflow.sdk.exceptions import AirflowFailException

# Exit statuses of a Spark job that a retry cannot fix: 2 is argparse's (bad arguments),
# 3 is spark_jobs.session.PERMANENT_EXIT (bad input, a missing table or column).
PERMANENT_EXIT_CODES = (2, 3)


class SparkJobFailed(RuntimeError):
    """A Spark job ended in failure; the message carries the tail of its driver log. Retried."""


class SparkJobRejected(SparkJobFailed, AirflowFailException):
    """A Spark job failed for a reason a retry cannot fix: the task fails at once, without retries."""


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


@dataclass
class TrainingRequest:
    dataset_dir: Path
    output_dir: Path
    params: dict[str, Any]
    name: str


@dataclass
class TrainingOutputs:
    output_dir: Path
    metrics: dict[str, dict[str, float]]
    params: dict[str, Any]
    device: str
    model_uri: str = ""  # where a remote trainer stored the outputs (the registry points at it)


class Trainer(Protocol):
    def train(self, request: TrainingRequest) -> TrainingOutputs: ...

    def collect(self, trained: dict) -> TrainingOutputs:
        """The outputs of a finished ``train_models`` task (its XCom), in a local folder."""
        ...


@dataclass
class ModelVersion:
    name: str
    version: str
    run_id: str = ""
    url: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


class ModelRegistry(Protocol):
    def register(self, outputs: TrainingOutputs, tags: dict[str, str]) -> ModelVersion: ...

    def champion(self) -> ModelVersion | None: ...

    def bundle_dir(self, version: ModelVersion) -> Path:
        """A local folder with the version's scoring bundle (model + feature spec)."""
        ...

    def set_champion(self, version: ModelVersion, reason: str) -> None: ...

    def rollback(self, to_version: str | None, reason: str, by: str) -> tuple[ModelVersion, ModelVersion]:
        """Move ``champion`` back (to ``to_version`` or the previous champion); returns (old, new)."""
        ...

    def training_window(self, version: str) -> str: ...


class Warehouse(Protocol):
    def ensure_schema(self) -> None: ...

    def load_interval(self, table: str, parquet_dir: Path, start, end) -> int: ...

    def record(self, table: str, row: dict[str, Any]) -> None: ...

    def query(self, sql: str) -> tuple[list[str], list[tuple]]: ...


class Notifier(Protocol):
    def send(self, alert: "Any") -> None: ...


class Steps(Protocol):
    """Builds the DAG tasks that run on the target's compute (see ``include.targets.steps``)."""

    def spark(self, task_id: str, interval: Any) -> Any: ...

    def gate(self, task_id: str, interval: Any) -> Any: ...

    def score(self, task_id: str, interval: Any) -> Any: ...

    def load_warehouse(self, task_id: str, interval: Any, scoring: Any) -> Any: ...

    def train(self, task_id: str, dataset: Any, window: Any) -> Any: ...


@dataclass
class Target:
    name: str
    lake: LakeStorage
    spark: SparkRunner
    trainer: Trainer
    registry: ModelRegistry
    warehouse: Warehouse
    notifier: Notifier
