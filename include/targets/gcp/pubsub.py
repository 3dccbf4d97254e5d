"""The ``pubsub`` alert channel: one message per alert to the topic ``FLIGHTS_GCP_PUBSUB_TOPIC``.

The message body is the alert's text; its attributes (kind, DAG, task, run, interval) let a
subscription filter (``attributes.kind = "quality_gate_failed"``) or route alerts without
parsing the text. Delivered with the Google provider's ``PubSubHook`` and the
``google_cloud_default`` connection.
"""

from __future__ import annotations

import os

ATTRIBUTES = ("kind", "dag_id", "task_id", "run_id", "interval")


def message(alert) -> dict:
    """The Pub/Sub message of an alert: ``data`` (bytes) and string ``attributes``."""
    attributes = {k: str(getattr(alert, k, "") or "")[:1024] for k in ATTRIBUTES}
    attributes["title"] = alert.title[:1024]
    return {"data": alert.text().encode("utf-8"), "attributes": {k: v for k, v in attributes.items() if v}}


def split_topic(topic: str) -> tuple[str, str]:
    """``projects/<project>/topics/<topic>`` → (project, topic)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "topics" or not parts[1] or not parts[3]:
        raise ValueError(f"FLIGHTS_GCP_PUBSUB_TOPIC={topic!r} must be the full name projects/<project>/topics/<t>.")
    return parts[1], parts[3]


def send(alert, env=None, hook=None) -> None:
    topic = ((os.environ if env is None else env).get("FLIGHTS_GCP_PUBSUB_TOPIC") or "").strip()
    if not topic:
        raise ValueError("FLIGHTS_GCP_PUBSUB_TOPIC is empty: name the topic (projects/<p>/topics/<t>) for alerts.")
    project, name = split_topic(topic)
    if hook is None:
        from airflow.providers.google.cloud.hooks.pubsub import PubSubHook

        hook = PubSubHook()
    hook.publish(project_id=project, topic=name, messages=[message(alert)])
