"""Ingest the interval's landing files into the bronze Delta tables, as received.

Values stay strings exactly as the source wrote them (``NA`` read as null); each row
carries its ingestion metadata: source file, the file's header, load time and run id.
Rerunning an interval replaces exactly its ``flight_date`` partitions.

    spark-submit spark_jobs/bronze_landing.py --lake LAKE --landing LANDING \
        --start 2013-01-01 --end 2013-01-31 --run-id RUN_ID
"""

from __future__ import annotations

import sys
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include.lake import PARTITION_COLUMN, dimension_file, landing_file, table_uri
from include.source.contract import DIMENSION_COLUMNS, NULL_TOKEN
from spark_jobs.session import get_spark, interval_args, path_exists, replace_partitions

DAILY_DATASETS = ("flights", "weather")


class LandingFileMissing(FileNotFoundError):
    pass


def read_landing_file(spark: SparkSession, path: str) -> DataFrame:
    """One delivered CSV as strings, with the file's own header kept on every row."""
    df = spark.read.option("header", True).option("nullValue", NULL_TOKEN).option("encoding", "UTF-8").csv(path)
    return df.withColumn("_source_columns", F.lit(",".join(df.columns)))


def with_metadata(df: DataFrame, source_file: str, run_id: str, day: date | None = None) -> DataFrame:
    df = (
        df.withColumn("_source_file", F.lit(source_file))
        .withColumn("_ingested_at", F.current_timestamp())
        .withColumn("_run_id", F.lit(run_id))
    )
    if day is not None:
        df = df.withColumn(PARTITION_COLUMN, F.lit(day).cast("date"))
    return df


def expected_files(landing: str, dataset: str, start: date, end: date) -> list[tuple[date, str]]:
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return [(d, landing_file(landing, dataset, d)) for d in days]


def ingest_daily(spark: SparkSession, lake: str, landing: str, dataset: str, start: date, end: date, run_id: str) -> int:
    files = expected_files(landing, dataset, start, end)
    missing = [p for _, p in files if not path_exists(spark, p)]
    if missing:
        raise LandingFileMissing(
            f"{len(missing)} {dataset} landing file(s) missing for {start}..{end}, first expected at {missing[0]}. "
            "Deliver the file(s) (or run `make land`) and clear the task."
        )
    frames = [with_metadata(read_landing_file(spark, p), p, run_id, d) for d, p in files]
    df = frames[0]
    for other in frames[1:]:
        df = df.unionByName(other, allowMissingColumns=True)
    replace_partitions(df, table_uri(lake, f"bronze.{dataset}"), start, end)
    return sum(1 for _ in files)


def ingest_dimensions(spark: SparkSession, lake: str, landing: str, run_id: str) -> None:
    for name in DIMENSION_COLUMNS:
        path = dimension_file(landing, name)
        if not path_exists(spark, path):
            raise LandingFileMissing(f"Dimension snapshot missing: expected {path}. Deliver it and clear the task.")
        df = with_metadata(read_landing_file(spark, path), path, run_id)
        df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
            table_uri(lake, f"bronze.{name}")
        )


def main(argv: list[str] | None = None) -> None:
    p = interval_args(__doc__)
    p.add_argument("--landing", required=True, help="landing zone root URI")
    a = p.parse_args(argv)
    spark = get_spark(f"bronze_landing_{a.start}_{a.end}")
    ingest_dimensions(spark, a.lake, a.landing, a.run_id)
    for dataset in DAILY_DATASETS:
        n = ingest_daily(spark, a.lake, a.landing, dataset, a.start, a.end, a.run_id)
        print(f"bronze.{dataset}: ingested {n} file(s) for {a.start}..{a.end}")
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
