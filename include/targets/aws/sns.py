"""The ``sns`` alert channel: one message per alert to the topic ``FLIGHTS_SNS_TOPIC_ARN``.

Delivered through the Amazon provider's ``SnsHook`` and the ``aws_default`` connection, with the
retries of every AWS call of the project (``FLIGHTS_AWS_RETRY_MODE`` / ``FLIGHTS_AWS_MAX_ATTEMPTS``,
read on their own: the channel needs no other AWS setting, so any target may use it).
"""

from __future__ import annotations

import os


def send(alert, env=None) -> None:
    from airflow.providers.amazon.aws.hooks.sns import SnsHook

    from include.targets.aws.settings import botocore_config, retry_settings

    env = os.environ if env is None else env
    topic = (env.get("FLIGHTS_SNS_TOPIC_ARN") or "").strip()
    if not topic:
        raise ValueError("FLIGHTS_SNS_TOPIC_ARN is empty: name the topic for SNS alerts.")
    hook = SnsHook(config=botocore_config(*retry_settings(env)))
    hook.publish_to_target(target_arn=topic, message=alert.text(), subject=f"[flights] {alert.title}"[:100])
