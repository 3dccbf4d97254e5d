"""Alert storms reach people as one message: dedupe and escalation on the noisy channels.

The real ``ChannelNotifier`` delivers to the alert file and to e-mail through the Airflow
SMTP provider and an ``aiosmtpd`` server on loopback; the policy's state is the DuckDB
warehouse's ``ops.alerts`` under a FLIGHTS_HOME of each test's own. Time is a clock the test
moves, so a two-minute storm or a one-hour window takes no wall-clock time.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
from datetime import datetime, timedelta, timezone

import pytest
from aiosmtpd.controller import Controller

from include.alert_policy import AlertPolicy, fingerprint, normalise_reason
from include.alerts import Alert, ChannelNotifier
from include.config import ConfigError, load_settings, settings
from include.warehouse import make_warehouse

START = datetime(2013, 1, 5, 2, 14, tzinfo=timezone.utc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Inbox:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def subjects(self) -> list[str]:
        return [email.message_from_bytes(e.content, policy=email.policy.default)["Subject"] for e in self.envelopes]

    def bodies(self) -> list[str]:
        msgs = [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]
        return [m.get_body(preferencelist=("html",)).get_content() for m in msgs]


class Clock:
    def __init__(self, now: datetime = START):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture(scope="module")
def smtp_server():
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


@pytest.fixture
def env(smtp_server, tmp_path):
    """Channels file and smtp, a fresh FLIGHTS_HOME (alert file, DuckDB warehouse), default thresholds."""
    port, inbox = smtp_server
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTS_HOME", str(tmp_path / "home"))
        mp.setenv("FLIGHTS_WAREHOUSE", "duckdb")
        mp.setenv("FLIGHTS_ALERT_CHANNELS", "file,smtp")
        mp.setenv("AIRFLOW_CONN_FLIGHTS_SMTP_TEST", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": port,
            "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 0}}))
        mp.setenv("FLIGHTS_SMTP_CONN_ID", "flights_smtp_test")
        mp.setenv("FLIGHTS_ALERT_EMAILS", "oncall@flights.example")
        for var in ("FLIGHTS_ALERT_BURST_COUNT", "FLIGHTS_ALERT_BURST_WINDOW_MIN", "FLIGHTS_ALERT_DEDUPE_WINDOW_MIN",
                    "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            mp.delenv(var, raising=False)
        settings.cache_clear()
        inbox.envelopes.clear()
        yield inbox
    settings.cache_clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def notifier(env, clock) -> ChannelNotifier:
    cfg = settings()
    return ChannelNotifier(cfg, policy=AlertPolicy(cfg, make_warehouse(cfg), clock=clock))


def _failure(task: str = "ingest_bronze", day: int = 4, try_number: int = 1, reason: str | None = None) -> Alert:
    """A task failure as a backfill raises it: the same cause every day, with its own date, try and job id."""
    return Alert(kind="task_failed", title=f"flights_daily.{task} failed",
                 reason=reason or (f"Spark job flights_daily.{task}.2013-01-{day:02d}.try{try_number} exited with "
                                   f"code 1: landing file flights_2013-01-{day:02d}.csv missing (application "
                                   f"00f{day:03d}abc{try_number})"),
                 dag_id="flights_daily", task_id=task, run_id=f"backfill__2013-01-{day:02d}T00:00:00+00:00",
                 interval=f"2013-01-{day:02d}")


def _filed() -> list[dict]:
    path = settings().alerts_file
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ops_alerts() -> list[tuple]:
    _, rows = make_warehouse(settings()).query(
        "SELECT kind, delivered, suppressed_by, count(*) FROM ops.alerts GROUP BY 1, 2, 3 ORDER BY 1, 2 DESC, 3")
    return rows


def _storm_then_quiet(env, notifier, clock) -> None:
    """30 failures of one cause in 2 minutes, then one more an hour later: three e-mails in all."""
    for i in range(30):
        notifier.send(_failure(day=1 + i % 15, try_number=1 + i // 15))
        clock.advance(seconds=4)
    clock.advance(minutes=61)
    notifier.send(_failure(day=20))
    assert env.subjects() == ["[flights] flights_daily.ingest_bronze failed", "[flights] 6 failures in 10 minutes",
                              "[flights] flights_daily.ingest_bronze failed (and 29 more like it since 02:14 UTC)"]


def test_a_storm_of_one_cause_is_one_alert_and_one_summary_and_the_file_has_every_alert(env, notifier, clock):
    for i in range(30):  # a backfill failing every day, every retry: 30 failures in 2 minutes
        notifier.send(_failure(day=1 + i % 15, try_number=1 + i // 15))
        clock.advance(seconds=4)

    subjects = env.subjects()
    assert subjects == ["[flights] flights_daily.ingest_bronze failed",  # the first of its cause
                        "[flights] 6 failures in 10 minutes"]  # the 6th crossed the threshold (> 5)
    summary = env.bodies()[1]
    assert "6 x flights_daily.ingest_bronze (task_failed)" in summary  # the distinct causes, with counts
    assert "1 distinct cause(s)" in summary

    filed = _filed()
    assert [a["kind"] for a in filed].count("task_failed") == 30  # the audit log keeps every alert
    assert [a["kind"] for a in filed].count("alert_storm") == 1
    policy = [a["details"]["alert_policy"]["suppressed_by"] for a in filed if a["kind"] == "task_failed"]
    assert policy == [None] + ["duplicate"] * 4 + ["storm"] * 25
    assert _ops_alerts() == [("alert_storm", True, None, 1), ("task_failed", True, None, 1),
                             ("task_failed", False, "duplicate", 4), ("task_failed", False, "storm", 25)]

    clock.advance(minutes=61)  # the burst is long over and the dedupe window has passed
    notifier.send(_failure(day=20))

    assert len(env.envelopes) == 3
    assert env.subjects()[2] == ("[flights] flights_daily.ingest_bronze failed "
                                 "(and 29 more like it since 02:14 UTC)")  # held since the first, at 02:14


def test_the_decision_reads_and_writes_the_same_on_postgresql(env, clock, request, monkeypatch):
    from include.warehouse.postgres import PostgresWarehouse

    monkeypatch.setenv("AIRFLOW_CONN_FLIGHTS_ALERTS_PG", request.getfixturevalue("postgres_url"))
    warehouse = PostgresWarehouse("flights_alerts_pg")
    warehouse.ensure_schema()
    with warehouse.connect() as conn, conn.cursor() as cur:  # the server is shared by the test session
        cur.execute("TRUNCATE ops.alerts")
        conn.commit()
    cfg = settings()
    _storm_then_quiet(env, ChannelNotifier(cfg, policy=AlertPolicy(cfg, warehouse, clock=clock)), clock)
    _, rows = warehouse.query("SELECT count(*) FROM ops.alerts WHERE delivered")
    assert rows == [(3,)]  # the first alert, the storm summary, the one after the window


def test_three_causes_are_three_alerts(env, notifier, clock):
    for task in ("ingest_bronze", "build_features", "load_flight_outcomes"):
        notifier.send(_failure(task=task))
        clock.advance(seconds=10)
    notifier.send(_failure(task="build_features", reason="Quality gate failed: 3 expectation(s) failed"))

    assert env.subjects() == ["[flights] flights_daily.ingest_bronze failed",
                              "[flights] flights_daily.build_features failed",
                              "[flights] flights_daily.load_flight_outcomes failed",
                              "[flights] flights_daily.build_features failed"]  # same task, another reason
    assert len(_filed()) == 4


def test_the_same_cause_is_delivered_again_after_the_window_with_the_held_count(env, notifier, clock):
    notifier.send(_failure(day=1))
    for minutes in (5, 20, 30):  # 02:19, 02:34, 02:44: inside the 60-minute window
        clock.now = START + timedelta(minutes=minutes)
        notifier.send(_failure(day=1, try_number=2))
    assert len(env.envelopes) == 1

    clock.now = START + timedelta(minutes=59, seconds=59)
    notifier.send(_failure(day=2))
    assert len(env.envelopes) == 1  # still inside the window

    clock.now = START + timedelta(minutes=60)
    notifier.send(_failure(day=3))
    assert env.subjects()[1] == "[flights] flights_daily.ingest_bronze failed (and 4 more like it since 02:14 UTC)"
    assert "(and 4 more like it since 02:14 UTC)" in env.bodies()[1]
    [last] = [a for a in _filed() if a["interval"] == "2013-01-03"]
    assert last["details"]["alert_policy"]["delivered"] is True

    clock.advance(minutes=1)
    notifier.send(_failure(day=4))  # the window restarts at the last delivery
    assert len(env.envelopes) == 2


def test_after_a_storm_a_new_cause_is_delivered_and_the_thresholds_are_configurable(env, clock, monkeypatch):
    monkeypatch.setenv("FLIGHTS_ALERT_BURST_COUNT", "2")
    monkeypatch.setenv("FLIGHTS_ALERT_BURST_WINDOW_MIN", "5")
    monkeypatch.setenv("FLIGHTS_ALERT_DEDUPE_WINDOW_MIN", "0")  # every repeat, unless in a storm
    cfg = load_settings()
    notifier = ChannelNotifier(cfg, policy=AlertPolicy(cfg, make_warehouse(cfg), clock=clock))
    for task in ("a", "a", "b", "c", "a"):
        notifier.send(_failure(task=f"task_{task}"))
        clock.advance(seconds=30)
    assert env.subjects() == ["[flights] flights_daily.task_a failed", "[flights] flights_daily.task_a failed",
                              "[flights] 3 failures in 5 minutes"]
    body = env.bodies()[2]
    assert "2 x flights_daily.task_a" in body and "1 x flights_daily.task_b" in body and "task_c" not in body

    clock.advance(minutes=6)  # the burst is over
    notifier.send(_failure(task="task_d"))
    assert env.subjects()[3] == "[flights] flights_daily.task_d failed"


def test_an_unreachable_warehouse_never_loses_an_alert(env, clock, caplog, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHTS_WH_DOWN", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": port, "login": "flights", "password": "x",
        "schema": "flights", "extra": {"connect_timeout": 2}}))
    from include.warehouse.postgres import PostgresWarehouse

    cfg = settings()
    notifier = ChannelNotifier(cfg, policy=AlertPolicy(cfg, PostgresWarehouse("flights_wh_down"), clock=clock))
    with caplog.at_level(logging.WARNING, logger="include.alert_policy"):
        notifier.send(_failure(day=1))
        notifier.send(_failure(day=1))  # a repeat: with no history to read, delivered too

    assert len(env.envelopes) == 2
    assert "delivered without dedupe: ops.alerts could not be read" in caplog.text
    assert [a["details"]["alert_policy"]["checked"] for a in _filed()] == [False, False]


def test_only_the_file_channel_does_not_touch_the_warehouse(env, clock, monkeypatch):
    class Untouchable:
        def query(self, *a, **k):
            raise AssertionError("the file channel alone needs no dedupe state")

        record = query

    monkeypatch.setenv("FLIGHTS_ALERT_CHANNELS", "file")
    cfg = load_settings()
    notifier = ChannelNotifier(cfg, policy=AlertPolicy(cfg, Untouchable(), clock=clock))
    for _ in range(10):
        notifier.send(_failure())
    assert len(_filed()) == 10 and not env.envelopes


def test_the_fingerprint_ignores_dates_numbers_and_ids_but_not_the_task_or_the_cause():
    a, b = _failure(day=1, try_number=1), _failure(day=17, try_number=3)
    assert a.reason != b.reason and fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(_failure(task="build_features", day=1))
    assert fingerprint(a) != fingerprint(_failure(reason="warehouse is locked"))
    assert normalise_reason("Run 3f2a9c1e-0b4d-4c1a-9e2f-1a2b3c4d5e6f at 2013-01-04T02:14:00+00:00: 17 rows") \
        == "run <id> at <date>: # rows"


@pytest.mark.parametrize("var, value", [("FLIGHTS_ALERT_BURST_COUNT", "0"), ("FLIGHTS_ALERT_BURST_WINDOW_MIN", "ten"),
                                        ("FLIGHTS_ALERT_DEDUPE_WINDOW_MIN", "-1")])
def test_a_bad_threshold_is_refused_naming_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        load_settings()


def test_default_thresholds(monkeypatch):
    for var in ("FLIGHTS_ALERT_BURST_COUNT", "FLIGHTS_ALERT_BURST_WINDOW_MIN", "FLIGHTS_ALERT_DEDUPE_WINDOW_MIN"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_settings()
    assert (cfg.alert_burst_count, cfg.alert_burst_window_min, cfg.alert_dedupe_window_min) == (5, 10, 60)
