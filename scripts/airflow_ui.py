"""`make airflow`: the Airflow UI and everything behind it on this machine, on 127.0.0.1 only.

Starts, with the project's settings (``make -s env``) and the metadata database of
``make airflow-init``:

* the API server, which serves the UI, the REST API and the task execution API;
* the scheduler (LocalExecutor), the DAG processor and the triggerer (deferred cloud waits);
* the MLflow UI over the model registry the DAGs write (``FLIGHTS_MLFLOW_TRACKING_URI``).

It waits until each answers, prints the URLs and where the generated login is, and keeps
them running. One Ctrl-C (or SIGTERM) stops them all: each gets SIGTERM, then SIGKILL
after a grace period. If one of them dies, the others are stopped too and the exit status
names it, with the end of its log.

Login: Airflow's simple auth manager with one user, ``admin``, whose password Airflow
generates on first start into ``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``.
The API server's JWT and session secrets are generated for each start and shared by the
processes started together, so task calls and logins verify; a restart logs everybody out.

    make airflow                                  # http://127.0.0.1:8080 and http://127.0.0.1:5000
    FLIGHTS_AIRFLOW_PORT=8081 FLIGHTS_MLFLOW_PORT=5001 make airflow
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
GRACE_S = 30
READY_TIMEOUT_S = float(os.environ.get("FLIGHTS_AIRFLOW_READY_TIMEOUT_S", "240"))
COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def _port(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SystemExit(f"{name}={text!r} is not a TCP port (1-65535); set it to a free port, or unset it.")
    return int(text)


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


class Stack:
    def __init__(self, env: dict[str, str]):
        self.airflow_port = _port("FLIGHTS_AIRFLOW_PORT", 8080)
        self.mlflow_port = _port("FLIGHTS_MLFLOW_PORT", 5000)
        self.home = Path(env["AIRFLOW_HOME"])
        self.logs = self.home / "logs" / "stack"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(env)
        self.env.update(
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://{HOST}:{self.airflow_port}/execution/",
            AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
                                        "SimpleAuthManager",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
            AIRFLOW__API__BASE_URL=f"http://{HOST}:{self.airflow_port}",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(48),
            AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(32),
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(self.home / "logs"),
        )
        self.env.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True")

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def commands(self) -> dict[str, list[str]]:
        from include.config import settings

        cfg = settings()
        airflow = _bin("airflow")
        return {
            "api-server": [airflow, "api-server", "--host", HOST, "--port", str(self.airflow_port)],
            # no log servers: the API server reads the task logs from the same folder, and they would
            # listen on every interface
            "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
            "dag-processor": [airflow, "dag-processor"],
            "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
            "mlflow": [_bin("mlflow"), "ui", "--host", HOST, "--port", str(self.mlflow_port),
                       "--backend-store-uri", cfg.mlflow_tracking_uri,
                       "--default-artifact-root", cfg.mlflow_artifact_root.as_uri()],
        }

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for name, cmd in self.commands().items():
            log = open(self.logs / f"{name}.log", "w")
            self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
        (self.home / "stack.pids").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))

    def dead(self) -> str | None:
        """The first process that has exited, with the end of its log."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-25:]
                return f"{name} exited with status {proc.returncode}; the end of {self.logs / name}.log:\n" + \
                    "\n".join(tail)
        return None

    def _get(self, url: str) -> dict | str:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        try:
            return json.loads(body)
        except ValueError:
            return body

    def waiting_for(self) -> list[str]:
        """What does not answer yet: the API server, a component of its health report, MLflow."""
        waiting = []
        try:
            health = self._get(f"http://{HOST}:{self.airflow_port}/api/v2/monitor/health")
            waiting += [c for c in COMPONENTS if (health.get(c) or {}).get("status") != "healthy"]
        except (OSError, ValueError, AttributeError):
            waiting.append("api-server")
        try:
            self._get(f"http://{HOST}:{self.mlflow_port}/health")
        except OSError:
            waiting.append("mlflow")
        return waiting

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if failure := self.dead():
                raise RuntimeError(failure)
            waiting = self.waiting_for()
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f}s: {', '.join(waiting)}; logs in {self.logs}")
            time.sleep(2)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + GRACE_S
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group too: a worker a process forked outlives its parent's SIGTERM otherwise
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def main() -> int:
    if not os.environ.get("AIRFLOW_HOME"):
        raise SystemExit("AIRFLOW_HOME is not set: run `make airflow`, or `eval \"$(make -s env)\"` first.")
    stack = Stack(dict(os.environ))
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"starting the API server, scheduler, DAG processor, triggerer and MLflow UI (logs: {stack.logs})",
          flush=True)
    try:
        stack.start()
        stack.wait_ready()
        print(f"""
Airflow UI   http://{HOST}:{stack.airflow_port}   user admin, password in {stack.passwords_file}
MLflow UI    http://{HOST}:{stack.mlflow_port}

Trigger a day:   DAGs > flights_daily > Trigger (logical date 2013-03-08, or a start_date/end_date range)
Backfill:        DAGs > flights_daily > Trigger > Backfill (a date range; runs day by day)
Ctrl-C stops everything.""", flush=True)
        while True:
            if failure := stack.dead():
                raise RuntimeError(failure)
            time.sleep(2)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"\n{exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
