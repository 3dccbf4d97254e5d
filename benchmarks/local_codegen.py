"""What does Spark's generated code cost the local target's jobs, against Spark's interpreted evaluation?

Spark compiles each projection, predicate and ordering of a query to Java, and that with Janino,
before it runs. On a cluster, over millions of rows, that pays for itself. A local-target job starts
a fresh JVM, runs a hundred small Delta queries (reads, MERGEs, the gates' metrics) over a day of a
few thousand rows, and pays the compiler for each new expression while the JVM is still cold. So
``spark_jobs.session.get_spark`` evaluates them interpreted on a local master
(``spark.sql.codegen.factoryMode=NO_CODEGEN`` in ``LOCAL_MASTER_DEFAULTS``; whole-stage code
generation stays on), and ``FLIGHTS_SPARK_CODEGEN=true`` brings Spark's default back.

For each day, in order, this runs the gated jobs (``ingest_bronze``, ``build_features``, each with its
gate inside, as the DAG runs them) by spark-submit, twice, on two lakes: once with Spark's own
default (``codegen``: ``FLIGHTS_SPARK_CODEGEN=true``, the baseline) and once with the local target's
(``interpreted``). The order
of the two alternates from day to day. It prints the seconds per job and the ratio interpreted /
codegen (below 1: the local default is faster). ``--scale 30`` shows the trade at thirty times the
rows.

    make install jars && PYTHONPATH=. .venv/bin/python benchmarks/local_codegen.py [--days 2] [--scale 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from include.config import load_settings
from include.intervals import Interval
from include.jobs import JOBS, RunRef, job_args
from include.source.scale import land_scaled
from include.targets.local import LocalSparkRunner
from spark_jobs.session import local_master_defaults

GATED = ("ingest_bronze", "build_features")
WAYS = {"codegen": "true", "interpreted": "false"}  # FLIGHTS_SPARK_CODEGEN


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=2, help="days from 2013-01-01, run in order (default 2)")
    p.add_argument("--scale", type=int, default=1, help="flights per real flight (include.source.scale)")
    a = p.parse_args()
    assert local_master_defaults({"FLIGHTS_SPARK_CODEGEN": "true"}) != local_master_defaults({}), \
        "the local master no longer evaluates interpreted by default: nothing to compare"
    first, last = date(2013, 1, 1), date(2013, 1, 1) + timedelta(days=a.days - 1)
    home = Path(tempfile.mkdtemp(prefix="flights-bench-codegen-"))
    try:
        land_scaled(Interval(first, last), home / "landing", a.scale)  # scale 1: the real days, as land() lays them
        ways = list(WAYS)
        runner = LocalSparkRunner(load_settings())
        seconds = {(task, way): 0.0 for task in GATED for way in ways}
        for n, day in enumerate(Interval(first, last).days()):
            ref = RunRef.of(Interval(day, day), f"bench_{day}")
            for way in (ways if n % 2 == 0 else ways[::-1]):
                os.environ["FLIGHTS_SPARK_CODEGEN"] = WAYS[way]  # the job's environment is this process's
                for task in GATED:
                    args = job_args(task, lake=str(home / f"lake-{way}"), landing=str(home / "landing"), ref=ref)
                    began = time.perf_counter()
                    runner.submit(JOBS[task], args, name=f"{task}.{way}.{day}")
                    took = time.perf_counter() - began
                    seconds[(task, way)] += took
                    print(f"{day} {task:15s} {way:11s} {took:6.1f}s", flush=True)
        print(f"\n{a.days} day(s) at scale {a.scale}, seconds summed over the days:")
        for task in GATED:
            base, local = seconds[(task, "codegen")], seconds[(task, "interpreted")]
            print(f"  {task:15s} codegen {base:6.1f}  interpreted {local:6.1f}:  interpreted / codegen "
                  f"{local / base:.2f}x")
        base, local = (sum(seconds[(t, w)] for t in GATED) for w in ways)
        print(f"  both jobs: interpreted / codegen {local / base:.2f}x ({base:.0f}s -> {local:.0f}s)")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
