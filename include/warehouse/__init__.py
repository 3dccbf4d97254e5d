"""The warehouse analysts query: an ``analytics`` schema and an ``ops`` schema.

``analytics.flight_delay_predictions`` holds one row per flight and scoring interval's
model, ``analytics.flight_outcomes`` the actual outcomes once known, and the view
``analytics.prediction_outcomes`` joins them. ``ops`` records pipeline health: DAG and
task runs, quality gates, model decisions, alerts, realised performance, drift and
recomputations. Loads replace exactly an interval inside one transaction, so reruns never
duplicate a row and readers never see half a day.
"""

from __future__ import annotations

from pathlib import Path

from include.config import ConfigError, Settings

# Columns loaded from the lake's Parquet exports, per warehouse table.
LOADS = {
    "analytics.flight_delay_predictions": [
        "flight_id", "flight_date", "carrier", "flight", "origin", "dest", "sched_dep_ts",
        "delay_probability", "model_name", "model_version", "run_id", "feature_build",
    ],
    "analytics.flight_outcomes": ["flight_id", "flight_date", "dep_delay", "arr_delay", "is_delayed", "cancelled"],
}

DDL = [
    "CREATE SCHEMA IF NOT EXISTS analytics",
    "CREATE SCHEMA IF NOT EXISTS ops",
    """CREATE TABLE IF NOT EXISTS analytics.flight_delay_predictions (
        flight_id VARCHAR(64) PRIMARY KEY,
        flight_date DATE NOT NULL,
        carrier VARCHAR(8), flight INTEGER, origin VARCHAR(8), dest VARCHAR(8),
        sched_dep_ts TIMESTAMP,
        delay_probability DOUBLE PRECISION NOT NULL,
        model_name VARCHAR(128) NOT NULL, model_version VARCHAR(32) NOT NULL,
        run_id VARCHAR(256),
        loaded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS analytics.flight_outcomes (
        flight_id VARCHAR(64) PRIMARY KEY,
        flight_date DATE NOT NULL,
        dep_delay DOUBLE PRECISION, arr_delay DOUBLE PRECISION,
        is_delayed INTEGER, cancelled BOOLEAN,
        loaded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    # which silver (its day's and its history window's) the features of a prediction were computed from:
    # gold.feature_days' build of the day; NULL on rows loaded before predictions carried it
    "ALTER TABLE analytics.flight_delay_predictions ADD COLUMN IF NOT EXISTS feature_build VARCHAR(16)",
    """CREATE OR REPLACE VIEW analytics.prediction_outcomes AS
        SELECT p.flight_id, p.flight_date, p.carrier, p.flight, p.origin, p.dest, p.sched_dep_ts,
               p.delay_probability, p.model_version,
               o.arr_delay, o.is_delayed AS actual_is_delayed, o.cancelled, p.feature_build
        FROM analytics.flight_delay_predictions p
        LEFT JOIN analytics.flight_outcomes o ON o.flight_id = p.flight_id""",
    """CREATE TABLE IF NOT EXISTS ops.dag_runs (
        dag_id VARCHAR(250), run_id VARCHAR(250), run_type VARCHAR(50), state VARCHAR(20),
        logical_date TIMESTAMP, start_date TIMESTAMP, end_date TIMESTAMP, duration_s DOUBLE PRECISION,
        recorded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS ops.task_runs (
        dag_id VARCHAR(250), task_id VARCHAR(250), run_id VARCHAR(250), map_index INTEGER,
        try_number INTEGER, state VARCHAR(20), start_date TIMESTAMP, end_date TIMESTAMP,
        duration_s DOUBLE PRECISION, error TEXT,
        recorded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS ops.quality_gates (
        dag_id VARCHAR(250), run_id VARCHAR(250), suite VARCHAR(128), table_name VARCHAR(128),
        interval_start DATE, interval_end DATE, success BOOLEAN, evaluated INTEGER, failed INTEGER,
        row_count BIGINT, details TEXT,
        recorded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    "ALTER TABLE ops.quality_gates ADD COLUMN IF NOT EXISTS quarantined BIGINT",
    "ALTER TABLE ops.quality_gates ADD COLUMN IF NOT EXISTS docs_page TEXT",
    "ALTER TABLE ops.quality_gates ADD COLUMN IF NOT EXISTS warnings TEXT",
    """CREATE TABLE IF NOT EXISTS ops.model_decisions (
        model_name VARCHAR(128), challenger_version VARCHAR(32), champion_version VARCHAR(32),
        promoted BOOLEAN, reason TEXT, challenger_auc DOUBLE PRECISION, champion_auc DOUBLE PRECISION,
        baseline_auc DOUBLE PRECISION, run_id VARCHAR(250),
        recorded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    # what was decided (promoted, refused, rollback, retraining_requested) and what caused the decision: the
    # schedule, a manual run, or the breach that requested the retraining (include.retraining)
    "ALTER TABLE ops.model_decisions ADD COLUMN IF NOT EXISTS action VARCHAR(32)",
    "ALTER TABLE ops.model_decisions ADD COLUMN IF NOT EXISTS cause TEXT",
    # One row per alert raised, and whether the noisy channels delivered it (include.alert_policy).
    # ``run_interval`` and ``raised_at``: INTERVAL and AT are reserved words in BigQuery.
    """CREATE TABLE IF NOT EXISTS ops.alerts (
        fingerprint VARCHAR(64), kind VARCHAR(64), dag_id VARCHAR(250), task_id VARCHAR(250),
        run_id VARCHAR(250), run_interval VARCHAR(250), reason TEXT, delivered BOOLEAN,
        suppressed_by VARCHAR(32), raised_at TIMESTAMP,
        recorded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    # Realised performance of each model version once outcomes are in (include.monitoring): per day and
    # over the trailing 7 days. Appended on every evaluation; the view keeps the latest per period.
    """CREATE TABLE IF NOT EXISTS ops.model_performance (
        model_name VARCHAR(128), model_version VARCHAR(32), scope VARCHAR(16),
        period_start DATE, period_end DATE, flights INTEGER, delayed INTEGER,
        auc DOUBLE PRECISION, log_loss DOUBLE PRECISION, brier DOUBLE PRECISION, ece DOUBLE PRECISION,
        calibration TEXT, run_id VARCHAR(250),
        recorded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    # Population Stability Index of each feature and of the score of a scored interval against the
    # scoring version's training data (include.drift): one row per column and scoring run.
    """CREATE TABLE IF NOT EXISTS ops.feature_drift (
        model_name VARCHAR(128), model_version VARCHAR(32), interval_start DATE, interval_end DATE,
        feature VARCHAR(64), psi DOUBLE PRECISION, level VARCHAR(16), flights BIGINT, reference_rows BIGINT,
        run_id VARCHAR(250),
        recorded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    # Days whose features were built from silver that changed later, and the flights_daily run that
    # recomputes them (include.recompute): one row per stale day and cause.
    """CREATE TABLE IF NOT EXISTS ops.recomputations (
        flight_date DATE, reason TEXT, cause_dag_id VARCHAR(250), cause_run_id VARCHAR(250),
        cause_start DATE, cause_end DATE, recompute_run_id VARCHAR(250),
        recorded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)""",
    """CREATE OR REPLACE VIEW ops.model_performance_latest AS
        SELECT model_name, model_version, scope, period_start, period_end, flights, delayed,
               auc, log_loss, brier, ece, calibration, run_id, recorded_at
        FROM (SELECT m.*, ROW_NUMBER() OVER (
                  PARTITION BY model_name, model_version, scope, period_start, period_end
                  ORDER BY recorded_at DESC) AS latest
              FROM ops.model_performance m) ranked
        WHERE latest = 1""",
]

OPS_TABLES = ("ops.dag_runs", "ops.task_runs", "ops.quality_gates", "ops.model_decisions", "ops.alerts",
              "ops.model_performance", "ops.feature_drift", "ops.recomputations")


def make_warehouse(cfg: Settings, lake=None):
    """The DuckDB or PostgreSQL warehouse of ``FLIGHTS_WAREHOUSE``, reading exports through ``lake``.

    A cloud target with its own warehouse (Redshift, BigQuery) builds that one itself and calls
    this for the two that run anywhere.
    """
    fetch = lake.local_dir if lake is not None else Path
    if cfg.warehouse == "postgres":
        from include.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(cfg.warehouse_conn_id, fetch)
    if cfg.warehouse == "duckdb":
        from include.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(cfg.duckdb_path, fetch)
    raise ConfigError(f"FLIGHTS_WAREHOUSE={cfg.warehouse} is built by its cloud target, not include.warehouse.")
