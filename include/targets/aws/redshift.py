"""Loading one interval into Redshift, idempotently.

The lake exports one Parquet folder per interval; the load stages it with ``COPY`` and
replaces exactly the interval's rows in one transaction (delete the interval, insert the
staged rows), so a rerun never duplicates a row and readers never see half a day. It
never uses ``S3ToRedshiftOperator(method="REPLACE")``, which empties the whole table.

The Redshift Data API runs a batch of statements as one transaction already, so the
operator's batch carries no BEGIN/COMMIT; a plain SQL session (``RedshiftSQLHook``,
psql) gets the explicit ``BEGIN; DELETE; INSERT; COMMIT;``.

The DAG's dates are rendered from the ``resolve_interval`` XCom, which Airflow's REST API
can overwrite, and ``BatchExecuteStatement`` takes no parameters. So the load's operator
(``include.targets.aws.operators.RedshiftIntervalLoadOperator``) checks the rendered interval
(``check_load``: ISO dates, start <= end, at most ``MAX_RANGE_DAYS``, the export folder named
after them) and builds the batch from the checked dates before anything is sent.
"""

from __future__ import annotations

import json
import re
import time
from datetime import date
from typing import Any

from include.intervals import Interval, IntervalError
from include.targets.cloud.spec import OperatorSpec
from include.targets.aws.settings import AwsSettings
from include.warehouse import DDL, LOADS, OPS_TABLES

REDSHIFT_DATA_OPERATOR = "include.targets.aws.operators.RedshiftIntervalLoadOperator"
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_S3_PREFIX = re.compile(r"^s3://[a-z0-9][a-z0-9.-]+/[A-Za-z0-9_./=-]*$")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$")


def _day(value) -> str:
    """An ISO date literal; a Jinja expression is passed through for the operator to render."""
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    if _TEMPLATE.fullmatch(text):
        return text
    if not _ISO_DAY.fullmatch(text):
        raise IntervalError(f"{value!r} is not a date; the load takes dates of the form YYYY-MM-DD.")
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise IntervalError(f"{value!r} is not a date; the load takes dates of the form YYYY-MM-DD.") from None


def check_load(s3_prefix: str, start, end) -> Interval:
    """The interval of a load whose values are final (rendered), refused unless it is safe to run.

    Args:
        s3_prefix: the export folder, ``s3://bucket/…/<interval key>/``.
        start, end: the interval's first and last day (dates or YYYY-MM-DD).

    Returns:
        The checked interval: start <= end, at most ``MAX_RANGE_DAYS`` long, named by the folder.

    Raises:
        IntervalError: a value that is not a date, a reversed or too long range, or a folder
            that is not the export of exactly these dates.
    """
    interval = Interval(date.fromisoformat(_day(start)), date.fromisoformat(_day(end)))
    prefix = str(s3_prefix)
    if not _S3_PREFIX.fullmatch(prefix):
        raise IntervalError(f"{prefix!r} is not an s3://bucket/prefix/ URI (quotes and spaces are refused).")
    key = prefix.rstrip("/").rsplit("/", 1)[-1]
    if key != interval.key:
        raise IntervalError(f"The export folder {prefix} is not the one of {interval} (expected a folder named "
                            f"{interval.key}); the interval's dates and key must come from the same interval.")
    return interval


def stage_name(table: str) -> str:
    return "stage_" + table.split(".")[-1]


def load_statements(table: str, s3_prefix: str, iam_role_arn: str, start, end, *,
                    explicit_transaction: bool = True) -> list[str]:
    """The statements loading ``s3_prefix`` (Parquet) into ``table`` for ``start``..``end`` (inclusive).

    Args:
        table: one of ``include.warehouse.LOADS``.
        s3_prefix: the interval's export folder, ``s3://bucket/…/<interval>/``.
        iam_role_arn: the role Redshift assumes to read the export.
        start, end: dates (or Jinja strings rendering them; ``check_load`` checks what they render).
        explicit_transaction: add BEGIN/COMMIT (a SQL session); False for the Data API batch.
    """
    if table not in LOADS:
        raise KeyError(f"{table} is not a loadable table; use one of {', '.join(LOADS)}.")
    if not _S3_PREFIX.match(_TEMPLATE.sub("x", s3_prefix)):  # a template renders the interval's key
        raise ValueError(f"{s3_prefix!r} is not an s3://bucket/prefix/ URI (quotes and spaces are refused).")
    if not _ROLE.match(iam_role_arn):
        raise ValueError(f"{iam_role_arn!r} is not an IAM role ARN; set FLIGHTS_AWS_REDSHIFT_COPY_ROLE_ARN.")
    start, end = _day(start), _day(end)
    if not (_TEMPLATE.fullmatch(start) or _TEMPLATE.fullmatch(end)):
        Interval(date.fromisoformat(start), date.fromisoformat(end))  # ordered, at most MAX_RANGE_DAYS
    cols = ", ".join(LOADS[table])
    stage = stage_name(table)
    where = f"flight_date BETWEEN '{start}' AND '{end}'"
    statements = [
        f"CREATE TEMP TABLE {stage} (LIKE {table})",
        f"COPY {stage} ({cols}) FROM '{s3_prefix.rstrip('/')}/' IAM_ROLE '{iam_role_arn}' FORMAT AS PARQUET",
        f"DELETE FROM {table} WHERE {where}",
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} WHERE {where}",
        f"DROP TABLE {stage}",
    ]
    if explicit_transaction:
        statements.insert(2, "BEGIN")
        statements.insert(5, "COMMIT")
    return statements


def load_job(aws: AwsSettings, *, task_id: str, table: str, s3_prefix: str, start, end,
             **operator_kwargs) -> OperatorSpec:
    """``RedshiftIntervalLoadOperator`` (a ``RedshiftDataOperator``) running the load as one Data API batch
    (one transaction), deferrable.

    The operator checks the rendered ``load`` values (``check_load``) and runs the statements
    built from them; ``sql`` shows the same statements, as templates, in the plan and the UI.
    """
    role = aws.redshift_copy_role_arn
    if not role:
        raise ValueError("The Redshift load needs FLIGHTS_AWS_REDSHIFT_COPY_ROLE_ARN (the role COPY assumes).")
    kwargs = {
        "task_id": task_id,
        "sql": load_statements(table, s3_prefix, role, start, end, explicit_transaction=False),
        "load": {"table": table, "s3_prefix": s3_prefix, "iam_role_arn": role, "start": start, "end": end},
        "statement_name": f"load-{table}",
        "deferrable": True,
        "wait_for_completion": True,
        "poll_interval": 10,
        "region_name": aws.region,
        "botocore_config": aws.botocore_config,  # retries of every Data API call and of the trigger's polls
        **aws.warehouse_kwargs,
    }
    kwargs.update(operator_kwargs)
    return OperatorSpec(REDSHIFT_DATA_OPERATOR, kwargs)


# --- the Warehouse seam on Redshift ------------------------------------------------------------


def added_columns() -> dict[str, list[str]]:
    """The columns ``include.warehouse.DDL`` adds to tables that already exist, per table, as ``name TYPE``."""
    added: dict[str, list[str]] = {}
    for stmt in DDL:
        m = re.match(r"ALTER TABLE (\S+) ADD COLUMN IF NOT EXISTS (.+)$", stmt.strip())
        if m:
            added.setdefault(m[1], []).append(re.sub(r"\bTEXT\b", "VARCHAR(65535)", m[2]))
    return added


def redshift_ddl() -> list[str]:
    """``include.warehouse.DDL`` in Redshift's dialect.

    Redshift has no ``ADD COLUMN IF NOT EXISTS``: those columns are folded into their ``CREATE TABLE``,
    and a table created before them gets them from ``column_upgrades``. Its ``TEXT`` is ``VARCHAR(256)``
    (long texts get ``VARCHAR(65535)``).
    """
    added = added_columns()
    out = [stmt for stmt in DDL if not re.match(r"ALTER TABLE \S+ ADD COLUMN IF NOT EXISTS ", stmt.strip())]
    for i, stmt in enumerate(out):
        m = re.match(r"CREATE TABLE IF NOT EXISTS (\S+) \(", stmt)
        if m and m[1] in added:
            end = stmt.rindex(")")
            out[i] = f"{stmt[:end]},\n        {', '.join(added[m[1]])}{stmt[end:]}"
    return [re.sub(r"\bTEXT\b", "VARCHAR(65535)", stmt) for stmt in out]


def column_upgrades(table: str, existing: set[str]) -> list[str]:
    """``ALTER TABLE … ADD COLUMN`` for each added column ``table`` lacks (one column per statement, as Redshift
    requires); ``existing``: its column names now."""
    return [f"ALTER TABLE {table} ADD COLUMN {column}" for column in added_columns().get(table, [])
            if column.split()[0].lower() not in {c.lower() for c in existing}]


class WarehouseError(RuntimeError):
    """A Redshift statement failed, was aborted, or did not finish in time."""


class RedshiftWarehouse:
    """``ops.*`` records, queries and interval loads through the Redshift Data API.

    Statements run on the workgroup (or cluster) of the settings; each call waits for its
    statement (a few seconds). The DAGs' interval loads run as deferrable
    ``RedshiftDataOperator`` batches instead (``load_job``); ``load_interval`` runs the same
    batch from a Python process (a manual reload).
    """

    FAILED = ("FAILED", "ABORTED")

    def __init__(self, aws: AwsSettings, client=None, timeout_s: float = 900.0):
        self.aws, self._client, self.timeout_s = aws, client, timeout_s
        self._ready = False

    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("redshift-data", **self.aws.client_kwargs())
        return self._client

    def _where(self) -> dict[str, str]:
        names = {"database": "Database", "workgroup_name": "WorkgroupName", "cluster_identifier": "ClusterIdentifier",
                 "db_user": "DbUser", "secret_arn": "SecretArn"}
        where = {names[k]: v for k, v in self.aws.warehouse_kwargs.items() if v}
        if "WorkgroupName" not in where and "ClusterIdentifier" not in where:
            raise WarehouseError("The Redshift warehouse needs FLIGHTS_AWS_REDSHIFT_WORKGROUP (Serverless) or "
                                 "FLIGHTS_AWS_REDSHIFT_CLUSTER_ID (provisioned).")
        return where

    def status(self, statement_id: str) -> dict:
        """``DescribeStatement`` of one statement (its ``Status`` and ``Error``)."""
        return self.client.describe_statement(Id=statement_id)

    def wait(self, statement_id: str, what: str) -> dict:
        delay, deadline = 0.25, time.monotonic() + self.timeout_s
        while True:
            desc = self.status(statement_id)
            if desc["Status"] == "FINISHED":
                return desc
            if desc["Status"] in self.FAILED:
                raise WarehouseError(f"Redshift statement {statement_id} ({what}) ended {desc['Status']}: "
                                     f"{desc.get('Error', 'no error message')}")
            if time.monotonic() > deadline:
                self.client.cancel_statement(Id=statement_id)
                raise WarehouseError(f"Redshift statement {statement_id} ({what}) did not finish in "
                                     f"{self.timeout_s:.0f} s and was cancelled; check the workgroup's capacity.")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def execute(self, sql: str, parameters: list[dict] | None = None) -> dict:
        kwargs: dict[str, Any] = {"Sql": sql, **self._where()}
        if parameters:
            kwargs["Parameters"] = parameters
        statement = self.client.execute_statement(**kwargs)["Id"]
        return self.wait(statement, sql.split("(")[0][:60])

    def ensure_schema(self) -> None:
        if self._ready:
            return
        ddl = redshift_ddl()
        views = [stmt for stmt in ddl if stmt.lstrip().startswith("CREATE OR REPLACE VIEW")]
        for stmt in (s for s in ddl if s not in views):  # each idempotent (IF NOT EXISTS)
            self.execute(stmt)
        for table in added_columns():  # a table created before a column was added to the DDL gets it now
            schema, name = table.split(".")
            _, rows = self._query("SELECT column_name FROM svv_columns WHERE table_schema = ? AND table_name = ?",
                                  [schema, name])
            for stmt in column_upgrades(table, {str(r[0]) for r in rows}):
                self.execute(stmt)
        for stmt in views:  # last: a view may select a column the upgrades just added
            self.execute(stmt)
        self._ready = True

    def record(self, table: str, row: dict[str, Any]) -> None:
        if table not in OPS_TABLES:
            raise KeyError(f"{table} is not an ops table; ops tables: {', '.join(OPS_TABLES)}")
        sql, params = insert_statement(table, row)
        try:
            self.execute(sql, params)
        except WarehouseError as exc:
            if "does not exist" not in str(exc):
                raise
            self.ensure_schema()  # the first record into a fresh database creates the schema
            self.execute(sql, params)

    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        try:
            return self._query(sql, params)
        except WarehouseError as exc:
            if self._ready or not re.search(r"column .* does not exist", str(exc)):
                raise
            self.ensure_schema()  # a column added to the DDL since the table was created
            return self._query(sql, params)

    def _query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        parts = sql.split("?")
        text = parts[0] + "".join(f":p{i}{rest}" for i, rest in enumerate(parts[1:]))
        parameters = [{"name": f"p{i}", "value": _param(v)} for i, v in enumerate(params or [])]
        desc = self.execute(text, parameters)
        if not desc.get("HasResultSet", True):
            return [], []
        pages = self.client.get_paginator("get_statement_result").paginate(Id=desc["Id"])
        columns, rows = [], []
        for page in pages:
            columns = columns or [c.get("name") or c.get("label") for c in page.get("ColumnMetadata", [])]
            rows += [tuple(_value(f) for f in record) for record in page.get("Records", [])]
        return columns, rows

    def load_interval(self, table: str, s3_prefix, start, end) -> int:
        """Load the export under ``s3_prefix`` for ``start``..``end`` as one batch (one transaction)."""
        if not str(s3_prefix).startswith("s3://"):
            raise ValueError(f"Redshift loads from S3: {s3_prefix} is not an s3:// export folder.")
        if not self.aws.redshift_copy_role_arn:
            raise WarehouseError("The Redshift load needs FLIGHTS_AWS_REDSHIFT_COPY_ROLE_ARN (the role COPY assumes).")
        interval = check_load(str(s3_prefix), start, end)
        start, end = interval.start, interval.end
        sqls = load_statements(table, str(s3_prefix), self.aws.redshift_copy_role_arn, start, end,
                               explicit_transaction=False)
        self.ensure_schema()
        batch = self.client.batch_execute_statement(Sqls=sqls, StatementName=f"load-{table}", **self._where())["Id"]
        self.wait(batch, f"load {table}")
        _, rows = self.query(f"SELECT count(*) FROM {table} WHERE flight_date BETWEEN ? AND ?",
                             [_day(start), _day(end)])
        return int(rows[0][0])


def _param(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def insert_statement(table: str, row: dict[str, Any]) -> tuple[str, list[dict]]:
    """``INSERT`` with named Data API parameters; NULLs and empty strings are written as literals."""
    values, params = [], []
    for col, value in row.items():
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", col):
            raise ValueError(f"{col!r} is not a column name")
        if value is None:
            values.append("NULL")
        elif value == "":
            values.append("''")
        else:
            values.append(f":{col}")
            params.append({"name": col, "value": _param(value)})
    return f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(values)})", params


def _value(field: dict):
    if field.get("isNull"):
        return None
    for key in ("booleanValue", "longValue", "doubleValue", "stringValue"):
        if key in field:
            return field[key]
    return None
