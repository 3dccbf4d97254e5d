"""The warehouse loader, against a DuckDB file and a real PostgreSQL server."""

import importlib
import uuid
from datetime import date, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.warehouse import LOADS


def _export(path, days, version="1", prob=0.25, repeat_first=False):
    rows = [
        {"flight_id": f"{d:%Y%m%d}-UA-{n}-EWR-0600", "flight_date": d, "carrier": "UA", "flight": n,
         "origin": "EWR", "dest": "ORD", "sched_dep_ts": datetime(d.year, d.month, d.day, 6),
         "delay_probability": prob, "model_name": "m", "model_version": version, "run_id": "r",
         "feature_build": f"b{d:%Y%m%d}v{version}"}
        for d in days for n in range(1, 4)
    ]
    if repeat_first:  # the first flight twice: the primary key refuses the second at insert time
        rows.append({**rows[0], "delay_probability": 1 - prob})
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "part-0.parquet")
    return path


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request, tmp_path, monkeypatch):
    if request.param == "duckdb":
        from include.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(tmp_path / "wh.duckdb")
    url = request.getfixturevalue("postgres_url")
    from include.warehouse.postgres import PostgresWarehouse

    monkeypatch.setenv("AIRFLOW_CONN_FLIGHTS_WAREHOUSE_TEST", url)
    wh = PostgresWarehouse("flights_warehouse_test")
    wh.ensure_schema()
    with wh.connect() as conn, conn.cursor() as cur:  # each test starts empty
        cur.execute(f"TRUNCATE {', '.join(LOADS)}")
        conn.commit()
    return wh


TABLE = "analytics.flight_delay_predictions"
D1, D2, D3 = date(2013, 1, 1), date(2013, 1, 2), date(2013, 1, 3)


def _rows(wh, where=""):
    return wh.query(f"SELECT flight_date, count(*), max(model_version) FROM {TABLE} {where} "
                    "GROUP BY flight_date ORDER BY flight_date")[1]


def test_load_then_reload_replaces_exactly_the_interval(warehouse, tmp_path):
    assert warehouse.load_interval(TABLE, _export(tmp_path / "a", [D1, D2]), D1, D2) == 6
    assert warehouse.load_interval(TABLE, _export(tmp_path / "a", [D1, D2]), D1, D2) == 6  # rerun: no duplicates
    assert [r[1] for r in _rows(warehouse)] == [3, 3]
    warehouse.load_interval(TABLE, _export(tmp_path / "b", [D2], version="2"), D2, D2)
    assert [(r[0], r[1], r[2]) for r in _rows(warehouse)] == [(D1, 3, "1"), (D2, 3, "2")]  # D1 untouched


def test_rows_outside_the_interval_in_the_export_are_not_loaded(warehouse, tmp_path):
    warehouse.load_interval(TABLE, _export(tmp_path / "c", [D1, D2, D3]), D2, D2)
    assert [r[0] for r in _rows(warehouse)] == [D2]


def test_values_arrive_as_exported_empty_strings_quotes_and_all(warehouse, tmp_path):
    """The bulk path writes no value of its own: each reads back as the Parquet export holds it (an empty
    string stays one, where a CSV writer that leaves it unquoted makes it a NULL, refused here)."""
    path = _export(tmp_path / "v", [D1])
    rows = pq.read_table(path / "part-0.parquet").to_pylist()
    awkward = ["", 'a "quoted", comma\nand a line break', "\\N"]  # "\N": COPY's text-format NULL, as text
    for row, value in zip(rows, awkward):
        row["model_name"] = value
    rows[2]["delay_probability"] = 0.1 + 0.2  # a float that needs 17 digits to come back equal
    pq.write_table(pa.Table.from_pylist(rows), path / "part-0.parquet")
    assert warehouse.load_interval(TABLE, path, D1, D1) == 3
    got = warehouse.query(f"SELECT flight_id, model_name, delay_probability, sched_dep_ts FROM {TABLE}")[1]
    assert sorted(got, key=lambda r: r[0]) == sorted(
        [(r["flight_id"], r["model_name"], r["delay_probability"], r["sched_dep_ts"]) for r in rows[:3]],
        key=lambda r: r[0])


def _primary_key_violation(warehouse) -> type[Exception]:
    """The error class each database raises when an INSERT repeats a primary key."""
    from include.warehouse.duckdb import DuckDBWarehouse

    if isinstance(warehouse, DuckDBWarehouse):
        import duckdb

        return duckdb.ConstraintException
    with warehouse.connect() as conn:  # the hook's driver: psycopg (3) or psycopg2
        driver = type(conn).__module__.split(".")[0]
    return importlib.import_module(f"{driver}.errors").UniqueViolation


def test_load_failing_after_the_delete_rolls_back_to_the_previous_rows(warehouse, tmp_path):
    warehouse.load_interval(TABLE, _export(tmp_path / "d", [D1, D2]), D1, D2)
    before = warehouse.query(f"SELECT * FROM {TABLE} ORDER BY flight_id")[1]
    assert len(before) == 6 and {r[0] for r in _rows(warehouse)} == {D1, D2}
    # A readable export of D1 that breaks the table's primary key: the DELETE of D1 runs, then the
    # INSERT fails inside the same transaction (PostgreSQL's staging table has no primary key).
    bad = _export(tmp_path / "bad", [D1], version="2", repeat_first=True)
    with pytest.raises(_primary_key_violation(warehouse)):
        warehouse.load_interval(TABLE, bad, D1, D1)
    after = warehouse.query(f"SELECT * FROM {TABLE} ORDER BY flight_id")[1]
    assert after == before  # rolled back: D1's rows are back as they were, not deleted or half-replaced


def test_missing_export_is_a_clear_error(warehouse, tmp_path):
    with pytest.raises(FileNotFoundError, match="No Parquet files"):
        warehouse.load_interval(TABLE, tmp_path / "nothing", D1, D1)


def test_outcomes_view_joins_predictions_with_actuals(warehouse, tmp_path):
    warehouse.load_interval(TABLE, _export(tmp_path / "e", [D1]), D1, D1)
    out = tmp_path / "o"
    out.mkdir()
    pq.write_table(pa.Table.from_pylist([
        {"flight_id": f"{D1:%Y%m%d}-UA-1-EWR-0600", "flight_date": D1, "dep_delay": 30.0, "arr_delay": 25.0,
         "is_delayed": 1, "cancelled": False}]), out / "part-0.parquet")
    warehouse.load_interval("analytics.flight_outcomes", out, D1, D1)
    cols, rows = warehouse.query("SELECT count(*), sum(actual_is_delayed) FROM analytics.prediction_outcomes")
    assert rows[0][0] == 3 and rows[0][1] == 1  # every prediction, with its outcome where known


def test_ops_records(warehouse):
    warehouse.record("ops.task_runs", {"dag_id": "d", "task_id": "t", "run_id": "r", "try_number": 2,
                                       "state": "failed", "duration_s": 1.5})
    cols, rows = warehouse.query("SELECT try_number, state FROM ops.task_runs WHERE dag_id = 'd'")
    assert rows == [(2, "failed")]
    with pytest.raises(KeyError):
        warehouse.record("analytics.flight_outcomes", {})


INJECTIONS = [
    "task_id) SELECT ?, ? --",  # DuckDB's placeholders: the statement would insert with no error
    "task_id) SELECT %s, %s --",  # PostgreSQL's
    "state) VALUES ('x', 'y'); DROP TABLE ops.task_runs; --",
    "State",
    "no_such_column",
]


@pytest.mark.parametrize("column", INJECTIONS)
def test_ops_records_refuse_a_column_that_is_not_one_of_the_table(warehouse, column):
    dag_id = f"d-{uuid.uuid4().hex}"  # the PostgreSQL server's ops tables outlive a test
    with pytest.raises(ValueError, match=r"column of ops\.task_runs") as exc:
        warehouse.record("ops.task_runs", {"dag_id": dag_id, column: "x"})
    assert repr(column) in str(exc.value)  # the message names the bad column
    assert warehouse.query("SELECT count(*) FROM ops.task_runs WHERE dag_id = ?", [dag_id])[1] == [(0,)]
    warehouse.record("ops.task_runs", {"dag_id": dag_id, "state": "success"})  # the table is still there
    assert warehouse.query("SELECT state FROM ops.task_runs WHERE dag_id = ?", [dag_id])[1] == [("success",)]
