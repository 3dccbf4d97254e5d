"""What does a daily backfill cost against one range run over the same days?

Both produce the same lake and warehouse (tests/e2e/test_backfill.py proves it); they differ in
overhead. A daily backfill runs every task once per day (eight Airflow tasks, four or five
spark-submit processes, each starting a JVM and a Spark session), a range run once for the
whole interval. This benchmark measures, on one machine, one after the other:

- baseline: ``airflow dags test flights_daily`` with ``start_date``/``end_date`` over N days;
- backfill: ``airflow backfill create`` over the same N days (one active run, the scheduler
  and the LocalExecutor), until the backfill completes;

each in a fresh FLIGHTS_HOME, and prints the ratio and the per-run overhead
``(backfill - range) / N``, from which a 365-day backfill is extrapolated.

    make install && PYTHONPATH=. .venv/bin/python benchmarks/backfill_vs_range.py [--days 7]

``--days 365`` measures the full year (hours on two cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from include.intervals import Interval
from include.source.landing import land
from tests.e2e.airflow_stack import AirflowStack


def _home(prefix: str, first: date, last: date) -> Path:
    home = Path(tempfile.mkdtemp(prefix=f"flights-bench-{prefix}-"))
    land(Interval(first, last), home / "landing")
    return home


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--first", type=date.fromisoformat, default=date(2013, 1, 1))
    a = p.parse_args()
    first, last = a.first, a.first + timedelta(days=a.days - 1)

    stack = AirflowStack(_home("range", first, last))
    stack.cli("db", "migrate")
    stack.cli("pools", "set", "spark", "1", "Concurrent Spark jobs")
    conf = json.dumps({"start_date": str(first), "end_date": str(last)})
    t = time.perf_counter()
    stack.cli("dags", "test", "flights_daily", str(last + timedelta(days=1)), "--conf", conf, timeout=24 * 3600)
    range_s = time.perf_counter() - t
    print(f"range run over {a.days} day(s): {range_s:.0f}s", flush=True)

    stack = AirflowStack(_home("backfill", first, last)).start()
    try:
        t = time.perf_counter()
        backfill_id = stack.create_backfill("--dag-id", "flights_daily", "--from-date", str(first), "--to-date",
                                            str(last), "--max-active-runs", "1")
        stack.wait_for_backfill(backfill_id, timeout=24 * 3600)
        backfill_s = time.perf_counter() - t
        states = set(stack.run_states().values())
    finally:
        stack.stop()
    assert states == {"success"}, f"backfill runs ended {states}"
    per_run = (backfill_s - range_s) / a.days
    print(f"daily backfill of {a.days} run(s): {backfill_s:.0f}s")
    print(f"ratio backfill / range: {backfill_s / range_s:.1f}x; overhead per daily run: {per_run:.0f}s")
    print(f"extrapolated to 365 days: a daily backfill costs about {per_run * 365 / 3600:.1f} h more than one "
          f"range run over the year")


if __name__ == "__main__":
    main()
