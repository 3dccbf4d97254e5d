"""Alerts: task failures, failed quality gates, rejected challengers, champion rollbacks.

Every alert goes to the alert file and the log; Slack (webhook connection), e-mail
(SMTP connection) and SNS are added with ``FLIGHTS_ALERT_CHANNELS``. A channel that
fails to deliver is logged and never fails the pipeline in its place.

DAG files import this module at parse time: provider hooks are imported inside the
channel methods, never at the top.
"""

from __future__ import annotations

import html
import json
import logging
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import BaseNotifier

from include.config import Settings

log = logging.getLogger(__name__)

SLACK_TIMEOUT_S = 30

# Tasks whose return value is the run's interval: flights_daily, then flights_training.
INTERVAL_TASKS = ("resolve_interval", "resolve_window")


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn reads as markup (``<...>`` is a link or mention)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def default_sender() -> str:
    """Sender of alert e-mails when the SMTP connection has no ``from_email`` extra."""
    return f"flights-alerts@{socket.gethostname() or 'localhost'}"


@dataclass
class Alert:
    kind: str  # task_failed | quality_gate_failed | model_rejected | model_rollback
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
        lines = [f"[flights] {self.title}", f"DAG {self.dag_id} / task {self.task_id} / run {self.run_id}"]
        if self.interval:
            lines.append(f"Interval: {self.interval}")
        lines.append(f"Reason: {self.reason}")
        if self.log_url:
            lines.append(f"Log: {self.log_url}")
        return "\n".join(lines)


class ChannelNotifier:
    """Delivers an Alert to every configured channel."""

    def __init__(self, cfg: Settings):
        self.cfg = cfg

    def send(self, alert: Alert) -> None:
        log.warning("ALERT %s: %s", alert.kind, alert.text())
        for channel in self.cfg.alert_channels:
            try:
                getattr(self, f"_send_{channel}")(alert)
            except Exception:  # one broken channel must not hide the alert from the others
                log.exception("Alert channel %s failed to deliver %s", channel, alert.kind)

    def _send_file(self, alert: Alert) -> None:
        path = self.cfg.alerts_file
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(alert), default=str) + "\n")

    def _send_slack(self, alert: Alert) -> None:
        """Post to the incoming webhook of the ``slackwebhook`` connection (URL = host + token)."""
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        hook = SlackWebhookHook(slack_webhook_conn_id=self.cfg.slack_conn_id, timeout=SLACK_TIMEOUT_S)
        hook.send(text=slack_escape(alert.text()), unfurl_links=False)

    def _send_smtp(self, alert: Alert) -> None:
        """Send one e-mail through the SMTP connection; the sender is its ``from_email`` extra."""
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        if not self.cfg.alert_emails:
            raise ValueError("FLIGHTS_ALERT_EMAILS is empty: name the recipients of e-mail alerts.")
        with SmtpHook(smtp_conn_id=self.cfg.smtp_conn_id) as hook:
            # The hook refuses to send without a sender, and a connection often names none.
            hook.send_email_smtp(to=list(self.cfg.alert_emails), subject=f"[flights] {alert.title}",
                                 from_email=hook.from_email or default_sender(),
                                 html_content="<pre>" + html.escape(alert.text()) + "</pre>")

    def _send_sns(self, alert: Alert) -> None:
        from airflow.providers.amazon.aws.hooks.sns import SnsHook

        if not self.cfg.sns_topic_arn:
            raise ValueError("FLIGHTS_SNS_TOPIC_ARN is empty: name the topic for SNS alerts.")
        SnsHook().publish_to_target(target_arn=self.cfg.sns_topic_arn, message=alert.text(),
                                    subject=f"[flights] {alert.title}"[:100])


def send_alert(alert: Alert) -> None:
    """Deliver an alert through the current target's notifier."""
    from include.targets import get_target

    get_target().notifier.send(alert)


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
