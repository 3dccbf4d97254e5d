"""The ``sns`` alert channel: one message per alert to the topic ``FLIGHTS_SNS_TOPIC_ARN``.

Delivered through the Amazon provider's ``SnsHook`` and the ``aws_default`` connection.
"""

from __future__ import annotations

import os


def send(alert, env=None) -> None:
    from airflow.providers.amazon.aws.hooks.sns import SnsHook

    topic = ((os.environ if env is None else env).get("FLIGHTS_SNS_TOPIC_ARN") or "").strip()
    if not topic:
        raise ValueError("FLIGHTS_SNS_TOPIC_ARN is empty: name the topic for SNS alerts.")
    SnsHook().publish_to_target(target_arn=topic, message=alert.text(), subject=f"[flights] {alert.title}"[:100])
