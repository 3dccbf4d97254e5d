"""The ``pubsub`` alert channel through the real Pub/Sub client and PubSubHook, to a gRPC server on loopback.

There is no Pub/Sub emulator on PyPI, so the test serves the one call the channel makes,
``google.pubsub.v1.Publisher/Publish``, with gRPC on 127.0.0.1 and records what arrives. The
client finds it through ``PUBSUB_EMULATOR_HOST``, exactly as it finds Google's emulator.
"""

from __future__ import annotations

import pytest

from include.alerts import Alert, ChannelNotifier
from include.config import load_settings
from tests.gcp.fakes import pubsub_server

TOPIC = "projects/flights-example/topics/flights-alerts"


@pytest.fixture()
def publisher_server(monkeypatch):
    with pubsub_server(monkeypatch) as received:
        yield received


def _alert() -> Alert:
    return Alert(kind="quality_gate_failed", title="Quality gate failed in flights_daily.enforce_bronze_gate",
                 reason="bronze/flights: 3 expectation(s) failed", dag_id="flights_daily",
                 task_id="enforce_bronze_gate", run_id="scheduled__2013-01-02", interval="2013-01-02")


def test_an_alert_is_published_with_filterable_attributes(publisher_server, monkeypatch):
    from dataclasses import replace

    monkeypatch.setenv("FLIGHTS_GCP_PUBSUB_TOPIC", TOPIC)
    from google.auth.credentials import AnonymousCredentials
    from airflow.providers.google.cloud.hooks.pubsub import PubSubHook

    monkeypatch.setattr(PubSubHook, "get_credentials", lambda self: AnonymousCredentials())
    ChannelNotifier(replace(load_settings(), alert_channels=("pubsub",))).send(_alert())
    assert len(publisher_server) == 1
    request = publisher_server[0]
    assert request.topic == TOPIC and len(request.messages) == 1
    message = request.messages[0]
    assert "Reason: bronze/flights: 3 expectation(s) failed" in message.data.decode()
    assert dict(message.attributes) == {
        "kind": "quality_gate_failed", "dag_id": "flights_daily", "task_id": "enforce_bronze_gate",
        "run_id": "scheduled__2013-01-02", "interval": "2013-01-02",
        "title": "Quality gate failed in flights_daily.enforce_bronze_gate"}


def test_a_missing_or_short_topic_is_refused_with_the_fix(monkeypatch):
    from include.targets.gcp import pubsub

    with pytest.raises(ValueError, match="FLIGHTS_GCP_PUBSUB_TOPIC is empty"):
        pubsub.send(_alert(), env={})
    with pytest.raises(ValueError, match="projects/<project>/topics/<t>"):
        pubsub.send(_alert(), env={"FLIGHTS_GCP_PUBSUB_TOPIC": "flights-alerts"})
