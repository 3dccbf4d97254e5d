"""The layers import downwards only: no cycle between alerts, targets, the step factory and the pipeline.

Read from the source (every import statement, also those inside functions), so a lazy import
that closes a cycle is caught as well as a top-level one:

* ``include.targets`` (every target, the cloud layer) never imports the pipeline, the step
  factory or the alerts: they sit above it;
* ``include.notify`` (alert delivery, which the targets build) imports neither the alerts nor the targets;
* ``include.training`` and ``spark_jobs`` (shipped into training containers and Spark clusters)
  import neither Airflow nor ``include.targets``; the one exception is ``include/training/rollback.py``,
  the ``make rollback`` command, which drives the chosen target's registry and is never shipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


COMMANDS = {"include/training/rollback.py"}  # command-line entry points above the targets


def _offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in _modules(folder):
        if str(path.relative_to(REPO)) in COMMANDS:
            continue
        bad = sorted(m for m in _imports(path) if m.split(".")[0] in forbidden or m.startswith(forbidden))
        if bad:
            found[str(path.relative_to(REPO))] = bad
    return found


@pytest.mark.parametrize("folder, forbidden", [
    ("include/targets", ("include.pipeline", "include.steps", "include.alerts")),
    ("include/notify.py", ("include.alerts", "include.targets")),
    ("include/training", ("airflow", "include.targets", "include.pipeline", "include.steps")),
    ("spark_jobs", ("airflow", "include.targets", "include.pipeline", "include.steps")),
])
def test_layers_import_downwards_only(folder, forbidden):
    if folder.endswith(".py"):
        bad = sorted(m for m in _imports(REPO / folder) if m.startswith(forbidden))
        assert bad == [], f"{folder} imports {bad}"
    else:
        assert _offenders(folder, forbidden) == {}



ENTRY_POINTS = ("include.targets.aws.sagemaker_entry", "include.targets.gcp.vertex_entry",
                "include.targets.azure.azureml_entry", "include.training.train")
BLOCK_AIRFLOW = """
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
for module in sys.argv[1:]:
    importlib.import_module(module)
"""


def test_the_training_entry_points_import_where_airflow_is_not_installed():
    """As in the SageMaker / Vertex AI / Azure ML containers: the packages around the entry points need no Airflow."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", BLOCK_AIRFLOW, *ENTRY_POINTS], capture_output=True, text=True,
                          cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    blocked = subprocess.run([sys.executable, "-c", BLOCK_AIRFLOW, "include.targets.errors"], capture_output=True,
                             text=True, cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert blocked.returncode != 0 and "airflow" in blocked.stderr  # the blocker works
