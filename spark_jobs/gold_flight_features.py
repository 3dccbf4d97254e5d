"""Bronze -> silver (typed, deduplicated, MERGEd) -> gold flight features, for one interval.

Silver flights are keyed by ``flight_id`` (date, carrier, flight number, origin and
scheduled departure) and MERGEd: a rerun updates, inserts, and deletes rows of the
interval no longer delivered, and touches nothing outside it. Gold features for day D
use only pre-departure facts about the flight and outcomes of days strictly before D.

Those days must be in silver and current before gold is computed (``spark_jobs.history``):
a day whose history is missing, blocked or stale fails, naming the days, and is retried
while an earlier run builds them. ``silver.flight_days`` and ``gold.feature_days`` record
what each day was built from. After the commit, the later days whose features read this
interval's silver and no longer match it are listed in the gate's summary (``stale_dependants``):
``flights_daily`` records them and triggers their recomputation.

With ``--check gold/flight_features=gold.flight_features --result URI`` the job then runs the
gold gate on what it committed, in the same session (``spark_jobs.quality_gate.run_gate``).

    spark-submit spark_jobs/gold_flight_features.py --lake LAKE \
        --start 2013-01-01 --end 2013-01-31 --run-id RUN_ID [--check SUITE=TABLE ... --result URI]
"""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from include.features import DELAY_THRESHOLD_MINUTES, FEATURES, HISTORY_DAYS, HISTORY_START, KEY_COLUMNS, LABEL
from include.lake import PARTITION_COLUMN, export_uri, table_uri
from spark_jobs.history import day_ranges, record_gold_days, record_silver_days, require_history, stale_dependants
from spark_jobs.quality_gate import add_gate_args, kept_rows, require_gate_args, run_gate
from spark_jobs.session import delta_exists, get_spark, interval_args, replace_partitions, run_job, with_commit_retry

META = ["_source_file", "_ingested_at", "_run_id"]


def _between(col: str, start: date, end: date):
    return (F.col(col) >= F.lit(start)) & (F.col(col) <= F.lit(end))


def to_silver_flights(bronze: DataFrame) -> DataFrame:
    """Type the raw strings, derive the flight key and the label, keep the latest delivery per key."""
    i, d = "int", "double"
    typed = bronze.select(
        F.col("year").cast(i).alias("year"),
        F.col("month").cast(i).alias("month"),
        F.col("day").cast(i).alias("day"),
        F.col("dep_time").cast(i).alias("dep_time"),
        F.col("sched_dep_time").cast(i).alias("sched_dep_time"),
        F.col("dep_delay").cast(d).alias("dep_delay"),
        F.col("arr_time").cast(i).alias("arr_time"),
        F.col("sched_arr_time").cast(i).alias("sched_arr_time"),
        F.col("arr_delay").cast(d).alias("arr_delay"),
        F.col("carrier"),
        F.col("flight").cast(i).alias("flight"),
        F.col("tailnum"),
        F.col("origin"),
        F.col("dest"),
        F.col("air_time").cast(d).alias("air_time"),
        F.col("distance").cast(d).alias("distance"),
        F.col("hour").cast(i).alias("hour"),
        F.col("minute").cast(i).alias("minute"),
        F.to_timestamp("time_hour").alias("time_hour"),
        F.col(PARTITION_COLUMN),
        *META,
    )
    typed = (
        typed.withColumn(
            "flight_id",
            F.concat_ws(
                "-",
                F.date_format(PARTITION_COLUMN, "yyyyMMdd"),
                "carrier",
                F.col("flight").cast("string"),
                "origin",
                F.lpad(F.col("sched_dep_time").cast("string"), 4, "0"),
            ),
        )
        .withColumn("sched_dep_ts", F.make_timestamp_ntz("year", "month", "day", "hour", "minute", F.lit(0)))
        .withColumn("cancelled", F.col("dep_time").isNull())
        .withColumn(
            LABEL,
            F.when(F.col("arr_delay").isNull(), F.lit(None).cast(i)).otherwise(
                (F.col("arr_delay") >= DELAY_THRESHOLD_MINUTES).cast(i)
            ),
        )
    )
    latest = Window.partitionBy("flight_id").orderBy(F.col("_ingested_at").desc(), F.col("_source_file").desc())
    return typed.withColumn("_rn", F.row_number().over(latest)).filter("_rn = 1").drop("_rn")


def to_silver_weather(bronze: DataFrame) -> DataFrame:
    """Typed hourly weather, one row per origin and local hour (DST repeats keep the first)."""
    d = "double"
    typed = bronze.select(
        "origin",
        F.col("year").cast("int").alias("year"),
        F.col("month").cast("int").alias("month"),
        F.col("day").cast("int").alias("day"),
        F.col("hour").cast("int").alias("hour"),
        *[F.col(c).cast(d).alias(c) for c in ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust",
                                              "precip", "pressure", "visib")],
        F.to_timestamp("time_hour").alias("time_hour"),
        F.col(PARTITION_COLUMN),
        *META,
    )
    first = Window.partitionBy("origin", PARTITION_COLUMN, "hour").orderBy("time_hour")
    return typed.withColumn("_rn", F.row_number().over(first)).filter("_rn = 1").drop("_rn")


def to_silver_planes(bronze: DataFrame) -> DataFrame:
    return bronze.select(
        "tailnum",
        F.col("year").cast("int").alias("year_built"),
        "type",
        "manufacturer",
        "model",
        F.col("engines").cast("int").alias("engines"),
        F.col("seats").cast("int").alias("seats"),
        "engine",
    ).dropDuplicates(["tailnum"])


def _history(hist: DataFrame, keys: list[str], days: int, prefix: str, start: date, end: date) -> DataFrame:
    """Per key and target day D in [start, end]: flights and delay rate over days D-days .. D-1."""
    daily = (
        hist.filter(F.col(LABEL).isNotNull())
        .groupBy(*keys, PARTITION_COLUMN)
        .agg(F.count("*").alias("n"), F.sum(LABEL).alias("late"))
    )
    spread = daily.withColumn(
        "target_date",
        F.explode(F.sequence(F.date_add(PARTITION_COLUMN, 1), F.date_add(PARTITION_COLUMN, days))),
    ).filter(_between("target_date", start, end))
    return (
        spread.groupBy(*keys, "target_date")
        .agg(F.sum("n").alias("n"), F.sum("late").alias("late"))
        .select(
            *keys,
            F.col("target_date").alias(PARTITION_COLUMN),
            F.col("n").cast("double").alias(f"{prefix}_flights_{days}d"),
            (F.col("late") / F.col("n")).alias(f"{prefix}_delay_rate_{days}d"),
        )
    )


def build_features(
    flights: DataFrame, weather: DataFrame, planes: DataFrame, start: date, end: date
) -> DataFrame:
    """Gold features for flights dated in [start, end].

    ``flights`` must hold silver flights from ``start - HISTORY_DAYS`` through ``end``;
    only those dated before each flight's day feed its history features.
    """
    target = flights.filter(_between(PARTITION_COLUMN, start, end))
    hist = flights.filter(F.col(PARTITION_COLUMN) < F.lit(end))
    wx = weather.filter(_between(PARTITION_COLUMN, start, end)).select(
        "origin", PARTITION_COLUMN, "hour", "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip",
        "pressure", "visib",
    )
    carrier_h = _history(hist, ["carrier"], HISTORY_DAYS, "carrier", start, end)
    route_h = _history(hist, ["origin", "dest"], HISTORY_DAYS, "route", start, end)
    origin_h = _history(hist, ["origin"], 1, "origin", start, end).drop("origin_flights_1d")
    plane = planes.select("tailnum", "year_built", F.col("seats").alias("plane_seats"),
                          F.col("engines").alias("plane_engines"))
    out = (
        target.join(F.broadcast(wx), ["origin", PARTITION_COLUMN, "hour"], "left")
        .join(F.broadcast(plane), "tailnum", "left")
        .join(carrier_h, ["carrier", PARTITION_COLUMN], "left")
        .join(route_h, ["origin", "dest", PARTITION_COLUMN], "left")
        .join(origin_h, ["origin", PARTITION_COLUMN], "left")
        .withColumn("sched_dep_hour", F.col("hour"))
        .withColumn("sched_dep_minute", F.col("minute"))
        .withColumn("sched_arr_hour", (F.col("sched_arr_time") / 100).cast("int") % 24)
        .withColumn("day_of_week", F.dayofweek(PARTITION_COLUMN))
        .withColumn("day_of_month", F.dayofmonth(PARTITION_COLUMN))
        .withColumn("plane_age", (F.col("year") - F.col("year_built")).cast("double"))
        .fillna(0.0, subset=[f"carrier_flights_{HISTORY_DAYS}d", f"route_flights_{HISTORY_DAYS}d"])
        # days of history the day had: fewer only within HISTORY_DAYS of the data set's first day
        .withColumn("history_days_available",
                    F.least(F.lit(HISTORY_DAYS),
                            F.greatest(F.lit(0), F.datediff(PARTITION_COLUMN, F.lit(HISTORY_START)))))
    )
    return out.select(*KEY_COLUMNS, *[c for c in FEATURES if c not in KEY_COLUMNS], LABEL, "cancelled",
                      "history_days_available")


def merge_silver_flights(spark: SparkSession, updates: DataFrame, uri: str, start: date, end: date) -> None:
    """MERGE the interval's flights into silver: update known keys, insert new ones, delete vanished ones.

    Keys of the interval that the new delivery no longer holds join the source as tombstones,
    so one MERGE with only WHEN MATCHED / WHEN NOT MATCHED clauses does all three in one
    commit. (A WHEN NOT MATCHED BY SOURCE clause would do the same, but Delta then rewrites
    every file of the table, whatever its condition: a day's cost would grow with history.)
    """
    from delta.tables import DeltaTable

    if not delta_exists(spark, uri):
        replace_partitions(updates, uri, start, end)
        return
    key = ["flight_id", PARTITION_COLUMN]
    columns = updates.columns

    def merge() -> None:
        current = spark.read.format("delta").load(uri).filter(_between(PARTITION_COLUMN, start, end)).select(*key)
        vanished = current.join(updates.select(*key), key, "left_anti")
        source = updates.withColumn("_vanished", F.lit(False)).unionByName(
            vanished.withColumn("_vanished", F.lit(True)), allowMissingColumns=True)
        in_interval = f"t.{PARTITION_COLUMN} >= DATE '{start}' AND t.{PARTITION_COLUMN} <= DATE '{end}'"
        (
            DeltaTable.forPath(spark, uri).alias("t")
            .merge(source.alias("s"), f"t.flight_id = s.flight_id AND t.{PARTITION_COLUMN} = s.{PARTITION_COLUMN} "
                                      f"AND {in_interval}")
            .whenMatchedDelete(condition="s._vanished")
            .whenMatchedUpdate(set={c: f"s.`{c}`" for c in columns})
            .whenNotMatchedInsert(condition="NOT s._vanished", values={c: f"s.`{c}`" for c in columns})
            .execute()
        )

    with_commit_retry(merge, uri)


def build_silver(spark: SparkSession, lake: str, start: date, end: date, run_id: str = "") -> DataFrame:
    """Bronze -> silver for [start, end] (flights MERGEd, weather replaced, dimension snapshots), recorded per day
    in ``silver.flight_days``. Returns the whole silver flights table."""
    def bronze(name: str) -> DataFrame:
        return spark.read.format("delta").load(table_uri(lake, f"bronze.{name}"))

    # rows held in quarantine stay out of silver; released ones come through
    flights_b = kept_rows(spark, lake, "flights", bronze("flights").filter(_between(PARTITION_COLUMN, start, end)),
                          start, end)
    weather_b = kept_rows(spark, lake, "weather", bronze("weather").filter(_between(PARTITION_COLUMN, start, end)),
                          start, end)

    merge_silver_flights(spark, to_silver_flights(flights_b), table_uri(lake, "silver.flights"), start, end)
    replace_partitions(to_silver_weather(weather_b), table_uri(lake, "silver.weather"), start, end)
    for name, snapshot in (("silver.planes", to_silver_planes(bronze("planes"))),
                           ("silver.airlines", bronze("airlines").select("carrier", "name"))):
        uri = table_uri(lake, name)
        with_commit_retry(lambda: snapshot.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
                          .save(uri), uri)

    silver = spark.read.format("delta").load(table_uri(lake, "silver.flights"))
    record_silver_days(spark, lake, silver, start, end, run_id)
    return silver


def run(spark: SparkSession, lake: str, start: date, end: date, run_id: str = "") -> dict[str, int]:
    silver = build_silver(spark, lake, start, end, run_id)
    # the days before the interval must be in silver and current: features are never computed from a gap
    require_history(spark, lake, start, end)
    window = silver.filter(_between(PARTITION_COLUMN, start - timedelta(days=HISTORY_DAYS), end))
    weather = spark.read.format("delta").load(table_uri(lake, "silver.weather"))
    planes = spark.read.format("delta").load(table_uri(lake, "silver.planes"))
    features = build_features(window, weather, planes, start, end)
    replace_partitions(features, table_uri(lake, "gold.flight_features"), start, end)

    outcomes = silver.filter(_between(PARTITION_COLUMN, start, end)).select(
        "flight_id", PARTITION_COLUMN, "dep_delay", "arr_delay", LABEL, "cancelled"
    )
    key = f"{start:%Y%m%d}_{end:%Y%m%d}"
    outcomes.coalesce(1).write.mode("overwrite").parquet(export_uri(lake, "flight_outcomes", key))

    gold = spark.read.format("delta").load(table_uri(lake, "gold.flight_features")).filter(
        _between(PARTITION_COLUMN, start, end))
    per_day = {r[PARTITION_COLUMN]: r["count"] for r in gold.groupBy(PARTITION_COLUMN).count().collect()}
    record_gold_days(spark, lake, per_day, start, end, run_id)
    return {"silver.flights": silver.filter(_between(PARTITION_COLUMN, start, end)).count(),
            "gold.flight_features": sum(per_day.values())}


def main(argv: list[str] | None = None) -> None:
    p = interval_args(__doc__)
    add_gate_args(p)
    a = p.parse_args(argv)
    require_gate_args(a)  # before Spark starts
    spark = get_spark(f"gold_flight_features_{a.start}_{a.end}")
    counts = run(spark, a.lake, a.start, a.end, a.run_id)
    print(f"rows for {a.start}..{a.end}: {counts}")
    # later days built from this interval's earlier silver: the task after the gate has them recomputed
    stale = stale_dependants(spark, a.lake, a.end)
    if stale:
        print(f"{len(stale)} later day(s) read this interval's silver and are now stale: {day_ranges(list(stale))}")
    run_gate(spark, a, extra={"stale_dependants": {str(d): why for d, why in sorted(stale.items())}})


if __name__ == "__main__":
    run_job(main)
