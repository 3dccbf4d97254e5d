"""The warehouse on BigQuery: interval loads from the lake's Parquet exports, ``ops`` records, queries.

Where the tables live
    Everything is in the one dataset of the settings (``FLIGHTS_GCP_BIGQUERY_DATASET``, default
    ``flights``, in ``FLIGHTS_GCP_BIGQUERY_PROJECT`` or the project): the warehouse's schema
    becomes a prefix of the table name, so ``analytics.flight_outcomes`` is
    ``<project>.<dataset>.analytics_flight_outcomes`` and ``ops.task_runs`` is
    ``<project>.<dataset>.ops_task_runs``. One dataset means one location, one IAM grant
    (BigQuery Data Editor on the dataset, Job User on the project) and one place for analysts::

        SELECT carrier, avg(delay_probability) FROM `my-project.flights.analytics_prediction_outcomes`
        WHERE flight_date BETWEEN '2013-03-01' AND '2013-03-07' GROUP BY carrier

    ``query`` also accepts the warehouse's own names (``analytics.prediction_outcomes``,
    ``ops.quality_gates``: every table of ``include.warehouse.DDL``) and rewrites them to these
    table ids, so SQL written for DuckDB / PostgreSQL (``include.summary``) runs unchanged.

Tables
    The columns and types come from ``include.warehouse.DDL`` (one definition for every
    warehouse; ``ADD COLUMN`` statements there are folded into the table and, for an existing
    table, applied with ``ALTER TABLE … ADD COLUMN IF NOT EXISTS``). The two analytics tables
    are partitioned by ``flight_date`` (DAY) and clustered: predictions by ``carrier`` then
    ``flight_id``, outcomes by ``flight_id`` (they have no carrier; ``flight_id`` is the view's
    join key). ``loaded_at`` / ``recorded_at`` are set to ``CURRENT_TIMESTAMP()`` by the
    statements that write the rows.

How an interval is loaded (``load_interval``)
    1. A load job reads the export's Parquet files (``gs://…/<interval>/*.parquet``; Spark's
       ``_SUCCESS`` marker is not matched) into a staging table of the same dataset,
       ``_stage_<table>_<start>_<end>_<run>``, with ``WRITE_TRUNCATE`` on that staging table
       only (created first with the loaded columns; it expires after a day if a failure
       leaves it behind).
    2. One ``MERGE`` replaces the interval::

           MERGE target t USING (SELECT <columns cast to the target's types> FROM stage
                                 WHERE flight_date BETWEEN @start AND @end) s
           ON FALSE
           WHEN NOT MATCHED BY SOURCE AND t.flight_date BETWEEN @start AND @end THEN DELETE
           WHEN NOT MATCHED THEN INSERT (…) VALUES (…)

       A single DML statement is atomic in BigQuery, so readers see the old interval or the
       new one, never half of it; rows outside the interval (in the table or in the export)
       are never touched, and a rerun gives the same rows. It never truncates the target
       (``WRITE_TRUNCATE`` on a table empties all of it). The dates are query parameters.
    3. The staging table is dropped, and the interval's row count returned.

    Why a MERGE rather than a ``BEGIN TRANSACTION; DELETE; INSERT; COMMIT`` script or
    partition decorators (``table$YYYYMMDD``): all three are correct on BigQuery, but the
    script form does not take query parameters on the emulator the tests run against, and
    decorators need one load job per day and cannot drop rows of the export outside the
    interval. The MERGE runs the same on both.

    The staging table's columns are named explicitly in the MERGE and cast to the target's
    types, so on BigQuery (where a ``WRITE_TRUNCATE`` load takes the Parquet files' own
    schema) the export may carry its columns in any order, extra columns, INT96 or
    microsecond timestamps, and 32-bit integers.

Job ids
    With ``job_name`` (the task's ``<dag>.<task>.<interval>.try<n>``) the load and the MERGE
    get deterministic ids, ``flights_load_<table>_<start>_<end>_<name>_<digest>`` and
    ``flights_merge_…``; when a job of that id exists already (the same try started it before
    its process died), it is waited for instead of submitted again. Without ``job_name`` the
    ids end in a random suffix (BigQuery keeps job ids for months: a fixed id would reattach a
    later rerun to an old job).

Credentials and endpoint
    The client is created on first use with Application Default Credentials, in
    ``GcpSettings.warehouse_project`` and ``warehouse_location``. ``endpoint`` (a constructor
    argument) points it at a BigQuery-compatible REST endpoint instead, with anonymous
    credentials: the tests use it for the ``bqemulator`` server started by
    ``scripts/ensure_bqemulator.sh``.

What the emulator does not cover
    ``bqemulator`` (DuckDB underneath) answers the real client's requests: dataset and table
    creation with partitioning and clustering metadata, Parquet load jobs from ``gs://`` URIs
    (mapped to a local folder, ``BQEMU_GCS_LOCAL_ROOT``), the MERGE, the view, ``ALTER TABLE
    … ADD COLUMN IF NOT EXISTS``, parameterised INSERTs and queries. It does not check IAM,
    quotas, locations, partition pruning (whether BigQuery prunes the target for the
    ``NOT MATCHED BY SOURCE`` filter is not measured here; the tables are small) or DML
    concurrency limits; it ignores table expiry; it accepts a duplicate job id where BigQuery
    answers 409 (so reattaching is tested against a stub); it loads Parquet only into an
    existing table and matches the file's columns to it by position, where BigQuery matches
    by name (so the staging table is created first with the lake's column order, the order
    the Spark exports have); it returns no view query (so there the view is replaced on every
    ``ensure_schema``; on BigQuery only when its SQL changed); it does not record columns
    added by ``ALTER TABLE`` in the table's metadata (the ``ALTER … IF NOT EXISTS`` is then
    repeated, harmlessly); and a multi-statement script there takes no query parameters.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from include.targets.gcp.settings import GcpSettings
from include.warehouse import DDL, LOADS, OPS_TABLES

if TYPE_CHECKING:  # the client library is imported when first used
    from google.cloud import bigquery

PARTITION_FIELD = "flight_date"
VIEW = "analytics.prediction_outcomes"  # the analysts' join of predictions and outcomes
CLUSTERING = {
    "analytics.flight_delay_predictions": ["carrier", "flight_id"],
    "analytics.flight_outcomes": ["flight_id"],
}
DESCRIPTIONS = {
    "analytics.flight_delay_predictions": "Delay probability per flight from the champion model; one row per flight.",
    "analytics.flight_outcomes": "Actual departure/arrival delays and cancellations per flight.",
    "analytics.prediction_outcomes": "Predictions joined with their outcomes where known.",
    "ops.dag_runs": "One row per finished DAG run.",
    "ops.task_runs": "One row per finished task try.",
    "ops.quality_gates": "Great Expectations gate results per suite and interval.",
    "ops.model_decisions": "Champion/challenger decisions and their metrics.",
    "ops.recomputations": "Days whose features were recomputed after their history changed, and why.",
}
STAGING_PREFIX = "_stage_"
STAGING_TTL = timedelta(days=1)
LOAD_TIMESTAMP_COLUMNS = ("loaded_at", "recorded_at")

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GS_URI = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[A-Za-z0-9_./=*-]*)?$")
_LOGICAL_NAME = re.compile(r"(?<![\w.`])(analytics|ops)\.([A-Za-z_][A-Za-z0-9_]*)(?![\w`])")
_GENERIC_TYPES = {  # include.warehouse.DDL's SQL types -> BigQuery's
    "VARCHAR": "STRING", "TEXT": "STRING", "CHAR": "STRING",
    "INTEGER": "INT64", "INT": "INT64", "BIGINT": "INT64", "SMALLINT": "INT64",
    "DOUBLE": "FLOAT64", "REAL": "FLOAT64", "FLOAT": "FLOAT64",
    "NUMERIC": "NUMERIC", "DECIMAL": "NUMERIC",
    "BOOLEAN": "BOOL", "BOOL": "BOOL",
    "DATE": "DATE", "TIMESTAMP": "TIMESTAMP",
}


class WarehouseError(RuntimeError):
    """A BigQuery job failed, or did not finish in time (it was then cancelled)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # BigQuery standard SQL type: STRING, INT64, FLOAT64, NUMERIC, BOOL, DATE, TIMESTAMP
    required: bool = False


# --- names and schemas --------------------------------------------------------------------------


def bq_table_name(name: str) -> str:
    """``analytics.flight_outcomes`` -> ``analytics_flight_outcomes`` (the table's name in the dataset)."""
    schema, _, table = name.partition(".")
    if not table or not _COLUMN.match(schema) or not _COLUMN.match(table):
        raise ValueError(f"{name!r} is not a warehouse table name such as 'analytics.flight_outcomes'.")
    return f"{schema}_{table}"


def _bq_type(generic: str, where: str) -> str:
    base = re.match(r"[A-Za-z]+", generic)
    bq = _GENERIC_TYPES.get(base[0].upper()) if base else None
    if bq is None:
        raise ValueError(f"{where}: no BigQuery type for {generic!r}; add it to _GENERIC_TYPES in {__name__}.")
    return bq


def _split_columns(body: str) -> list[str]:
    """Column definitions of a CREATE TABLE body, split on commas outside parentheses."""
    parts, depth, current = [], 0, []
    for ch in body:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _column(definition: str, where: str) -> Column:
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s+(.+)$", definition.strip(), re.DOTALL)
    if not m:
        raise ValueError(f"{where}: cannot read the column definition {definition!r}.")
    name, rest = m[1], m[2]
    type_text = re.split(r"\s+(?:PRIMARY|NOT|NULL|DEFAULT|REFERENCES|UNIQUE|CHECK)\b", rest, maxsplit=1,
                         flags=re.IGNORECASE)[0]
    required = bool(re.search(r"\b(PRIMARY\s+KEY|NOT\s+NULL)\b", rest, re.IGNORECASE))
    return Column(name, _bq_type(type_text.strip(), f"{where}.{name}"), required)


def table_schemas() -> dict[str, list[Column]]:
    """Every table of ``include.warehouse.DDL`` with its BigQuery columns (added columns folded in)."""
    tables: dict[str, list[Column]] = {}
    for stmt in DDL:
        text = " ".join(stmt.split())
        m = re.match(r"^CREATE TABLE IF NOT EXISTS (\S+) \((.*)\)$", text, re.IGNORECASE)
        if m:
            tables[m[1]] = [_column(d, m[1]) for d in _split_columns(m[2])
                            if not re.match(r"^(PRIMARY|CONSTRAINT|UNIQUE|FOREIGN|CHECK)\b", d, re.IGNORECASE)]
            continue
        m = re.match(r"^ALTER TABLE (\S+) ADD COLUMN IF NOT EXISTS (.+)$", text, re.IGNORECASE)
        if m:
            col = _column(m[2], m[1])
            if all(c.name != col.name for c in tables[m[1]]):
                tables[m[1]].append(Column(col.name, col.type, False))
    return tables


def views() -> dict[str, str]:
    """Every view of ``include.warehouse.DDL``: name -> its SELECT, as written there."""
    out = {}
    for stmt in DDL:
        m = re.match(r"^\s*CREATE OR REPLACE VIEW (\S+) AS\s+(.*)$", stmt, re.DOTALL | re.IGNORECASE)
        if m:
            out[m[1]] = m[2].strip()
    return out


def view_sql(name: str = VIEW) -> str:
    """The SELECT of the view ``name`` (default ``analytics.prediction_outcomes``), as written in the DDL."""
    try:
        return views()[name]
    except KeyError:
        raise ValueError(f"include.warehouse.DDL has no CREATE OR REPLACE VIEW {name}.") from None


def source_uris(source) -> str:
    """The load job's source URI for an export: ``gs://…/<interval>/*.parquet`` (a file or a wildcard as is).

    Args:
        source: the export's ``gs://bucket/prefix/`` (a folder of Parquet files), a ``.parquet``
            file or a URI with one ``*``.
    """
    text = str(source).strip()
    if not text.startswith("gs://"):
        raise ValueError(f"BigQuery loads from Cloud Storage: {text!r} is not a gs:// URI. Pass the export's "
                         "gs:// folder (include.lake.export_uri under the gcp lake root), not a local path.")
    if "*" not in text and not text.endswith(".parquet"):
        text = text.rstrip("/") + "/*.parquet"
    if not _GS_URI.match(text) or "//" in text[5:] or text.count("*") > 1:
        raise ValueError(f"{str(source)!r} is not a gs://bucket/prefix URI (letters, digits and ._/=- only, "
                         "at most one *).")
    return text


def _digest(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def run_suffix(job_name: str | None) -> str:
    """The part of job ids and staging names that tells runs apart: readable and deterministic, or random."""
    if not job_name:
        return uuid.uuid4().hex[:16]
    readable = re.sub(r"[^A-Za-z0-9]+", "_", job_name).strip("_")[-80:]
    return f"{readable}_{_digest(job_name)}"


def job_id(kind: str, table: str, start: date, end: date, suffix: str) -> str:
    """``flights_<kind>_<table>_<start>_<end>_<suffix>``: letters, digits and ``_`` (BigQuery allows ≤ 1024)."""
    return f"flights_{kind}_{bq_table_name(table)}_{start:%Y%m%d}_{end:%Y%m%d}_{suffix}"


def staging_name(table: str, start: date, end: date, suffix: str) -> str:
    return f"{STAGING_PREFIX}{bq_table_name(table)}_{start:%Y%m%d}_{end:%Y%m%d}_{suffix}"


def _day(value, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise ValueError(f"{what}={value!r} is not a date (YYYY-MM-DD).") from None


# --- job configurations (pure: the tests check them with the library's own types) --------------


def load_job_config(labels: dict | None = None) -> bigquery.LoadJobConfig:
    """Parquet into the staging table, replacing whatever the staging table held (and only it)."""
    from google.cloud import bigquery

    return bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        labels=dict(labels or {}),
    )


def merge_statement(target_id: str, staging_id: str, columns: list[Column], start: date, end: date,
                    labels: dict | None = None) -> tuple[str, bigquery.QueryJobConfig]:
    """The MERGE replacing ``start``..``end`` (inclusive) of ``target_id`` with the staged rows.

    Args:
        target_id, staging_id: ``project.dataset.table`` ids.
        columns: the loaded columns with the target's types (``LOADS`` order).
        start, end: the interval, passed as DATE query parameters ``@start`` and ``@end``.
    """
    from google.cloud import bigquery

    names = [c.name for c in columns]
    if PARTITION_FIELD not in names:
        raise ValueError(f"The loaded columns of {target_id} lack {PARTITION_FIELD}: {names}.")
    select = ",\n           ".join(f"CAST({c.name} AS {c.type}) AS {c.name}" for c in columns)
    sql = (
        f"MERGE `{target_id}` AS t\n"
        f"USING (SELECT {select}\n"
        f"       FROM `{staging_id}`\n"
        f"       WHERE CAST({PARTITION_FIELD} AS DATE) BETWEEN @start AND @end) AS s\n"
        "ON FALSE\n"
        f"WHEN NOT MATCHED BY SOURCE AND t.{PARTITION_FIELD} BETWEEN @start AND @end THEN DELETE\n"
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}, loaded_at)\n"
        f"  VALUES ({', '.join('s.' + n for n in names)}, CURRENT_TIMESTAMP())"
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter("start", "DATE", start),
                          bigquery.ScalarQueryParameter("end", "DATE", end)],
        labels=dict(labels or {}),
    )
    return sql, config


def _scalar_type(value) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "NUMERIC"
    if isinstance(value, datetime):
        return "TIMESTAMP"  # a naive datetime is taken as UTC
    if isinstance(value, date):
        return "DATE"
    if isinstance(value, bytes):
        return "BYTES"
    return "STRING"  # str, and None (pass a ScalarQueryParameter for a NULL of another type)


def query_parameters(params) -> list:
    """BigQuery query parameters: a dict gives ``@name`` parameters, a list or tuple ``?`` ones.

    Values map by Python type (bool, int, float, Decimal, datetime, date, bytes, str; a list
    becomes an ARRAY). A ``bigquery.ScalarQueryParameter`` / ``ArrayQueryParameter`` is used as is.
    """
    from google.cloud import bigquery

    if not params:
        return []
    named = isinstance(params, dict)
    items = params.items() if named else [(None, v) for v in params]
    out = []
    for name, value in items:
        if named and not _COLUMN.match(str(name)):
            raise ValueError(f"{name!r} is not a query parameter name (letters, digits and _ only).")
        if isinstance(value, (bigquery.ScalarQueryParameter, bigquery.ArrayQueryParameter)):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            kind = _scalar_type(value[0]) if value else "STRING"
            out.append(bigquery.ArrayQueryParameter(name, kind, list(value)))
        else:
            out.append(bigquery.ScalarQueryParameter(name, _scalar_type(value), value))
    return out


def _record_value(value, column: Column):
    if value is None:
        return None
    kind = column.type
    if kind == "STRING":
        return json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
    if kind == "INT64":
        return int(value)
    if kind == "FLOAT64":
        return float(value)
    if kind == "BOOL":
        return bool(value)
    if kind == "DATE" and isinstance(value, datetime):
        return value.date()
    return value


def _missing_object(exc: BaseException) -> bool:
    """Whether a failed job failed because a dataset, table or column does not exist (yet)."""
    from google.api_core.exceptions import NotFound

    cause = exc.__cause__
    text = str(getattr(cause, "message", "") or cause or exc)
    return isinstance(cause, NotFound) or bool(
        re.search(r"not found|not present in table|does not have a column|Unrecognized name", text, re.IGNORECASE))


def resolve_names(sql: str, table_id: Callable[[str], str], known) -> str:
    """Rewrite the warehouse's names (``ops.task_runs``) in ``sql`` to backquoted BigQuery ids."""
    def repl(m: re.Match) -> str:
        name = f"{m[1]}.{m[2]}"
        return f"`{table_id(name)}`" if name in known else m[0]

    return _LOGICAL_NAME.sub(repl, sql)


# --- the Warehouse seam on BigQuery ---------------------------------------------------------------


class BigQueryWarehouse:
    """Interval loads, ``ops.*`` records and queries on BigQuery (see the module docstring)."""

    def __init__(self, gcp: GcpSettings, client=None, *, endpoint: str | None = None, timeout_s: float = 900.0):
        """
        Args:
            gcp: the GCP settings (project, dataset, location of the warehouse).
            client: a ``google.cloud.bigquery.Client`` to use; created on first use otherwise.
            endpoint: a BigQuery-compatible REST endpoint (``http://127.0.0.1:9050``); the client
                then sends anonymous credentials. For an emulator only.
            timeout_s: how long one job may run before it is cancelled.
        """
        self.gcp, self._client, self.endpoint, self.timeout_s = gcp, client, endpoint, timeout_s
        self.project, self.dataset, self.location = gcp.warehouse_project, gcp.bigquery_dataset, gcp.warehouse_location
        self.labels = {k: str(v) for k, v in (gcp.labels or {}).items()}
        self.schemas = table_schemas()
        self._ready = False

    @property
    def client(self) -> bigquery.Client:
        if self._client is None:
            from google.cloud import bigquery

            kwargs: dict[str, Any] = {"project": self.project, "location": self.location}
            if self.endpoint:
                from google.api_core.client_options import ClientOptions
                from google.auth.credentials import AnonymousCredentials

                kwargs.update(credentials=AnonymousCredentials(),
                              client_options=ClientOptions(api_endpoint=self.endpoint))
            self._client = bigquery.Client(**kwargs)
        return self._client

    # names
    def table_id(self, name: str) -> str:
        """``analytics.flight_outcomes`` -> ``<project>.<dataset>.analytics_flight_outcomes``."""
        return f"{self.project}.{self.dataset}.{bq_table_name(name)}"

    def resolve(self, sql: str) -> str:
        return resolve_names(sql, self.table_id, set(self.schemas) | set(views()))

    # jobs
    def _submit(self, submit: Callable[[str | None], Any], job_id_: str | None, what: str):
        """Start a job under ``job_id_``; when that job exists already (an earlier start of this try), return it."""
        from google.api_core.exceptions import Conflict, GoogleAPICallError

        try:
            return submit(job_id_)
        except Conflict:
            if job_id_ is None:
                raise
            return self.client.get_job(job_id_, project=self.project, location=self.location)
        except GoogleAPICallError as exc:
            raise WarehouseError(f"BigQuery did not start the job {job_id_ or ''} ({what}): {exc.message}") from exc

    def _wait(self, job, what: str):
        from google.api_core.exceptions import GoogleAPICallError

        try:
            return job.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            job.cancel()
            raise WarehouseError(f"BigQuery job {job.job_id} ({what}) did not finish in {self.timeout_s:.0f} s and "
                                 "was cancelled; look at it in the console (Job history) and rerun the task.") from None
        except GoogleAPICallError as exc:
            raise WarehouseError(f"BigQuery job {job.job_id} ({what}) failed: {exc.message}") from exc

    def _run_query(self, sql: str, config, what: str, job_id_: str | None = None):
        kwargs = {"job_config": config, "project": self.project, "location": self.location}
        if job_id_:
            job = self._submit(lambda jid: self.client.query(sql, job_id=jid, job_retry=None, **kwargs), job_id_, what)
        else:
            job = self._submit(lambda _: self.client.query(sql, job_id_prefix="flights_query_", **kwargs), None, what)
        return job, self._wait(job, what)

    def _query_config(self, params=None):
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(query_parameters=query_parameters(params), labels=self.labels,
                                       default_dataset=f"{self.project}.{self.dataset}")

    # schema
    def table_definition(self, name: str) -> bigquery.Table:
        """The ``bigquery.Table`` for a warehouse table: schema, partitioning, clustering, description."""
        from google.cloud import bigquery

        fields = [bigquery.SchemaField(c.name, c.type, mode="REQUIRED" if c.required else "NULLABLE")
                  for c in self.schemas[name]]
        table = bigquery.Table(self.table_id(name), schema=fields)
        if any(c.name == PARTITION_FIELD for c in self.schemas[name]):
            table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY,
                                                                field=PARTITION_FIELD)
        if name in CLUSTERING:
            table.clustering_fields = CLUSTERING[name]
        table.description = DESCRIPTIONS.get(name, "")
        table.labels = dict(self.labels)
        return table

    def ensure_schema(self) -> None:
        """Create the dataset (when missing), every table and the view; add columns new in the DDL. Idempotent."""
        if self._ready:
            return
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        client = self.client
        dataset_id = f"{self.project}.{self.dataset}"
        try:
            client.get_dataset(dataset_id)
        except NotFound:
            ds = bigquery.Dataset(dataset_id)
            ds.location = self.location
            ds.description = "flights lakehouse warehouse: analytics_* tables for analysts, ops_* for pipeline health"
            ds.labels = dict(self.labels)
            client.create_dataset(ds, exists_ok=True)
        for name in self.schemas:
            existing = client.create_table(self.table_definition(name), exists_ok=True)
            have = {f.name for f in existing.schema or []}
            missing = [c for c in self.schemas[name] if c.name not in have]
            if missing and have:  # a table created before the DDL gained these columns
                adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {c.name} {c.type}" for c in missing)
                self._run_query(f"ALTER TABLE `{self.table_id(name)}` {adds}", self._query_config(),
                                f"add columns to {name}")
        self._ensure_view()
        self._ready = True

    def _ensure_view(self) -> None:
        """Create or replace each view only when missing or different: every replace is a metadata update,
        and BigQuery rate-limits those per table (many task processes start at once)."""
        from google.api_core.exceptions import NotFound

        for name, select in views().items():
            query = self.resolve(select)
            try:
                current = (self.client.get_table(self.table_id(name)).view_query or "").strip()
            except NotFound:
                current = None
            if current != query:
                self._run_query(f"CREATE OR REPLACE VIEW `{self.table_id(name)}` AS\n{query}", self._query_config(),
                                f"create view {name}")

    # the Warehouse seam
    def load_interval(self, table: str, source, start, end, *, job_name: str | None = None) -> int:
        """Replace ``start``..``end`` (inclusive) of ``table`` with the export under ``source``.

        Args:
            table: one of ``include.warehouse.LOADS``.
            source: the export's ``gs://`` folder (Parquet files), a file, or a URI with one ``*``.
            start, end: the interval's first and last day.
            job_name: the task's job name (``<dag>.<task>.<interval>.try<n>``) for deterministic job ids.

        Returns:
            The number of rows of ``table`` in the interval after the load.
        """
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        if table not in LOADS:
            raise KeyError(f"{table} is not a loadable table; use one of {', '.join(LOADS)}.")
        start, end = _day(start, "start"), _day(end, "end")
        if end < start:
            raise ValueError(f"The interval ends ({end}) before it starts ({start}).")
        uri = source_uris(source)
        self.ensure_schema()
        by_name = {c.name: c for c in self.schemas[table]}
        columns = [Column(n, by_name[n].type) for n in LOADS[table]]
        suffix = run_suffix(job_name)
        stage_id = f"{self.project}.{self.dataset}.{staging_name(table, start, end, suffix)}"

        stage = bigquery.Table(stage_id, schema=[bigquery.SchemaField(c.name, c.type) for c in columns])
        stage.expires = datetime.now(UTC) + STAGING_TTL
        stage.labels = dict(self.labels)
        self.client.create_table(stage, exists_ok=True)
        what = f"load {uri} into {stage_id}"
        try:
            load = self._submit(lambda jid: self.client.load_table_from_uri(
                uri, stage_id, job_id=jid, job_config=load_job_config(self.labels), project=self.project,
                location=self.location), job_id("load", table, start, end, suffix), what)
            self._wait(load, what)
        except WarehouseError as exc:
            cause = exc.__cause__
            text = getattr(cause, "message", "") or str(cause or "")
            if isinstance(cause, NotFound) or "No files found" in text or "matches no files" in text:
                raise FileNotFoundError(f"No Parquet files to load into {table} under {uri}: {text}. Check that the "
                                        "export for this interval ran (it writes one folder per interval).") from exc
            raise
        sql, config = merge_statement(self.table_id(table), stage_id, columns, start, end, self.labels)
        self._run_query(sql, config, f"replace {start}..{end} of {table}", job_id("merge", table, start, end, suffix))
        self.client.delete_table(stage_id, not_found_ok=True)  # kept (and expiring) when a step above failed
        _, rows = self.query(f"SELECT count(*) FROM `{self.table_id(table)}` "
                             f"WHERE {PARTITION_FIELD} BETWEEN @start AND @end", {"start": start, "end": end})
        return int(rows[0][0])

    def record(self, table: str, row: dict[str, Any]) -> None:
        """Append one row to an ``ops.*`` table with a parameterised INSERT (``recorded_at`` set by BigQuery).

        A DML INSERT rather than a streaming insert: the row is committed and queryable when this
        returns, and no streaming buffer holds it. The schema is created only when the INSERT fails
        (a new dataset), so a task's first record costs one job, not a schema check.
        """
        from google.cloud import bigquery

        if table not in OPS_TABLES:
            raise KeyError(f"{table} is not an ops table; ops tables: {', '.join(OPS_TABLES)}")
        if not row:
            raise ValueError(f"Nothing to record into {table}: the row is empty.")
        columns = {c.name: c for c in self.schemas[table]}
        for col in row:
            if not isinstance(col, str) or not _COLUMN.match(col):
                raise ValueError(f"{col!r} is not a column name (letters, digits and _ only); refused for {table}.")
            if col not in columns:
                raise ValueError(f"{table} has no column {col!r}; its columns: {', '.join(columns)}.")
        names = list(row)
        values = [f"@{c}" for c in names]
        for auto in LOAD_TIMESTAMP_COLUMNS:
            if auto in columns and auto not in row:
                names.append(auto)
                values.append("CURRENT_TIMESTAMP()")
        params = [bigquery.ScalarQueryParameter(c, columns[c].type, _record_value(row[c], columns[c])) for c in row]
        config = self._query_config()
        config.query_parameters = params
        sql = f"INSERT INTO `{self.table_id(table)}` ({', '.join(names)}) VALUES ({', '.join(values)})"
        try:
            self._run_query(sql, config, f"record into {table}")
        except WarehouseError as exc:
            if self._ready or not _missing_object(exc):
                raise  # a timeout or a refused value: retrying could insert the row twice
            self.ensure_schema()  # the first record into a new dataset, or a column the DDL gained since
            self._run_query(sql, config, f"record into {table}")

    def query(self, sql: str, params: dict | list | None = None) -> tuple[list[str], list[tuple]]:
        """Run ``sql`` (warehouse names such as ``ops.task_runs`` are rewritten) and return columns and rows.

        Args:
            sql: BigQuery standard SQL; values as ``@name`` (``params`` a dict) or ``?`` (a list).
            params: the query parameters (see ``query_parameters``).
        """
        self.ensure_schema()
        _, result = self._run_query(self.resolve(sql), self._query_config(params), sql.strip().split("\n")[0][:60])
        columns = [f.name for f in (result.schema or [])]
        return columns, [tuple(r.values()) for r in result]
