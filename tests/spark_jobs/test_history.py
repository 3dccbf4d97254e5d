"""A day's features are computed only from history that is in silver and current, in whatever order days run.

The order experiment: day 3 built before days 1 and 2 is refused (naming them), computes nothing, and
once they are built gives the rows an in-order run gives. A re-ingested, re-delivered or rejected day of
the history window is refused with its reason; a training window whose gold no longer matches silver is
refused with its days.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import time
from datetime import date, timedelta

import pytest

from include.features import HISTORY_DAYS, HISTORY_START
from include.intervals import Interval
from include.lake import landing_file, table_uri
from include.source.landing import land
from spark_jobs.history import day_ranges, feature_build, history_days_available, history_window

D1, D2, D3 = date(2013, 1, 1), date(2013, 1, 2), date(2013, 1, 3)
STALE = re.compile(r"stale: its silver or a day of its history changed after its features were built "
                   r"\(feature build [0-9a-f]{16}, now [0-9a-f]{16}\)")


# --- the rules, without Spark ----------------------------------------------------------------


def test_the_window_is_the_days_before_clipped_at_the_data_sets_first_day():
    assert history_window(HISTORY_START) == []
    assert history_window(D3) == [D1, D2]
    late = date(2013, 6, 1)
    assert history_window(late) == [late - timedelta(days=n) for n in range(HISTORY_DAYS, 0, -1)]
    assert [history_days_available(d) for d in (D1, D2, D3, late)] == [0, 1, 2, HISTORY_DAYS]
    assert history_days_available(date(2012, 12, 31)) == 0


def test_the_feature_build_names_the_silver_of_the_day_and_its_window():
    hashes = {D1: "a", D2: "b", D3: "c"}
    build = feature_build(D3, hashes)
    assert build == feature_build(D3, dict(hashes))  # deterministic
    assert feature_build(D3, {**hashes, D1: "a2"}) != build  # a day of the history changed
    assert feature_build(D3, {**hashes, D3: "c2"}) != build  # the day itself changed
    assert feature_build(D3, {D2: "b", D3: "c"}) is None  # a hole: no build to name
    assert feature_build(D2, {**hashes, D3: "c2"}) == feature_build(D2, hashes)  # later days are not its history


def test_days_are_folded_into_ranges():
    assert day_ranges([D3, D1, D2, date(2013, 1, 9)]) == "2013-01-01..2013-01-03, 2013-01-09"
    assert day_ranges([D2]) == "2013-01-02"


# --- the jobs, on real data --------------------------------------------------------------------


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """A lake with bronze for 2013-01-01..03 (the real files), nothing built yet."""
    root = tmp_path_factory.mktemp("history")
    landing = root / "landing"
    land(Interval(D1, D3), landing)
    _ingest(root, landing, D1, D3)
    return root


def _ingest(root, landing, start, end):
    importlib.import_module("spark_jobs.bronze_landing").main([
        "--lake", str(root / "lake"), "--landing", str(landing), "--start", str(start), "--end", str(end),
        "--run-id", "ingest"])


def _build(spark, lake, day):
    from spark_jobs.gold_flight_features import run

    return run(spark, str(lake / "lake"), day, day, f"build-{day}")


def _gold(spark, lake, day):
    from pyspark.sql import functions as F

    uri = table_uri(str(lake / "lake"), "gold.flight_features")
    return spark.read.format("delta").load(uri).filter(F.col("flight_date") == day)


def _rows(df):
    return sorted(tuple(r) for r in df.drop("history_days_available").collect())


@pytest.mark.slow
def test_a_day_built_before_its_history_is_refused_then_equals_the_in_order_result(spark, lake):
    from delta.tables import DeltaTable

    from spark_jobs.history import HistoryNotReadyError

    with pytest.raises(HistoryNotReadyError, match=r"2 of them are not ready \(2013-01-01..2013-01-02\).*"
                                              r"2013-01-01: not built yet; 2013-01-02: not built yet"):
        _build(spark, lake, D3)
    assert not (lake / "lake" / "gold" / "flight_features").exists()  # nothing computed from the gap

    for day in (D1, D2, D3):  # the earlier days arrive; the refused day now builds
        _build(spark, lake, day)
    out_of_order = _rows(_gold(spark, lake, D3))
    assert {r["history_days_available"] for r in _gold(spark, lake, D3).collect()} == {2}
    assert {r["history_days_available"] for r in _gold(spark, lake, D1).collect()} == {0}

    # the in-order result: the same days rebuilt from scratch by one range run (which equals the days in order)
    for table in ("silver.flights", "silver.flight_days", "gold.flight_features", "gold.feature_days"):
        shutil.rmtree(table_uri(str(lake / "lake"), table))
    from spark_jobs.gold_flight_features import run

    run(spark, str(lake / "lake"), D1, D3, "in-order")
    assert _rows(_gold(spark, lake, D3)) == out_of_order
    assert len(out_of_order) > 900
    history = DeltaTable.forPath(spark, table_uri(str(lake / "lake"), "gold.feature_days")).toDF()
    assert {(r["flight_date"], r["history_days_available"]) for r in history.collect()} == {(D1, 0), (D2, 1), (D3, 2)}


@pytest.mark.slow
def test_a_changed_day_makes_its_dependants_stale_until_rebuilt(spark, lake):
    from spark_jobs.history import HistoryNotReadyError, stale_dependants, stale_gold
    from spark_jobs.session import JobInputError

    landing = lake / "landing"
    path = landing_file(str(landing), "flights", D2)
    lines = open(path, encoding="utf-8").read().splitlines(keepends=True)
    with open(path, "w", encoding="utf-8") as f:  # a corrected delivery of day 2: one flight fewer
        f.writelines(lines[:-1])
    _ingest(lake, landing, D2, D2)
    with pytest.raises(HistoryNotReadyError, match=r"2013-01-02: stale: re-ingested after its silver was built"):
        _build(spark, lake, D3)

    _build(spark, lake, D2)  # day 2's silver now holds the correction: day 3's features were built from the old one
    stale = stale_gold(spark, str(lake / "lake"), D1, D3)
    assert list(stale) == [D3] and STALE.fullmatch(stale[D3]), stale
    # the corrected day's dependants, and only they: day 3 (day 2 itself was just rebuilt; day 4 was never built)
    assert stale_dependants(spark, str(lake / "lake"), D2) == stale
    assert stale_dependants(spark, str(lake / "lake"), D1) == stale  # day 2 is day 1's dependant too, but current
    with pytest.raises(JobInputError, match=r"1 day\(s\) whose gold features are missing or stale \(2013-01-03\)"):
        importlib.import_module("spark_jobs.gold_training_set").main([
            "--lake", str(lake / "lake"), "--start", str(D1), "--end", str(D3), "--validation-days", "1",
            "--holdout-days", "1", "--output", str(lake / "training"), "--run-id", "t"])
    assert not (lake / "training").exists()
    assert stale_gold(spark, str(lake / "lake"), D1, date(2013, 1, 4)) == {
        **stale, date(2013, 1, 4): "no gold features built"}

    _build(spark, lake, D3)
    assert stale_gold(spark, str(lake / "lake"), D1, D3) == {}
    assert stale_dependants(spark, str(lake / "lake"), D2) == {}
    _build(spark, lake, D2)  # the same silver again: nothing after it becomes stale, so nothing is recomputed
    assert stale_dependants(spark, str(lake / "lake"), D2) == {}
    assert stale_dependants(spark, str(lake / "lake"), D3) == {}  # nothing built after the last day

    now = time.time()  # day 1's landing file is delivered again, after its silver was built
    os.utime(landing_file(str(landing), "flights", D1), (now, now))
    with pytest.raises(HistoryNotReadyError, match=r"2013-01-01: stale: its landing file changed at"):
        _build(spark, lake, D3)

    open(landing_file(str(landing), "flights", D1), "w").close()  # an empty delivery: rejected, the day blocked
    _ingest(lake, landing, D1, D1)
    with pytest.raises(HistoryNotReadyError, match=r"2013-01-01: blocked: its latest delivery was rejected"):
        _build(spark, lake, D2)


@pytest.mark.slow
def test_scoring_refuses_days_without_a_feature_build_before_it_reads_or_writes(spark, lake, tmp_path):
    """Every prediction names its day's feature build: a day without one is refused, naming it, and nothing is
    scored (the model folder is not even read)."""
    from spark_jobs.history import feature_builds, stale_gold
    from spark_jobs.predictions_flight_delay_risk import main as score
    from spark_jobs.session import JobInputError

    for day, why in stale_gold(spark, str(lake / "lake"), D1, D3).items():  # built above, unless run alone
        if why == "no gold features built":
            _build(spark, lake, day)
    builds = feature_builds(spark, str(lake / "lake"), D1, D3)
    assert sorted(builds) == [D1, D2, D3] and all(re.fullmatch(r"[0-9a-f]{16}", b) for b in builds.values())
    with pytest.raises(JobInputError, match=r"no feature build for 2013-01-04\.\.2013-01-05: .*Run flights_daily"):
        feature_builds(spark, str(lake / "lake"), D2, date(2013, 1, 5))
    with pytest.raises(JobInputError, match=r"no feature build for 2013-01-01\.\.2013-01-03"):  # a lake of none
        feature_builds(spark, str(tmp_path / "empty"), D1, D3)
    with pytest.raises(JobInputError, match=r"no feature build for 2013-01-04"):
        score(["--lake", str(lake / "lake"), "--start", "2013-01-03", "--end", "2013-01-04", "--run-id", "r",
               "--model-dir", str(tmp_path / "no-model"), "--model-name", "m", "--model-version", "1",
               "--result", str(tmp_path / "gate.json")])
    assert not (lake / "lake" / "predictions").exists() and not (tmp_path / "gate.json").exists()
