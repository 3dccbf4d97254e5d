"""The BigQuery warehouse: rendered job configurations, and the real client against a loopback bqemulator.

The emulator (``scripts/ensure_bqemulator.sh``, its own virtualenv) maps ``gs://`` URIs to a
local folder, so the loads read Parquet exports written here with pyarrow under the same
``gs://bucket/lake/exports/<dataset>/<interval>/`` layout Spark writes, through the same load
job and MERGE as on BigQuery. Each test gets a dataset of its own.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
import urllib.request
from datetime import date, datetime
from pathlib import Path

import pytest

from include.targets.gcp import bigquery as bqw
from include.targets.gcp.settings import GcpSettings
from include.warehouse import LOADS, OPS_TABLES

REPO = Path(__file__).resolve().parents[2]
PROJECT = "flights-example"
BUCKET = "flights-lake-example"
PREDICTIONS, OUTCOMES = "analytics.flight_delay_predictions", "analytics.flight_outcomes"
D1, D2, D3, D4 = date(2013, 1, 1), date(2013, 1, 2), date(2013, 1, 3), date(2013, 1, 4)
_datasets = itertools.count()


# --- rendered configurations (no server) ---------------------------------------------------------


def test_load_job_replaces_only_the_staging_table_and_reads_parquet():
    from google.cloud import bigquery

    config = bqw.load_job_config({"project": "flights-lakehouse"})
    assert isinstance(config, bigquery.LoadJobConfig)
    api = config.to_api_repr()["load"]
    assert api["sourceFormat"] == "PARQUET" and api["writeDisposition"] == "WRITE_TRUNCATE"
    assert config.labels == {"project": "flights-lakehouse"}
    assert bqw.staging_name(PREDICTIONS, D1, D2, "x").startswith("_stage_analytics_flight_delay_predictions_")


def test_merge_replaces_the_interval_with_parameters_and_never_truncates():
    from google.cloud import bigquery

    wh = bqw.BigQueryWarehouse(GcpSettings.example(), client=object())
    columns = [bqw.Column(n, {c.name: c for c in wh.schemas[OUTCOMES]}[n].type) for n in LOADS[OUTCOMES]]
    sql, config = bqw.merge_statement(wh.table_id(OUTCOMES), "flights-example.flights._stage_x", columns, D1, D2)
    assert isinstance(config, bigquery.QueryJobConfig)
    params = {p["name"]: p for p in config.to_api_repr()["query"]["queryParameters"]}
    assert params["start"]["parameterType"]["type"] == "DATE"
    assert params["start"]["parameterValue"]["value"] == "2013-01-01"
    assert params["end"]["parameterValue"]["value"] == "2013-01-02"
    assert sql.startswith("MERGE `flights-example.flights.analytics_flight_outcomes` AS t")
    assert "WHEN NOT MATCHED BY SOURCE AND t.flight_date BETWEEN @start AND @end THEN DELETE" in sql
    assert "CAST(is_delayed AS INT64) AS is_delayed" in sql and "CAST(cancelled AS BOOL) AS cancelled" in sql
    assert "2013" not in sql and "TRUNCATE" not in sql.upper()  # dates only as parameters; the table is never emptied


def test_schemas_follow_the_shared_ddl_with_bigquery_types_and_partitioning():
    schemas = bqw.table_schemas()
    assert set(schemas) == set(LOADS) | set(OPS_TABLES)
    pred = {c.name: c for c in schemas[PREDICTIONS]}
    assert set(LOADS[PREDICTIONS]) <= set(pred)
    assert (pred["flight_id"].type, pred["flight_id"].required) == ("STRING", True)  # PRIMARY KEY -> REQUIRED
    assert (pred["delay_probability"].type, pred["sched_dep_ts"].type, pred["flight"].type) == (
        "FLOAT64", "TIMESTAMP", "INT64")
    gates = [c.name for c in schemas["ops.quality_gates"]]
    assert gates[-3:] == ["quarantined", "docs_page", "warnings"]  # the DDL's ADD COLUMNs, folded in
    table = bqw.BigQueryWarehouse(GcpSettings.example(bigquery_project="flights-bq"), client=object()) \
        .table_definition(PREDICTIONS)
    assert table.reference.project == "flights-bq" and table.table_id == "analytics_flight_delay_predictions"
    assert table.to_api_repr()["timePartitioning"] == {"type": "DAY", "field": "flight_date"}
    assert table.clustering_fields == ["carrier", "flight_id"]


def test_job_ids_are_deterministic_per_table_interval_and_try():
    name = "flights_daily.load_warehouse.20130101_20130102.try1"
    a = bqw.job_id("merge", OUTCOMES, D1, D2, bqw.run_suffix(name))
    assert a == bqw.job_id("merge", OUTCOMES, D1, D2, bqw.run_suffix(name))
    assert a.startswith("flights_merge_analytics_flight_outcomes_20130101_20130102_flights_daily_load_warehouse_")
    assert a != bqw.job_id("merge", OUTCOMES, D1, D2, bqw.run_suffix(name.replace("try1", "try2")))
    assert bqw.run_suffix(None) != bqw.run_suffix(None)  # no name: never reuse an old job id
    assert all(ch.isalnum() or ch == "_" for ch in a) and len(a) <= 1024


@pytest.mark.parametrize("bad", ["/tmp/exports/x", "s3://b/x/", "gs://b/x' ; DROP TABLE t; --", "gs://B/x",
                                 "gs://bucket/a/**/x.parquet"])
def test_sources_other_than_a_gs_export_are_refused(bad):
    with pytest.raises(ValueError):
        bqw.source_uris(bad)


def test_source_folder_becomes_a_parquet_wildcard():
    assert bqw.source_uris("gs://bkt/lake/exports/predictions/20130101_20130102/") == \
        "gs://bkt/lake/exports/predictions/20130101_20130102/*.parquet"  # Spark's _SUCCESS is not matched
    assert bqw.source_uris("gs://bkt/x/part-0.parquet") == "gs://bkt/x/part-0.parquet"


def test_logical_names_are_rewritten_only_for_warehouse_tables():
    wh = bqw.BigQueryWarehouse(GcpSettings.example(), client=object())
    sql = wh.resolve("SELECT o.state, ops.x FROM ops.task_runs o JOIN analytics.prediction_outcomes p ON TRUE")
    assert sql == ("SELECT o.state, ops.x FROM `flights-example.flights.ops_task_runs` o "
                   "JOIN `flights-example.flights.analytics_prediction_outcomes` p ON TRUE")


def test_an_existing_job_id_is_reattached_not_resubmitted():
    from google.api_core.exceptions import Conflict

    class Client:
        def __init__(self):
            self.got = []

        def get_job(self, job_id, project=None, location=None):
            self.got.append((job_id, project, location))
            return "the earlier job"

    def submit(job_id):
        raise Conflict(f"Already Exists: Job flights-example:us-central1.{job_id}")

    client = Client()
    wh = bqw.BigQueryWarehouse(GcpSettings.example(), client=client)
    assert wh._submit(submit, "flights_load_x", "load") == "the earlier job"
    assert client.got == [("flights_load_x", "flights-example", "us-central1")]


def test_an_unchanged_view_is_not_replaced():
    from google.api_core.exceptions import NotFound

    wh = bqw.BigQueryWarehouse(GcpSettings.example(), client=None)
    views = {}

    class Client:
        def get_table(self, table_id):
            if table_id not in views:
                raise NotFound(table_id)
            return type("Table", (), {"view_query": views[table_id]})()

    def run_query(sql, config, what, job_id_=None):
        ran.append(sql)
        views[sql.split("`")[1]] = sql.split(" AS\n", 1)[1]

    wh._client, wh._run_query, ran = Client(), run_query, []
    wh._ensure_view()
    wh._ensure_view()  # BigQuery rate-limits metadata updates per table: many task processes start at once
    assert sorted(sql.split(" AS\n")[0] for sql in ran) == [
        "CREATE OR REPLACE VIEW `flights-example.flights.analytics_prediction_outcomes`",
        "CREATE OR REPLACE VIEW `flights-example.flights.ops_model_performance_latest`"]


def test_record_refuses_injected_or_unknown_column_names_before_any_request():
    wh = bqw.BigQueryWarehouse(GcpSettings.example(), client=object())  # any call on it would fail
    with pytest.raises(ValueError, match="not a column name"):
        wh.record("ops.task_runs", {"dag_id) VALUES ('x'); DROP TABLE ops_task_runs; --": "d"})
    with pytest.raises(ValueError, match="has no column 'nope'"):
        wh.record("ops.task_runs", {"nope": 1})
    with pytest.raises(KeyError):
        wh.record(OUTCOMES, {"flight_id": "x"})


# --- against the emulator ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory):
    """bqemulator on a free loopback port, ``gs://`` mapped to a local folder; yields (endpoint, gcs root)."""
    out = subprocess.run(["bash", str(REPO / "scripts" / "ensure_bqemulator.sh")], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        pytest.fail(f"scripts/ensure_bqemulator.sh failed:\n{out.stderr[-3000:]}")
    launcher = out.stdout.strip().splitlines()[-1]
    work = tmp_path_factory.mktemp("bqemulator")
    gcs_root = work / "gcs"
    gcs_root.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_") and k != "PYTHONPATH"}
    env.update(BQEMU_GCS_LOCAL_ROOT=str(gcs_root), BQEMU_ENABLE_FORMAT_EXTENSIONS="false",
               BQEMU_LOG_LEVEL="warning", BQEMU_DEFAULT_PROJECT_ID=PROJECT)
    log = (work / "emulator.log").open("w")
    proc = subprocess.Popen([launcher, "start", "--rest-host", "127.0.0.1", "--rest-port", str(port),
                             "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--ephemeral"],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/bigquery/v2/projects/{PROJECT}/datasets", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bqemulator did not start on {endpoint}:\n{(work / 'emulator.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield endpoint, gcs_root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture()
def warehouse(bq_emulator):
    """A warehouse in a dataset of its own on the emulator, its schema created."""
    endpoint, _ = bq_emulator
    gcp = GcpSettings.example(project=PROJECT, bigquery_dataset=f"flights_t{next(_datasets)}")
    wh = bqw.BigQueryWarehouse(gcp, endpoint=endpoint, timeout_s=120)
    wh.ensure_schema()
    return wh


def _export(gcs_root: Path, dataset: str, key: str, rows: list[dict], schema=None, **write) -> str:
    """Write ``rows`` as a Spark-like export (one part file and ``_SUCCESS``); returns its gs:// folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = gcs_root / BUCKET / "lake" / "exports" / dataset / key
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-00000-0a1b.c000.snappy.parquet", **write)
    (folder / "_SUCCESS").write_text("")
    return f"gs://{BUCKET}/lake/exports/{dataset}/{key}/"


def _predictions(gcs_root, days, key, version="1", prob=0.25) -> str:
    """A predictions export in the lake's column order and Spark's types (int32, INT96 timestamps)."""
    import pyarrow as pa

    schema = pa.schema([("flight_id", pa.string()), ("flight_date", pa.date32()), ("carrier", pa.string()),
                        ("flight", pa.int32()), ("origin", pa.string()), ("dest", pa.string()),
                        ("sched_dep_ts", pa.timestamp("us")), ("delay_probability", pa.float64()),
                        ("model_name", pa.string()), ("model_version", pa.string()), ("run_id", pa.string()),
                        ("feature_build", pa.string())])
    assert list(schema.names) == LOADS[PREDICTIONS]
    rows = [{"flight_id": f"{d:%Y%m%d}-UA-{n}-EWR-0600", "flight_date": d, "carrier": "UA", "flight": n,
             "origin": "EWR", "dest": "ORD", "sched_dep_ts": datetime(d.year, d.month, d.day, 6),
             "delay_probability": prob, "model_name": "m", "model_version": version, "run_id": "r",
             "feature_build": f"build-{d:%Y%m%d}"}
            for d in days for n in range(1, 4)]
    return _export(gcs_root, "predictions", key, rows, schema=schema, use_deprecated_int96_timestamps=True)


def _per_day(wh, table=PREDICTIONS):
    return wh.query(f"SELECT flight_date, count(*) AS n, max(model_version) AS v FROM {table} "
                    "GROUP BY flight_date ORDER BY flight_date")[1]


def _tables(wh) -> list[str]:
    return sorted(t.table_id for t in wh.client.list_tables(f"{wh.project}.{wh.dataset}"))


def test_ensure_schema_twice_creates_partitioned_tables_and_the_view(warehouse, bq_emulator):
    again = bqw.BigQueryWarehouse(warehouse.gcp, endpoint=bq_emulator[0])
    jobs = []
    run_query = again._run_query
    again._run_query = lambda sql, *a, **k: jobs.append(sql) or run_query(sql, *a, **k)
    again.ensure_schema()  # a second process, same dataset: nothing fails, nothing duplicates
    # no ALTER: the tables are complete; the emulator reports no view query, so the view is replaced
    assert [j.split(" `")[0] for j in jobs] == ["CREATE OR REPLACE VIEW"] * 2
    assert _tables(warehouse) == sorted(["analytics_flight_delay_predictions", "analytics_flight_outcomes",
                                         "analytics_prediction_outcomes", "ops_dag_runs", "ops_task_runs",
                                         "ops_quality_gates", "ops_model_decisions", "ops_alerts",
                                         "ops_model_performance", "ops_model_performance_latest",
                                         "ops_feature_drift", "ops_recomputations"])
    table = warehouse.client.get_table(warehouse.table_id(PREDICTIONS))
    assert (table.time_partitioning.type_, table.time_partitioning.field) == ("DAY", "flight_date")
    assert table.clustering_fields == ["carrier", "flight_id"]
    view = warehouse.client.get_table(warehouse.table_id("analytics.prediction_outcomes"))
    assert view.table_type == "VIEW"


def test_load_reload_and_neighbouring_interval(warehouse, bq_emulator):
    _, gcs = bq_emulator
    src = _predictions(gcs, [D1, D2], "20130101_20130102")
    job = "flights_daily.load_warehouse.20130101_20130102.try1"
    assert warehouse.load_interval(PREDICTIONS, src, D1, D2, job_name=job) == 6
    assert warehouse.load_interval(PREDICTIONS, src, D1, D2) == 6  # the rerun: same rows, no duplicates
    assert _per_day(warehouse) == [(D1, 3, "1"), (D2, 3, "1")]
    nxt = _predictions(gcs, [D3, D4], "20130103_20130104", version="2")
    assert warehouse.load_interval(PREDICTIONS, nxt, D3, D4) == 6
    assert _per_day(warehouse) == [(D1, 3, "1"), (D2, 3, "1"), (D3, 3, "2"), (D4, 3, "2")]  # D1..D2 untouched
    fix = _predictions(gcs, [D2], "20130102_20130102", version="3")
    assert warehouse.load_interval(PREDICTIONS, fix, D2, D2) == 3
    assert _per_day(warehouse) == [(D1, 3, "1"), (D2, 3, "3"), (D3, 3, "2"), (D4, 3, "2")]
    cols, rows = warehouse.query(f"SELECT count(DISTINCT flight_id) AS ids, count(*) AS n, min(loaded_at) AS at, "
                                 f"max(sched_dep_ts) AS ts FROM {PREDICTIONS}")
    assert cols == ["ids", "n", "at", "ts"] and rows[0][0] == rows[0][1] == 12 and rows[0][2] is not None
    assert rows[0][3].replace(tzinfo=None) == datetime(2013, 1, 4, 6)  # INT96 timestamps arrive intact
    assert not [t for t in _tables(warehouse) if t.startswith(bqw.STAGING_PREFIX)]  # staging dropped


def test_rows_outside_the_interval_in_the_export_are_not_loaded(warehouse, bq_emulator):
    src = _predictions(bq_emulator[1], [D1, D2, D3], "20130101_20130103")
    assert warehouse.load_interval(PREDICTIONS, src, D2, D2) == 3
    assert [r[0] for r in _per_day(warehouse)] == [D2]


def test_failed_or_missing_export_leaves_the_previous_rows(warehouse, bq_emulator):
    _, gcs = bq_emulator
    warehouse.load_interval(PREDICTIONS, _predictions(gcs, [D1], "20130101_20130101"), D1, D1)
    bad = gcs / BUCKET / "lake" / "exports" / "predictions" / "bad"
    bad.mkdir(parents=True)
    (bad / "part-0.parquet").write_bytes(b"not parquet")
    with pytest.raises(bqw.WarehouseError, match="flights_load_analytics_flight_delay_predictions_20130101"):
        warehouse.load_interval(PREDICTIONS, f"gs://{BUCKET}/lake/exports/predictions/bad", D1, D1)
    with pytest.raises(FileNotFoundError, match="No Parquet files"):
        warehouse.load_interval(PREDICTIONS, f"gs://{BUCKET}/lake/exports/predictions/none/", D1, D1)
    assert _per_day(warehouse) == [(D1, 3, "1")]  # nothing merged: the interval keeps its rows


def test_outcomes_view_joins_predictions_with_actuals(warehouse, bq_emulator):
    _, gcs = bq_emulator
    warehouse.load_interval(PREDICTIONS, _predictions(gcs, [D1], "20130101_20130101"), D1, D1)
    out = _export(gcs, "flight_outcomes", "20130101_20130101", [
        {"flight_id": f"{D1:%Y%m%d}-UA-1-EWR-0600", "flight_date": D1, "dep_delay": 30.0, "arr_delay": 25.0,
         "is_delayed": 1, "cancelled": False}])
    assert warehouse.load_interval(OUTCOMES, out, D1, D1) == 1
    cols, rows = warehouse.query("SELECT count(*) AS n, sum(actual_is_delayed) AS delayed, "
                                 "countif(arr_delay IS NULL) AS unknown FROM analytics.prediction_outcomes")
    assert rows == [(3, 1, 2)]  # every prediction, with its outcome where known
    from include.summary import ANALYST_QUERY

    cols, rows = warehouse.query(ANALYST_QUERY)  # SQL written for DuckDB / PostgreSQL runs here too
    assert cols == ["carrier", "flights", "predicted_delay_rate", "actual_delay_rate"] and rows == []


def test_ops_records_with_parameters_and_injection_refused(warehouse):
    warehouse.record("ops.task_runs", {"dag_id": "d", "task_id": "t", "run_id": "r", "try_number": 2,
                                       "state": "failed", "duration_s": 1.5, "error": "it's 'quoted'; --"})
    warehouse.record("ops.quality_gates", {"dag_id": "d", "success": False, "interval_start": D1,
                                           "details": {"failed": ["x"]}, "warnings": None})
    _, rows = warehouse.query("SELECT try_number, state, error, recorded_at IS NOT NULL AS stamped "
                              "FROM ops.task_runs WHERE dag_id = @dag", {"dag": "d"})
    assert rows == [(2, "failed", "it's 'quoted'; --", True)]
    assert warehouse.query("SELECT details, interval_start FROM ops.quality_gates WHERE NOT success")[1] == [
        ('{"failed": ["x"]}', D1)]
    with pytest.raises(ValueError, match="not a column name"):
        warehouse.record("ops.task_runs", {"state) SELECT 1; DELETE FROM ops_task_runs WHERE (true": "x"})
    assert warehouse.query("SELECT count(*) FROM ops.task_runs WHERE try_number = ?", [2])[1] == [(1,)]


def test_first_record_into_a_new_dataset_creates_the_schema(bq_emulator):
    gcp = GcpSettings.example(project=PROJECT, bigquery_dataset=f"flights_t{next(_datasets)}")
    wh = bqw.BigQueryWarehouse(gcp, endpoint=bq_emulator[0], timeout_s=120)
    wh.record("ops.dag_runs", {"dag_id": "flights_daily", "state": "success", "duration_s": 12.5,
                               "start_date": datetime(2013, 1, 2, 3, 4, 5)})
    assert wh.query("SELECT dag_id, state, start_date FROM ops.dag_runs")[1][0][:2] == ("flights_daily", "success")


def test_a_column_new_in_the_ddl_is_added_to_an_existing_table(bq_emulator):
    from google.cloud import bigquery

    gcp = GcpSettings.example(project=PROJECT, bigquery_dataset=f"flights_t{next(_datasets)}")
    wh = bqw.BigQueryWarehouse(gcp, endpoint=bq_emulator[0], timeout_s=120)
    wh.client.create_dataset(f"{PROJECT}.{gcp.bigquery_dataset}")
    old = [bigquery.SchemaField(c.name, c.type) for c in wh.schemas["ops.quality_gates"] if c.name != "warnings"]
    wh.client.create_table(bigquery.Table(wh.table_id("ops.quality_gates"), schema=old))  # before the column existed
    wh.ensure_schema()
    wh.record("ops.quality_gates", {"suite": "bronze.flights", "warnings": "2 rows quarantined"})
    assert wh.query("SELECT suite, warnings FROM ops.quality_gates")[1] == [("bronze.flights", "2 rows quarantined")]
