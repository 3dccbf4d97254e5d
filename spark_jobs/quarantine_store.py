"""The quarantine tables: bad rows held with their reasons, and the decisions taken on them.

``quarantine.<dataset>`` holds each bad row once (by row id) with its reason codes, the
line exactly as delivered and its current status: ``held``, ``released`` or ``superseded``.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include.lake import PARTITION_COLUMN, table_uri
from include.quality.release import check_row_ids
from spark_jobs.session import JobInputError, delta_exists, with_commit_retry


def merge_quarantine(spark: SparkSession, df: DataFrame, lake: str, dataset: str, start: date, end: date,
                     run_id: str) -> int:
    """Upsert the interval's bad rows into ``quarantine.<dataset>``, keeping release decisions and history.

    New bad rows are ``held``; rows already known keep their status (a release survives a
    rerun); held rows of the interval that are no longer delivered become ``superseded``.
    ``raw_line`` is the line exactly as delivered; ``raw_record`` the parsed fields as JSON
    (what the row id is computed from; a field read as null is left out).
    """
    from delta.tables import DeltaTable

    bad = df.filter(F.size("_reasons") > 0).select(
        "_row_id", F.lit(dataset).alias("dataset"), PARTITION_COLUMN, F.col("_reasons").alias("reasons"),
        F.col("_raw").alias("raw_record"), F.col("_raw_line").alias("raw_line"),
        F.col("_source_file").alias("source_file"),
        F.lit(run_id).alias("run_id"), F.current_timestamp().alias("quarantined_at"),
        F.lit("held").alias("status"), F.current_timestamp().alias("status_changed_at"),
        F.lit("bronze_landing").alias("status_changed_by"), F.lit("broke a row-level expectation").alias(
            "status_reason"),
    )
    uri = table_uri(lake, f"quarantine.{dataset}")
    in_interval = f"t.{PARTITION_COLUMN} >= '{start}' AND t.{PARTITION_COLUMN} <= '{end}'"
    if not delta_exists(spark, uri):  # an empty table first, so there is one write path: the MERGE
        with_commit_retry(lambda: bad.limit(0).write.format("delta").mode("append").partitionBy(PARTITION_COLUMN)
                          .save(uri), uri)
    elif "raw_line" not in DeltaTable.forPath(spark, uri).toDF().columns:  # a table from before raw lines were kept
        with_commit_retry(lambda: spark.sql(f"ALTER TABLE delta.`{uri}` ADD COLUMNS (raw_line STRING)"), uri)
    with_commit_retry(lambda: (
        DeltaTable.forPath(spark, uri).alias("t")
        .merge(bad.alias("s"), f"t._row_id = s._row_id AND {in_interval}")
        .whenMatchedUpdate(condition="t.status = 'superseded'", set={
            "status": "s.status", "status_changed_at": "s.status_changed_at", "run_id": "s.run_id",
            "status_changed_by": "s.status_changed_by", "status_reason": "s.status_reason", "raw_line": "s.raw_line"})
        .whenMatchedUpdate(condition="t.raw_line IS NULL", set={"raw_line": "s.raw_line"})  # kept from then on
        .whenNotMatchedInsertAll()
        .whenNotMatchedBySourceUpdate(condition=f"{in_interval} AND t.status = 'held'", set={
            "status": "'superseded'", "status_changed_at": "current_timestamp()",
            "status_changed_by": "'bronze_landing'", "status_reason": "'no longer delivered'"})
        .execute()), uri)
    return spark.read.format("delta").load(uri).filter(
        f"{PARTITION_COLUMN} >= '{start}' AND {PARTITION_COLUMN} <= '{end}' AND status = 'held'").count()


def release_held(spark: SparkSession, lake: str, dataset: str, start: date, end: date, by: str, reason: str,
                 row_ids: list[str] | None = None) -> int:
    """Mark held rows of the interval as released; the next run of the interval lets them through."""
    from delta.tables import DeltaTable

    uri = table_uri(lake, f"quarantine.{dataset}")
    if not delta_exists(spark, uri):
        return 0
    cond = F.expr(f"status = 'held' AND {PARTITION_COLUMN} >= '{start}' AND {PARTITION_COLUMN} <= '{end}'")
    if row_ids:
        try:
            cond = cond & F.col("_row_id").isin(check_row_ids(row_ids))
        except ValueError as exc:
            raise JobInputError(str(exc)) from None
    n = spark.read.format("delta").load(uri).filter(cond).count()
    with_commit_retry(lambda: DeltaTable.forPath(spark, uri).update(condition=cond, set={
        "status": F.lit("released"), "status_changed_at": F.current_timestamp(),
        "status_changed_by": F.lit(by), "status_reason": F.lit(reason)}), uri)
    return n
