"""`make airflow`'s supervision: a component that dies stops the rest, and a stop reaches what they forked."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import airflow_ui  # noqa: E402

from tests.e2e.airflow_stack import group_pids  # noqa: E402

# A component that forks a child which ignores nothing, then waits; and one that exits after a moment.
LONG = [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(600)']); time.sleep(600)"]
SHORT = [sys.executable, "-c", "import sys, time; print('cannot bind', flush=True); time.sleep(1); sys.exit(3)"]


@pytest.fixture()
def stack(tmp_path, monkeypatch):
    monkeypatch.setattr(airflow_ui, "GRACE_S", 5)
    s = airflow_ui.Stack({"AIRFLOW_HOME": str(tmp_path)})
    yield s
    s.stop()


def test_a_component_that_dies_is_named_with_its_log_and_the_others_are_stopped(stack, monkeypatch):
    monkeypatch.setattr(stack, "commands", lambda: {"api-server": LONG, "scheduler": SHORT, "mlflow": LONG})
    stack.start()
    time.sleep(1)
    groups = {name: p.pid for name, p in stack.procs.items()}
    deadline = time.monotonic() + 20
    while not (failure := stack.dead()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert failure and failure.startswith("scheduler exited with status 3") and "cannot bind" in failure
    with pytest.raises(RuntimeError, match="scheduler exited"):
        stack.wait_ready()
    assert len(group_pids({groups["api-server"]})) == 2  # the component and the child it forked
    stack.stop()
    for pgid in groups.values():
        assert group_pids({pgid}) == set(), "a process outlived the stop"


def test_ports_are_checked_before_anything_starts(monkeypatch):
    monkeypatch.setenv("FLIGHTS_AIRFLOW_PORT", "80800")
    with pytest.raises(SystemExit, match=r"FLIGHTS_AIRFLOW_PORT='80800' is not a TCP port"):
        airflow_ui.Stack({"AIRFLOW_HOME": "/nonexistent"})
