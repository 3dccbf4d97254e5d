"""The real DAGs, run with ``dag.test()`` on the local target, then checked in the lake,
the registry and the warehouse: three days, a training run, one scored day, a rerun of its
scoring, a missing file, a malformed file, the weekly maintenance and a corrected day."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from include.config import settings
from include.intervals import Interval
from include.lake import landing_file, table_uri
from include.source.landing import land

pytestmark = pytest.mark.slow

UTC = timezone.utc
SCORED_DAY = date(2013, 1, 4)
MALFORMED_DAY = date(2013, 1, 5)
MISSING_DAY = date(2013, 1, 6)
VOLATILE = {"_ingested_at", "_run_id", "run_id", "loaded_at", "_source_file"}


def _dag(dag_id):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags[dag_id]


def _run(dag_id, logical_day: date, conf: dict | None = None, mark_success_pattern: str | None = None):
    dr = _dag(dag_id).test(logical_date=datetime(logical_day.year, logical_day.month, logical_day.day, tzinfo=UTC),
                           run_conf=conf or {}, mark_success_pattern=mark_success_pattern)
    return dr


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def _lake(name: str) -> pd.DataFrame:
    from deltalake import DeltaTable

    return DeltaTable(table_uri(str(settings().lake_root), name)).to_pandas()


def _wh(sql: str):
    from include.targets import get_target

    return get_target().warehouse.query(sql)[1]


def _content_hash(df: pd.DataFrame) -> tuple[int, int]:
    """Row count and an order-independent hash of the content, metadata columns left out."""
    df = df[[c for c in sorted(df.columns) if c not in VOLATILE]].astype(str)
    return len(df), int(pd.util.hash_pandas_object(df, index=False).sum())


def _source_rows(day: date) -> int:
    with open(landing_file(str(settings().landing_root), "flights", day)) as f:
        return sum(1 for _ in f) - 1


def _alerts() -> list[dict]:
    path = settings().alerts_file
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def loop(airflow_db):
    cfg = settings()
    land(Interval(date(2013, 1, 1), MISSING_DAY), cfg.landing_root)
    runs = {
        "daily": _run("flights_daily", date(2013, 1, 1), {"start_date": "2013-01-01", "end_date": "2013-01-03"}),
        "training": _run("flights_training", SCORED_DAY, {
            "train_start": "2013-01-01", "train_end": "2013-01-03", "validation_days": 1, "holdout_days": 1,
            "n_estimators": 60}),
    }
    # unpaused, as in a deployment: an asset event queues a run only for a DAG that is not paused
    out = subprocess.run([str(Path(sys.executable).with_name("airflow")), "dags", "unpause", "flights_training"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    runs["scored"] = _run("flights_daily", SCORED_DAY)  # a scheduled-style run: its data interval is the day
    return runs


def test_runs_succeed(loop):
    for name, dr in loop.items():
        assert str(dr.state) == "success", f"{name}: {_states(dr)}"


def test_every_layer_holds_every_source_flight_once(loop):
    days = [date(2013, 1, d) for d in range(1, 5)]
    expected = {d: _source_rows(d) for d in days}
    for table in ("bronze.flights", "silver.flights", "gold.flight_features"):
        df = _lake(table)
        counts = df.groupby(df["flight_date"].astype(str)).size().to_dict()
        assert {date.fromisoformat(k): v for k, v in counts.items()} == expected, table
    silver = _lake("silver.flights")
    assert silver["flight_id"].is_unique


def test_bronze_keeps_ingestion_metadata(loop):
    bronze = _lake("bronze.flights")
    assert bronze["_source_file"].str.endswith(".csv").all()
    assert bronze["_run_id"].notna().all() and bronze["_ingested_at"].notna().all()


def test_champion_exists_and_scored_the_day_once_per_flight(loop):
    from include.targets import get_target

    champion = get_target().registry.champion()
    assert champion is not None and champion.version == "1"
    preds = _lake("predictions.flight_delay_risk")
    day = preds[preds["flight_date"].astype(str) == str(SCORED_DAY)]
    assert len(day) == _source_rows(SCORED_DAY) and day["flight_id"].is_unique  # exactly one per flight
    assert set(day["model_version"]) == {"1"}
    built = _lake("gold.feature_days")
    build = built.loc[built["flight_date"].astype(str) == str(SCORED_DAY), "feature_build"].tolist()
    assert len(build) == 1 and len(build[0]) == 16  # the day's one feature build, recorded by build_features
    assert set(day["feature_build"]) == set(build)  # every prediction names the features it was computed from
    assert day["delay_probability"].between(0, 1).all()
    assert set(preds["flight_date"].astype(str)) == {str(SCORED_DAY)}  # no champion before: nothing else scored


def test_warehouse_matches_the_lake(loop):
    assert _wh(f"SELECT count(*) FROM analytics.flight_delay_predictions WHERE flight_date = DATE '{SCORED_DAY}'") \
        == [(_source_rows(SCORED_DAY),)]
    assert _wh("SELECT count(*) FROM analytics.flight_outcomes")[0][0] == sum(
        _source_rows(date(2013, 1, d)) for d in range(1, 5))
    joined = _wh("SELECT count(*), count(actual_is_delayed) FROM analytics.prediction_outcomes")[0]
    assert joined[0] == _source_rows(SCORED_DAY) and joined[1] > 0.9 * joined[0]
    built = _lake("gold.feature_days")
    build = built.loc[built["flight_date"].astype(str) == str(SCORED_DAY), "feature_build"].tolist()
    assert _wh("SELECT DISTINCT model_version, feature_build FROM analytics.prediction_outcomes") == [("1", build[0])]


def test_ops_schema_records_pipeline_health(loop):
    tasks = _wh("SELECT DISTINCT dag_id, task_id FROM ops.task_runs WHERE state = 'success'")
    assert ("flights_daily", "load_flight_delay_predictions") in tasks
    assert ("flights_training", "promote_champion") in tasks
    assert _wh("SELECT count(*) FROM ops.task_runs WHERE try_number IS NULL OR duration_s IS NULL")[0][0] == 0
    assert _wh("SELECT count(*) FROM ops.dag_runs WHERE state = 'success'")[0][0] >= 3
    gates = _wh("SELECT suite, success FROM ops.quality_gates")
    assert {("bronze/flights", True), ("bronze/weather", True), ("gold/flight_features", True),
            ("predictions/flight_delay_risk", True)} <= set(gates)
    assert _wh("SELECT action, promoted, cause FROM ops.model_decisions WHERE action <> 'retraining_requested'") \
        == [("promoted", True, f"manual run {loop['training'].run_id}")]


def test_the_scored_days_drift_requests_one_retraining_through_the_asset(loop, airflow_db):
    """The scored day moved from the champion's three training days: request_retraining records it, alerts,
    and its asset event queues flights_training in Airflow's metadata database, as the scheduler will run it."""
    import sqlite3

    assert _states(loop["scored"])["request_retraining"] == "success"
    decisions = _wh("SELECT champion_version, reason, cause, run_id FROM ops.model_decisions "
                    "WHERE action = 'retraining_requested'")
    (version, reason, cause, run_id), = decisions
    assert version == "1" and run_id == loop["scored"].run_id
    alert = [a for a in _alerts() if a["kind"] == "retraining_requested"][-1]
    assert alert["reason"] == reason and alert["run_id"] == run_id
    with sqlite3.connect(airflow_db / "airflow.db") as con:
        events = con.execute("SELECT e.extra, e.source_dag_id, e.source_run_id FROM asset_event e JOIN asset a "
                             "ON a.id = e.asset_id WHERE a.name = 'flights_retraining_requests'").fetchall()
        queued = con.execute("SELECT q.target_dag_id FROM asset_dag_run_queue q JOIN asset a ON a.id = q.asset_id "
                             "WHERE a.name = 'flights_retraining_requests'").fetchall()
    (extra, source_dag, source_run), = events
    assert json.loads(extra)["train_end"] == str(SCORED_DAY) and json.loads(extra)["reason"] == reason
    assert (source_dag, source_run) == ("flights_daily", run_id)
    assert queued == [("flights_training",)]

    # the next run of the day still breaches: it finds the request and its event (read as the task's inlet
    # events, from Airflow), so it is skipped and sends nothing; only its request_retraining runs
    again = _run("flights_daily", SCORED_DAY, mark_success_pattern=r"(?!request_retraining$|resolve_interval$).*")
    assert _states(again)["request_retraining"] == "skipped"
    assert len(_wh("SELECT 1 FROM ops.model_decisions WHERE action = 'retraining_requested'")) == 1
    with sqlite3.connect(airflow_db / "airflow.db") as con:
        assert con.execute("SELECT count(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                           "WHERE a.name = 'flights_retraining_requests'").fetchone()[0] == 1


def test_the_champions_realised_performance_is_recorded_for_the_scored_day(loop):
    from include.training.metrics import evaluate

    labelled = _wh("SELECT delay_probability, actual_is_delayed FROM analytics.prediction_outcomes "
                   "WHERE actual_is_delayed IS NOT NULL")
    want = evaluate([y for _, y in labelled], [p for p, _ in labelled])
    rows = _wh("SELECT scope, period_start, period_end, flights, delayed, auc, log_loss, brier, ece, calibration "
               "FROM ops.model_performance_latest WHERE model_name = 'flights_delay_xgboost' AND model_version = '1'")
    assert {r[0]: (str(r[1])[:10], str(r[2])[:10]) for r in rows} == {
        "day": (str(SCORED_DAY), str(SCORED_DAY)),
        "trailing_7d": (str(SCORED_DAY - timedelta(days=6)), str(SCORED_DAY))}  # only the day was scored
    for scope, _, _, flights, delayed, auc, log_loss, brier, ece, calibration in rows:
        assert (flights, delayed) == (len(labelled), sum(y for _, y in labelled)), scope
        assert (auc, log_loss, brier, ece) == pytest.approx(
            (want["auc"], want["log_loss"], want["brier"], want["ece"]), abs=1e-9), scope
        assert sum(d["flights"] for d in json.loads(calibration)) == len(labelled)


def test_the_scored_days_drift_from_the_champions_training_data_is_recorded(loop):
    from include.drift import SCORE
    from include.features import FEATURES
    from include.targets import get_target

    bundle = get_target().registry.champion()
    rows = _wh("SELECT feature, psi, level, flights, reference_rows FROM ops.feature_drift "
               f"WHERE model_version = '1' AND interval_start = DATE '{SCORED_DAY}'")
    assert sorted(r[0] for r in rows) == sorted(FEATURES + [SCORE])  # every feature and the score, once
    for feature, psi, level, flights, reference_rows in rows:
        assert flights == _source_rows(SCORED_DAY) and reference_rows > 0, feature
        assert psi >= 0 and level in ("stable", "moderate", "major"), feature
    # the reference is the one in the champion's bundle: the rows it was trained on
    spec = json.loads((Path(get_target().registry.bundle_dir(bundle)) / "feature_spec.json").read_text())
    assert {r[0]: r[4] for r in rows} == {c: ref["rows"] for c, ref in spec["reference"].items()}


def test_rerunning_a_scored_day_changes_nothing(loop):
    """The scoring chain rerun with a champion: scoring, its gate and both warehouse loads.

    Reruns of ingestion and features (the jobs before it, marked done here) are proved through the
    scheduler by tests/e2e/test_backfill.py, three ways.
    """
    tables = ["bronze.flights", "silver.flights", "gold.flight_features", "predictions.flight_delay_risk"]
    before = {t: _content_hash(_lake(t)) for t in tables}
    wh_sql = "SELECT * FROM analytics.flight_delay_predictions"
    wh_before = _content_hash(pd.DataFrame(_wh(wh_sql)).drop(columns=[10, 11]))  # run_id, loaded_at
    loaded_before = _wh(f"SELECT max(loaded_at) FROM analytics.flight_delay_predictions "
                        f"WHERE flight_date = DATE '{SCORED_DAY}'")
    dr = _run("flights_daily", SCORED_DAY, mark_success_pattern=r"^(check_landing_files|ingest_bronze|"
                                                                r"enforce_bronze_gate|build_features|"
                                                                r"enforce_gold_gate)$")
    assert str(dr.state) == "success", _states(dr)
    assert {t: s for t, s in _states(dr).items() if t in ("score_flights", "load_flight_delay_predictions")} == {
        "score_flights": "success", "load_flight_delay_predictions": "success"}
    assert _wh(f"SELECT max(loaded_at) FROM analytics.flight_delay_predictions "
               f"WHERE flight_date = DATE '{SCORED_DAY}'") != loaded_before  # the rows were loaded again
    assert {t: _content_hash(_lake(t)) for t in tables} == before
    assert _content_hash(pd.DataFrame(_wh(wh_sql)).drop(columns=[10, 11])) == wh_before
    # the day's realised performance was measured again: recorded twice, one row per period for analysts
    assert _wh("SELECT scope, count(*) FROM ops.model_performance GROUP BY scope ORDER BY scope") == [
        ("day", 2), ("trailing_7d", 2)]
    assert _wh("SELECT count(*) FROM ops.model_performance_latest") == [(2,)]


def test_missing_landing_file_fails_with_the_expected_path(loop):
    path = Path(landing_file(str(settings().landing_root), "weather", MISSING_DAY))
    path.unlink()
    dr = _run("flights_daily", MISSING_DAY)
    assert str(dr.state) == "failed"
    assert _states(dr)["check_landing_files"] == "failed"
    alert = [a for a in _alerts() if a["task_id"] == "check_landing_files"][-1]
    assert str(path) in alert["reason"] and alert["kind"] == "task_failed"
    assert alert["dag_id"] == "flights_daily" and str(MISSING_DAY) in alert["interval"]


def test_malformed_file_fails_the_bronze_gate_and_writes_nothing_downstream(loop):
    path = Path(landing_file(str(settings().landing_root), "flights", MALFORMED_DAY))
    rows = list(csv.reader(path.open()))
    rows[0][rows[0].index("dep_delay")] = "departure_delay"  # a renamed column
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    dr = _run("flights_daily", MALFORMED_DAY)
    states = _states(dr)
    # the ingestion job ran the gate and wrote its result; its enforcement failed the run
    assert str(dr.state) == "failed" and states["ingest_bronze"] == "success"
    assert states["enforce_bronze_gate"] == "failed"
    assert states["build_features"] != "success" and states["load_flight_outcomes"] != "success"
    alert = [a for a in _alerts() if a["kind"] == "quality_gate_failed"][-1]
    assert "missing column(s) ['dep_delay']" in alert["reason"] and "departure_delay" in alert["reason"]
    assert alert["task_id"] == "enforce_bronze_gate" and str(MALFORMED_DAY) in alert["interval"]
    for table in ("silver.flights", "gold.flight_features", "predictions.flight_delay_risk"):
        assert str(MALFORMED_DAY) not in set(_lake(table)["flight_date"].astype(str)), table
    assert _wh(f"SELECT count(*) FROM analytics.flight_outcomes WHERE flight_date = DATE '{MALFORMED_DAY}'") == [(0,)]
    assert path.exists()  # the raw file stays in the landing zone
    failed_gate = _wh("SELECT suite, failed FROM ops.quality_gates WHERE success = false")
    assert any(s == "bronze/flights" and n >= 1 for s, n in failed_gate)


def test_gates_write_data_docs_pages(loop):
    pages = [p for (p,) in _wh("SELECT docs_page FROM ops.quality_gates WHERE docs_page IS NOT NULL")]
    suites = {p.split("/validations/")[1].split("/")[0] for p in pages}
    assert {"bronze_flights", "bronze_weather", "gold_flight_features", "predictions_flight_delay_risk"} <= suites
    assert all(Path(p).exists() for p in pages)


def test_weekly_maintenance_vacuums_without_losing_a_row_or_the_week_of_history(loop):
    from deltalake import DeltaTable

    tables = ["bronze.flights", "silver.flights", "gold.flight_features", "predictions.flight_delay_risk",
              "quarantine.flights"]
    before = {t: _content_hash(_lake(t)) for t in tables}
    dr = _run("flights_maintenance", SCORED_DAY)
    assert str(dr.state) == "success", _states(dr)
    assert {t: _content_hash(_lake(t)) for t in tables} == before
    first = DeltaTable(table_uri(str(settings().lake_root), "silver.flights"), version=0).to_pandas()
    assert len(first) > 0  # the first version, written minutes ago, is still readable


def test_a_corrected_day_records_the_later_day_built_from_it_and_triggers_its_recomputation(loop, airflow_db):
    """Day 3's file is corrected after day 4 was built and scored from it: one flight arrived late after all.

    The replay of day 3 finds day 4 stale (the feature build it has is no longer the one silver gives), records
    it in ``ops.recomputations`` and triggers one range run over it, which Airflow holds queued behind the
    active run. What that run then does is an ordinary range run (``tests/e2e/test_backfill.py``); that a
    rebuilt day is current again, and that an unchanged rerun finds nothing, is in
    ``tests/spark_jobs/test_history.py``. Last in the module: it changes day 3.
    """
    import sqlite3

    from deltalake import DeltaTable

    from include.recompute import RUN_ID_PREFIX

    corrected_day, dependant = SCORED_DAY - timedelta(days=1), SCORED_DAY
    path = Path(landing_file(str(settings().landing_root), "flights", corrected_day))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    late = next(r for r in rows if r["arr_delay"] not in ("", "NA") and -20 <= float(r["arr_delay"]) <= 5)
    late["arr_delay"] = "95"  # on time → delayed: the day's delay rates change
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    built = DeltaTable(table_uri(str(settings().lake_root), "gold.feature_days")).to_pandas()
    build = {str(d): b for d, b in zip(built["flight_date"], built["feature_build"])}

    # the replay of day 3: its jobs, gates and the recompute step (its scoring and loads are not the point here)
    replay = _run("flights_daily", corrected_day, mark_success_pattern=(
        r"(?!(resolve_interval|check_landing_files|ingest_bronze|enforce_bronze_gate|build_features|"
        r"enforce_gold_gate|find_stale_dependants|recompute_stale_days)$).*"))
    states = _states(replay)
    assert str(replay.state) == "success" and states["recompute_stale_days"] == "success", states

    (recorded,) = _wh("SELECT flight_date, reason, cause_run_id, recompute_run_id FROM ops.recomputations")
    day, reason, cause, recompute_id = recorded  # day 4 only: day 5 was refused at its gate, day 6 never landed
    assert str(day) == str(dependant) and cause == replay.run_id and recompute_id.startswith(RUN_ID_PREFIX)
    # the reason names the feature build day 4 was made from, and the one silver gives since the correction
    assert reason.startswith("stale: its silver or a day of its history changed after its features were built "
                             f"(feature build {build[str(dependant)]}, now ")
    assert build[str(dependant)] not in reason.split("now ")[1]
    # until it is recomputed, the warehouse's predictions of day 4 name the build that ops.recomputations calls stale
    assert _wh("SELECT DISTINCT feature_build FROM analytics.flight_delay_predictions "
               f"WHERE flight_date = DATE '{dependant}'") == [(build[str(dependant)],)]
    with sqlite3.connect(airflow_db / "airflow.db") as con:
        triggered = con.execute("SELECT run_id, state, conf, logical_date FROM dag_run WHERE dag_id = 'flights_daily' "
                                f"AND run_id LIKE '{RUN_ID_PREFIX}%'").fetchall()
    (run_id, state, conf, logical_date), = triggered
    conf = json.loads(conf) if isinstance(conf, (str, bytes)) else conf
    assert (run_id, state, logical_date) == (recompute_id, "queued", None)
    assert conf == {"start_date": str(dependant), "end_date": str(dependant)}  # a range run of exactly day 4
