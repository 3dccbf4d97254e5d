"""Kill a warehouse load mid-transaction: readers see the old day or the new day, never half of one.

A child process runs the real ``load_interval`` with its SQL traced; it holds still right
after the DELETE (the interval is gone inside the transaction) or right after the INSERT
(before COMMIT), and the test SIGKILLs it there. Meanwhile, and afterwards, a second
connection reads the interval. Then the load is rerun and must land exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.warehouse import LOADS

pytestmark = pytest.mark.slow

TABLE = "analytics.flight_delay_predictions"
DAYS = [date(2013, 1, 1) + timedelta(days=i) for i in range(7)]
PER_DAY = 3000

HARNESS = textwrap.dedent('''
    import sys, time
    from contextlib import contextmanager
    from datetime import date
    from pathlib import Path

    kind, where, parquet_dir, start, end, pause_after = sys.argv[1:]

    class Traced:
        """Delegates to the real cursor/connection; stops after one statement so it can be killed there."""
        def __init__(self, inner):
            self.inner = inner
        def execute(self, sql, *args):
            out = self.inner.execute(sql, *args)
            if sql.split()[0].upper() == pause_after:
                print("PAUSED", flush=True)
                time.sleep(120)
            return out
        def cursor(self, *a, **k):
            return Traced(self.inner.cursor(*a, **k))
        def __enter__(self):
            self.inner.__enter__()
            return self
        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)
        def __getattr__(self, name):
            return getattr(self.inner, name)

    if kind == "duckdb":
        from include.warehouse.duckdb import DuckDBWarehouse
        wh = DuckDBWarehouse(Path(where))
    else:
        from include.warehouse.postgres import PostgresWarehouse
        wh = PostgresWarehouse(where)
    real = wh.connect

    @contextmanager
    def traced(*a, **k):
        with real(*a, **k) as con:
            yield Traced(con)

    wh.connect = traced
    wh.load_interval("''' + TABLE + '''", Path(parquet_dir), date.fromisoformat(start),
                     date.fromisoformat(end))
    print("COMMITTED", flush=True)
''')


def _export(path, version: str):
    rows = [{"flight_id": f"{d:%Y%m%d}-{n}", "flight_date": d, "carrier": "UA", "flight": n, "origin": "EWR",
             "dest": "ORD", "sched_dep_ts": datetime(d.year, d.month, d.day, 6), "delay_probability": 0.5,
             "model_name": "m", "model_version": version, "run_id": f"run-{version}",
             "feature_build": f"build-{d:%Y%m%d}"}
            for d in DAYS for n in range(PER_DAY)]
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "part-0.parquet")
    return path


@pytest.fixture(params=["duckdb", "postgres"])
def setup(request, tmp_path, monkeypatch):
    if request.param == "duckdb":
        from include.warehouse.duckdb import DuckDBWarehouse

        where = str(tmp_path / "wh.duckdb")
        wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    else:
        from include.warehouse.postgres import PostgresWarehouse

        monkeypatch.setenv("AIRFLOW_CONN_FLIGHTS_WAREHOUSE_CRASH", request.getfixturevalue("postgres_url"))
        where = "flights_warehouse_crash"
        wh = PostgresWarehouse(where)
        wh.ensure_schema()
        with wh.connect() as conn, conn.cursor() as cur:
            cur.execute(f"TRUNCATE {', '.join(LOADS)}")
            conn.commit()
    return request.param, where, wh


def _interval_versions(wh) -> list[tuple]:
    return wh.query(f"SELECT model_version, count(*) FROM {TABLE} GROUP BY model_version ORDER BY 1")[1]


@pytest.mark.parametrize("pause_after", ["DELETE", "INSERT"])
def test_killed_load_leaves_the_old_day_and_the_rerun_lands_once(setup, pause_after, tmp_path):
    kind, where, wh = setup
    old, new = _export(tmp_path / "v1", "1"), _export(tmp_path / "v2", "2")
    n = len(DAYS) * PER_DAY
    assert wh.load_interval(TABLE, old, DAYS[0], DAYS[-1]) == n
    harness = tmp_path / "load_harness.py"
    harness.write_text(HARNESS)

    for attempt in range(2):  # each point, several times
        proc = subprocess.Popen([sys.executable, str(harness), kind, where, str(new), str(DAYS[0]), str(DAYS[-1]),
                                 pause_after], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ), start_new_session=True)
        line = proc.stdout.readline().strip()
        assert line == "PAUSED", f"the load never reached {pause_after}: {line} {proc.stderr.read()[-2000:]}"
        if kind == "postgres":  # a reader mid-transaction sees the whole old interval
            assert _interval_versions(wh) == [("1", n)]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert _interval_versions(wh) == [("1", n)], f"attempt {attempt}: the killed load leaked into the table"

    assert wh.load_interval(TABLE, new, DAYS[0], DAYS[-1]) == n  # the rerun
    assert _interval_versions(wh) == [("2", n)]  # every row replaced exactly once, none duplicated or lost
