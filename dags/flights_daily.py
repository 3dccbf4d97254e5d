"""
### flights_daily

Each day's New York flights, from the landing zone to the warehouse:

1. **check_landing_files** – the interval's flights and weather files are there (else fail, naming the path);
2. **ingest_bronze** – Spark: landing CSVs → `bronze.flights`, `bronze.weather` (+ dimension snapshots);
   rejected files are recorded in `bronze.landing_files`, rows breaking a row-level expectation go to
   `quarantine.flights` / `quarantine.weather` with their reasons; then, in the same Spark session, the
   bronze gate's Great Expectations suites on the kept rows, file checks, daily volume and quarantined
   share (no job start of its own);
3. **enforce_bronze_gate** – records the gate's result and, on a failure, stops the run and alerts with
   the Data Docs page;
4. **build_features** – Spark: bronze → `silver.*` (typed, deduplicated, MERGE) → `gold.flight_features`,
   then the gold gate's suite in the same session;
5. **enforce_gold_gate** – the gate on gold;
6. **find_stale_dependants** → **recompute_stale_days** – later days whose features were built from this
   interval's earlier silver (a replayed or corrected file, released quarantine rows, a late delivery) are
   recorded in `ops.recomputations` with why, and one range run of this DAG over them is triggered; both
   are skipped when nothing is stale;
7. **find_champion** → **score_flights** → **enforce_predictions_gate** – the registry's `champion` scores
   gold into `predictions.flight_delay_risk`, behind the predictions gate (skipped, with a log line, until
   a champion exists); the drift of every feature and of the score from the champion's training data
   goes to `ops.feature_drift`;
8. **load_flight_outcomes**, **load_flight_delay_predictions** – each replaces the interval in its
   `analytics` table;
9. **evaluate_realised_performance** – the loaded predictions against the loaded outcomes, per model
   version: AUC, log loss, Brier score, ECE and calibration by decile, per day and over the trailing
   7 days, into `ops.model_performance` (skipped with the scoring);
10. **request_retraining** – the champion against the `FLIGHTS_RETRAIN_*` thresholds (realised AUC drop,
   calibration error, PSI of the watched features and of the score): the first breach of a champion is
   recorded in `ops.model_decisions`, alerted, and starts `flights_training` through the
   `flights_retraining_requests` asset; otherwise skipped, with the reason in its log.

The task graph is the same on every target; `FLIGHTS_TARGET` picks where each step runs: spark-submit and
DuckDB/PostgreSQL on `local`; EMR and Redshift on `aws`; Dataproc and BigQuery on `gcp`.

A scheduled run covers its data interval (one day). A manual run may cover a range through the
`start_date` / `end_date` params; rerunning any interval rewrites exactly its partitions.
`release_quarantined` (with `release_reason`) releases the interval's held quarantine rows, and
`accept_dimension_change` lets a dimension snapshot that really shrank (a carrier left) pass the
change gate for this run.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task

from include import pipeline
from include.dag_defaults import default_args
from include.retraining import requests_asset
from include.steps import get_steps

RETRAINING_REQUESTS = requests_asset()

# Comma-separated dimension names or nothing. (?![\s\S]) is the end of the input for Python's and the
# browser's regex alike ($ would let a trailing newline through in Python).
DIMENSIONS_PATTERN = r"^((planes|airlines|airports)(,(planes|airlines|airports))*)?(?![\s\S])"
# ASCII digits only (\d also matches other scripts' digits); maxLength refuses a trailing newline.
DATE_PARAM = {"type": ["null", "string"], "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "maxLength": 10}


@dag(
    dag_id="flights_daily",
    schedule="@daily",
    start_date=datetime(2013, 1, 1, tzinfo=timezone.utc),
    end_date=datetime(2013, 12, 31, tzinfo=timezone.utc),
    catchup=True,
    max_active_runs=1,
    default_args=default_args(),
    tags=["flights", "lakehouse", "daily", "quality", "warehouse"],
    params={
        "start_date": Param(None, description="First flight date of a manual range run (YYYY-MM-DD)", **DATE_PARAM),
        "end_date": Param(None, description="Last flight date of a manual range run (YYYY-MM-DD)", **DATE_PARAM),
        "release_quarantined": Param(False, type="boolean",
                                     description="Release the interval's held quarantine rows into silver"),
        # optional text params are nullable with a None default: the UI's trigger form holds its Trigger button
        # back while a non-nullable string is empty, so a plain run could not be triggered from the UI
        "release_reason": Param(None, type=["null", "string"], maxLength=500,
                                description="Why the rows are released (recorded)"),
        "accept_dimension_change": Param(
            None, type=["null", "string"], maxLength=40, pattern=DIMENSIONS_PATTERN,
            description="Dimension snapshots this run may shrink past the change gate (comma-separated: planes, "
                        "airlines, airports), when the change is real"),
    },
    doc_md=__doc__,
)
def flights_daily():
    steps = get_steps()  # the target chosen by FLIGHTS_TARGET builds the Spark, gate, scoring and load tasks

    @task
    def resolve_interval(**context) -> dict:
        return pipeline.resolve(context)

    @task
    def check_landing_files(interval: dict) -> dict:
        return pipeline.check_landing(pipeline.as_interval(interval))

    interval = resolve_interval()
    landed = check_landing_files(interval)
    bronze = steps.spark("ingest_bronze", interval)  # with the bronze gate's validations, in its Spark session
    bronze_ok = steps.gate(bronze, interval)
    features = steps.spark("build_features", interval)  # with the gold gate's
    gold_ok = steps.gate(features, interval)
    scoring = steps.score("score_flights", interval)
    @task
    def evaluate_realised_performance(interval: dict, **context) -> dict:
        return pipeline.evaluate_realised_performance(context, pipeline.as_interval(interval))

    # one at a time across runs (a backfill's runs, beside the scheduled one): it reads, then records, a request;
    # it reads the asset's past events to find a request whose event never went out
    @task(inlets=[RETRAINING_REQUESTS], outlets=[RETRAINING_REQUESTS], max_active_tis_per_dag=1)
    def request_retraining(interval: dict, **context) -> dict:
        return pipeline.request_retraining(context, pipeline.as_interval(interval), RETRAINING_REQUESTS)

    # corrections flow downstream: later days built from this interval's earlier silver are recorded, then
    # recomputed by one range run (include.recompute); both are skipped when none is stale
    @task
    def find_stale_dependants(interval: dict, gate: str, **context) -> dict:
        return pipeline.find_stale_dependants(context, pipeline.as_interval(interval), gate)

    stale = "ti.xcom_pull(task_ids='find_stale_dependants')"
    recompute = TriggerDagRunOperator(
        task_id="recompute_stale_days", trigger_dag_id="flights_daily", logical_date=None,
        trigger_run_id="{{ %s['run_id'] }}" % stale,
        conf={"start_date": "{{ %s['conf']['start_date'] }}" % stale,
              "end_date": "{{ %s['conf']['end_date'] }}" % stale},
        skip_when_already_exists=True,  # a retried trigger finds the run it started
    )

    landed >> bronze >> bronze_ok >> features >> gold_ok >> scoring
    gold_ok >> find_stale_dependants(interval, features) >> recompute
    evaluated = evaluate_realised_performance(interval)
    steps.load_warehouse("load_warehouse", interval, scoring) >> evaluated >> request_retraining(interval)


flights_daily()
