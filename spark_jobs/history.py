"""Which days a day's features were computed from, and whether that history is there and current.

A day's gold features read the silver flights of the ``HISTORY_DAYS`` days before it. Two small
Delta tables record what was built from what:

- ``silver.flight_days``: per flight date, when its silver was built, by which run, its row count
  and a content hash of the rows the history features read;
- ``gold.feature_days``: per flight date, when its features were built, how many days of history
  they had (``history_days_available``) and the *feature build*: a hash of the silver content
  hashes of the day and of its history window.

``build_features`` refuses to compute a day whose history is missing, blocked or stale
(``HistoryNotReadyError``: retried, then failing with the days named); ``gold_training_set`` refuses a
window whose gold is missing or was built from history that has changed since (``stale_gold``). After
``build_features`` commits, the later days whose features read the interval's silver and no longer match
it (a replayed file, released quarantine rows, a late delivery) are its ``stale_dependants``: the gold gate's
summary carries them, and ``flights_daily`` records them and triggers a run that recomputes them.
The data set's first days are the exception: days before ``HISTORY_START`` do not exist, so a day
near the start has fewer days of history, and its rows say how many.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include.features import HISTORY_DAYS, HISTORY_START, LABEL
from include.lake import PARTITION_COLUMN, table_uri
from spark_jobs.session import JobInputError, _fs_path, delta_exists, replace_partitions

SILVER_DAYS = "silver.flight_days"
GOLD_DAYS = "gold.feature_days"
# what the history features read from a silver row: its key, its day's outcome and its groupings
HASHED_COLUMNS = ("flight_id", LABEL, "carrier", "origin", "dest")


class HistoryNotReadyError(RuntimeError):
    """The history window of an interval is not all in silver yet (retried: an earlier run may be building it)."""


def history_window(start: date) -> list[date]:
    """The days before ``start`` whose silver the first day of the interval reads (none before the data set)."""
    first = max(HISTORY_START, start - timedelta(days=HISTORY_DAYS))
    return [first + timedelta(days=i) for i in range((start - first).days)]


def history_days_available(day: date) -> int:
    return max(0, min(HISTORY_DAYS, (day - HISTORY_START).days))


def feature_build(day: date, silver_hashes: dict[date, str]) -> str | None:
    """The hash naming the silver a day's features came from (None when a day of it is not in silver)."""
    days = [*history_window(day), day]
    if any(d not in silver_hashes for d in days):
        return None
    return hashlib.sha256("|".join(f"{d}:{silver_hashes[d]}" for d in days).encode()).hexdigest()[:16]


def day_ranges(days: list[date]) -> str:
    """``2013-01-02..2013-01-04, 2013-01-09``: consecutive days folded into ranges."""
    out: list[list[date]] = []
    for d in sorted(days):
        if out and d == out[-1][1] + timedelta(days=1):
            out[-1][1] = d
        else:
            out.append([d, d])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in out)


def _rows(spark: SparkSession, lake: str, name: str, first: date, last: date) -> list:
    uri = table_uri(lake, name)
    if not delta_exists(spark, uri):
        return []
    return (spark.read.format("delta").load(uri)
            .filter((F.col(PARTITION_COLUMN) >= F.lit(first)) & (F.col(PARTITION_COLUMN) <= F.lit(last))).collect())


def _modified(spark: SparkSession, path: str) -> datetime | None:
    fs, p = _fs_path(spark, path)
    if not fs.exists(p):
        return None
    return datetime.fromtimestamp(fs.getFileStatus(p).getModificationTime() / 1000)


def history_gaps(spark: SparkSession, lake: str, start: date) -> dict[date, str]:
    """Each day of ``start``'s history window that is not ready in silver, with why.

    Ready means: built (a ``silver.flight_days`` row), not blocked (its latest delivery was not
    rejected), and current (built after its latest ingest, and after its landing file last changed).
    """
    window = history_window(start)
    if not window:
        return {}
    built = {r[PARTITION_COLUMN]: r for r in _rows(spark, lake, SILVER_DAYS, window[0], window[-1])}
    files: dict[date, list] = {}
    for r in _rows(spark, lake, "bronze.landing_files", window[0], window[-1]):
        if r["dataset"] == "flights":
            files.setdefault(r[PARTITION_COLUMN], []).append(r)
    gaps = {}
    for day in window:
        if day not in built:
            gaps[day] = "not built yet"
            continue
        at = built[day]["built_at"]
        delivered = files.get(day, [])
        if any(f["status"] == "rejected" for f in delivered):
            gaps[day] = "blocked: its latest delivery was rejected (see bronze.landing_files)"
        elif any(f["checked_at"] > at for f in delivered):
            gaps[day] = f"stale: re-ingested after its silver was built at {at:%Y-%m-%d %H:%M:%S}"
        else:
            changed = [m for m in (_modified(spark, f["path"]) for f in delivered if f["status"] == "accepted") if m]
            if changed and max(changed) > at:
                gaps[day] = (f"stale: its landing file changed at {max(changed):%Y-%m-%d %H:%M:%S}, after its silver "
                             f"was built at {at:%Y-%m-%d %H:%M:%S}")
    return gaps


def require_history(spark: SparkSession, lake: str, start: date, end: date) -> None:
    gaps = history_gaps(spark, lake, start)
    if gaps:
        reasons = "; ".join(f"{d}: {why}" for d, why in sorted(gaps.items()))
        raise HistoryNotReadyError(
            f"The features of {start}..{end} read the silver flights of the {HISTORY_DAYS} days before {start}, and "
            f"{len(gaps)} of them are not ready ({day_ranges(list(gaps))}): {reasons}. Nothing was computed from the "
            "gap. This task is retried while an earlier run builds them; if it still fails, run those days first "
            "(flights_daily for each, or a backfill in order), then clear this task.")


def record_silver_days(spark: SparkSession, lake: str, silver: DataFrame, start: date, end: date, run_id: str) -> None:
    """One ``silver.flight_days`` row per day of the interval (zero rows included), after silver is committed."""
    row = F.concat_ws(",", *[F.coalesce(F.col(c).cast("string"), F.lit("\\N")) for c in HASHED_COLUMNS])
    per_day = (silver.filter((F.col(PARTITION_COLUMN) >= F.lit(start)) & (F.col(PARTITION_COLUMN) <= F.lit(end)))
               .groupBy(PARTITION_COLUMN)
               .agg(F.count("*").alias("rows"),
                    F.sha2(F.concat_ws("|", F.sort_array(F.collect_list(row))), 256).alias("content_hash")))
    days = spark.createDataFrame([((start + timedelta(days=i)),) for i in range((end - start).days + 1)],
                                 f"{PARTITION_COLUMN} date")
    ledger = (days.join(per_day, PARTITION_COLUMN, "left")
              .select(PARTITION_COLUMN, F.coalesce("rows", F.lit(0)).cast("long").alias("rows"),
                      F.coalesce("content_hash", F.sha2(F.lit(""), 256)).alias("content_hash"),
                      F.current_timestamp().alias("built_at"), F.lit(run_id).alias("run_id")))
    replace_partitions(ledger, table_uri(lake, SILVER_DAYS), start, end)


def silver_hashes(spark: SparkSession, lake: str, first: date, last: date) -> dict[date, str]:
    return {r[PARTITION_COLUMN]: r["content_hash"] for r in _rows(spark, lake, SILVER_DAYS, first, last)}


def record_gold_days(spark: SparkSession, lake: str, counts: dict[date, int], start: date, end: date,
                     run_id: str) -> None:
    """One ``gold.feature_days`` row per day of the interval: its feature build and days of history."""
    hashes = silver_hashes(spark, lake, start - timedelta(days=HISTORY_DAYS), end)
    rows = [(d, counts.get(d, 0), history_days_available(d), feature_build(d, hashes), run_id)
            for d in (start + timedelta(days=i) for i in range((end - start).days + 1))]
    ledger = spark.createDataFrame(rows, f"{PARTITION_COLUMN} date, rows long, history_days_available int, "
                                         "feature_build string, run_id string")
    replace_partitions(ledger.withColumn("built_at", F.current_timestamp()), table_uri(lake, GOLD_DAYS), start, end)


def feature_builds(spark: SparkSession, lake: str, start: date, end: date) -> dict[date, str]:
    """The feature build of each day of [start, end]; raises ``JobInputError`` naming the days that have none.

    Every prediction carries its day's build (``predictions.flight_delay_risk`` and the warehouse), so a day's
    predictions say which silver its features came from.
    """
    builds = {r[PARTITION_COLUMN]: r["feature_build"] for r in _rows(spark, lake, GOLD_DAYS, start, end)}
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    missing = [d for d in days if not builds.get(d)]
    if missing:
        raise JobInputError(
            f"{GOLD_DAYS} records no feature build for {day_ranges(missing)}: their gold features were not built "
            "by build_features (or were built before builds were recorded), so their predictions could not say "
            "which features made them. Run flights_daily for those days (or clear their build_features task), "
            "then score again.")
    return builds


def stale_gold(spark: SparkSession, lake: str, start: date, end: date) -> dict[date, str]:
    """Days of [start, end] whose gold is missing, or was built from silver that has changed since."""
    built = {r[PARTITION_COLUMN]: r["feature_build"] for r in _rows(spark, lake, GOLD_DAYS, start, end)}
    hashes = silver_hashes(spark, lake, start - timedelta(days=HISTORY_DAYS), end)
    out = {}
    for day in (start + timedelta(days=i) for i in range((end - start).days + 1)):
        now = feature_build(day, hashes)
        if day not in built:
            out[day] = "no gold features built"
        elif now is None:
            out[day] = "a day of its history is not in silver"
        elif built[day] != now:
            out[day] = (f"stale: its silver or a day of its history changed after its features were built "
                        f"(feature build {built[day]}, now {now})")
    return out


def stale_dependants(spark: SparkSession, lake: str, end: date) -> dict[date, str]:
    """The days after an interval ending on ``end`` whose features read its silver and no longer match it.

    Only days whose gold was built count (a day not built yet will be built from the current silver); a
    day whose silver and history are what its features were built from is not stale, so a rerun that
    changes nothing recomputes nothing.
    """
    last = end + timedelta(days=HISTORY_DAYS)
    built = {r[PARTITION_COLUMN] for r in _rows(spark, lake, GOLD_DAYS, end + timedelta(days=1), last)}
    if not built:
        return {}
    return {d: why for d, why in stale_gold(spark, lake, min(built), max(built)).items() if d in built}
