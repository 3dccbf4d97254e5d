"""The Redshift interval load: rendered statements, and the delete-and-insert run on a real PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest

from include.targets.aws import redshift
from include.targets.aws.emr import instantiate
from include.targets.aws.settings import AwsSettings
from include.warehouse import DDL, LOADS

TABLE = "analytics.flight_outcomes"
PREFIX = "s3://flights-lake-example/lake/exports/flight_outcomes/20130101_20130102/"
ROLE = "arn:aws:iam::123456789012:role/flights-redshift-copy"
D1, D2, D3 = date(2013, 1, 1), date(2013, 1, 2), date(2013, 1, 3)


def test_statements_stage_copy_and_replace_the_interval_in_one_transaction():
    sql = redshift.load_statements(TABLE, PREFIX, ROLE, D1, D2)
    cols = ", ".join(LOADS[TABLE])
    assert sql == [
        f"CREATE TEMP TABLE stage_flight_outcomes (LIKE {TABLE})",
        f"COPY stage_flight_outcomes ({cols}) FROM '{PREFIX}' IAM_ROLE '{ROLE}' FORMAT AS PARQUET",
        "BEGIN",
        f"DELETE FROM {TABLE} WHERE flight_date BETWEEN '2013-01-01' AND '2013-01-02'",
        f"INSERT INTO {TABLE} ({cols}) SELECT {cols} FROM stage_flight_outcomes "
        "WHERE flight_date BETWEEN '2013-01-01' AND '2013-01-02'",
        "COMMIT",
        "DROP TABLE stage_flight_outcomes",
    ]
    assert not any("REPLACE" in s or "TRUNCATE" in s for s in sql)


def test_data_api_batch_has_no_explicit_transaction_and_templates_pass_through():
    start = "{{ ti.xcom_pull(task_ids='resolve_interval')['start'] }}"
    spec = redshift.load_job(AwsSettings.example(), task_id="load_outcomes", table=TABLE, s3_prefix=PREFIX,
                             start=start, end="2013-01-02")
    sql = spec.kwargs["sql"]
    assert "BEGIN" not in sql and "COMMIT" not in sql  # BatchExecuteStatement is one transaction already
    assert f"flight_date BETWEEN '{start}' AND '2013-01-02'" in sql[2]
    assert spec.kwargs["workgroup_name"] == "flights" and spec.kwargs["deferrable"] is True
    op = instantiate(spec)
    assert op.sql == sql and op.deferrable


@pytest.mark.parametrize("bad", ["s3://b/x' ; DROP TABLE t; --", "http://b/x/"])
def test_unsafe_locations_are_refused(bad):
    with pytest.raises(ValueError):
        redshift.load_statements(TABLE, bad, ROLE, D1, D1)
    with pytest.raises(KeyError):
        redshift.load_statements("ops.task_runs", PREFIX, ROLE, D1, D1)


def _load(conn, rows, start, end):
    """Run the rendered statements verbatim, with the COPY replaced by inserting ``rows`` into the stage."""
    conn.autocommit = True  # as in a SQL session: BEGIN/COMMIT in the statements delimit the transaction
    cols = LOADS[TABLE]
    with conn.cursor() as cur:
        for stmt in redshift.load_statements(TABLE, PREFIX, ROLE, start, end):
            if stmt.startswith("COPY "):
                cur.executemany(f"INSERT INTO stage_flight_outcomes ({', '.join(cols)}) VALUES "
                                f"({', '.join(['%s'] * len(cols))})", rows)
            else:
                cur.execute(stmt)


def _rows(days, delay=5.0):
    return [(f"{d:%Y%m%d}-UA-{n}", d, delay, delay, 0, False) for d in days for n in range(3)]


def test_repeated_loads_are_exactly_once_on_postgres(postgres_url):
    import psycopg2

    conn = psycopg2.connect(postgres_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for stmt in DDL:
                cur.execute(stmt)
            cur.execute(f"TRUNCATE {TABLE}")
        _load(conn, _rows([D1, D2, D3]), D1, D2)
        _load(conn, _rows([D1, D2, D3]), D1, D2)  # the rerun of the same interval
        _load(conn, _rows([D2], delay=99.0), D2, D2)  # a corrected day
        with conn.cursor() as cur:
            cur.execute(f"SELECT flight_date, count(*), max(arr_delay) FROM {TABLE} GROUP BY 1 ORDER BY 1")
            assert cur.fetchall() == [(D1, 3, 5.0), (D2, 3, 99.0)]  # D3 was outside every interval loaded
    finally:
        conn.close()


def _moto_statements():
    from moto.redshiftdata.models import redshiftdata_backends

    return list(redshiftdata_backends["123456789012"]["us-east-1"].statements.values())


def test_warehouse_records_and_queries_through_the_data_api(aws, boto, monkeypatch):
    """Requests reach the moto server; moto keeps statements STARTED, so the final status is patched."""
    from include.targets.aws.redshift import RedshiftWarehouse, WarehouseError

    status = {"Status": "FINISHED"}
    monkeypatch.setattr(RedshiftWarehouse, "status", lambda self, sid: {
        **self.client.describe_statement(Id=sid), "HasResultSet": True, **status})
    wh = RedshiftWarehouse(aws, boto("redshift-data"))
    wh.record("ops.quality_gates", {"dag_id": "flights_daily", "success": True, "evaluated": 12,
                                    "interval_start": D1, "details": None, "warnings": ""})
    stmt = _moto_statements()[-1]
    assert stmt.query_string == ("INSERT INTO ops.quality_gates (dag_id, success, evaluated, interval_start, "
                                 "details, warnings) VALUES (:dag_id, :success, :evaluated, :interval_start, NULL, '')")
    assert stmt.query_parameters == [{"name": "dag_id", "value": "flights_daily"}, {"name": "success", "value": "true"},
                                     {"name": "evaluated", "value": "12"},
                                     {"name": "interval_start", "value": "2013-01-01"}]
    assert stmt.database == "dev"
    cols, rows = wh.query("SELECT a, b, c FROM t WHERE d = ? AND e = ?", ["2013-01-01", 3])
    stmt = _moto_statements()[-1]
    assert stmt.query_string == "SELECT a, b, c FROM t WHERE d = :p0 AND e = :p1"
    assert cols == ["Number", "Street", "City"] and rows[0] == (10, "Alpha st", "Vancouver")  # moto's fixed result
    with pytest.raises(KeyError):
        wh.record("analytics.flight_outcomes", {})
    status.update(Status="FAILED", Error='relation "ops.quality_gates" does not exist')
    with pytest.raises(WarehouseError, match="ended FAILED: relation"):
        wh.query("SELECT 1")


def test_redshift_ddl_folds_added_columns_and_widens_text():
    from include.targets.aws.redshift import redshift_ddl

    ddl = redshift_ddl()
    assert not [s for s in ddl if "ADD COLUMN IF NOT EXISTS" in s or " TEXT" in s]  # neither exists on Redshift
    [gates] = [s for s in ddl if "ops.quality_gates (" in s]
    assert "quarantined BIGINT, docs_page VARCHAR(65535), warnings VARCHAR(65535))" in gates


# --- the rendered interval is checked where the batch runs -------------------------------------

INTERVAL_TASK = "resolve_interval"
PAYLOADS = {
    "quote": {"start": "2013-01-01' OR 1=1 --", "end": "2013-01-01", "key": "20130101_20130101"},
    "whole_table": {"start": "1900-01-01", "end": "2100-12-31", "key": "19000101_21001231"},
    "end_before_start": {"start": "2013-01-05", "end": "2013-01-01", "key": "20130105_20130101"},
    "key_mismatch": {"start": "2013-01-01", "end": "2013-01-02", "key": "20130101_20130101"},
    "key_quote": {"start": "2013-01-01", "end": "2013-01-01", "key": "20130101_20130101' --"},
    "not_iso": {"start": "20130101", "end": "2013-01-01", "key": "20130101_20130101"},
}


class _XComTI:
    """A task instance whose ``resolve_interval`` XCom is ``payload`` (what the REST API could have written)."""

    def __init__(self, payload: dict):
        self.payload = payload

    def xcom_pull(self, task_ids: str, key: str | None = None):
        assert task_ids == INTERVAL_TASK
        return self.payload


def _rendered_load(payload: dict, monkeypatch):
    """The daily DAG's outcomes load operator, rendered from ``payload``; Data API calls land in the list."""
    from airflow.providers.amazon.aws.hooks.redshift_data import QueryExecutionOutput, RedshiftDataHook
    from airflow.providers.amazon.aws.operators.redshift_data import RedshiftDataOperator

    from include.jobs import RunRef
    from include.lake import export_uri
    from include.targets.aws.steps import AwsSteps

    sent: list[dict] = []

    def execute_query(self, *, sql, **kwargs):
        sent.append({"sql": list(sql), **kwargs})
        return QueryExecutionOutput(statement_id="s-1", session_id=None)

    monkeypatch.setattr(RedshiftDataHook, "execute_query", execute_query)
    monkeypatch.setattr(RedshiftDataHook, "check_query_is_finished", lambda self, statement_id: True)
    monkeypatch.setattr(RedshiftDataOperator, "get_sql_results", lambda self, statement_id, return_sql_result: [])
    aws = AwsSettings.example()
    ref = RunRef.template(INTERVAL_TASK)
    spec = AwsSteps(aws, code={}).load_job(task_id="load_flight_outcomes", table=TABLE,
                                            source=export_uri(aws.lake_root, "flight_outcomes", ref.key),
                                            start=ref.start, end=ref.end)
    op = instantiate(spec)
    context = {"ti": _XComTI(payload), "run_id": "manual__2013-01-01", "params": {}}
    op.render_template_fields(context)
    return op, context, sent


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_crafted_interval_xcom_never_reaches_the_data_api(name, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    op, context, sent = _rendered_load(PAYLOADS[name], monkeypatch)
    with pytest.raises(AirflowFailException, match="Refusing to run the Redshift load"):
        op.execute(context)
    assert sent == []  # refused before any statement was sent


def test_a_valid_interval_xcom_runs_the_statements_of_its_dates(monkeypatch):
    op, context, sent = _rendered_load({"start": "2013-01-01", "end": "2013-01-02", "key": "20130101_20130102"},
                                       monkeypatch)
    op.execute(context)
    [batch] = sent
    assert batch["sql"] == redshift.load_statements(TABLE, PREFIX, ROLE, D1, D2, explicit_transaction=False)


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_crafted_interval_is_refused_by_the_python_load(name):
    from include.intervals import IntervalError
    from include.targets.aws.redshift import RedshiftWarehouse

    class NoClient:
        def __getattr__(self, call):
            raise AssertionError(f"{call} reached the Data API")

    p = PAYLOADS[name]
    prefix = f"s3://flights-lake-example/lake/exports/flight_outcomes/{p['key']}/"
    with pytest.raises(IntervalError):
        RedshiftWarehouse(AwsSettings.example(), NoClient()).load_interval(TABLE, prefix, p["start"], p["end"])


def test_tables_created_before_a_column_was_added_get_it(postgres_url):
    """A warehouse created by an earlier release (no ``action``/``cause`` on ops.model_decisions) is upgraded by
    ``column_upgrades``, one ``ADD COLUMN`` each, the syntax Redshift and PostgreSQL share; then nothing is left."""
    import uuid

    import psycopg2

    from include.targets.aws.redshift import added_columns, column_upgrades

    database = f"upgrade_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
    admin.close()
    conn = psycopg2.connect(f"{postgres_url.rsplit('/', 1)[0]}/{database}")
    conn.autocommit = True

    def columns(table):
        schema, name = table.split(".")
        with conn.cursor() as cur:
            cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                        "AND table_name = %s", (schema, name))
            return {r[0] for r in cur.fetchall()}

    try:
        with conn.cursor() as cur:
            for stmt in DDL:
                if "ADD COLUMN" not in stmt and "VIEW" not in stmt:  # the tables as the first release created them
                    cur.execute(stmt)
        assert not {"action", "cause"} & columns("ops.model_decisions")
        assert {"ops.model_decisions", "ops.quality_gates"} <= set(added_columns())
        for table in added_columns():
            upgrades = column_upgrades(table, columns(table))
            assert upgrades and all(s.startswith(f"ALTER TABLE {table} ADD COLUMN ") for s in upgrades)
            with conn.cursor() as cur:
                for stmt in upgrades:
                    cur.execute(stmt)
            assert column_upgrades(table, columns(table)) == []  # done once
        assert {"action", "cause", "promoted"} <= columns("ops.model_decisions")
        assert "feature_build" in columns("analytics.flight_delay_predictions")
        with conn.cursor() as cur:  # the view selects the added column: it can be created only now
            for stmt in DDL:
                if "VIEW" in stmt:
                    cur.execute(stmt)
            cur.execute("SELECT feature_build FROM analytics.prediction_outcomes")
        with conn.cursor() as cur:
            cur.execute("INSERT INTO ops.model_decisions (model_name, action, cause) VALUES ('m', 'refused', %s)",
                        ("x" * 5000,))  # cause is VARCHAR(65535), not Redshift's 256-character TEXT
    finally:
        conn.close()


def test_ensure_schema_asks_redshift_for_the_columns_and_adds_the_missing_ones(aws, boto, monkeypatch):
    from include.targets.aws.redshift import RedshiftWarehouse

    monkeypatch.setattr(RedshiftWarehouse, "status", lambda self, sid: {
        **self.client.describe_statement(Id=sid), "HasResultSet": True, "Status": "FINISHED"})
    seen = len(_moto_statements())
    RedshiftWarehouse(aws, boto("redshift-data")).ensure_schema()
    sent = [s.query_string for s in _moto_statements()[seen:]]
    lookups = [s for s in sent if s.startswith("SELECT column_name FROM svv_columns")]
    assert len(lookups) == 3  # ops.quality_gates, ops.model_decisions, analytics.flight_delay_predictions; moto
    # answers with rows of its own,
    assert "ALTER TABLE ops.model_decisions ADD COLUMN action VARCHAR(32)" in sent  # none of them a column name
    assert "ALTER TABLE ops.model_decisions ADD COLUMN cause VARCHAR(65535)" in sent
    assert sent.index(lookups[0]) > max(i for i, s in enumerate(sent) if s.startswith("CREATE TABLE"))
    added = sent.index("ALTER TABLE analytics.flight_delay_predictions ADD COLUMN feature_build VARCHAR(16)")
    view = next(i for i, s in enumerate(sent) if s.startswith("CREATE OR REPLACE VIEW analytics.prediction_outcomes"))
    assert view > added  # the view selects the column: created after the upgrade adds it to an older table
