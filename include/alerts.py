"""Alerts: task failures, failed quality gates, rejected challengers, champion rollbacks.

Every alert goes to the alert file and the log; Slack (webhook connection), e-mail
(SMTP connection), SNS and Pub/Sub are added with ``FLIGHTS_ALERT_CHANNELS`` (delivery:
``include.notify``). A channel that fails to deliver is logged and never fails the pipeline
in its place. On those four, repeats of one cause are delivered once per dedupe window and a
burst of alerts becomes one ``alert_storm`` summary (``include.alert_policy``); the alert file
keeps every alert.

DAG files import this module at parse time: provider hooks are imported inside the
channel methods, never at the top.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import BaseNotifier

from include.notify import ChannelNotifier, default_sender, slack_escape  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# Tasks whose return value is the run's interval: flights_daily, then flights_training.
INTERVAL_TASKS = ("resolve_interval", "resolve_window")


@dataclass
class Alert:
    # task_failed | quality_gate_failed | model_rejected | model_rollback | retraining_requested | alert_storm
    kind: str
    title: str
    reason: str
    dag_id: str = ""
    task_id: str = ""
    run_id: str = ""
    interval: str = ""
    log_url: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def text(self) -> str:
        """The plain-text message every channel delivers: title, DAG, task, run, interval, reason, log."""
        lines = [f"[flights] {self.title}"]
        if self.dag_id or self.task_id or self.run_id:  # a storm summary names no single task
            lines.append(f"DAG {self.dag_id} / task {self.task_id} / run {self.run_id}")
        if self.interval:
            lines.append(f"Interval: {self.interval}")
        lines.append(f"Reason: {self.reason}")
        if self.log_url:
            lines.append(f"Log: {self.log_url}")
        return "\n".join(lines)


def send_alert(alert: Alert) -> None:
    """Deliver an alert through the current target's notifier (its dedupe state in the target's warehouse)."""
    from include.targets import get_target

    target = get_target()
    if isinstance(target.notifier, ChannelNotifier) and target.notifier.warehouse is None:
        target.notifier.warehouse = target.warehouse
    target.notifier.send(alert)


def interval_of(context: dict) -> str:
    """The run's interval (or training window) as ``start`` or ``start..end``; the data interval otherwise."""
    ti = context.get("ti")
    for task_id in INTERVAL_TASKS if ti is not None else ():
        try:
            value = ti.xcom_pull(task_ids=task_id)
        except Exception:  # the failure callback must alert even when XCom is unreachable
            value = None
        if isinstance(value, dict) and "start" in value:
            return value["start"] if value["start"] == value.get("end") else f"{value['start']}..{value['end']}"
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    return f"{start}..{end}" if start else ""


class FailureAlert(BaseNotifier):
    """``on_failure_callback`` for every task: one alert naming the DAG, task, interval, reason and log."""

    template_fields = ()

    def notify(self, context: dict) -> None:
        from include.quality.gate import QualityGateFailed

        ti = context.get("ti")
        exc = context.get("exception")
        where = f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')}"
        kind, title = "task_failed", f"{where} failed"
        gate: list[dict] = []
        if isinstance(exc, QualityGateFailed):
            kind, title, gate = "quality_gate_failed", f"Quality gate failed in {where}", exc.summaries
        send_alert(
            Alert(
                kind=kind,
                title=title,
                reason=str(exc) if exc else "unknown error (see the log)",
                dag_id=getattr(ti, "dag_id", ""),
                task_id=getattr(ti, "task_id", ""),
                run_id=getattr(ti, "run_id", "") or context.get("run_id", ""),
                interval=interval_of(context),
                log_url=getattr(ti, "log_url", "") or "",
                details={"try_number": getattr(ti, "try_number", None), "gate": gate},
            )
        )
