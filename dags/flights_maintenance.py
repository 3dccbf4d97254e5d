"""
### flights_maintenance

Applies the lake's retention policy once a week (`spark_jobs/lake_maintenance.py`):

1. **resolve_interval** – the run's week, or today for a manual run (recorded with the run; the policy itself
   works on the wall clock);
2. **maintain_lake** – Spark: `VACUUM` of every lake table, keeping `retain_hours` of history (7 days at least:
   every version of the last week stays readable and restorable), and deletion of quarantine rows that were
   released or superseded more than `quarantine_retention_days` ago, with their status events. Held rows are
   kept until someone decides on them.

The landing zone is not touched: its files are what every rerun reads, and their retention is the landing
bucket's lifecycle rule. The task graph is the same on every target.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import Param, dag, task

from include import pipeline
from include.dag_defaults import default_args
from include.steps import get_steps


@dag(
    dag_id="flights_maintenance",
    schedule="@weekly",
    start_date=datetime(2013, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["flights", "lakehouse", "maintenance"],
    params={
        "retain_hours": Param(168, type="integer", minimum=168, maximum=24 * 3650,
                              description="Table history VACUUM keeps, in hours (at least 168: 7 days)"),
        "quarantine_retention_days": Param(365, type="integer", minimum=1, maximum=3650,
                                           description="Days a released or superseded quarantine row is kept"),
    },
    doc_md=__doc__,
)
def flights_maintenance():
    steps = get_steps()  # the target chosen by FLIGHTS_TARGET runs the Spark job

    @task
    def resolve_interval(**context) -> dict:
        return pipeline.resolve_maintenance(context)

    steps.spark("maintain_lake", resolve_interval())


flights_maintenance()
