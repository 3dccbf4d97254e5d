"""The retraining trigger: a champion past a threshold requests one retraining per breach, with its cause.

A real champion (XGBoost, registered in the real MLflow registry, so its holdout AUC comes from
there) and the real DuckDB warehouse of an isolated FLIGHTS_HOME. The days' realised performance
and drift are written to ``ops.model_performance`` and ``ops.feature_drift`` as the daily run's
``evaluate_realised_performance`` and ``enforce_predictions_gate`` write them; then
``include.pipeline.request_retraining`` runs exactly as the ``request_retraining`` task calls it,
day after day, and ``resolve_window`` / ``promote``'s cause read the request as ``flights_training``
does when the asset event starts it.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.config import ConfigError, retraining_thresholds, settings
from include.features import DAY_LEVEL_FEATURES, FEATURES
from include.intervals import Interval
from include.pipeline import request_retraining, resolve_window, training_cause
from include.retraining import ASSET_NAME, REQUESTED, breaches, requests_asset
from include.targets import get_target
from include.training.train import train_and_evaluate
from tests.conftest import isolated_flights_home
from tests.include.test_alert_delivery import FakeTI
from tests.include.test_training import _fixture

DAY1 = date(2013, 6, 1)
HEALTHY_AUC, DEGRADED_AUC = 0.70, 0.60


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with isolated_flights_home(tmp_path_factory, "retraining") as path:
        yield path


@pytest.fixture(scope="module")
def champion(home, tmp_path_factory):
    data = tmp_path_factory.mktemp("retraining-data")
    (data / "data").mkdir()
    _fixture(seed=1).to_parquet(data / "data" / "part-0.parquet")
    registry = get_target().registry
    version = registry.register(train_and_evaluate(data / "data", data / "model", {"n_estimators": 30}),
                                {"run_name": "train-1", "training_window": "2013-04-01..2013-05-26"})
    registry.set_champion(version, "first model")
    return registry.champion()


def _one(day: date) -> Interval:
    return Interval(day, day)


class Outlets(dict):
    """``outlet_events`` as a task sees it: one accessor per asset, with an ``extra`` to set."""

    def __missing__(self, asset):
        self[asset] = accessor = type("Accessor", (), {"extra": {}})()
        return accessor


def _run_id(day: date) -> str:
    return f"scheduled__{day}T00:00:00+00:00"


def _context(day: date, try_number: int = 1, sent: tuple[tuple[str, str], ...] = ()) -> dict:
    """The task's context; ``sent``: the asset's events Airflow holds (its inlet events), as (the run that sent
    it, the run that recorded the request)."""
    run_id = _run_id(day)
    events = [type("Event", (), {"source_run_id": by, "extra": {"request_run_id": recorded}})()
              for by, recorded in sent]
    return {"ti": FakeTI("flights_daily", "request_retraining", run_id, try_number, "http://localhost/log",
                         xcoms={"resolve_interval": {"start": str(day), "end": str(day)}}),
            "run_id": run_id, "params": {}, "outlet_events": Outlets(), "inlet_events": {requests_asset(): events}}


def _record_day(champion, day: date, auc: float, ece: float = 0.02, psi: dict | None = None,
                flights: int = 6500) -> None:
    """One scored day's measurements, as the daily run records them."""
    wh = get_target().warehouse
    wh.record("ops.model_performance", {
        "model_name": champion.name, "model_version": champion.version, "scope": "trailing_7d",
        "period_start": day - timedelta(days=6), "period_end": day, "flights": flights, "delayed": flights // 4,
        "auc": auc, "log_loss": 0.5, "brier": 0.17, "ece": ece, "calibration": "[]", "run_id": f"run {day}"})
    for feature in ("distance", "month", "pressure", "delay_probability"):
        wh.record("ops.feature_drift", {
            "model_name": champion.name, "model_version": champion.version, "interval_start": day,
            "interval_end": day, "feature": feature, "psi": (psi or {}).get(feature, 0.03), "level": "stable",
            "flights": flights, "reference_rows": 3000, "run_id": f"run {day}"})


def _decisions() -> list[tuple]:
    return get_target().warehouse.query(
        "SELECT action, champion_version, run_id, reason, cause FROM ops.model_decisions ORDER BY recorded_at")[1]


def _alerts() -> list[dict]:
    path = settings().alerts_file
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_breach_requests_one_retraining_with_its_cause_and_later_days_request_nothing(champion):
    holdout = champion.metrics["auc"]
    assert holdout > 0.7  # the registry's holdout AUC is the reference
    # days 1-3 within every threshold: the month and the weather move, as they do every day and season, and
    # are not watched (one value per day: a few days' PSI against weeks of training data is always high)
    for i in range(3):
        _record_day(champion, DAY1 + timedelta(days=i), holdout - 0.01, psi={"month": 4.0, "pressure": 3.0})
        with pytest.raises(AirflowSkipException, match="within every retraining threshold"):
            request_retraining(_context(DAY1 + timedelta(days=i)), _one(DAY1 + timedelta(days=i)), requests_asset())
    # day 4 below the floor but judged on too few flights; days 5 and 6 below it on enough
    _record_day(champion, DAY1 + timedelta(days=3), holdout - 0.2, flights=500)
    with pytest.raises(AirflowSkipException, match="within every"):
        request_retraining(_context(DAY1 + timedelta(days=3)), _one(DAY1 + timedelta(days=3)), requests_asset())
    day5, day6 = DAY1 + timedelta(days=4), DAY1 + timedelta(days=5)
    _record_day(champion, day5, holdout - 0.08)
    _record_day(champion, day6, holdout - 0.09, psi={"distance": 0.31})
    context = _context(day6)
    out = request_retraining(context, _one(day6), requests_asset())

    assert out["requested"] and out["train_end"] == str(day6)
    extra = context["outlet_events"][requests_asset()].extra
    assert extra["train_end"] == str(day6) and extra["champion_version"] == champion.version
    assert extra["request_run_id"] == context["run_id"]
    assert f"since {day5}" in extra["reason"] and f"PSI of distance on {day6} is 0.310" in extra["reason"]
    assert "month" not in extra["reason"] and "pressure" not in extra["reason"]
    (action, version, run_id, why, cause), = _decisions()
    assert (action, version, run_id) == (REQUESTED, champion.version, context["run_id"])
    assert f"{holdout - (holdout - 0.09):.4f} below the holdout AUC {holdout:.4f}" in why
    assert f"auc_drop={holdout - 0.09:.4f} (threshold {holdout - 0.05:.4f}, since {day5})" in cause
    assert f"psi:distance=0.3100 (threshold 0.2000, since {day6})" in cause
    alert, = [a for a in _alerts() if a["kind"] == REQUESTED]
    assert {b["metric"] for b in alert["details"]["breaches"]} == {"auc_drop", "psi:distance"}
    assert alert["task_id"] == "request_retraining" and f"v{champion.version}" in alert["title"]

    # a try that recorded the request and died before its event was emitted: the retry sends it; so does the
    # next day's run if that run never succeeded
    retry = _context(day6, try_number=2)
    assert request_retraining(retry, _one(day6), requests_asset())["reason"] == extra["reason"]
    assert retry["outlet_events"][requests_asset()].extra == extra
    _record_day(champion, day6 + timedelta(days=1), holdout - 0.1, ece=0.09)
    next_day = _context(day6 + timedelta(days=1))
    assert request_retraining(next_day, _one(day6 + timedelta(days=1)), requests_asset())["reason"] == extra["reason"]
    # the recorded request, training up to this run's day
    assert next_day["outlet_events"][requests_asset()].extra == {**extra, "train_end": str(day6 + timedelta(days=1))}

    # once one of them went out (here the next day's, for day 6's request), nothing more is requested: not by
    # day 6's run cleared, nor by the days after, still breaching
    day7 = day6 + timedelta(days=1)
    sent = ((_run_id(day7), _run_id(day6)),)
    for ctx, day in ((_context(day6, 3, sent), day6), (_context(day7, 2, sent), day7)):
        with pytest.raises(AirflowSkipException, match=f"already requested for v{champion.version} by run "
                                                       f"scheduled__{day6}"):
            request_retraining(ctx, _one(day), requests_asset())
        assert ctx["outlet_events"] == {}  # no event: no second training run
    assert len(_decisions()) == 1 and len([a for a in _alerts() if a["kind"] == REQUESTED]) == 1


def test_the_triggered_training_run_trains_up_to_the_breach_and_records_why(champion):
    """What flights_training reads from the asset event that started it."""
    event = type("Event", (), {"extra": {"train_end": "2013-06-06", "reason": "realised AUC ... since 2013-06-05"},
                               "timestamp": datetime(2013, 6, 7, 1, tzinfo=timezone.utc),
                               "source_run_id": "scheduled__2013-06-06T00:00:00+00:00"})()
    older = type("Event", (), {"extra": {"train_end": "2013-05-20", "reason": "older"},
                               "timestamp": datetime(2013, 5, 21, tzinfo=timezone.utc), "source_run_id": "x"})()
    params = {"train_start": None, "train_end": None, "window_days": 56, "validation_days": 7, "holdout_days": 7}
    context = {"params": params, "run_id": "asset_triggered__1", "triggering_asset_events": {
        requests_asset(): [older, event]}, "data_interval_end": None}
    window = resolve_window(context)
    assert (window["start"], window["end"]) == ("2013-04-12", "2013-06-06")  # 56 days ending on the breach
    assert training_cause(context) == ("retraining requested by flights_daily run scheduled__2013-06-06T00:00:00"
                                       "+00:00: realised AUC ... since 2013-06-05")
    # explicit params still win; a run that no request started says what started it
    window = resolve_window({**context, "params": {**params, "train_start": "2013-03-01", "train_end": "2013-04-30"}})
    assert (window["start"], window["end"]) == ("2013-03-01", "2013-04-30")
    assert training_cause({"run_id": "manual__x", "dag_run": type("R", (), {"run_type": "manual"})()}) \
        == "manual run manual__x"
    assert training_cause({"run_id": "s", "dag_run": type("R", (), {"run_type": "scheduled"})()}) == "scheduled"
    with pytest.raises(AirflowFailException, match="no data interval"):
        resolve_window({"params": params, "run_id": "manual__y", "data_interval_end": None})
    assert requests_asset().name == ASSET_NAME


def test_thresholds_are_settings_and_a_bad_one_is_refused_naming_it(champion, monkeypatch):
    t = retraining_thresholds()
    assert (t.auc_drop, t.max_ece, t.max_psi, t.min_flights) == (0.05, 0.06, 0.2, 3000)
    assert "month" not in t.watched and "distance" in t.watched and "delay_probability" in t.watched
    assert set(t.watched) == set(FEATURES) - set(DAY_LEVEL_FEATURES) | {"delay_probability"}
    assert "pressure" not in t.watched and "carrier_delay_rate_28d" in t.watched
    for name, bad in (("FLIGHTS_RETRAIN_AUC_DROP", "a lot"), ("FLIGHTS_RETRAIN_MAX_ECE", "1.5"),
                      ("FLIGHTS_RETRAIN_MAX_PSI", "nan"), ("FLIGHTS_RETRAIN_MAX_PSI", "-0.1"),
                      ("FLIGHTS_RETRAIN_MIN_FLIGHTS", "0"),
                      ("FLIGHTS_RETRAIN_PSI_FEATURES", "distance,colour")):
        with monkeypatch.context() as mp:
            mp.setenv(name, bad)
            with pytest.raises(ConfigError, match=name):
                retraining_thresholds()
    monkeypatch.setenv("FLIGHTS_RETRAIN_MAX_PSI", "3")  # PSI is unbounded: a looser line above 1 is allowed
    assert retraining_thresholds().max_psi == 3.0
    monkeypatch.delenv("FLIGHTS_RETRAIN_MAX_PSI")
    # watching the calendar makes the season a breach; a higher ECE threshold is honoured
    monkeypatch.setenv("FLIGHTS_RETRAIN_PSI_FEATURES", "month")
    monkeypatch.setenv("FLIGHTS_RETRAIN_MAX_ECE", "0.1")
    found = breaches(get_target().warehouse, champion.name, champion.version, None, DAY1 + timedelta(days=2),
                     retraining_thresholds())
    assert [(b.metric, b.value, b.since) for b in found] == [("psi:month", 4.0, DAY1)]
    found = breaches(get_target().warehouse, champion.name, champion.version, None, DAY1 + timedelta(days=6),
                     retraining_thresholds())
    assert [b.metric for b in found] == []  # ECE 0.09 is under 0.1; without a holdout AUC no AUC check


def test_a_new_champion_starts_a_new_episode(champion, tmp_path):
    registry = get_target().registry
    (tmp_path / "data").mkdir()
    _fixture(seed=4).to_parquet(tmp_path / "data" / "part-0.parquet")
    v2 = registry.register(train_and_evaluate(tmp_path / "data", tmp_path / "model", {"n_estimators": 30}),
                           {"run_name": "train-2", "training_window": "2013-04-10..2013-06-06"})
    registry.set_champion(v2, "retrained after the breach")
    new = registry.champion()
    day = DAY1 + timedelta(days=10)
    _record_day(new, day, new.metrics["auc"], ece=0.12)
    context = _context(day)
    out = request_retraining(context, _one(day), requests_asset())
    assert out["champion_version"] == new.version != champion.version
    assert [d[:2] for d in _decisions()] == [(REQUESTED, champion.version), (REQUESTED, new.version)]
    assert "realised ECE over the 7 days to 2013-06-11 is 0.1200, above 0.06 since 2013-06-11" in \
        context["outlet_events"][requests_asset()].extra["reason"]


    # rolled back to v1: its earlier request was for an earlier episode, so a breach of v1 now requests again
    from include.training.rollback import rollback

    rollback(champion.version, "v2 misbehaves", "alice")
    day = day + timedelta(days=1)
    _record_day(champion, day, champion.metrics["auc"] - 0.2)
    assert request_retraining(_context(day), _one(day), requests_asset())["champion_version"] == champion.version
    assert [d[0] for d in _decisions()] == [REQUESTED, REQUESTED, "rollback", REQUESTED]


def test_the_monitoring_picture_draws_what_the_ops_tables_hold(champion, tmp_path):
    from include.monitoring_report import monitoring_data, write_monitoring_report

    data = monitoring_data(get_target().warehouse)
    v1 = data["performance"][champion.version]
    # every trailing-7-day measurement of v1 recorded above, in day order, with its flights, AUC and ECE
    assert [d for d, *_ in v1] == sorted(d for d, *_ in v1) and (DAY1, 6500) == v1[0][:2]
    assert (DAY1 + timedelta(days=3), 500) in [r[:2] for r in v1]  # the day with too few flights is drawn hollow
    assert data["drift"][(str(DAY1 + timedelta(days=5)), champion.version)]["distance"] == pytest.approx(0.31)
    path = write_monitoring_report(tmp_path / "monitoring.png", data, {champion.version: champion.metrics["auc"]},
                                   retraining_thresholds())
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(header[16:20], "big") == 1300  # 13 in at 100 dpi
    assert write_monitoring_report(tmp_path / "none.png", {"performance": {}, "drift": {}}, {},
                                   retraining_thresholds()) is None
    # make run's summary writes it under FLIGHTS_HOME, with the champion's retraining floor
    from include.summary import monitoring_picture

    assert monitoring_picture(settings(), get_target(), get_target().registry.champion()) \
        == settings().home / "reports" / "monitoring.png"
    assert (settings().home / "reports" / "monitoring.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
