"""Delivering an alert (``include.alerts.Alert``) to every channel of ``FLIGHTS_ALERT_CHANNELS``.

``file``, ``slack`` and ``smtp`` work on every target; ``sns`` and ``pubsub`` are delivered by
their cloud's package (``include.targets.aws.sns``, ``include.targets.gcp.pubsub``), each reading
its own settings. This module imports neither ``include.alerts`` nor ``include.targets``, so the
targets can build their notifier without an import cycle.

The file channel receives every alert (the audit log). The others are the noisy channels: what
reaches them is decided by ``include.alert_policy`` (one delivery per cause per dedupe window,
one summary per alert storm), from the warehouse's ``ops.alerts``.
"""

from __future__ import annotations

import html
import importlib
import json
import logging
import socket
from dataclasses import asdict, replace
from typing import Any

from include.alert_policy import STORM_KIND, AlertPolicy
from include.config import Settings

log = logging.getLogger(__name__)

SLACK_TIMEOUT_S = 30
# channel -> the module whose ``send(alert)`` delivers it
CLOUD_CHANNELS = {"sns": "include.targets.aws.sns", "pubsub": "include.targets.gcp.pubsub"}
CHANNELS = ("file", "slack", "smtp", *CLOUD_CHANNELS)


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn reads as markup (``<...>`` is a link or mention)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def default_sender() -> str:
    """Sender of alert e-mails when the SMTP connection has no ``from_email`` extra."""
    return f"flights-alerts@{socket.gethostname() or 'localhost'}"


class ChannelNotifier:
    """Delivers an Alert to every configured channel: all of them to the file, the rest through the policy.

    Args:
        cfg: the settings (channels, thresholds).
        warehouse: where ``ops.alerts`` lives (a ``Warehouse``); the current target's when None.
        policy: the ``AlertPolicy`` to use (tests pass one with their own clock); built on first use otherwise.
    """

    def __init__(self, cfg: Settings, *, warehouse: Any = None, policy: AlertPolicy | None = None):
        self.cfg = cfg
        self.warehouse = warehouse
        self._policy = policy

    @property
    def policy(self) -> AlertPolicy:
        if self._policy is None:
            self._policy = AlertPolicy(self.cfg, lambda: self.warehouse)
        return self._policy

    def send(self, alert) -> None:
        log.warning("ALERT %s: %s", alert.kind, alert.text())
        noisy = [c for c in self.cfg.alert_channels if c != "file"]
        decision = self.policy.decide(alert) if noisy else None
        if "file" in self.cfg.alert_channels:
            filed = alert if decision is None else replace(
                alert, details={**(alert.details or {}), "alert_policy": decision.as_details()})
            self._deliver("file", filed)
            for extra in decision.deliver if decision else ():
                if extra.kind == STORM_KIND:  # a storm summary is an alert of its own
                    self._deliver("file", extra)
        if decision is not None and decision.suppressed_by:
            log.info("Alert %s held on %s (%s): %s.", alert.kind, ", ".join(noisy), decision.suppressed_by,
                     decision.why)
        for message in decision.deliver if decision else ():
            for channel in noisy:
                self._deliver(channel, message)

    def _deliver(self, channel: str, alert) -> None:
        try:
            if channel in CLOUD_CHANNELS:
                importlib.import_module(CLOUD_CHANNELS[channel]).send(alert)
            else:
                getattr(self, f"_send_{channel}")(alert)
        except Exception:  # one broken channel must not hide the alert from the others
            log.exception("Alert channel %s failed to deliver %s", channel, alert.kind)

    def _send_file(self, alert) -> None:
        path = self.cfg.alerts_file
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(alert), default=str) + "\n")

    def _send_slack(self, alert) -> None:
        """Post to the incoming webhook of the ``slackwebhook`` connection (URL = host + token)."""
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        hook = SlackWebhookHook(slack_webhook_conn_id=self.cfg.slack_conn_id, timeout=SLACK_TIMEOUT_S)
        hook.send(text=slack_escape(alert.text()), unfurl_links=False)

    def _send_smtp(self, alert) -> None:
        """Send one e-mail through the SMTP connection; the sender is its ``from_email`` extra."""
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        if not self.cfg.alert_emails:
            raise ValueError("FLIGHTS_ALERT_EMAILS is empty: name the recipients of e-mail alerts.")
        with SmtpHook(smtp_conn_id=self.cfg.smtp_conn_id) as hook:
            # The hook refuses to send without a sender, and a connection often names none.
            hook.send_email_smtp(to=list(self.cfg.alert_emails), subject=f"[flights] {alert.title}",
                                 from_email=hook.from_email or default_sender(),
                                 html_content="<pre>" + html.escape(alert.text()) + "</pre>")



