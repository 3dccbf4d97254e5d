"""Dimension snapshots (planes, airlines, airports): delivered whole, and loaded into bronze whole."""

from __future__ import annotations

from pyspark.sql import SparkSession

from include.lake import dimension_file, table_uri
from include.source.contract import DIMENSION_COLUMNS
from spark_jobs.bronze_landing import LandingFileMissing, read_landing_file, with_metadata
from spark_jobs.session import path_exists, with_commit_retry


def ingest_dimensions(spark: SparkSession, lake: str, landing: str, run_id: str) -> None:
    for name in DIMENSION_COLUMNS:
        path = dimension_file(landing, name)
        if not path_exists(spark, path):
            raise LandingFileMissing(f"Dimension snapshot missing: expected {path}. Deliver it and clear the task.")
        df = with_metadata(read_landing_file(spark, path), path, run_id)
        target = table_uri(lake, f"bronze.{name}")
        with_commit_retry(lambda: df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
                          .save(target), target)
