"""Enforce a quality gate from a task: record the outcome the gate's validations wrote, stop the run on failure.

The daily jobs validate their own tables after their commits (``spark_jobs.quality_gate.run_gate``);
``enforce`` is what ``enforce_<gate>_gate`` runs. ``run_gate`` validates an interval again through
the gate's own job, then enforces it.
"""

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


def result_uri(target, name: str, interval: Interval, run_id: str) -> str:
    return quality_result_uri(target.lake.root, name, interval.key, run_id)


def run_gate(target, checks: dict[str, str], interval: Interval, run_id: str, dag_id: str, name: str) -> dict:
    """Validate ``checks`` (suite -> table) over the interval; raise QualityGateFailed if any fails."""
    uri = result_uri(target, name, interval, run_id)
    args = ["--lake", target.lake.root, "--start", str(interval.start), "--end", str(interval.end),
            "--run-id", run_id, "--result", uri]
    for suite, table in checks.items():
        args += ["--check", f"{suite}={table}"]
    target.spark.submit("quality_gate", args, name=f"{dag_id}.{name}_gate.{interval.key}")
    return enforce(target, uri, interval, run_id, dag_id)


def enforce(target, uri: str, interval: Interval, run_id: str, dag_id: str) -> dict:
    """Record every suite's outcome in ``ops.quality_gates``; raise QualityGateFailed if one failed."""
    result = target.lake.read_json(uri)
    for s in result["suites"]:
        target.warehouse.record("ops.quality_gates", {
            "dag_id": dag_id, "run_id": run_id, "suite": s["suite"], "table_name": s.get("table"),
            "interval_start": interval.start, "interval_end": interval.end, "success": s["success"],
            "evaluated": s["evaluated"], "failed": s["failed_count"], "row_count": s["row_count"],
            "quarantined": s.get("quarantined", 0), "docs_page": s.get("docs_page"),
            "warnings": "\n".join(s.get("warnings") or []) or None,
            "details": json.dumps(s["failed"], default=str)[:20000],
        })
        log.info("%s: %s (%d evaluated, %d failed, %d rows kept, %d quarantined). Data Docs: %s",
                 s["suite"], "PASSED" if s["success"] else "FAILED", s["evaluated"], s["failed_count"],
                 s["row_count"], s.get("quarantined", 0), s.get("docs_page"))
        for w in s.get("warnings") or []:
            log.warning("Schema drift accepted: %s", w)
        if s.get("quarantine_reasons"):
            log.warning("Quarantined rows by reason: %s", s["quarantine_reasons"])
    if not result["success"]:
        failed = [s for s in result["suites"] if not s["success"]]
        message = "\n".join(describe_failures(s) for s in failed)
        message += f"\nNothing downstream was written for {interval}; the raw files stay in the landing zone."
        message += f"\nSummary: {uri}"
        raise QualityGateFailed(message, failed)
    return {"result": uri, "suites": {s["suite"]: s["row_count"] for s in result["suites"]},
            "quarantined": {s["suite"]: s.get("quarantined", 0) for s in result["suites"]},
            "docs": {s["suite"]: s.get("docs_page") for s in result["suites"] if s.get("docs_page")}}
