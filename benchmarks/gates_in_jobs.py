"""What does a quality gate cost inside the job that wrote its tables, against a job of its own?

``ingest_bronze`` and ``build_features`` run their gate's Great Expectations suites after their
commits, in their own Spark session (``spark_jobs.quality_gate.run_gate``); the gate used to be a
spark-submit of its own (``spark_jobs/quality_gate.py``), paying a JVM, a Spark session, Delta's
and Great Expectations' start for a few thousand rows. For each day, in order, on a fresh lake,
this runs each of the two jobs three ways, by spark-submit as the local target runs them:

- ``job``: the job without its gate (the baseline);
- ``gate job``: the gate as its own spark-submit, on what the job wrote;
- ``job + gate``: the job with its gate inside, as the DAG runs it (a rerun: same rows, same work).

and prints, per job and in total, the separate cost (job + gate job) against the merged one, and
the gate's share of the merged job, ``(job + gate - job) / job`` (target at ``--scale 30``: at most
25 %). Every spark-submit starts its own JVM, as on a cluster each job start is its own
application.

    make install jars && PYTHONPATH=. .venv/bin/python benchmarks/gates_in_jobs.py [--days 2] [--scale 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from include.config import load_settings
from include.intervals import Interval
from include.jobs import GATE_TASKS, JOBS, RunRef, job_args
from include.source.scale import land_scaled
from include.targets.local import LocalSparkRunner

GATED = ("ingest_bronze", "build_features")


def submit(runner: LocalSparkRunner, job: str, args: list[str], name: str) -> float:
    """Seconds the job took through the local target's own runner (which names the failure if it fails)."""
    began = time.perf_counter()
    runner.submit(job, args, name=name)
    return time.perf_counter() - began


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=2, help="days from 2013-01-01, run in order (default 2)")
    p.add_argument("--scale", type=int, default=1, help="flights per real flight (include.source.scale)")
    a = p.parse_args()
    first, last = date(2013, 1, 1), date(2013, 1, 1) + timedelta(days=a.days - 1)
    home = Path(tempfile.mkdtemp(prefix="flights-bench-gates-"))
    try:
        land_scaled(Interval(first, last), home / "landing", a.scale)  # scale 1: the real days, as land() lays them
        runner = LocalSparkRunner(load_settings())
        lake, landing = str(home / "lake"), str(home / "landing")
        seconds = {(task, way): 0.0 for task in GATED for way in ("job", "gate job", "job + gate")}
        for day in Interval(first, last).days():
            ref = RunRef.of(Interval(day, day), f"bench_{day}")
            for task in GATED:
                full = job_args(task, lake=lake, landing=landing, ref=ref)
                alone = job_args(task, lake=lake, landing=landing, ref=ref, gate=False)
                gate_args = ["--lake", lake, "--start", ref.start, "--end", ref.end, "--run-id", ref.run_id,
                             *full[len(alone):]]  # the gate's pairs come last
                runs = {"job": submit(runner, JOBS[task], alone, f"{task}.{day}"),
                        "gate job": submit(runner, "quality_gate", gate_args, f"{GATE_TASKS[task]}_gate.{day}"),
                        "job + gate": submit(runner, JOBS[task], full, f"{task}+gate.{day}")}
                print(f"{day} {task:15s} " + "  ".join(f"{k} {v:5.1f}s" for k, v in runs.items()), flush=True)
                for way, took in runs.items():
                    seconds[(task, way)] += took
        print(f"\n{a.days} day(s) at scale {a.scale}, seconds summed over the days:")
        total_separate = total_merged = 0.0
        for task in GATED:
            job, gate_job, merged = (seconds[(task, w)] for w in ("job", "gate job", "job + gate"))
            total_separate, total_merged = total_separate + job + gate_job, total_merged + merged
            print(f"  {task:15s} job {job:6.1f}  gate job {gate_job:6.1f}  job + gate {merged:6.1f}:  "
                  f"merged / separate {merged / (job + gate_job):.2f}x;  gate's share of the job "
                  f"{(merged - job) / job:+.0%}")
        print(f"  both jobs: merged / separate {total_merged / total_separate:.2f}x "
              f"({total_separate:.0f}s -> {total_merged:.0f}s, two job starts fewer per day)")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
