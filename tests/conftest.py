"""Shared fixtures. The environment is set before anything imports Airflow.

Every test session gets its own FLIGHTS_HOME (lake, landing, registry, warehouse and
Airflow home) under a temporary folder; nothing touches the developer's ``.state``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import logging

import pytest

logging.getLogger("py4j").setLevel(logging.WARNING)  # no "closing down" noise at interpreter exit

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="flights-tests-"))

os.environ.update(
    FLIGHTS_HOME=str(_HOME),
    FLIGHTS_TARGET="local",
    FLIGHTS_WAREHOUSE="duckdb",
    FLIGHTS_ALERT_CHANNELS="file",
    FLIGHTS_RETRIES="1",
    FLIGHTS_RETRY_DELAY_S="1",
    AIRFLOW_HOME=str(_HOME / "airflow"),
    AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__UNIT_TEST_MODE="False",
    SPARK_LOCAL_IP="127.0.0.1",
    MLFLOW_DISABLE_TELEMETRY="true",
    GX_ANALYTICS_ENABLED="false",
)
os.environ.setdefault("FLIGHTS_JARS_DIR", str(REPO / ".cache" / "jars"))
# The in-process Spark session serves every transform, corpus and crash-setup test of the run;
# the default 1 GB driver heap runs out over the whole suite.
os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--driver-memory 3g pyspark-shell")
os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def pytest_collection_modifyitems(session, config, items):
    """Modules with a slow test first, end-to-end ones foremost; each module keeps its own order.

    ``make test`` runs the modules on parallel pytest-xdist workers, a whole module per worker, handed out
    in this order (``--no-loadscope-reorder``: xdist would otherwise hand out the modules with the most tests
    first, which puts the few long end-to-end ones last): a long module handed out last would leave the other
    workers idle while it runs.
    """
    first: dict[str, int] = {}
    slow: set[str] = set()
    for index, item in enumerate(items):
        module = item.nodeid.split("::", 1)[0]
        first.setdefault(module, index)
        if item.get_closest_marker("slow"):
            slow.add(module)

    def order(pair):
        index, item = pair
        module = item.nodeid.split("::", 1)[0]
        return module not in slow, not module.startswith("tests/e2e/"), first[module], index

    items[:] = [item for _, item in sorted(enumerate(items), key=order)]


def pytest_sessionfinish(session, exitstatus):
    """Remove this session's state unless asked to keep it for a post-mortem."""
    if os.environ.get("FLIGHTS_KEEP_TEST_HOME"):
        print(f"\nTest state kept in {_HOME}")
    else:
        shutil.rmtree(_HOME, ignore_errors=True)


@contextlib.contextmanager
def isolated_flights_home(tmp_path_factory, name: str):
    """A FLIGHTS_HOME of a module's own (registry, warehouse, alert file start empty); yields it."""
    from include.config import settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTS_HOME", str(tmp_path_factory.mktemp(name) / "home"))
        mp.setenv("FLIGHTS_ALERT_CHANNELS", "file")
        mp.delenv("FLIGHTS_MLFLOW_TRACKING_URI", raising=False)
        settings.cache_clear()
        yield settings().home
    settings.cache_clear()


@pytest.fixture(scope="session")
def flights_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def spark():
    """One local Spark session with Delta for every transform test."""
    from spark_jobs.session import get_spark

    session = get_spark("tests")
    session.conf.set("spark.sql.shuffle.partitions", "2")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def airflow_db(flights_home):
    """A migrated Airflow metadata database under this session's AIRFLOW_HOME."""
    airflow = Path(sys.executable).with_name("airflow")
    out = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    out = subprocess.run([str(airflow), "pools", "set", "spark", "1", "Concurrent Spark jobs"], capture_output=True,
                         text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return flights_home / "airflow"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}")) or []
    if found:
        return str(found[-1])
    path = shutil.which(name)
    if not path:
        pytest.fail(f"PostgreSQL server binary {name!r} not found: run `bash scripts/ensure_postgres.sh` "
                    "(installs the Debian postgresql package).")
    return path


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on loopback for this session; yields its URL."""
    data = Path(tempfile.mkdtemp(prefix="flights-pg-"))  # outside pytest's 0700 folders: postgres must reach it
    port = _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    init = subprocess.run([*as_user, _pg_bin("initdb"), "-D", str(data), "-U", "flights", "--auth=trust",
                           "-E", "UTF8"], capture_output=True, text=True)
    assert init.returncode == 0, f"initdb failed: {init.stderr[-2000:]}"
    log = data / "server.log"
    subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                    f"-h 127.0.0.1 -p {port} -k {data}", "start"], check=True, capture_output=True)
    url = f"postgresql://flights@127.0.0.1:{port}/postgres"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield url
    finally:
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
