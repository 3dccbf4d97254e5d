"""Retention: VACUUM every lake table, and drop decided quarantine rows past their retention.

The policy, applied by the ``flights_maintenance`` DAG every week (or by this job by hand):

- **Table history**: ``VACUUM`` removes the data files that no version younger than
  ``--retain-hours`` needs (default 168 hours, 7 days; less is refused, since a shorter
  retention can delete files a running job or a reader's time travel still needs). Every
  version of the last 7 days stays readable and restorable (``RESTORE ... TO VERSION AS OF``),
  older versions are gone for good: this is also what makes a deletion of personal data
  final.
- **Quarantine**: a row that was decided (``released`` or ``superseded``) more than
  ``--quarantine-retention-days`` ago (default 365) is deleted from ``quarantine.<dataset>``,
  with its status events. ``held`` rows are never deleted by age: they wait for a decision,
  and the job reports how many are older than the retention.
- **Landing zone**: not touched here. The landing files are the source of truth every
  rerun reads; their retention is the landing bucket's lifecycle rule.

    spark-submit spark_jobs/lake_maintenance.py --lake LAKE --start D --end D --run-id ID \
        [--retain-hours 168] [--quarantine-retention-days 365]
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from include.lake import TABLES, table_uri
from spark_jobs.session import JobInputError, delta_exists, get_spark, interval_args, run_job, with_commit_retry

MIN_RETAIN_HOURS = 168  # Delta's own safety floor: 7 days
DEFAULT_QUARANTINE_RETENTION_DAYS = 365
QUARANTINES = ("flights", "weather")
DECIDED = ("released", "superseded")


def check_retention(retain_hours: int, quarantine_days: int) -> None:
    if retain_hours < MIN_RETAIN_HOURS:
        raise JobInputError(
            f"--retain-hours {retain_hours} is below {MIN_RETAIN_HOURS} (7 days): VACUUM could delete files that a "
            f"running job or a time-travel read still needs. Use {MIN_RETAIN_HOURS} or more.")
    if quarantine_days < 1:
        raise JobInputError(f"--quarantine-retention-days {quarantine_days} must be at least 1.")


def expire_quarantine(spark: SparkSession, lake: str, cutoff: datetime) -> dict:
    """Delete quarantine rows decided before ``cutoff``, and their events; count held rows older than it."""
    from delta.tables import DeltaTable

    out: dict = {}
    events_uri = table_uri(lake, "quarantine.events")
    for dataset in QUARANTINES:
        uri = table_uri(lake, f"quarantine.{dataset}")
        if not delta_exists(spark, uri):
            continue
        table = DeltaTable.forPath(spark, uri)
        expired = F.col("status").isin(*DECIDED) & (F.col("status_changed_at") < F.lit(cutoff))
        ids = [r["_row_id"] for r in table.toDF().filter(expired).select("_row_id").collect()]
        if ids:
            with_commit_retry(lambda: table.delete(expired), uri)
            if delta_exists(spark, events_uri):
                events = DeltaTable.forPath(spark, events_uri)
                with_commit_retry(lambda: events.delete(
                    (F.col("dataset") == dataset) & F.col("_row_id").isin(ids)), events_uri)
        old_held = table.toDF().filter((F.col("status") == "held") & (F.col("quarantined_at") < F.lit(cutoff))).count()
        out[dataset] = {"deleted": len(ids), "held_past_retention": old_held}
        if old_held:
            print(f"quarantine.{dataset}: {old_held} row(s) held for longer than the retention wait for a decision "
                  f"(release them, or redeliver their days); they are kept.")
    return out


def vacuum_all(spark: SparkSession, lake: str, retain_hours: int) -> dict[str, int]:
    """VACUUM every lake table that exists; the number of files each had deleted."""
    from delta.tables import DeltaTable

    deleted = {}
    for name in TABLES:
        uri = table_uri(lake, name)
        if not delta_exists(spark, uri):
            continue
        before = _data_files(spark, uri)
        DeltaTable.forPath(spark, uri).vacuum(float(retain_hours))
        deleted[name] = before - _data_files(spark, uri)
    return deleted


def _data_files(spark: SparkSession, uri: str) -> int:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    files, n = fs.listFiles(path, True), 0
    while files.hasNext():
        name = files.next().getPath().toString()
        n += name.endswith(".parquet") and "/_delta_log/" not in name
    return n


def maintain(spark: SparkSession, lake: str, now: datetime, retain_hours: int = MIN_RETAIN_HOURS,
             quarantine_days: int = DEFAULT_QUARANTINE_RETENTION_DAYS) -> dict:
    """Apply the retention policy as of ``now`` (the wall clock: decisions are stamped with it, not run dates)."""
    check_retention(retain_hours, quarantine_days)
    cutoff = now - timedelta(days=quarantine_days)
    quarantine = expire_quarantine(spark, lake, cutoff)
    return {"quarantine": quarantine, "vacuumed_files": vacuum_all(spark, lake, retain_hours)}


def _whole(value: str) -> int:
    if not value.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number")
    return int(value)


def main(argv: list[str] | None = None) -> None:
    p = interval_args(__doc__)
    p.add_argument("--retain-hours", type=_whole, default=MIN_RETAIN_HOURS)
    p.add_argument("--quarantine-retention-days", type=_whole, default=DEFAULT_QUARANTINE_RETENTION_DAYS)
    a = p.parse_args(argv)
    check_retention(a.retain_hours, a.quarantine_retention_days)  # before a session is started
    spark = get_spark(f"lake_maintenance_{a.end}")
    now = datetime.now(timezone.utc)
    out = maintain(spark, a.lake, now, a.retain_hours, a.quarantine_retention_days)
    print(f"lake maintenance as of {now:%Y-%m-%d %H:%M} UTC: {out}")


if __name__ == "__main__":
    run_job(main)
