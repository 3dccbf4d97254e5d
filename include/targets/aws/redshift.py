"""Loading one interval into Redshift, idempotently.

The lake exports one Parquet folder per interval; the load stages it with ``COPY`` and
replaces exactly the interval's rows in one transaction (delete the interval, insert the
staged rows), so a rerun never duplicates a row and readers never see half a day. It
never uses ``S3ToRedshiftOperator(method="REPLACE")``, which empties the whole table.

The Redshift Data API runs a batch of statements as one transaction already, so the
operator's batch carries no BEGIN/COMMIT; a plain SQL session (``RedshiftSQLHook``,
psql) gets the explicit ``BEGIN; DELETE; INSERT; COMMIT;``.
"""

from __future__ import annotations

import re
from datetime import date

from include.targets.aws.emr import OperatorSpec
from include.targets.aws.settings import AwsSettings
from include.warehouse import LOADS

REDSHIFT_DATA_OPERATOR = "airflow.providers.amazon.aws.operators.redshift_data.RedshiftDataOperator"
_S3_PREFIX = re.compile(r"^s3://[a-z0-9][a-z0-9.-]+/[A-Za-z0-9_./=-]*$")
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$")


def _day(value) -> str:
    """An ISO date literal; a Jinja expression is passed through for the operator to render."""
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    if text.startswith("{{") and text.endswith("}}"):
        return text
    return date.fromisoformat(text).isoformat()


def stage_name(table: str) -> str:
    return "stage_" + table.split(".")[-1]


def load_statements(table: str, s3_prefix: str, iam_role_arn: str, start, end, *,
                    explicit_transaction: bool = True) -> list[str]:
    """The statements loading ``s3_prefix`` (Parquet) into ``table`` for ``start``..``end`` (inclusive).

    Args:
        table: one of ``include.warehouse.LOADS``.
        s3_prefix: the interval's export folder, ``s3://bucket/…/<interval>/``.
        iam_role_arn: the role Redshift assumes to read the export.
        start, end: dates (or Jinja strings rendering them).
        explicit_transaction: add BEGIN/COMMIT (a SQL session); False for the Data API batch.
    """
    if table not in LOADS:
        raise KeyError(f"{table} is not a loadable table; use one of {', '.join(LOADS)}.")
    if not _S3_PREFIX.match(s3_prefix):
        raise ValueError(f"{s3_prefix!r} is not an s3://bucket/prefix/ URI (quotes and spaces are refused).")
    if not _ROLE.match(iam_role_arn):
        raise ValueError(f"{iam_role_arn!r} is not an IAM role ARN; set FLIGHTS_AWS_REDSHIFT_COPY_ROLE_ARN.")
    start, end = _day(start), _day(end)
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
    """``RedshiftDataOperator`` running the load as one Data API batch (one transaction), deferrable."""
    role = aws.redshift_copy_role_arn
    if not role:
        raise ValueError("The Redshift load needs FLIGHTS_AWS_REDSHIFT_COPY_ROLE_ARN (the role COPY assumes).")
    kwargs = {
        "task_id": task_id,
        "sql": load_statements(table, s3_prefix, role, start, end, explicit_transaction=False),
        "statement_name": f"load-{table}",
        "deferrable": True,
        "wait_for_completion": True,
        "poll_interval": 10,
        "region_name": aws.region,
        **aws.warehouse_kwargs,
    }
    kwargs.update(operator_kwargs)
    return OperatorSpec(REDSHIFT_DATA_OPERATOR, kwargs)
