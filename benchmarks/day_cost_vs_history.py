"""Does a day cost the same with a year of history in the lake as with a week?

Processing one day (bronze ingestion with quarantine, then silver MERGE and gold
features) should cost what that day's data costs, whatever the lake already holds:
every job prunes to the interval's partitions, and history features read only the
trailing 28 days. This benchmark measures, in one process on one Spark session:

- baseline: day 2013-01-08 with only 2013-01-01..07 in the lake;
- day N:    day 2013-12-31 with 2013-01-01..12-30 in the lake;

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


def process(spark, lake: str, landing: str, start: date, end: date) -> None:
    from spark_jobs.bronze_landing import ingest_daily, ingest_dimensions
    from spark_jobs.gold_flight_features import run
    from spark_jobs.quality_gate import reference_params

    ingest_dimensions(spark, lake, landing, "bench")
    params = reference_params(spark, lake, 1.0)
    for ds in ("flights", "weather"):
        ingest_daily(spark, lake, landing, ds, start, end, "bench", params)
    run(spark, lake, start, end)


def timed(spark, lake, landing, day: date, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        process(spark, lake, landing, day, day)
        out.append(time.perf_counter() - t)
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
    process(spark, big, str(landing), date(2013, 1, 1), date(2013, 12, 30))
    print(f"  year loaded as one range run in {time.perf_counter() - t:.0f}s", flush=True)

    timed(spark, small, str(landing), date(2013, 1, 8), 1)  # warm-up: JIT, caches
    base = timed(spark, small, str(landing), date(2013, 1, 8), a.repeats)
    day_n = timed(spark, big, str(landing), date(2013, 12, 31), a.repeats)
    ratio = statistics.median(day_n) / statistics.median(base)
    print(f"day 2013-01-08, 7 days of history:   median {statistics.median(base):6.2f}s  runs {base}")
    print(f"day 2013-12-31, 364 days of history: median {statistics.median(day_n):6.2f}s  runs {day_n}")
    print(f"ratio day-N / day-1: {ratio:.2f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
