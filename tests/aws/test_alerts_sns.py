"""An alert sent through the SNS channel (include.targets.aws.sns) reaches an SQS queue subscribed to the topic (moto)."""

from __future__ import annotations

import json
from dataclasses import replace

from include.alerts import Alert, ChannelNotifier
from include.config import load_settings


def test_sns_alert_lands_in_the_subscribed_queue(boto, monkeypatch):
    sns, sqs = boto("sns"), boto("sqs")
    topic = sns.create_topic(Name="flights-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="flights-alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    monkeypatch.setenv("FLIGHTS_SNS_TOPIC_ARN", topic)
    cfg = replace(load_settings(), alert_channels=("sns",))
    # The channel uses SnsHook and the aws_default connection, which the fixture points at the emulator.
    ChannelNotifier(cfg).send(Alert(kind="task_failed", title="flights_daily.ingest_bronze failed",
                                    reason="EMR job run 00abc ended FAILED", dag_id="flights_daily",
                                    task_id="ingest_bronze", run_id="scheduled__2013-01-01", interval="2013-01-01"))
    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])
    assert len(messages) == 1
    envelope = json.loads(messages[0]["Body"])
    assert envelope["Subject"] == "[flights] flights_daily.ingest_bronze failed"
    assert "Reason: EMR job run 00abc ended FAILED" in envelope["Message"]
    assert "Interval: 2013-01-01" in envelope["Message"]
