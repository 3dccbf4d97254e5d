"""Stale later days are recorded once, with why, and named for the one run that recomputes them.

``include.pipeline.find_stale_dependants`` runs as the ``find_stale_dependants`` task calls it: it reads the
gold gate's summary the way ``build_features`` writes it (``stale_dependants``: day → why) and records each day
in ``ops.recomputations`` of the real DuckDB warehouse of an isolated FLIGHTS_HOME. Which days are stale is
proved on real Delta tables in ``tests/spark_jobs/test_history.py``; the trigger's rendered arguments in
``tests/dags/test_dag_integrity.py``; the whole path in ``tests/e2e/test_local_loop.py``.
"""

from __future__ import annotations

import json
from datetime import date

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.intervals import Interval
from include.pipeline import find_stale_dependants
from include.recompute import RUN_ID_PREFIX, TABLE, plan
from include.targets import get_target
from tests.conftest import isolated_flights_home
from tests.include.test_alert_delivery import FakeTI

DAY = date(2013, 3, 20)
CAUSE = "manual__2013-03-20T00:00:00+00:00"
STALE = {"2013-03-22": "stale: its silver or a day of its history changed after its features were built "
                       "(feature build 1111111111111111, now 2222222222222222)",
         "2013-03-21": "stale: its silver or a day of its history changed after its features were built "
                       "(feature build 3333333333333333, now 4444444444444444)"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with isolated_flights_home(tmp_path_factory, "recompute") as path:
        yield path


def _summary(tmp_path, stale) -> str:
    path = tmp_path / "gold.json"
    listed = {} if stale is None else {"stale_dependants": stale}
    path.write_text(json.dumps({"success": True, "suites": [], **listed}))
    return str(path)


def _context(run_id: str = CAUSE, try_number: int = 1) -> dict:
    return {"ti": FakeTI("flights_daily", "find_stale_dependants", run_id, try_number, "http://localhost/log"),
            "run_id": run_id, "params": {}}


def _recorded() -> list[tuple]:
    return get_target().warehouse.query(
        "SELECT flight_date, reason, cause_dag_id, cause_run_id, cause_start, cause_end, recompute_run_id "
        f"FROM {TABLE} ORDER BY recorded_at, flight_date")[1]


def test_the_plan_is_one_range_run_named_by_its_cause_and_what_is_stale():
    found = plan(STALE, CAUSE)
    assert (found.start, found.end) == (date(2013, 3, 21), date(2013, 3, 22))
    assert found.conf() == {"start_date": "2013-03-21", "end_date": "2013-03-22"}
    assert found.run_id.startswith(f"{RUN_ID_PREFIX}20130321_20130322__")
    assert plan(dict(reversed(list(STALE.items()))), CAUSE).run_id == found.run_id  # the same finding: the same run
    assert plan(STALE, "manual__other").run_id != found.run_id  # another cause
    changed = {**STALE, "2013-03-22": STALE["2013-03-22"].replace("now 2222", "now 5555")}
    assert plan(changed, CAUSE).run_id != found.run_id  # silver changed again: a new run, never skipped as done
    assert plan({}, CAUSE) is None and plan(None, CAUSE) is None


def test_stale_days_are_recorded_once_with_why_and_the_run_that_recomputes_them(home, tmp_path):
    uri = _summary(tmp_path, STALE)
    out = find_stale_dependants(_context(), Interval(DAY, DAY), uri)
    found = plan(STALE, CAUSE)
    assert out == {"run_id": found.run_id, "conf": found.conf(), "days": ["2013-03-21", "2013-03-22"]}
    rows = _recorded()
    assert [(str(r[0]), r[1], r[2], r[3], str(r[4]), str(r[5]), r[6]) for r in rows] == [
        (d, STALE[d], "flights_daily", CAUSE, str(DAY), str(DAY), found.run_id) for d in sorted(STALE)]

    # the task's retry (its trigger failed, say) records nothing twice and names the same run
    assert find_stale_dependants(_context(try_number=2), Interval(DAY, DAY), uri) == out
    assert len(_recorded()) == 2


def test_nothing_stale_skips_the_task_and_records_nothing(home, tmp_path):
    before = len(_recorded())
    for stale in ({}, None):  # a job that found none; a summary from before the job listed them
        with pytest.raises(AirflowSkipException, match="nothing to recompute"):
            find_stale_dependants(_context("manual__nothing"), Interval(DAY, DAY), _summary(tmp_path, stale))
    with pytest.raises(AirflowSkipException, match="no gate summary"):  # build_features marked done by hand
        find_stale_dependants(_context("manual__marked"), Interval(DAY, DAY), None)
    assert len(_recorded()) == before


def test_a_malformed_day_fails_without_a_retry(home, tmp_path):
    with pytest.raises(AirflowFailException, match="not a date"):
        find_stale_dependants(_context("manual__bad"), Interval(DAY, DAY), _summary(tmp_path, {"21/03/2013": "x"}))
