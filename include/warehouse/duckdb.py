"""DuckDB warehouse: one file under FLIGHTS_HOME, the local default."""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from include.warehouse import DDL, LOADS, OPS_TABLES

log = logging.getLogger(__name__)

COLUMN = re.compile(r"[a-z_][a-z0-9_]*")  # as include.targets.aws.redshift.insert_statement


def check_columns(table: str, columns: list, known: set[str]) -> None:
    """Refuse a column name that is not a plain lowercase identifier of ``table`` (``known``).

    Raises:
        ValueError: naming the bad column and the table's columns.
    """
    for col in columns:
        if not (isinstance(col, str) and COLUMN.fullmatch(col) and col in known):
            raise ValueError(f"{col!r} is not a column of {table}; its columns are {', '.join(sorted(known))}.")


class DuckDBWarehouse:
    def __init__(self, path: Path, fetch=Path):
        self.path = Path(path)
        self.fetch = fetch  # the export's URI -> a local folder (the lake's local_dir on a cloud lake)
        self._ready = False
        self._columns: dict[str, set[str]] = {}

    @contextmanager
    def connect(self, read_only: bool = False):
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(30):  # another process may hold the file lock briefly
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or attempt == 29:
                    raise
                time.sleep(1)
        try:
            yield con
        finally:
            con.close()

    def ensure_schema(self) -> None:
        if self._ready:
            return
        with self.connect() as con:
            for stmt in DDL:
                con.execute(stmt)
        self._ready = True

    def load_interval(self, table: str, source: str | Path, start: date, end: date) -> int:
        """Replace the rows of [start, end] with the Parquet export at ``source``, in one transaction."""
        parquet_dir = self.fetch(source)
        self.ensure_schema()
        cols = LOADS[table]
        files = sorted(Path(parquet_dir).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"No Parquet files to load into {table} in {parquet_dir}.")
        col_list = ", ".join(cols)
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"DELETE FROM {table} WHERE flight_date BETWEEN ? AND ?", [start, end])
                con.execute(
                    f"INSERT INTO {table} ({col_list}) SELECT {col_list} FROM read_parquet(?) "
                    "WHERE flight_date BETWEEN ? AND ?",
                    [[str(f) for f in files], start, end],
                )
                n = con.execute(f"SELECT count(*) FROM {table} WHERE flight_date BETWEEN ? AND ?",
                                [start, end]).fetchone()[0]
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return int(n)

    def record(self, table: str, row: dict[str, Any]) -> None:
        if table not in OPS_TABLES:
            raise KeyError(f"{table} is not an ops table")
        self.ensure_schema()
        cols = list(row)
        with self.connect() as con:
            if table not in self._columns:
                schema, name = table.split(".")
                self._columns[table] = {c for (c,) in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
                    [schema, name]).fetchall()}
            check_columns(table, cols, self._columns[table])
            con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                        [row[c] for c in cols])

    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        self.ensure_schema()
        with self.connect() as con:
            cur = con.execute(sql, params or [])
            return [d[0] for d in cur.description], cur.fetchall()
