"""What a training run produces and what the registry holds: plain dataclasses, no Airflow.

Managed training containers (SageMaker, Vertex AI, Azure ML) import the training code with
the training requirements alone, so nothing under ``include/training`` that they reach may
import Airflow or ``include.targets``; the targets import these types from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


METRICS_FILE = "metrics.json"  # written last by include.training.train: its presence marks complete outputs


def read_outputs(folder: Path, model_uri: str = "", where: str = "") -> TrainingOutputs:
    """The outputs a training run left in ``folder`` (a local copy of a managed job's model folder).

    Raises ValueError naming ``where`` (the job's output URI) when ``metrics.json`` is missing.
    """
    path = Path(folder) / METRICS_FILE
    if not path.exists():
        raise ValueError(f"{where or folder} holds no {METRICS_FILE}: it was not written by include.training.train; "
                         "see the training job's log.")
    data = json.loads(path.read_text(encoding="utf-8"))
    params = data.get("params", {})
    return TrainingOutputs(Path(folder), data["metrics"], params, str(params.get("device", "")), model_uri=model_uri)


@dataclass
class ModelVersion:
    name: str
    version: str
    run_id: str = ""
    url: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


class RegistryError(ValueError):
    """The registry cannot do what was asked (unknown version, no champion…): the message says why and what to do."""


class RollbackError(RegistryError):
    """A rollback that cannot be done: no reason given, nothing to roll back to, or an unknown version."""
