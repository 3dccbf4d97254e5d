"""Spark transforms on small fixtures and on real landed days (one session-scoped Spark)."""

from datetime import date, datetime, timedelta

import pytest
from pyspark.sql import functions as F

from include.features import FEATURES, LABEL
from include.intervals import Interval
from include.source.contract import FLIGHTS_COLUMNS
from include.source.landing import land
from spark_jobs.bronze_landing import read_landing_file, with_metadata
from spark_jobs.gold_flight_features import build_features, to_silver_flights, to_silver_planes, to_silver_weather

pytestmark = pytest.mark.slow


def _bronze_row(**over):
    row = dict(zip(FLIGHTS_COLUMNS, ["2013", "1", "5", "600", "600", "0", "900", "900", "0", "UA", "100",
                                     "N1", "EWR", "ORD", "120", "719", "6", "0", "2013-01-05T11:00:00Z"]))
    row.update(over)
    return row


def _bronze_df(spark, rows):
    df = spark.createDataFrame([{**r, "_ingested_at": r.get("_ingested_at")} for r in rows])
    return (df.withColumn("flight_date", F.to_date(F.concat_ws("-", "year", F.lpad("month", 2, "0"),
                                                                   F.lpad("day", 2, "0"))))
            .withColumn("_source_file", F.lit("f.csv")).withColumn("_run_id", F.lit("r"))
            .withColumn("_ingested_at", F.col("_ingested_at").cast("timestamp")))


def test_silver_keeps_the_latest_delivery_per_flight_and_derives_the_label(spark):
    rows = [
        _bronze_row(arr_delay="5", _ingested_at="2013-01-06 01:00:00"),
        _bronze_row(arr_delay="15", _ingested_at="2013-01-06 02:00:00"),  # redelivered, later: wins
        _bronze_row(flight="200", arr_delay="14", _ingested_at="2013-01-06 01:00:00"),
        _bronze_row(flight="300", dep_time=None, arr_time=None, arr_delay=None, _ingested_at="2013-01-06 01:00:00"),
    ]
    silver = {r["flight"]: r for r in to_silver_flights(_bronze_df(spark, rows)).collect()}
    assert len(silver) == 3  # one row per flight key after dedup
    assert silver[100]["arr_delay"] == 15.0 and silver[100][LABEL] == 1  # 15 minutes late counts as delayed
    assert silver[200][LABEL] == 0
    assert silver[300][LABEL] is None and silver[300]["cancelled"] is True  # no outcome: no label
    assert silver[100]["flight_id"] == "20130105-UA-100-EWR-0600"
    assert silver[100]["sched_dep_ts"] == datetime(2013, 1, 5, 6, 0)


@pytest.fixture(scope="module")
def real_days(spark, tmp_path_factory):
    """Silver flights, weather and planes for 2013-01-01..2013-01-10 from real landed files."""
    landing = tmp_path_factory.mktemp("landing")
    land(Interval(date(2013, 1, 1), date(2013, 1, 10)), landing)
    flights = weather = None
    for i in range(10):
        d = date(2013, 1, 1) + timedelta(days=i)
        f = with_metadata(read_landing_file(spark, f"{landing}/flights/flights_{d}.csv"), "f", "r", d)
        w = with_metadata(read_landing_file(spark, f"{landing}/weather/weather_{d}.csv"), "w", "r", d)
        flights = f if flights is None else flights.unionByName(f)
        weather = w if weather is None else weather.unionByName(w)
    planes = to_silver_planes(read_landing_file(spark, f"{landing}/dimensions/planes.csv"))
    return to_silver_flights(flights).cache(), to_silver_weather(weather).cache(), planes.cache()


def test_features_cover_every_flight_of_the_interval_once(real_days):
    flights, weather, planes = real_days
    d = date(2013, 1, 9)
    gold = build_features(flights, weather, planes, d, d)
    assert gold.count() == flights.filter(F.col("flight_date") == d).count()
    assert gold.select("flight_id").distinct().count() == gold.count()
    assert gold.filter(F.col("temp").isNotNull()).count() > 0.9 * gold.count()  # weather joined by origin and hour


def test_history_features_count_only_previous_days(real_days):
    flights, weather, planes = real_days
    d = date(2013, 1, 3)
    gold = build_features(flights, weather, planes, d, d)
    ua = gold.filter("carrier = 'UA'").select("carrier_flights_28d").distinct().collect()
    expected = flights.filter((F.col("carrier") == "UA") & (F.col("flight_date") < d) & F.col(LABEL).isNotNull()).count()
    assert [r[0] for r in ua] == [float(expected)]  # 2 days of UA history, nothing from the 3rd


def _features_of(gold):
    return gold.drop(LABEL, "cancelled")


def test_no_leakage_features_for_day_d_ignore_data_from_day_d_onwards(real_days):
    """Changing every outcome of days >= D (and adding flights after D) leaves D's features unchanged."""
    flights, weather, planes = real_days
    d = date(2013, 1, 8)
    before = _features_of(build_features(flights, weather, planes, d, d))
    later = F.col("flight_date") >= F.lit(d)
    mutated = (
        flights.withColumn("arr_delay", F.when(later, F.col("arr_delay") + 120).otherwise(F.col("arr_delay")))
        .withColumn("dep_delay", F.when(later, F.col("dep_delay") + 120).otherwise(F.col("dep_delay")))
        .withColumn(LABEL, F.when(later, 1 - F.col(LABEL)).otherwise(F.col(LABEL)))
    )
    extra = flights.filter(F.col("flight_date") == d).withColumn("flight_date", F.lit(d + timedelta(days=1)))
    after = _features_of(build_features(mutated.unionByName(extra), weather, planes, d, d))
    assert before.count() == after.count()
    assert before.exceptAll(after).count() == 0 and after.exceptAll(before).count() == 0


def test_leakage_check_detects_a_change_in_the_past(real_days):
    """Control: the same comparison does see a change to day D-1, so the test above can fail."""
    flights, weather, planes = real_days
    d = date(2013, 1, 8)
    before = _features_of(build_features(flights, weather, planes, d, d))
    prev = F.col("flight_date") == F.lit(d - timedelta(days=1))
    mutated = flights.withColumn(LABEL, F.when(prev, 1 - F.col(LABEL)).otherwise(F.col(LABEL)))
    after = _features_of(build_features(mutated, weather, planes, d, d))
    assert before.exceptAll(after).count() > 0


def test_feature_columns_match_the_shared_spec(real_days):
    flights, weather, planes = real_days
    gold = build_features(flights, weather, planes, date(2013, 1, 5), date(2013, 1, 6))
    assert set(FEATURES) <= set(gold.columns)


def test_the_claimed_row_date_is_null_for_impossible_dates(spark):
    from spark_jobs.bronze_landing import PARTITION_COLUMN, with_row_date

    rows = [("2013", "2", "3"), ("2013", "12", "31"), ("2013", "2", "30"), ("2013", "13", "1"), ("2013", "x", "1"),
            (None, "1", "1")]
    df = spark.createDataFrame(rows, "year string, month string, day string").withColumn(
        PARTITION_COLUMN, F.lit("2013-02-03").cast("date"))
    got = [(r["_row_date"], r["_file_date"]) for r in with_row_date(df).collect()]
    assert got == [("2013-02-03", "2013-02-03"), ("2013-12-31", "2013-02-03")] + [(None, "2013-02-03")] * 4


def test_interpreted_evaluation_builds_the_same_features_as_generated_code(spark, real_days):
    """A local master evaluates expressions interpreted (``spark_jobs.session.LOCAL_MASTER_DEFAULTS``): the
    features of real days are the ones Spark's generated code computes, value for value."""
    assert spark.conf.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN"  # what every local job runs with
    flights, weather, planes = real_days
    first, last = date(2013, 1, 6), date(2013, 1, 10)
    interpreted = build_features(flights, weather, planes, first, last).collect()
    spark.conf.set("spark.sql.codegen.factoryMode", "FALLBACK")  # Spark's default: generated code
    try:
        generated = build_features(flights, weather, planes, first, last).collect()
    finally:
        spark.conf.set("spark.sql.codegen.factoryMode", "NO_CODEGEN")
    assert len(interpreted) > 3000
    by_flight = {r["flight_id"]: r.asDict() for r in generated}
    assert len(by_flight) == len(interpreted)
    assert all(r.asDict() == by_flight[r["flight_id"]] for r in interpreted)
