"""Run a quality gate from a task: validate in Spark, record the outcome, stop the run on failure."""

from __future__ import annotations

import json
import logging
from airflow.sdk.exceptions import AirflowFailException

from include.intervals import Interval
from include.lake import quality_result_uri
from include.quality.suites import describe_failures

log = logging.getLogger(__name__)


class QualityGateFailed(AirflowFailException):
    """The data broke its contract: fail at once (a retry would read the same data)."""

    def __init__(self, message: str, summaries: list[dict]):
        super().__init__(message)
        self.summaries = summaries


def run_gate(target, checks: dict[str, str], interval: Interval, run_id: str, dag_id: str, name: str) -> dict:
    """Validate ``checks`` (suite -> table) over the interval; raise QualityGateFailed if any fails."""
    result_uri = quality_result_uri(target.lake.root, name, interval.key, run_id)
    args = ["--lake", target.lake.root, "--start", str(interval.start), "--end", str(interval.end),
            "--run-id", run_id, "--result", result_uri]
    for suite, table in checks.items():
        args += ["--check", f"{suite}={table}"]
    target.spark.submit("quality_gate", args, name=f"{dag_id}.{name}.{interval.key}")
    result = target.lake.read_json(result_uri)
    for s in result["suites"]:
        target.warehouse.record("ops.quality_gates", {
            "dag_id": dag_id, "run_id": run_id, "suite": s["suite"], "table_name": s.get("table"),
            "interval_start": interval.start, "interval_end": interval.end, "success": s["success"],
            "evaluated": s["evaluated"], "failed": s["failed_count"], "row_count": s["row_count"],
            "details": json.dumps(s["failed"], default=str)[:20000],
        })
        log.info("%s: %s (%d evaluated, %d failed, %d rows)", s["suite"], "PASSED" if s["success"] else "FAILED",
                 s["evaluated"], s["failed_count"], s["row_count"])
    if not result["success"]:
        failed = [s for s in result["suites"] if not s["success"]]
        message = "\n".join(describe_failures(s) for s in failed)
        message += f"\nNothing downstream was written for {interval}. Result: {result_uri}"
        raise QualityGateFailed(message, failed)
    return {"result": result_uri, "suites": {s["suite"]: s["row_count"] for s in result["suites"]}}
