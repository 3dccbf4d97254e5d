"""SIGKILL a Spark job while it writes, then rerun it.

At every moment each Delta table reads as a committed version (the state before the job
or the state after it, never a mix), and after the rerun the lake equals a clean run.
The kills hit the three writes a daily run makes: the bronze append (``bronze.flights``),
the silver MERGE (``silver.flights``) and the predictions write. Each point is killed
twice, as soon as the first data file lands and half a second later.
"""

from __future__ import annotations

import importlib
import shutil
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from include.config import settings
from include.intervals import Interval
from include.lake import table_uri
from include.source.landing import land
from include.targets.local import LocalSparkRunner, kill_group
from tests.e2e.snapshots import frame_hash, lake_snapshot, read_delta

pytestmark = pytest.mark.slow

HISTORY = Interval(date(2013, 1, 1), date(2013, 1, 3))
DAY = Interval(date(2013, 1, 4), date(2013, 1, 4))

# crash point -> (job, the table whose write is interrupted, state before, state after)
POINTS = {
    "bronze_write": ("bronze_landing", "bronze.flights", "history", "bronze"),
    "silver_merge": ("gold_flight_features", "silver.flights", "bronze", "gold"),
    "predictions_write": ("predictions_flight_delay_risk", "predictions.flight_delay_risk", "gold", "scored"),
}


def _args(job: str, lake: Path, interval: Interval, landing: Path, bundle: Path) -> list[str]:
    args = ["--lake", str(lake), "--start", str(interval.start), "--end", str(interval.end),
            "--run-id", f"crash-test-{interval.key}"]
    if job == "bronze_landing":
        args += ["--landing", str(landing)]
    if job == "predictions_flight_delay_risk":
        args += ["--model-dir", str(bundle), "--model-name", "flights_delay_xgboost", "--model-version", "1",
                 "--result", str(lake / "_quality" / f"predictions_{interval.key}.json")]
    return args


class InProcessSpark:
    """The clean runs: a job's ``main`` on this process's session (the crashes use spark-submit)."""

    def submit(self, job, args, *, name):
        importlib.import_module(f"spark_jobs.{job}").main(args)


@pytest.fixture(scope="module")
def states(tmp_path_factory, spark):
    """Clean lakes at each step of the day's run: history, +bronze, +gold, +scored."""
    from include.training.train import train_and_evaluate

    root = tmp_path_factory.mktemp("crash")
    landing = root / "landing"
    land(Interval(HISTORY.start, DAY.end), landing)
    runner = InProcessSpark()
    lake = root / "history" / "lake"
    bundle = root / "model"

    def run(job, interval, extra=()):
        runner.submit(job, _args(job, lake, interval, landing, bundle / "bundle") + list(extra), name=f"setup-{job}")

    run("bronze_landing", HISTORY)
    run("gold_flight_features", HISTORY)
    run("gold_training_set", HISTORY, ["--output", str(root / "training"), "--validation-days", "1",
                                       "--holdout-days", "1"])
    train_and_evaluate(root / "training" / "data", bundle, {"n_estimators": 30, "device": "cpu"})
    run("predictions_flight_delay_risk", HISTORY)

    snaps = {"history": lake_snapshot(lake)}
    for step, job in (("bronze", "bronze_landing"), ("gold", "gold_flight_features"),
                      ("scored", "predictions_flight_delay_risk")):
        lake = root / step / "lake"
        shutil.copytree(root / list(snaps)[-1] / "lake", lake)
        runner.submit(job, _args(job, lake, DAY, landing, bundle / "bundle"), name=f"setup-{job}")
        snaps[step] = lake_snapshot(lake)
    assert snaps["scored"]["predictions.flight_delay_risk"][0] > snaps["history"]["predictions.flight_delay_risk"][0]
    return {"root": root, "landing": landing, "bundle": bundle / "bundle", "snapshots": snaps, "runner": runner,
            "spark_submit": LocalSparkRunner(settings())}


class Reader(threading.Thread):
    """Reads one table over and over with an independent reader while a job writes it."""

    def __init__(self, table_dir: Path):
        super().__init__(daemon=True)
        self.table_dir, self.seen, self.errors = table_dir, set(), []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.seen.add(frame_hash(read_delta(self.table_dir)))
            except Exception as exc:  # an unreadable table is exactly what this test must catch
                self.errors.append(repr(exc))
            time.sleep(0.3)


def _data_files(table_dir: Path) -> set[Path]:
    return {p for p in table_dir.rglob("*.parquet") if "_delta_log" not in p.parts}


def _drain(proc) -> None:
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()


def _kill_during_write(runner, job: str, args: list[str], table_dir: Path, delay: float) -> int:
    """Launch the job; SIGKILL its process group ``delay`` seconds after its first new data file appears."""
    before = _data_files(table_dir)
    proc = runner.launch(job, args, name=f"crash-{job}")
    _drain(proc)
    deadline = time.time() + 600
    while time.time() < deadline:
        if _data_files(table_dir) - before:
            time.sleep(delay)
            kill_group(proc)
            return proc.returncode
        if proc.poll() is not None:
            pytest.fail(f"{job} exited ({proc.returncode}) before writing a data file into {table_dir}")
        time.sleep(0.01)
    kill_group(proc)
    pytest.fail(f"{job} wrote nothing into {table_dir} within 10 minutes")


@pytest.mark.parametrize("delay", [0.0, 0.5], ids=["first-file", "half-second-later"])
@pytest.mark.parametrize("point", sorted(POINTS))
def test_sigkill_mid_write_leaves_readable_tables_and_the_rerun_converges(states, point, delay, tmp_path):
    job, table, before_step, after_step = POINTS[point]
    snaps = states["snapshots"]
    lake = tmp_path / "lake"
    shutil.copytree(states["root"] / before_step / "lake", lake)
    table_dir = Path(table_uri(str(lake), table))
    args = _args(job, lake, DAY, states["landing"], states["bundle"])

    reader = Reader(table_dir)
    reader.start()
    rc = _kill_during_write(states["spark_submit"], job, args, table_dir, delay)
    assert rc == -9, f"the job was not killed by SIGKILL (exit {rc})"

    after_kill = lake_snapshot(lake)  # every table in the lake reads as a committed version
    assert after_kill[table] in (snaps[before_step][table], snaps[after_step][table])  # old or new, never a mix
    assert set(after_kill) <= set(snaps[after_step])

    states["runner"].submit(job, args, name=f"rerun-{job}")  # the retry, same code as the killed job
    reader.stop.set()
    reader.join(timeout=30)

    assert not reader.errors, f"{table} was unreadable while being written: {reader.errors[:3]}"
    assert reader.seen <= {snaps[before_step][table], snaps[after_step][table]}
    assert lake_snapshot(lake) == snaps[after_step]  # the rerun converges on the clean run, table by table
