"""A real Airflow deployment on loopback for tests that need the scheduler (backfills, clears).

API server (which also serves the task execution API), scheduler with the LocalExecutor,
an SQLite metadata database and a FLIGHTS_HOME of its own. Scheduled runs are switched
off (``use_job_schedule=False``), so only what a test creates runs: backfills, cleared
runs, triggered runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def group_pids(pgids: set[int]) -> set[int]:
    """Every live process whose process group is one of ``pgids`` (a process and what it forked)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:
            out.add(int(stat.parent.name))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AirflowStack:
    def __init__(self, home: Path, spark_pool_slots: int = 1):
        self.home = home
        self.port = free_port()
        self.pool_slots = spark_pool_slots
        self.procs: list[subprocess.Popen] = []
        airflow_home = home / "airflow"
        self.db = airflow_home / "airflow.db"
        self.env = dict(os.environ)
        for key, value in (("FLIGHTS_JARS_DIR", str(REPO / ".cache" / "jars")), ("SPARK_LOCAL_IP", "127.0.0.1"),
                           ("GX_ANALYTICS_ENABLED", "false"), ("MLFLOW_DISABLE_TELEMETRY", "true")):
            self.env.setdefault(key, value)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), self.env.get("PYTHONPATH", "")]))
        self.env.update(
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            FLIGHTS_HOME=str(home),
            AIRFLOW_HOME=str(airflow_home),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.db}",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS="tests.e2e.sqlite_connect.CONNECT_ARGS",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{self.port}/execution/",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__API_AUTH__JWT_SECRET="flights-tests-jwt-secret-" + "x" * 40,
            AIRFLOW__API__SECRET_KEY="flights-tests",
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
            AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        )

    # --- lifecycle -------------------------------------------------------------------------

    def cli(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        out = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                               f"{out.stderr[-3000:]}")
        return out

    def create_backfill(self, *args: str, attempts: int = 3) -> int:
        """``airflow backfill create`` with ``args``; returns the backfill's id.

        SQLite refuses a write at once ("database is locked", no busy wait) when two transactions would
        deadlock: the CLI's savepoint reads, then inserts a run while the scheduler commits. The CLI has
        committed the backfill row by then, and its runs are rolled back. Airflow deletes such a half-created
        backfill only for the lock errors of PostgreSQL and MySQL; on SQLite it stays "running" without runs
        (until the scheduler marks it complete two minutes later) and refuses the next create. So this
        deletes it, as Airflow would, and creates the backfill again.
        """
        for attempt in range(1, attempts + 1):
            before = self.latest_backfill_id() or 0
            try:
                self.cli("backfill", "create", *args)
                return self.latest_backfill_id()
            except RuntimeError as exc:
                if "database is locked" not in str(exc) or attempt == attempts:
                    raise
                self.delete_half_created_backfills(after=before)
                time.sleep(5)
        raise AssertionError("unreachable")

    def delete_half_created_backfills(self, after: int) -> list[int]:
        """Deletes the unfinished backfills newer than id ``after`` that have no run; returns their ids.
        One with runs is not half-created: that is an error, not something to delete."""
        with sqlite3.connect(self.db, timeout=30) as con:
            ids = [r[0] for r in con.execute("SELECT id FROM backfill WHERE id > ? AND completed_at IS NULL", (after,))]
            for backfill_id in ids:
                runs = con.execute("SELECT (SELECT count(*) FROM backfill_dag_run WHERE backfill_id = ?) + "
                                   "(SELECT count(*) FROM dag_run WHERE backfill_id = ?)",
                                   (backfill_id, backfill_id)).fetchone()[0]
                if runs:
                    raise RuntimeError(f"backfill {backfill_id} failed to be created but has {runs} runs; see "
                                       f"{self.home / 'airflow'}")
                con.execute("DELETE FROM backfill WHERE id = ?", (backfill_id,))
        return ids

    def start(self) -> "AirflowStack":
        (self.home / "airflow").mkdir(parents=True, exist_ok=True)
        self.cli("db", "migrate")
        self.cli("pools", "set", "spark", str(self.pool_slots), "Concurrent Spark jobs")
        self.cli("dags", "reserialize")
        self.cli("dags", "unpause", "flights_daily")
        logs = self.home / "airflow"
        for name, args in (("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.port)]),
                           ("scheduler", ["scheduler", "--skip-serve-logs"])):
            log = open(logs / f"{name}.out", "w")
            self.procs.append(subprocess.Popen([AIRFLOW, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                self.api("GET", "/api/v2/version")
                return self
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"the API server did not come up on port {self.port}; see {logs / 'api-server.out'}")

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # --- the REST API and the metadata database --------------------------------------------

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.db, timeout=30) as con:
            return con.execute(query, params).fetchall()

    def wait_for_backfill(self, backfill_id: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.api("GET", f"/api/v2/backfills/{backfill_id}").get("completed_at"):
                return
            time.sleep(5)
        raise TimeoutError(f"backfill {backfill_id} did not complete in {timeout:.0f}s: {self.run_states()}")

    def wait_for_runs(self, timeout: float) -> None:
        """Until no run of flights_daily is queued or running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.sql("SELECT 1 FROM dag_run WHERE dag_id = 'flights_daily' AND state IN ('queued', 'running')"):
                return
            time.sleep(5)
        raise TimeoutError(f"runs still active after {timeout:.0f}s: {self.run_states()}")

    def run_states(self) -> dict[str, str]:
        return dict(self.sql("SELECT run_id, state FROM dag_run WHERE dag_id = 'flights_daily'"))

    def latest_backfill_id(self) -> int:
        return self.sql("SELECT max(id) FROM backfill")[0][0]
