"""How much faster is the warehouse's bulk load than inserting a day row by row?

One day of predictions at scale (``--scale 30``: each real flight of the day and 29 synthetic
copies, from ``include.source.scale``) is written as the Parquet export the scoring job hands
to the warehouse. In one process, for each warehouse:

- bulk: ``load_interval`` as the pipeline calls it (DuckDB reads the Parquet files itself;
  PostgreSQL COPYs them into a staging table, then DELETE + INSERT ... SELECT), whole day,
  median of ``--repeats`` reloads (each replaces the day);
- baseline: one ``INSERT ... VALUES`` per row for a ``--sample`` of the day's rows on one
  connection, the rows already in memory, its time per row extrapolated to the whole day; once
  with a commit per row (autocommit, a loader writing each row as it gets it) and once with all
  rows in one transaction (the kindest case for row-at-a-time).

Prints rows, seconds and the ratio baseline / bulk for both baselines. Target: >= 100.

DuckDB needs no server. PostgreSQL runs against ``--postgres-url`` (a server the benchmark may
write to), else against a throwaway server started here when the PostgreSQL server binaries
are installed (``bash scripts/ensure_postgres.sh``), else it is skipped with a message.

    make bench-warehouse   # or: PYTHONPATH=. .venv/bin/python benchmarks/warehouse_load.py [--scale 30]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

from include.intervals import Interval
from include.lake import landing_file
from include.source.scale import land_scaled
from include.warehouse import LOADS

TABLE = "analytics.flight_delay_predictions"
COLUMNS = LOADS[TABLE]


def predictions_export(root: Path, day: date, scale: int, seed: int) -> tuple[Path, list[tuple]]:
    """The day's flights at ``scale`` as a predictions Parquet export; returns its folder and its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    land_scaled(Interval(day, day), root / "landing", scale, seed)
    rng = random.Random(seed)
    rows = []
    with open(landing_file(str(root / "landing"), "flights", day), newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            sched = int(r["sched_dep_time"])
            rows.append((
                f"{day:%Y%m%d}-{r['carrier']}-{r['flight']}-{r['origin']}-{sched:04d}", day, r["carrier"],
                int(r["flight"]), r["origin"], r["dest"],
                datetime(day.year, day.month, day.day, int(r["hour"]), int(r["minute"])),
                rng.random(), "flight_delay_risk", "1", "bench", f"{day:%Y%m%d}",
            ))
    schema = pa.schema([("flight_id", pa.string()), ("flight_date", pa.date32()), ("carrier", pa.string()),
                        ("flight", pa.int32()), ("origin", pa.string()), ("dest", pa.string()),
                        ("sched_dep_ts", pa.timestamp("us")), ("delay_probability", pa.float64()),
                        ("model_name", pa.string()), ("model_version", pa.string()), ("run_id", pa.string()),
                        ("feature_build", pa.string())])
    table = pa.Table.from_pylist([dict(zip(COLUMNS, r)) for r in rows], schema=schema)
    out = root / "exports" / "predictions" / f"{day:%Y%m%d}_{day:%Y%m%d}"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "part-00000.parquet")
    return out, rows


def row_by_row(wh, kind: str, day: date, sample: list[tuple], commit_each: bool) -> float:
    """Seconds to insert ``sample`` one statement per row after deleting the day.

    ``commit_each``: every row is its own transaction (autocommit, as a loader that writes a row
    as it gets it); otherwise all rows share one transaction.
    """
    mark = "?" if kind == "duckdb" else "%s"
    insert = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(mark for _ in COLUMNS)})"
    delete = f"DELETE FROM {TABLE} WHERE flight_date BETWEEN {mark} AND {mark}"
    with wh.connect() as con:
        if kind == "duckdb":
            con.execute(delete, [day, day])
            t = time.perf_counter()
            if not commit_each:
                con.execute("BEGIN TRANSACTION")
            for row in sample:
                con.execute(insert, list(row))  # outside BEGIN, DuckDB commits each statement
            if not commit_each:
                con.execute("COMMIT")
        else:
            with con.cursor() as cur:
                cur.execute(delete, (day, day))
                con.commit()
                t = time.perf_counter()
                for row in sample:
                    cur.execute(insert, row)
                    if commit_each:
                        con.commit()
            con.commit()
        return time.perf_counter() - t


def measure(name: str, wh, kind: str, export: Path, day: date, rows: list[tuple], sample_size: int,
            repeats: int) -> None:
    wh.ensure_schema()
    wh.load_interval(TABLE, export, day, day)  # warm-up: connection, file cache, first transaction
    bulk = []
    for _ in range(repeats):
        t = time.perf_counter()
        n = wh.load_interval(TABLE, export, day, day)
        bulk.append(time.perf_counter() - t)
    assert n == len(rows), f"{name}: loaded {n} rows, expected {len(rows)}"
    b = statistics.median(bulk)
    sample = random.Random(0).sample(rows, min(sample_size, len(rows)))
    for label, commit_each in (("row per commit", True), ("one commit", False)):
        per_row = statistics.median(row_by_row(wh, kind, day, sample, commit_each)
                                    for _ in range(repeats)) / len(sample)
        extrapolated = per_row * len(rows)
        print(f"{name:<10}{len(rows):>7}{b:>11.3f}s  {label:<16}{per_row * 1e6:>9.0f}us{extrapolated:>11.2f}s"
              f"{extrapolated / b:>9.0f}x", flush=True)
    wh.load_interval(TABLE, export, day, day)  # leave the day as the pipeline would


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str | None]:
    """A PostgreSQL server on loopback in a temporary folder, as the tests start one; None without binaries."""
    def binary(name: str) -> str | None:
        found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        return str(found[-1]) if found else shutil.which(name)

    initdb, pg_ctl = binary("initdb"), binary("pg_ctl")
    if not (initdb and pg_ctl):
        yield None
        return
    data = Path(tempfile.mkdtemp(prefix="flights-bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "flights", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(data / "server.log"), "-w", "-o",
                        f"-h 127.0.0.1 -p {port} -k {data}", "start"], check=True, capture_output=True)
        yield f"postgresql://flights@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--day", type=date.fromisoformat, default=date(2013, 1, 31))
    p.add_argument("--scale", type=int, default=30)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--sample", type=int, default=500, help="rows inserted one by one, extrapolated to the day")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--postgres-url", default=os.environ.get("FLIGHTS_BENCH_POSTGRES_URL"),
                   help="a PostgreSQL server the benchmark may write to (default: a throwaway one)")
    a = p.parse_args()

    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="flights-bench-wh-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        export, rows = predictions_export(root, a.day, a.scale, a.seed)
        print(f"{a.day} at scale {a.scale}: {len(rows)} prediction rows; row-by-row sample {a.sample} rows")
        print(f"{'warehouse':<10}{'rows':>7}{'bulk load':>12}  {'row by row':<16}{'per row':>11}{'x rows':>12}"
              f"{'ratio':>9}")

        from include.warehouse.duckdb import DuckDBWarehouse

        measure("duckdb", DuckDBWarehouse(root / "warehouse.duckdb"), "duckdb", export, a.day, rows, a.sample,
                a.repeats)

        url = a.postgres_url or stack.enter_context(throwaway_postgres())
        if url is None:
            print("postgres   skipped: no --postgres-url and no PostgreSQL server binaries "
                  "(bash scripts/ensure_postgres.sh installs them)")
        else:
            os.environ["AIRFLOW_CONN_FLIGHTS_BENCH_WAREHOUSE"] = url
            from include.warehouse.postgres import PostgresWarehouse

            measure("postgres", PostgresWarehouse("flights_bench_warehouse"), "postgres", export, a.day, rows,
                    a.sample, a.repeats)
    print("ratio = (seconds per row inserted one by one x rows of the day) / bulk load of the day; target >= 100")


if __name__ == "__main__":
    main()
