"""The quality gate's two GX engines give the same verdicts on the same rows.

A small interval is validated on a pandas batch collected to the driver, a large one on GX's Spark
engine (``spark_jobs.quality_gate.gate_engine``). The slow tests here land a real day, run the real
bronze job, then plant one violation of each kind of expectation the suites use in the rows the gate
validates (past the row checks, as a suite edit or a row rule gone wrong would let them through), and
validate them on both engines: each must fail exactly the planted expectations, with the same counts,
and pass the rows as delivered.
"""

from __future__ import annotations

import importlib
from datetime import date

import pytest
from pyspark.sql import functions as F

from include.intervals import Interval
from include.lake import table_uri
from include.quality.suites import load_suite_dict
from include.source.landing import land
from spark_jobs.quality_gate import (JobInputError, gate_engine, reference_params, suite_columns, typed_for_suite,
                                     validate)

DAY = date(2013, 1, 10)


# --- which engine -------------------------------------------------------------------------------


def test_small_intervals_run_on_pandas_and_large_ones_on_spark():
    assert gate_engine(0, {}) == "pandas" and gate_engine(200_000, {}) == "pandas"
    assert gate_engine(200_001, {}) == "spark"
    assert gate_engine(5, {"FLIGHTS_GATE_PANDAS_MAX_ROWS": "4"}) == "spark"
    assert gate_engine(5, {"FLIGHTS_GATE_PANDAS_MAX_ROWS": "0"}) == "spark"  # never on the driver
    assert gate_engine(5, {"FLIGHTS_GATE_ENGINE": "spark"}) == "spark"
    assert gate_engine(10 ** 9, {"FLIGHTS_GATE_ENGINE": " Pandas "}) == "pandas"


@pytest.mark.parametrize("env, named", [
    ({"FLIGHTS_GATE_ENGINE": "duckdb"}, "FLIGHTS_GATE_ENGINE='duckdb'"),
    ({"FLIGHTS_GATE_PANDAS_MAX_ROWS": "1e5"}, "FLIGHTS_GATE_PANDAS_MAX_ROWS='1e5'"),
    ({"FLIGHTS_GATE_PANDAS_MAX_ROWS": "-1"}, "FLIGHTS_GATE_PANDAS_MAX_ROWS='-1'"),
])
def test_a_bad_engine_setting_is_refused_naming_it(env, named):
    with pytest.raises(JobInputError, match="FLIGHTS_GATE") as exc:
        gate_engine(10, env)
    assert named in str(exc.value)


def test_a_job_with_a_gate_refuses_a_bad_engine_setting_before_it_writes(monkeypatch, tmp_path):
    import argparse

    from spark_jobs.predictions_flight_delay_risk import main as score
    from spark_jobs.quality_gate import require_gate_args

    monkeypatch.setenv("FLIGHTS_GATE_ENGINE", "duckdb")
    gated = argparse.Namespace(check=["bronze/flights=bronze.flights"], result="file:/x.json")
    with pytest.raises(JobInputError, match="FLIGHTS_GATE_ENGINE='duckdb'"):
        require_gate_args(gated)  # the gated jobs call it before their Spark session starts
    require_gate_args(argparse.Namespace(check=None, result=None))  # a job run without its gate does not care
    with pytest.raises(JobInputError, match="FLIGHTS_GATE_ENGINE='duckdb'"):  # scoring: before anything is scored
        score(["--lake", str(tmp_path / "lake"), "--start", "2013-01-01", "--end", "2013-01-01", "--run-id", "r",
               "--model-dir", str(tmp_path), "--model-name", "m", "--model-version", "1", "--result", "file:/x.json"])
    assert not (tmp_path / "lake").exists()


# --- the same verdicts --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bronze(spark, tmp_path_factory):
    """A real day in bronze, written by the real job in this session; the lake's root."""
    home = tmp_path_factory.mktemp("engines")
    land(Interval(date(2013, 1, 1), DAY), home / "landing")
    lake = str(home / "lake")
    importlib.import_module("spark_jobs.bronze_landing").main(
        ["--lake", lake, "--landing", str(home / "landing"), "--start", str(DAY), "--end", str(DAY),
         "--run-id", "engines"])
    return lake


def _outcome(result) -> dict:
    """Each expectation's verdict and unexpected count, keyed by its type and what it looks at."""
    out = {}
    for r in result.results:
        kw = r.expectation_config.kwargs
        where = kw.get("column") or kw.get("column_A") or ",".join(kw.get("column_list") or []) or "table"
        out[(r.expectation_config.type, where)] = (bool(r.success), (r.result or {}).get("unexpected_count"))
    return out


def _both(df, suite: dict, params: dict, monkeypatch) -> dict:
    outcomes = {}
    for engine in ("spark", "pandas"):
        monkeypatch.setenv("FLIGHTS_GATE_ENGINE", engine)
        result, _, ran_on = validate(df, suite, params, None, "engines")
        assert ran_on == engine
        outcomes[engine] = _outcome(result)
    assert outcomes["spark"] == outcomes["pandas"]
    return outcomes["pandas"]


def _planted(df, ids: list[str], changes: list[tuple[str, object]]):
    """``df`` with ``changes[i]`` (column, value) made to the row ``ids[i]``, in the column's own type."""
    for row_id, (column, value) in zip(ids, changes):
        planted = F.lit(value).cast(df.schema[column].dataType)
        df = df.withColumn(column, F.when(F.col("_row_id") == row_id, planted).otherwise(F.col(column)))
    return df


def _failed(outcome: dict) -> dict:
    return {key: count for key, (ok, count) in outcome.items() if not ok}


@pytest.mark.slow
def test_both_engines_fail_exactly_the_planted_flights_violations(spark, bronze, monkeypatch):
    suite = load_suite_dict("bronze/flights")
    params = reference_params(spark, bronze, 0.05)
    rows = spark.read.format("delta").load(table_uri(bronze, "bronze.flights")).filter(F.size("_reasons") == 0)
    assert not _failed(_both(typed_for_suite(rows, suite).cache(), suite, params, monkeypatch))  # as delivered

    ids = [r["_row_id"] for r in rows.select("_row_id").orderBy("_row_id").limit(6).collect()]
    planted = _planted(rows, ids, [
        ("dep_time", "12a"),  # regex
        ("hour", "25"),  # range, checked on the value as a number
        ("origin", "BOS"),  # set
        ("carrier", None),  # not null, and the parameter set of carriers ignores the null
        ("dest", "XXX"),  # a parameter set (airport codes)
        ("_file_date", "2013-01-11"),  # column pair
    ])
    twice = planted.filter(F.col("_row_id") == ids[-1]).withColumn("_row_id", F.lit("copy"))
    planted = typed_for_suite(planted.unionByName(twice), suite).cache()  # a compound key delivered twice
    assert _failed(_both(planted, suite, params, monkeypatch)) == {
        ("expect_column_values_to_match_regex", "dep_time"): 1,
        ("expect_column_values_to_be_between", "hour"): 1,
        ("expect_column_values_to_be_in_set", "origin"): 1,
        ("expect_column_values_to_not_be_null", "carrier"): 1,
        ("expect_column_values_to_be_in_set", "dest"): 1,
        ("expect_column_pair_values_to_be_equal", "_row_date"): 2,  # the planted row and its copy
        ("expect_compound_columns_to_be_unique", "carrier,flight,origin,year,month,day,sched_dep_time"): 2,
    }


@pytest.mark.slow
def test_both_engines_fail_exactly_the_planted_weather_and_volume_violations(spark, bronze, monkeypatch):
    suite = load_suite_dict("bronze/weather")
    rows = spark.read.format("delta").load(table_uri(bronze, "bronze.weather")).filter(F.size("_reasons") == 0)
    ids = [r["_row_id"] for r in rows.select("_row_id").orderBy("_row_id").limit(2).collect()]
    planted = typed_for_suite(_planted(rows, ids, [("temp", "131"), ("visib", "-0.5")]), suite).cache()
    assert _failed(_both(planted, suite, {}, monkeypatch)) == {
        ("expect_column_values_to_be_between", "temp"): 1, ("expect_column_values_to_be_between", "visib"): 1}

    volume = load_suite_dict("bronze/daily_volume")
    days = spark.createDataFrame(
        [(date(2013, 2, 1), 900.0, 0.01, 450.0, 1350.0), (date(2013, 2, 2), 300.0, 0.0, 450.0, 1350.0),
         (date(2013, 2, 3), 2000.0, 0.2, 450.0, 1350.0), (date(2013, 2, 4), 10.0, 0.0, 0.0, 1e18)],
        "flight_date date, rows double, quarantined_share double, band_low double, band_high double")
    assert _failed(_both(days, volume, {"max_quarantine_share": 0.05}, monkeypatch)) == {
        ("expect_column_values_to_be_between", "quarantined_share"): 1,
        ("expect_column_pair_values_a_to_be_greater_than_b", "rows"): 1,  # 300 below the band
        ("expect_column_pair_values_a_to_be_greater_than_b", "band_high"): 1,  # 2000 above it
    }


def test_only_the_columns_a_suite_names_are_collected():
    class df:  # what suite_columns reads of a DataFrame
        columns = ["a", "b", "c", "unused"]

    suite = {"expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "c"}},
                              {"type": "expect_column_pair_values_to_be_equal",
                               "kwargs": {"column_A": "a", "column_B": "missing"}},
                              {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["b"]}}]}
    assert suite_columns(df, suite) == ["a", "b", "c"]
    assert suite_columns(df, {"expectations": [{"type": "expect_table_row_count_to_be_between",
                                                "kwargs": {"min_value": 1}}]}) == ["a"]
