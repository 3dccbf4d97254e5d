"""`make airflow`: the UI stack comes up on loopback only, asks for a login, and one Ctrl-C stops all of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.airflow_stack import AirflowStack, free_port, group_pids

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "airflow_ui.py"
READY = "Ctrl-C stops everything."


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = cols[1].split(":")
            if width == 8:
                text = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                text = "::1" if address == "0" * 24 + "01000000" else f"ipv6:{address}"
            found.append((text, int(port, 16)))
    return found


def _request(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict | str]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, raw = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read().decode()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui")
    stack = AirflowStack(home)  # its environment: the project's settings, a metadata database of its own
    stack.cli("db", "migrate")
    env = {**stack.env, "FLIGHTS_AIRFLOW_PORT": str(free_port()), "FLIGHTS_MLFLOW_PORT": str(free_port())}
    proc = subprocess.Popen([sys.executable, str(SCRIPT)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 300
    while not any(READY in line for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("make airflow did not come up:\n" + "".join(lines))
        time.sleep(1)
    pids = json.loads((home / "airflow" / "stack.pids").read_text())
    yield {"proc": proc, "lines": lines, "env": env, "pids": pids, "home": home,
           "airflow": f"http://127.0.0.1:{env['FLIGHTS_AIRFLOW_PORT']}",
           "mlflow": f"http://127.0.0.1:{env['FLIGHTS_MLFLOW_PORT']}"}
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids.values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_every_component_answers_and_the_urls_and_login_are_printed(ui):
    status, health = _request(f"{ui['airflow']}/api/v2/monitor/health")
    assert status == 200
    assert {c: health[c]["status"] for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == \
        dict.fromkeys(("metadatabase", "scheduler", "triggerer", "dag_processor"), "healthy")
    status, experiments = _request(f"{ui['mlflow']}/api/2.0/mlflow/experiments/search?max_results=10")
    assert status == 200 and "experiments" in experiments
    output = "".join(ui["lines"])
    passwords = ui["home"] / "airflow" / "simple_auth_manager_passwords.json.generated"
    assert f"Airflow UI   {ui['airflow']}" in output and f"MLflow UI    {ui['mlflow']}" in output
    assert str(passwords) in output and passwords.exists()


@pytest.mark.slow
def test_nothing_is_served_without_a_login_and_a_wrong_password_is_refused(ui):
    password = json.loads((ui["home"] / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
    assert list(password) == ["admin"]
    assert _request(f"{ui['airflow']}/api/v2/dags")[0] == 401
    assert _request(f"{ui['airflow']}/api/v2/dags", token="not-a-token")[0] == 403  # a forged token
    assert _request(f"{ui['airflow']}/auth/token", {"username": "admin", "password": password["admin"] + "x"})[0] \
        == 401
    assert _request(f"{ui['airflow']}/auth/token", {"username": "nobody", "password": password["admin"]})[0] == 401
    status, token = _request(f"{ui['airflow']}/auth/token", {"username": "admin", "password": password["admin"]})
    assert status in (200, 201), token
    status, dags = _request(f"{ui['airflow']}/api/v2/dags", token=token["access_token"])
    assert status == 200
    assert {"flights_daily", "flights_training", "flights_maintenance"} <= {d["dag_id"] for d in dags["dags"]}


@pytest.mark.slow
def test_it_listens_on_loopback_only(ui):
    pids = group_pids(set(ui["pids"].values()))
    listening = _listening(pids)
    ports = {int(ui["env"]["FLIGHTS_AIRFLOW_PORT"]), int(ui["env"]["FLIGHTS_MLFLOW_PORT"])}
    assert ports <= {port for _, port in listening}, listening
    assert all(address in ("127.0.0.1", "::1") for address, _ in listening), listening  # no log server on 0.0.0.0


@pytest.mark.slow
def test_one_ctrl_c_stops_every_process_it_started(ui):
    pgids = set(ui["pids"].values())
    assert len(group_pids(pgids)) >= 5
    os.kill(ui["proc"].pid, signal.SIGINT)
    assert ui["proc"].wait(timeout=90) == 0
    assert group_pids(pgids) == set(), "processes outlived Ctrl-C"
    assert "stopped" in "".join(ui["lines"])
