"""Alerts reach people: each path delivered through real SMTP and webhook servers on loopback.

An ``aiosmtpd`` server receives the e-mail sent by the Airflow SMTP provider, and a
local HTTP server stands in for Slack's incoming webhook behind ``SlackWebhookHook``;
both are reached through Airflow connections given as environment variables, exactly
as a deployment configures them. Every test reads the delivered messages and checks
they name the DAG, the task, the interval, the reason and the log URL.
"""

import email
import email.policy
import json
import socket
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from include.alerts import Alert, FailureAlert, default_sender, interval_of, send_alert
from include.config import settings
from include.quality.gate import QualityGateFailed
from include.quality.suites import describe_failures
from include.targets import get_target as real_get_target
from include.targets.base import ModelVersion, SparkJobFailed
from include.training import rollback as rollback_cli
from include.training.promotion import decide

RECIPIENTS = ("oncall@flights.example", "data-platform@flights.example")
WEBHOOK_TOKEN = "T0000/B0000/XXXXXXXX"
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Inbox:
    """aiosmtpd handler: keeps every envelope it is given."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


class _Webhook(BaseHTTPRequestHandler):
    """Answers like Slack's incoming webhook (200 ``ok``) and keeps every request."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                     "body": json.loads(body)})
        status, answer = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


class _HTMLText(HTMLParser):
    """The text an HTML body displays, and the tags it holds."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def smtp_server():
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


@pytest.fixture(scope="module")
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.requests, server.answer = [], (200, b"ok")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@dataclass
class Delivered:
    """What reached each channel during one test."""

    inbox: _Inbox
    webhook: ThreadingHTTPServer

    def emails(self) -> list:
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.inbox.envelopes]

    def email_text(self) -> str:
        """The one e-mail's body as a mail client shows it: the text of the HTML."""
        [msg] = self.emails()
        reader = _HTMLText()
        reader.feed(msg.get_body(preferencelist=("html",)).get_content())
        reader.close()
        assert reader.tags == ["pre"], reader.tags  # nothing in the alert was read as markup
        return "".join(reader.text)

    def slack_text(self) -> str:
        """The one webhook post's text, with Slack's three escapes undone."""
        [request] = self.webhook.requests
        return request["body"]["text"].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

    def filed(self) -> list[dict]:
        path = settings().alerts_file
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def delivered(smtp_server, webhook, tmp_path):
    """Channels file, smtp and slack on, through Airflow connections in the environment."""
    port, inbox = smtp_server
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTS_HOME", str(tmp_path / "home"))  # this test's own alert file and warehouse
        mp.delenv("FLIGHTS_MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("AIRFLOW_CONN_FLIGHTS_SMTP_TEST", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": port,
            # a plain SMTP server: the provider defaults to SMTP_SSL and STARTTLS otherwise
            "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 0}}))
        mp.setenv("AIRFLOW_CONN_FLIGHTS_SLACK_TEST", json.dumps({
            "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{webhook.server_port}/services",
            "password": WEBHOOK_TOKEN}))
        mp.setenv("FLIGHTS_ALERT_CHANNELS", "file,smtp,slack")
        mp.setenv("FLIGHTS_SMTP_CONN_ID", "flights_smtp_test")
        mp.setenv("FLIGHTS_SLACK_CONN_ID", "flights_slack_test")
        mp.setenv("FLIGHTS_ALERT_EMAILS", ",".join(RECIPIENTS))
        for var in PROXY_VARS:  # loopback must not go through a proxy
            mp.delenv(var, raising=False)
        settings.cache_clear()
        inbox.envelopes.clear()
        webhook.requests.clear()
        webhook.answer = (200, b"ok")
        yield Delivered(inbox, webhook)
    settings.cache_clear()


@dataclass
class FakeTI:
    """The parts of Airflow's RuntimeTaskInstance a failure callback reads."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    log_url: str
    xcoms: dict = field(default_factory=dict)

    def xcom_pull(self, task_ids=None, key="return_value", **kwargs):
        return self.xcoms.get(task_ids) if key == "return_value" else None


def _daily_context(task_id: str, exception: BaseException, try_number: int = 1) -> dict:
    """A failure callback's context for flights_daily on 2013-01-04, as Airflow builds it."""
    run_id = "scheduled__2013-01-04T00:00:00+00:00"
    ti = FakeTI("flights_daily", task_id, run_id, try_number,
                f"http://localhost:8080/dags/flights_daily/runs/scheduled__2013-01-04T00%3A00%3A00%2B00%3A00"
                f"/tasks/{task_id}?try_number={try_number}",
                xcoms={"resolve_interval": {"start": "2013-01-04", "end": "2013-01-04"}})
    return {"ti": ti, "task_instance": ti, "run_id": run_id, "exception": exception, "params": {},
            "data_interval_start": datetime(2013, 1, 4, tzinfo=timezone.utc),
            "data_interval_end": datetime(2013, 1, 5, tzinfo=timezone.utc)}


def _assert_delivered(delivered: Delivered, kind: str, *, dag: str, task: str, run: str, interval: str,
                      reason: str, log_url: str) -> dict:
    """E-mail, webhook and alert file carry the same message, naming DAG, task, interval, reason and log."""
    [filed] = delivered.filed()
    assert filed["kind"] == kind
    expected = Alert(**filed).text()
    for channel, text in (("smtp", delivered.email_text()), ("slack", delivered.slack_text())):
        assert text == expected, channel
        assert f"DAG {dag} / task {task} / run {run}" in text, channel
        assert f"\nInterval: {interval}\n" in text, channel
        assert f"\nReason: {reason}\n" in text, channel
        assert text.endswith(f"\nLog: {log_url}"), channel

    [msg] = delivered.emails()
    [envelope] = delivered.inbox.envelopes
    assert msg["Subject"] == f"[flights] {filed['title']}"
    assert sorted(envelope.rcpt_tos) == sorted(RECIPIENTS)
    assert envelope.mail_from == default_sender()  # the connection names no sender: the hook needs one

    [request] = delivered.webhook.requests
    assert request["path"] == f"/services/{WEBHOOK_TOKEN}"  # the webhook URL is the connection's host + token
    assert request["content_type"].startswith("application/json")
    assert "<" not in request["body"]["text"]  # Slack would read <...> as a link or a mention
    return filed


def test_task_failure_alert_names_dag_task_interval_reason_and_log(delivered):
    exc = SparkJobFailed("Spark job flights_daily.build_features.2013-01-04.try2 (gold_flight_features) exited "
                         "with code 1: [UNRESOLVED_COLUMN] `dep_delay` cannot be resolved in <dep_time, arr_time> "
                         "& 17 more")
    context = _daily_context("build_features", exc, try_number=2)

    FailureAlert()(context)  # how Airflow calls an on_failure_callback notifier

    ti = context["ti"]
    filed = _assert_delivered(delivered, "task_failed", dag="flights_daily", task="build_features", run=ti.run_id,
                              interval="2013-01-04", reason=str(exc), log_url=ti.log_url)
    assert filed["title"] == "flights_daily.build_features failed" and filed["details"]["try_number"] == 2


def test_failed_quality_gate_alert_names_each_failed_expectation(delivered):
    summary = {
        "suite": "bronze/flights", "table": "bronze.flights", "success": False, "evaluated": 14,
        "failed_count": 2, "row_count": 842, "interval": "2013-01-04",
        "failed": [
            {"expectation": "expect_column_values_to_be_in_set", "kwargs": {"column": "_source_columns"},
             "observed": {"unexpected": ["departure_delay"]}},
            {"expectation": "expect_column_values_to_not_be_null", "kwargs": {"column": "distance_num"},
             "observed": {"unexpected_count": 1, "partial_unexpected_list": ["far"]}},
        ],
    }
    message = describe_failures(summary) + "\nNothing downstream was written for 2013-01-04. Result: /lake/_quality/x"
    context = _daily_context("enforce_bronze_gate", QualityGateFailed(message, [summary]))

    FailureAlert()(context)

    ti = context["ti"]
    filed = _assert_delivered(delivered, "quality_gate_failed", dag="flights_daily", task="enforce_bronze_gate",
                              run=ti.run_id, interval="2013-01-04", reason=message, log_url=ti.log_url)
    assert filed["title"] == "Quality gate failed in flights_daily.enforce_bronze_gate"
    assert filed["details"]["gate"] == [summary]
    for name in ("expect_column_values_to_be_in_set", "_source_columns", "departure_delay",
                 "expect_column_values_to_not_be_null", "distance_num"):
        assert name in delivered.email_text() and name in delivered.slack_text()


def test_rejected_challenger_alert_names_the_training_window(delivered):
    run_id = "manual__2013-03-01T00:00:00+00:00"
    ti = FakeTI("flights_training", "promote_champion", run_id, 1,
                "http://localhost:8080/dags/flights_training/runs/manual__2013-03-01T00%3A00%3A00%2B00%3A00"
                "/tasks/promote_champion?try_number=1",
                xcoms={"resolve_window": {"start": "2013-01-01", "end": "2013-02-28"}})
    context = {"ti": ti, "run_id": run_id, "params": {"min_auc_gain": 0.0}}
    metrics = {"xgboost": {"auc": 0.70, "log_loss": 0.45}, "baseline": {"auc": 0.62, "log_loss": 0.50}}
    champion_metrics = {"auc": 0.71, "log_loss": 0.44}
    decision = decide(metrics["xgboost"], metrics["baseline"], champion_metrics, 0.0)
    assert not decision.promote

    # As include.pipeline.promote sends it, plus the training window (interval_of: see the report).
    send_alert(Alert(
        kind="model_rejected", title="Challenger flights_delay_xgboost v2 was not promoted",
        reason=decision.reason, dag_id=ti.dag_id, task_id=ti.task_id, run_id=context["run_id"],
        interval=interval_of(context), log_url=getattr(ti, "log_url", "") or "",
        details={"challenger": metrics["xgboost"], "baseline": metrics["baseline"], "champion": champion_metrics,
                 "champion_version": "1"}))

    _assert_delivered(delivered, "model_rejected", dag="flights_training", task="promote_champion", run=run_id,
                      interval="2013-01-01..2013-02-28", reason=decision.reason, log_url=ti.log_url)


class _RolledBackRegistry:
    """Stands in for MLflow here (tests/include/test_rollback.py uses the real one): v2 -> v1."""

    url = "http://127.0.0.1:5000/#/experiments/1/runs/"

    def rollback(self, to_version, reason, by):
        return (ModelVersion("flights_delay_xgboost", "2", "run2", self.url + "run2", {"auc": 0.70}),
                ModelVersion("flights_delay_xgboost", "1", "run1", self.url + "run1", {"auc": 0.72}))

    def training_window(self, version):
        return {"1": "2013-01-01..2013-02-28"}[version]


def test_rollback_alert_names_who_why_the_restored_window_and_its_run(delivered, monkeypatch):
    monkeypatch.setattr(rollback_cli, "get_target",
                        lambda: replace(real_get_target(), registry=_RolledBackRegistry()))
    why = "v2 over-predicts delays at EWR & LGA since 2013-03-02"

    done = rollback_cli.rollback(None, why, "alice")

    filed = _assert_delivered(delivered, "model_rollback", dag="flights_training", task="manual_rollback",
                              run=done["run_id"], interval="2013-01-01..2013-02-28",
                              reason=f"rolled back by alice: {why}", log_url=_RolledBackRegistry.url + "run1")
    assert filed["title"] == "Champion flights_delay_xgboost rolled back from v2 to v1"
    _, rows = real_get_target().warehouse.query("SELECT challenger_version, champion_version, reason, run_id "
                                                "FROM ops.model_decisions")
    assert rows == [("1", "2", f"rollback by alice: {why} (champion v2 -> v1)", done["run_id"])]


def test_a_failing_channel_does_not_stop_the_others(delivered, monkeypatch):
    delivered.webhook.answer = (500, b"invalid_token")
    context = _daily_context("check_landing_files", RuntimeError("2 landing file(s) missing for 2013-01-04"))

    FailureAlert()(context)

    assert len(delivered.webhook.requests) == 1  # Slack was tried and refused the post
    assert "2 landing file(s) missing" in delivered.email_text()
    assert [a["task_id"] for a in delivered.filed()] == ["check_landing_files"]


def test_sender_is_the_connection_from_email_when_it_names_one(delivered, smtp_server, monkeypatch):
    port, _ = smtp_server
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHTS_SMTP_TEST", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@flights.example"}}))

    FailureAlert()(_daily_context("load_warehouse", RuntimeError("warehouse is locked")))

    [envelope] = delivered.inbox.envelopes
    assert envelope.mail_from == "airflow@flights.example"
    assert delivered.emails()[0]["From"] == "airflow@flights.example"
