"""The local target: everything on this machine, state under FLIGHTS_HOME."""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path

from include.config import REPO_ROOT, ConfigError, Settings
from include.targets.base import Target, TrainingOutputs, TrainingRequest
from include.targets.errors import PERMANENT_EXIT_CODES, SparkJobFailed, SparkJobRejected

log = logging.getLogger(__name__)


class LocalLake:
    def __init__(self, cfg: Settings):
        self.root = str(cfg.lake_root)
        self.landing_root = str(cfg.landing_root)

    def exists(self, uri: str) -> bool:
        return Path(uri).exists()

    def read_json(self, uri: str) -> dict:
        return json.loads(Path(uri).read_text(encoding="utf-8"))

    def local_dir(self, uri: str) -> Path:
        return Path(uri)


class LocalSparkRunner:
    """Launch each job as its own spark-submit process, exactly as on a cluster."""

    def __init__(self, cfg: Settings):
        self.cfg = cfg

    def _jars(self) -> list[str]:
        jars = sorted(glob.glob(str(self.cfg.jars_dir / "*.jar")))
        if not any("delta-spark" in Path(j).name for j in jars):
            raise ConfigError(
                f"No Delta Lake jars in {self.cfg.jars_dir}. Run `make jars` (or set FLIGHTS_JARS_DIR to a folder "
                "holding delta-spark and delta-storage jars matching the installed Spark)."
            )
        return jars

    def command(self, job: str, args: list[str], *, name: str) -> list[str]:
        script = REPO_ROOT / "spark_jobs" / f"{job}.py"
        if not script.exists():
            raise ConfigError(f"Unknown Spark job {job!r}: {script} does not exist.")
        spark_submit = Path(sys.executable).with_name("spark-submit")
        return [
            str(spark_submit),
            "--master", self.cfg.spark_master,
            "--name", name,
            "--driver-memory", self.cfg.spark_driver_memory,
            "--jars", ",".join(self._jars()),
            "--conf", "spark.driver.extraJavaOptions=-Dlog4j2.level=warn",
            str(script),
            *args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
            PYSPARK_PYTHON=sys.executable,
            PYSPARK_DRIVER_PYTHON=sys.executable,
            SPARK_LOCAL_IP=env.get("SPARK_LOCAL_IP", "127.0.0.1"),
            FLIGHTS_JARS_DIR=str(self.cfg.jars_dir),
            GX_ANALYTICS_ENABLED="false",
        )
        return env

    def launch(self, job: str, args: list[str], *, name: str) -> subprocess.Popen:
        """Start the job in its own process group (the JVM, the Python driver and its workers)."""
        cmd = self.command(job, args, name=name)
        log.info("spark-submit %s: %s", name, " ".join(cmd[-len(args) - 1:]))
        env = self.environment()
        if job in PII_JOBS:
            env.update(pii_key_environment(env))
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=REPO_ROOT, start_new_session=True)

    def submit(self, job: str, args: list[str], *, name: str) -> None:
        tail: deque[str] = deque(maxlen=40)
        with self.launch(job, args, name=name) as proc:
            try:
                for line in proc.stdout:
                    line = line.rstrip()
                    if line:
                        tail.append(line)
                        log.info("[%s] %s", job, line)
                rc = proc.wait()
            except BaseException:
                kill_group(proc)  # a killed or timed-out task never leaves its Spark job behind
                raise
        if rc != 0:
            errors = [line for line in tail if "Error" in line or "Exception" in line or "PERMANENT" in line]
            first = (errors or list(tail)[-5:] or ["(no output)"])[-1]
            if rc in PERMANENT_EXIT_CODES:
                raise SparkJobRejected(f"Spark job {name} ({job}) rejected its input (exit {rc}), so it is not "
                                       f"retried: {first}\n" + "\n".join(tail))
            raise SparkJobFailed(f"Spark job {name} ({job}) exited with code {rc}: {first}\n" + "\n".join(tail))


PII_JOBS = ("bronze_landing",)  # the jobs that read source columns before they are pseudonymised


def pii_key_environment(env: dict[str, str]) -> dict[str, str]:
    """``FLIGHTS_PII_KEY`` for a job that pseudonymises personal columns, from the Airflow connection.

    The key is the password of ``FLIGHTS_PII_CONN_ID`` (default ``flights_pii``), resolved
    through Airflow's secrets backends, and travels in the job's environment, never on its
    command line. Nothing is added when no column is classified personal, or when the
    connection does not exist (the job then refuses to ingest personal columns and says so).
    """
    from include.source.pii import KEY_ENV, pii_columns

    if not any(pii_columns(ds) for ds in ("flights", "weather", "planes", "airlines", "airports")):
        return {}
    conn_id = env.get("FLIGHTS_PII_CONN_ID", "").strip() or "flights_pii"
    try:
        from airflow.sdk import BaseHook

        password = BaseHook.get_connection(conn_id).password
    except Exception as exc:  # not found, or no Airflow here: the job names the missing key
        log.warning("PII key connection %s not available (%s); %s comes from the environment if at all",
                    conn_id, type(exc).__name__, KEY_ENV)
        return {}
    return {KEY_ENV: password} if password else {}


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the job's whole process group, then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class LocalTrainer:
    """Train in the task's own process (GPU when one is visible)."""

    def train(self, request: TrainingRequest) -> TrainingOutputs:
        from include.training.train import train_and_evaluate

        return train_and_evaluate(request.dataset_dir, request.output_dir, request.params)

    def collect(self, trained: dict) -> TrainingOutputs:
        return TrainingOutputs(Path(trained["output_dir"]), trained["metrics"], trained["params"], trained["device"])


class LocalSteps:
    """The local target's ``StepBackend``: every step is a Python task (spark-submit, in-process training)."""

    def __init__(self, cfg: Settings):
        self.lake_root, self.landing_root = str(cfg.lake_root), str(cfg.landing_root)
        self.pii_key_secret = ""  # the key travels in the job's environment (pii_key_environment)

    def spark_job(self, **_) -> None:
        return None

    def cluster(self, interval_key: str) -> None:
        return None

    def training_job(self, **_) -> None:
        return None

    def load_job(self, **_) -> None:
        return None


def step_backend(cfg: Settings) -> LocalSteps:
    return LocalSteps(cfg)


def build(cfg: Settings) -> Target:
    from include.notify import ChannelNotifier
    from include.training.registry import MlflowRegistry
    from include.warehouse import make_warehouse

    lake = LocalLake(cfg)
    return Target(
        name="local",
        lake=lake,
        spark=LocalSparkRunner(cfg),
        trainer=LocalTrainer(),
        registry=MlflowRegistry(cfg),
        warehouse=make_warehouse(cfg, lake),
        notifier=ChannelNotifier(cfg),
    )
