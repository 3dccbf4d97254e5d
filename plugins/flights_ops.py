"""Airflow plugin: pipeline-health listener and links from tasks to MLflow and to Data Docs.

The listener records every DAG run and task outcome (state, duration, try number) into
the warehouse's ``ops`` schema, so operators and analysts query pipeline health with SQL.
Recording never fails a task: a warehouse problem is logged and the run goes on.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)


def _record(table: str, row: dict) -> None:
    try:
        from include.targets import get_target

        get_target().warehouse.record(table, row)
    except Exception:
        log.warning("Could not record %s into the warehouse", table, exc_info=True)


def _duration(start, end) -> float | None:
    if start is None:
        return None
    end = end or datetime.now(timezone.utc)
    return round((end - start).total_seconds(), 3)


def _naive(ts):
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts is not None else None


class OpsListener:
    def _task(self, ti, state: str, error=None) -> None:
        start = getattr(ti, "start_date", None)
        end = getattr(ti, "end_date", None) or datetime.now(timezone.utc)
        _record("ops.task_runs", {
            "dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id,
            "map_index": getattr(ti, "map_index", -1), "try_number": getattr(ti, "try_number", None),
            "state": state, "start_date": _naive(start), "end_date": _naive(end),
            "duration_s": _duration(start, end), "error": str(error)[:4000] if error else None,
        })

    @hookimpl
    def on_task_instance_success(self, previous_state, task_instance):
        self._task(task_instance, "success")

    @hookimpl
    def on_task_instance_failed(self, previous_state, task_instance, error):
        self._task(task_instance, "failed", error)

    def _dag_run(self, dag_run, state: str) -> None:
        _record("ops.dag_runs", {
            "dag_id": dag_run.dag_id, "run_id": dag_run.run_id, "run_type": str(getattr(dag_run, "run_type", "")),
            "state": state, "logical_date": _naive(getattr(dag_run, "logical_date", None)),
            "start_date": _naive(dag_run.start_date), "end_date": _naive(dag_run.end_date),
            "duration_s": _duration(dag_run.start_date, dag_run.end_date),
        })

    @hookimpl
    def on_dag_run_success(self, dag_run, msg):
        self._dag_run(dag_run, "success")

    @hookimpl
    def on_dag_run_failed(self, dag_run, msg):
        self._dag_run(dag_run, "failed")


class MlflowRunLink(BaseOperatorLink):
    """On tasks that log to MLflow (register_model): a link to the run."""

    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        try:
            from airflow.models import XCom

            return XCom.get_value(ti_key=ti_key, key="mlflow_run_url") or ""
        except Exception:
            return ""


class DataDocsLink(BaseOperatorLink):
    """On the gate tasks (enforce_bronze_gate, enforce_gold_gate, enforce_predictions_gate): the Data Docs page."""

    name = "Data Docs"

    def get_link(self, operator, *, ti_key) -> str:
        try:
            from airflow.models import XCom

            value = XCom.get_value(ti_key=ti_key, key="return_value")
        except Exception:
            return ""
        pages = list((value or {}).get("docs", {}).values()) if isinstance(value, dict) else []
        if not pages:
            return ""
        page = pages[0]
        return page if "://" in page else f"file://{page}"


class FlightsOpsPlugin(AirflowPlugin):
    name = "flights_ops"
    listeners = [OpsListener()]
    global_operator_extra_links = [MlflowRunLink(), DataDocsLink()]
