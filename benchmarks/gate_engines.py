"""What does a quality gate cost on GX's pandas engine, against GX's Spark engine, on the same rows?

The gates run inside the jobs that wrote their tables (``spark_jobs.quality_gate.run_checks``). Up to
``FLIGHTS_GATE_PANDAS_MAX_ROWS`` rows (200,000 by default) a suite is validated on a pandas batch of the
columns it names, collected to the driver; above it, on GX's Spark engine, where each expectation's
metrics are Spark jobs. This lands the days, builds bronze, silver and gold once in this process's Spark
session (jobs without their gates), then runs the bronze and gold gates of the interval over and over,
alternating ``FLIGHTS_GATE_ENGINE=spark`` (the baseline) and ``pandas``, and prints the median seconds of
each and the ratio pandas / spark (below 1: the pandas engine is cheaper). Both give the same verdicts
(``tests/spark_jobs/test_gate_engines.py``).

    make install jars && PYTHONPATH=. .venv/bin/python benchmarks/gate_engines.py [--days 1] [--scale 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from include.intervals import Interval
from include.jobs import GATES, JOBS, RunRef, job_args
from include.lake import table_uri
from include.source.scale import land_scaled


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=1, help="days from 2013-01-01 in one interval (default 1)")
    p.add_argument("--scale", type=int, default=1, help="flights per real flight (include.source.scale)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each gate on each engine (default 3)")
    a = p.parse_args()
    import importlib

    from spark_jobs.quality_gate import run_checks
    from spark_jobs.session import get_spark

    first, last = date(2013, 1, 1), date(2013, 1, 1) + timedelta(days=a.days - 1)
    home = Path(tempfile.mkdtemp(prefix="flights-bench-gates-"))
    try:
        land_scaled(Interval(first, last), home / "landing", a.scale)
        spark = get_spark("bench_gate_engines")
        lake, ref = str(home / "lake"), RunRef.of(Interval(first, last), "bench_gates")
        for task in ("ingest_bronze", "build_features"):
            args = job_args(task, lake=lake, landing=str(home / "landing"), ref=ref, gate=False)
            importlib.import_module(f"spark_jobs.{JOBS[task]}").main(args)
        gates = {"bronze": [f"{s}={t}" for s, t in GATES["bronze"].items()],
                 "gold": [f"{s}={t}" for s, t in GATES["gold"].items()]}
        seconds: dict[tuple[str, str], list[float]] = {(g, e): [] for g in gates for e in ("spark", "pandas")}
        verdicts = {}
        for n in range(a.repeat + 1):  # the first round warms the JVM and is not counted
            for engine in (("spark", "pandas") if n % 2 == 0 else ("pandas", "spark")):
                os.environ["FLIGHTS_GATE_ENGINE"] = engine
                for gate, checks in gates.items():
                    t = time.perf_counter()
                    out = run_checks(spark, lake, checks, first, last, f"bench_{engine}_{n}", docs=True)
                    if n:
                        seconds[(gate, engine)].append(time.perf_counter() - t)
                    verdicts[(gate, engine)] = [(s["suite"], s["success"], s["failed_count"]) for s in out["suites"]]
        for gate in gates:
            assert verdicts[(gate, "spark")] == verdicts[(gate, "pandas")], (gate, verdicts)
        rows = spark.read.format("delta").load(table_uri(lake, "bronze.flights")).count()
        print(f"\n{a.days} day(s) at scale {a.scale}: {rows} bronze flights; median of {a.repeat} runs per engine")
        print(f"{'gate':<8} {'spark s':>9} {'pandas s':>9} {'pandas/spark':>13}")
        for gate in gates:
            s, pd_ = (statistics.median(seconds[(gate, e)]) for e in ("spark", "pandas"))
            print(f"{gate:<8} {s:>9.2f} {pd_:>9.2f} {pd_ / s:>12.2f}×")
        spark.stop()
    finally:
        os.environ.pop("FLIGHTS_GATE_ENGINE", None)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
