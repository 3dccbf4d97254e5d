"""Backfills through the real scheduler: ``airflow backfill create`` equals the daily runs it
replaces, in any order and with several runs at once, and every rerun leaves the same state.

The reference, ``daily``, is the days run one by one without a scheduler: for each day in order,
in this process's Spark session, the jobs of the DAG that write tables (``ingest_bronze``,
``build_features``) with the arguments the DAG renders for a backfill run of that day, then the day's
outcomes export loaded into a DuckDB warehouse as ``load_flight_outcomes`` loads it. The jobs run
without their quality gates here: a gate writes only its JSON summary and Data Docs under the lake's
``_quality`` and ``_docs`` folders, which the snapshot does not compare, and whether the gates pass is
proved by the scheduled runs succeeding.
Scoring is skipped by the DAG itself, as no champion is registered here.

The scheduler is exercised by one deployment, with its own lake, warehouse and metadata database:
``concurrent`` runs ``--run-backwards`` with three active runs and two Spark pool slots, so runs
of different days write the same tables at the same time. The race is made to happen, not left
to luck: the first day's ``build_features`` Spark job is held (SIGSTOP on its process group)
before it commits silver, until the last day's ``build_features`` has tried and been refused for
the missing history; then it is let go, and the refused day builds on its retry. Its lake is then
rerun three ways (a backfill of the first day with ``reprocess_behavior=completed``, one range run over
all the days, and a clear of the last day from ``build_features`` on) and compared with the reference after each.
``FLIGHTS_BACKFILL_TEST_DAYS`` sets the number of days: 2 by default, to keep the slow tier
short on two cores (``FLIGHTS_BACKFILL_TEST_DAYS=31`` runs the month).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from include.intervals import Interval
from include.jobs import DEFAULT_RELEASE_REASON, JOBS, RunRef, job_args
from include.lake import export_uri
from include.recompute import RUN_ID_PREFIX
from include.source.landing import land
from tests.e2e.airflow_stack import AirflowStack
from tests.e2e.snapshots import lake_snapshot, warehouse_snapshot

pytestmark = pytest.mark.slow

DAYS = int(os.environ.get("FLIGHTS_BACKFILL_TEST_DAYS", "2"))
FIRST = date(2013, 1, 1)
LAST = FIRST + timedelta(days=DAYS - 1)
TIMEOUT = 600 + 300 * DAYS
# the jobs of a daily run that write compared tables, in the DAG's order (see the module docstring)
REFERENCE_JOBS = ("ingest_bronze", "build_features")


def _state(home) -> dict:
    from include.warehouse.duckdb import DuckDBWarehouse

    warehouse = DuckDBWarehouse(home / "warehouse" / "flights.duckdb")
    return {**lake_snapshot(home / "lake"), **warehouse_snapshot(warehouse, ("analytics.flight_outcomes",))}


def _backfill(stack: AirflowStack, *options: str, first: date = FIRST, last: date = LAST) -> int:
    backfill_id = stack.create_backfill("--dag-id", "flights_daily", "--from-date", str(first), "--to-date",
                                        str(last), *options)
    stack.wait_for_backfill(backfill_id, TIMEOUT)
    return backfill_id


def _runs(stack: AirflowStack) -> list[tuple]:
    """(logical date, state, start, end) of the backfill runs, by start time."""
    rows = stack.sql("SELECT logical_date, state, start_date, end_date FROM dag_run "
                     "WHERE dag_id = 'flights_daily' AND run_type = 'backfill' ORDER BY start_date, logical_date")
    return [(r[0][:10], r[1], datetime.fromisoformat(r[2]), datetime.fromisoformat(r[3])) for r in rows]


def _max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def _deployment(tmp_path_factory, name: str, pool_slots: int) -> AirflowStack:
    home = tmp_path_factory.mktemp(name)
    land(Interval(FIRST, LAST), home / "landing")
    stack = AirflowStack(home, spark_pool_slots=pool_slots)
    # a day refused for missing history is retried while the earlier day builds (5 + 10 + 20 + ... s: short
    # first waits, so a retry seldom sleeps long past the moment the history lands)
    stack.env.update(FLIGHTS_RETRIES="8", FLIGHTS_RETRY_DELAY_S="5")
    return stack.start()


def _processes_named(marker: str) -> list[int]:
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                out.append(int(cmdline.parent.name))
        except OSError:
            continue
    return out


class HeldSilverCommit(threading.Thread):
    """Holds the ``held`` day's build_features Spark job before it commits silver, until the ``waiting`` day's
    build_features has had a try refused; then lets it go. Records what happened, for the test to check."""

    def __init__(self, stack: AirflowStack, held: date, waiting: date, timeout: float):
        super().__init__(daemon=True)
        self.stack, self.timeout = stack, timeout
        self.marker = f"flights_daily.build_features.{held:%Y%m%d}_{held:%Y%m%d}.try1"
        self.waiting = waiting
        self.waiting_run = None
        self.held_at = self.released_at = None
        self.refused_tries = 0

    def _refused(self) -> int:
        if self.waiting_run is None:
            runs = self.stack.sql("SELECT run_id FROM dag_run WHERE dag_id = 'flights_daily' AND run_type = 'backfill' "
                                  "AND logical_date LIKE ?", (f"{self.waiting}%",))
            if not runs:
                return 0
            self.waiting_run = runs[0][0]
        return self.stack.sql(
            "SELECT count(*) FROM task_instance_history WHERE dag_id = 'flights_daily' AND task_id = "
            "'build_features' AND run_id = ? AND state IN ('failed', 'up_for_retry')", (self.waiting_run,))[0][0]

    def run(self) -> None:
        deadline = time.time() + self.timeout
        groups: set[int] = set()
        while time.time() < deadline and not groups:  # the Spark job of the held day, as soon as it starts
            for pid in _processes_named(self.marker):
                try:
                    groups.add(os.getpgid(pid))
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for group in groups:
            os.killpg(group, signal.SIGSTOP)
        self.held_at = time.time()
        try:
            while time.time() < deadline and not self._refused():
                time.sleep(1)
            self.refused_tries = self._refused()
        finally:
            for group in groups:
                try:
                    os.killpg(group, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            self.released_at = time.time()


def _backfill_run_id(day: date) -> str:
    """The run id Airflow gives the backfill run of ``day`` (its logical date and run_after are the day)."""
    return f"backfill__{day}T00:00:00+00:00"


def _run_day(day: date, home) -> int:
    """One day as a backfill run of flights_daily writes it; returns the outcomes rows loaded."""
    from include.warehouse.duckdb import DuckDBWarehouse

    lake, landing = str(home / "lake"), str(home / "landing")
    run_id = _backfill_run_id(day)
    ref = RunRef.of(Interval(day, day), run_id)
    # ingest_bronze's templates rendered with the DAG's default params (release_quarantined=False, no reason)
    release = {"release": "False", "released_by": f"flights_daily run {run_id}",
               "release_reason": DEFAULT_RELEASE_REASON}
    for task in REFERENCE_JOBS:
        args = job_args(task, lake=lake, landing=landing, ref=ref, gate=False,  # the gates write no compared table
                        **(release if task == "ingest_bronze" else {}))
        importlib.import_module(f"spark_jobs.{JOBS[task]}").main(args)
    warehouse = DuckDBWarehouse(home / "warehouse" / "flights.duckdb")
    return warehouse.load_interval("analytics.flight_outcomes", export_uri(lake, "flight_outcomes", ref.key), day, day)


@pytest.fixture(scope="module")
def daily(tmp_path_factory, spark):  # the jobs' get_spark() returns this in-process session
    """The reference: the days one by one, in order, without a scheduler."""
    home = tmp_path_factory.mktemp("daily")
    land(Interval(FIRST, LAST), home / "landing")
    loaded = {str(FIRST + timedelta(days=i)): _run_day(FIRST + timedelta(days=i), home) for i in range(DAYS)}
    return {"loaded": loaded, "state": _state(home)}


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory, daily):  # after the reference: its Spark jobs never share the CPUs with it
    stack = _deployment(tmp_path_factory, "concurrent", pool_slots=2)
    hold = HeldSilverCommit(stack, held=FIRST, waiting=LAST, timeout=TIMEOUT)
    try:
        hold.start()
        _backfill(stack, "--run-backwards", "--max-active-runs", "3")
        hold.join(timeout=60)
        stack.hold = hold
        yield stack
    finally:
        stack.stop()


def test_the_reference_holds_every_day(daily):
    assert list(daily["loaded"]) == [str(FIRST + timedelta(days=i)) for i in range(DAYS)]
    assert all(n > 0 for n in daily["loaded"].values())  # every day's outcomes reached the warehouse
    assert daily["state"]["bronze.flights"][0] > 800 * DAYS and daily["state"]["analytics.flight_outcomes"][0] > 0


def test_a_backwards_concurrent_backfill_equals_the_daily_runs(daily, concurrent):
    runs = _runs(concurrent)
    assert {r[1] for r in runs} == {"success"} and len(runs) == DAYS
    assert runs[0][0] == str(LAST)  # newest first
    assert _max_overlap([(r[2], r[3]) for r in runs]) >= 2  # runs of different days really ran at once
    spark_tasks = concurrent.sql("SELECT start_date, end_date FROM task_instance WHERE dag_id = 'flights_daily' "
                                 "AND pool = 'spark' AND start_date IS NOT NULL")
    assert _max_overlap([(datetime.fromisoformat(s), datetime.fromisoformat(e)) for s, e in spark_tasks]) <= 2  # pool
    assert _state(concurrent.home) == daily["state"]


def test_the_race_happened_and_the_later_day_waited_for_its_history(concurrent):
    hold = concurrent.hold
    assert hold.held_at is not None and hold.released_at is not None
    assert hold.refused_tries >= 1  # the last day tried to build while the first day's silver was held back
    logs = sorted((concurrent.home / "airflow" / "logs").glob(
        f"dag_id=flights_daily/run_id={hold.waiting_run}/task_id=build_features/attempt=1.log"))
    assert logs, "no log of the refused try"
    text = logs[0].read_text(errors="replace")
    assert f"{FIRST}: not built yet" in text and "Nothing was computed from the gap" in text
    tries = concurrent.sql("SELECT try_number, state FROM task_instance WHERE dag_id = 'flights_daily' AND "
                           "task_id = 'build_features' AND run_id = ?", (hold.waiting_run,))
    assert tries[0][0] >= 2 and tries[0][1] == "success"  # it built on a retry, from the complete history


def test_rerunning_the_days_three_ways_changes_nothing(daily, concurrent):
    reference = daily["state"]

    # the first day again, after the later day built on it: a reprocessing backfill reruns the completed run from
    # ingestion on; the later day's features, built from the first day's history, must stay as they are
    _backfill(concurrent, "--reprocess-behavior", "completed", first=FIRST, last=FIRST)
    assert _state(concurrent.home) == reference, "after a backfill of the first day with reprocess_behavior=completed"

    conf = json.dumps({"start_date": str(FIRST), "end_date": str(LAST)})
    # `dags test` runs the range's tasks in its own process. Paused, the deployment's scheduler leaves that run alone:
    # unpaused, it also schedules the run's task instances, and whichever loses the race fails the other's try.
    concurrent.cli("dags", "pause", "flights_daily")
    try:
        concurrent.cli("dags", "test", "flights_daily", str(LAST + timedelta(days=1)), "--conf", conf,
                       timeout=TIMEOUT)
    finally:
        concurrent.cli("dags", "unpause", "flights_daily")
    assert _state(concurrent.home) == reference, "after one range run over the same days"

    # the reprocessing backfill above reran the first day's ingestion; the clear reruns the last day from its features on
    concurrent.cli("tasks", "clear", "flights_daily", "--start-date", str(LAST), "--end-date", str(LAST),
                   "--task-regex", "^build_features$", "--downstream", "--yes")
    concurrent.wait_for_runs(TIMEOUT)
    assert set(concurrent.run_states().values()) == {"success"}
    assert _state(concurrent.home) == reference, "after clearing the last day from build_features on"

    # no silver changed, so no later day was found stale and no recomputing run was triggered, in any of the runs
    assert concurrent.sql("SELECT run_id FROM dag_run WHERE substr(run_id, 1, ?) = ?",
                          (len(RUN_ID_PREFIX), RUN_ID_PREFIX)) == []
    found = concurrent.sql("SELECT run_id, state FROM task_instance WHERE task_id = 'find_stale_dependants'")
    assert len(found) >= DAYS + 1 and {state for _, state in found} == {"skipped"}, found
