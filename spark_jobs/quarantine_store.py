"""The quarantine tables: bad rows held with their reasons, and every decision taken on them.

``quarantine.<dataset>`` (``flights``, ``weather``) holds each bad row once (by row id) with
its reason codes, the line exactly as delivered (``raw_line``), its parsed fields
(``raw_record``) and its current status: ``held``, ``released`` or ``superseded``, with
``status_changed_at`` / ``status_changed_by`` / ``status_reason``.

``quarantine.events`` is the history of those statuses: one row per status change,
partitioned by ``flight_date``. It is only ever appended to (``commit_events``, a MERGE that
only inserts): no event is updated or replaced. The one deletion is the retention policy's
(``spark_jobs/lake_maintenance.py``), which removes a quarantine row together with its events.

==============  ==========================================================================
``event_id``    SHA-256 of the dataset, row id, status, run id, who, why and the row's
                previous event: the same change made again (a retried commit, a rerun of
                the same run) is the same event and is appended once; a rerun that holds a
                superseded row again follows a different event, so it is a new one
``_row_id``     the row of ``quarantine.<dataset>`` the event is about
``dataset``     ``flights`` or ``weather``
``flight_date`` the row's day
``status``      ``held``, ``released`` or ``superseded``
``changed_at``  when the status changed
``changed_by``  who changed it (``bronze_landing`` for the ingestion's decisions)
``reason``      why
``run_id``      the run that changed it
==============  ==========================================================================

The ingestion holds new bad rows and superseded rows delivered again, and supersedes held
rows that are no longer delivered; a release marks held rows released. Each change is
first appended as an event; then the status columns of ``quarantine.<dataset>`` are set
from each row's latest event (by ``changed_at``) for the whole interval, so they are a
projection of the events (what the bronze gate, silver and the release read), and a run
that stopped between the two is repaired by the next run of the interval. A quarantine
table from before the events existed gets its statuses written once as each row's first
event: history starts from what was known then.

A row's history, oldest first (Spark SQL with Delta)::

    SELECT status, changed_at, changed_by, reason, run_id
    FROM delta.`<lake>/quarantine/events`
    WHERE dataset = 'flights' AND flight_date = '2013-01-05' AND _row_id = '<64 hex digits>'
    ORDER BY changed_at
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from include.lake import PARTITION_COLUMN, table_uri
from include.quality.release import check_row_ids
from spark_jobs.session import JobInputError, delta_exists, with_commit_retry

DATASETS = ("flights", "weather")
STATUSES = ("held", "released", "superseded")
INGESTION = "bronze_landing"  # who holds and supersedes rows
HELD_REASON = "broke a row-level expectation"
SUPERSEDED_REASON = "no longer delivered"

EVENTS_SCHEMA = T.StructType([T.StructField(name, type_) for name, type_ in (
    ("event_id", T.StringType()), ("_row_id", T.StringType()), ("dataset", T.StringType()),
    (PARTITION_COLUMN, T.DateType()), ("status", T.StringType()), ("changed_at", T.TimestampType()),
    ("changed_by", T.StringType()), ("reason", T.StringType()), ("run_id", T.StringType()))])
# A change to append: the row, its new status, who, why and in which run (``changed_at`` optional: now).
CHANGE_COLUMNS = ("_row_id", PARTITION_COLUMN, "status", "changed_by", "reason", "run_id")


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise JobInputError(f"{dataset!r} is not a quarantined dataset; one of {', '.join(DATASETS)}")


def _in(start: date | None, end: date | None, alias: str = "") -> str:
    """The SQL predicate on the partition column for [start, end] (``TRUE`` for the whole table)."""
    if start is None or end is None:
        return "TRUE"
    col = f"{alias}.{PARTITION_COLUMN}" if alias else PARTITION_COLUMN
    return f"{col} >= '{start}' AND {col} <= '{end}'"


def known_statuses(spark: SparkSession, lake: str) -> DataFrame:
    """Each quarantined row's current status as an event (``EVENTS_SCHEMA``), every dataset's table."""
    out = spark.createDataFrame([], T.StructType([f for f in EVENTS_SCHEMA.fields if f.name != "event_id"]))
    for dataset in DATASETS:
        uri = table_uri(lake, f"quarantine.{dataset}")
        if not delta_exists(spark, uri):
            continue
        rows = spark.read.format("delta").load(uri).filter(F.col("status").isin(*STATUSES))
        kept = {name: F.col(name) for name in rows.columns}  # a table from before a column existed lacks it
        changed_at = F.coalesce(kept.get("status_changed_at", F.lit(None).cast("timestamp")),
                                kept.get("quarantined_at", F.lit(None).cast("timestamp")), F.current_timestamp())
        out = out.unionByName(rows.select(
            "_row_id", F.lit(dataset).alias("dataset"), PARTITION_COLUMN, "status", changed_at.alias("changed_at"),
            *[kept.get(c, F.lit(None).cast("string")).alias(alias) for c, alias in (
                ("status_changed_by", "changed_by"), ("status_reason", "reason"), ("run_id", "run_id"))]))
    return out.withColumn("event_id", _event_id(F.lit(None).cast("string"))).select(*EVENTS_SCHEMA.fieldNames())


def ensure_events_table(spark: SparkSession, lake: str) -> str:
    """``quarantine.events``, created if missing; its URI.

    The commit that creates it holds the statuses the quarantine tables already have, as
    each row's first event (``known_statuses``): a lake from before the events existed starts
    its history from what was known then, exactly once.
    """
    uri = table_uri(lake, "quarantine.events")

    def create() -> None:
        if not delta_exists(spark, uri):  # a concurrent creator may have won: its commit is the one
            known_statuses(spark, lake).write.format("delta").mode("append").partitionBy(PARTITION_COLUMN).save(uri)

    if not delta_exists(spark, uri):
        with_commit_retry(create, uri)
    return uri


def read_events(spark: SparkSession, lake: str, dataset: str, start: date | None = None,
                end: date | None = None) -> DataFrame:
    """The events of ``dataset`` (of [start, end] when given)."""
    return (spark.read.format("delta").load(table_uri(lake, "quarantine.events"))
            .filter((F.col("dataset") == dataset) & F.expr(_in(start, end))))


def latest_events(spark: SparkSession, lake: str, dataset: str, start: date | None = None,
                  end: date | None = None) -> DataFrame:
    """Each row's latest event (of [start, end] when given): the row's current status."""
    order = Window.partitionBy("_row_id").orderBy(F.desc("changed_at"), F.desc("event_id"))
    return (read_events(spark, lake, dataset, start, end)
            .withColumn("_n", F.row_number().over(order)).filter("_n = 1").drop("_n"))


def _event_id(prior: Column) -> Column:
    parts = [F.col(c).cast("string") for c in ("dataset", "_row_id", "status", "run_id", "changed_by", "reason")]
    return F.sha2(F.to_json(F.array(*parts, prior)), 256)


def append_events(spark: SparkSession, lake: str, dataset: str, start: date | None, end: date | None,
                  changes: Callable[[DataFrame], DataFrame]) -> int:
    """Append status changes of [start, end] (``None``: the whole table) to ``quarantine.events``; how many.

    ``changes`` gets the rows' latest events (``latest_events``) and returns the changes wanted
    (``CHANGE_COLUMNS``, and ``changed_at`` if it is not now). It is called again when the
    commit is retried, so each change is decided on the events as they are then. A change to
    the status a row already has is no change and is left out; an event already in the table
    (same ``event_id``) is not appended again. Existing events are never changed.
    """
    _check_dataset(dataset)
    uri = ensure_events_table(spark, lake)

    def append() -> int:
        latest = latest_events(spark, lake, dataset, start, end)
        wanted = changes(latest)
        changed_at = (F.coalesce(F.col("changed_at"), F.current_timestamp()) if "changed_at" in wanted.columns
                      else F.current_timestamp())
        new = (wanted.select(*CHANGE_COLUMNS, changed_at.alias("changed_at"))
               .join(latest.select("_row_id", F.col("status").alias("_was"), F.col("event_id").alias("_prior")),
                     "_row_id", "left")
               .filter(~F.col("status").eqNullSafe(F.col("_was")))
               .withColumn("dataset", F.lit(dataset))
               .withColumn("event_id", _event_id(F.col("_prior")))
               .select(*EVENTS_SCHEMA.fieldNames())
               .dropDuplicates(["event_id"]))
        return commit_events(spark, lake, dataset, start, end, new, retry=False)

    return with_commit_retry(append, uri)


def commit_events(spark: SparkSession, lake: str, dataset: str, start: date | None, end: date | None,
                  events: DataFrame, retry: bool = True) -> int:
    """Insert the events (``EVENTS_SCHEMA``) of [start, end] whose ``event_id`` is not in the table; how many.

    The one write to ``quarantine.events``: a MERGE that only inserts, so committing the same
    events again (a retried commit) adds nothing and no event is ever changed.
    """
    from delta.tables import DeltaTable

    uri = ensure_events_table(spark, lake)
    events = events.select(*EVENTS_SCHEMA.fieldNames())

    def commit() -> int:
        known = read_events(spark, lake, dataset, start, end).select("event_id")
        new = events.join(known, "event_id", "left_anti").localCheckpoint()  # decided once: counted as committed
        n = new.count()
        if n:
            (DeltaTable.forPath(spark, uri).alias("t")
             .merge(new.alias("s"), f"t.event_id = s.event_id AND t.dataset = '{dataset}' AND "
                                    f"{_in(start, end, 't')}")
             .whenNotMatchedInsertAll()
             .execute())
        return n

    return with_commit_retry(commit, uri) if retry else commit()


def project_statuses(spark: SparkSession, lake: str, dataset: str, start: date, end: date,
                     delivered: DataFrame | None = None) -> None:
    """Set the status columns of the interval's rows of ``quarantine.<dataset>`` from their latest events.

    With ``delivered`` (the interval's bad rows as ``merge_quarantine`` selects them), rows not
    in the table yet are inserted; a row held again takes the new delivery's line and run id,
    and a row without ``raw_line`` gets it.
    """
    from delta.tables import DeltaTable

    uri = table_uri(lake, f"quarantine.{dataset}")
    status_cols = {"status": "s.e_status", "status_changed_at": "s.e_changed_at",
                   "status_changed_by": "s.e_changed_by", "status_reason": "s.e_reason"}
    stale = " OR ".join(f"NOT (t.{c} <=> {s})" for c, s in status_cols.items())

    def project() -> None:
        latest = latest_events(spark, lake, dataset, start, end).select(
            "_row_id", PARTITION_COLUMN, *[F.col(c).alias(f"e_{c}") for c in ("status", "changed_at", "changed_by",
                                                                               "reason")])
        merge = DeltaTable.forPath(spark, uri).alias("t")
        on = f"t._row_id = s._row_id AND {_in(start, end, 't')}"
        if delivered is None:
            merge.merge(latest.alias("s"), on).whenMatchedUpdate(condition=stale, set=status_cols).execute()
            return
        data = [c for c in delivered.columns if c not in ("_row_id", PARTITION_COLUMN) and c not in status_cols]
        source = latest.join(delivered.select("_row_id", PARTITION_COLUMN, F.lit(True).alias("d_delivered"),
                                              *[F.col(c).alias(f"d_{c}") for c in data]),
                             ["_row_id", PARTITION_COLUMN], "left")
        (merge.merge(source.alias("s"), on)
         .whenMatchedUpdate(condition="s.d_delivered AND s.e_status = 'held' AND NOT (t.status <=> 'held')",
                            set={**status_cols, "raw_line": "s.d_raw_line", "run_id": "s.d_run_id"})
         .whenMatchedUpdate(condition=f"{stale} OR (t.raw_line IS NULL AND s.d_raw_line IS NOT NULL)",
                            set={**status_cols, "raw_line": "coalesce(t.raw_line, s.d_raw_line)"})
         .whenNotMatchedInsert(condition="s.d_delivered", values={
             "_row_id": "s._row_id", PARTITION_COLUMN: f"s.{PARTITION_COLUMN}", **status_cols,
             **{c: f"s.d_{c}" for c in data}})
         .execute())

    with_commit_retry(project, uri)


def merge_quarantine(spark: SparkSession, df: DataFrame, lake: str, dataset: str, start: date, end: date,
                     run_id: str) -> int:
    """Record the interval's bad rows in ``quarantine.<dataset>`` and their status changes as events.

    New bad rows are ``held``; rows already known keep their status (a release survives a
    rerun), except superseded rows delivered again, which are held again; held rows of the
    interval that are no longer delivered become ``superseded``. ``raw_line`` is the line
    exactly as delivered; ``raw_record`` the parsed fields as JSON (what the row id is
    computed from; a field read as null is left out). The held rows of the interval are
    returned as a count.
    """
    from delta.tables import DeltaTable

    _check_dataset(dataset)
    bad = df.filter(F.size("_reasons") > 0).select(
        "_row_id", F.lit(dataset).alias("dataset"), PARTITION_COLUMN, F.col("_reasons").alias("reasons"),
        F.col("_raw").alias("raw_record"), F.col("_raw_line").alias("raw_line"),
        F.col("_source_file").alias("source_file"),
        F.lit(run_id).alias("run_id"), F.current_timestamp().alias("quarantined_at"),
    )
    uri = table_uri(lake, f"quarantine.{dataset}")
    if not delta_exists(spark, uri):  # an empty table first, so there is one write path: the MERGE
        empty = bad.select("*", F.lit("held").alias("status"), F.current_timestamp().alias("status_changed_at"),
                           F.lit(INGESTION).alias("status_changed_by"), F.lit(HELD_REASON).alias("status_reason"))
        with_commit_retry(lambda: empty.limit(0).write.format("delta").mode("append").partitionBy(PARTITION_COLUMN)
                          .save(uri), uri)
    else:
        if "raw_line" not in DeltaTable.forPath(spark, uri).toDF().columns:  # from before raw lines were kept
            with_commit_retry(lambda: spark.sql(f"ALTER TABLE delta.`{uri}` ADD COLUMNS (raw_line STRING)"), uri)

    def decided(latest: DataFrame) -> DataFrame:
        delivered = bad.select("_row_id", PARTITION_COLUMN)
        known = latest.select("_row_id", "status")
        held = (delivered.join(known, "_row_id", "left")
                .filter(F.col("status").isNull() | (F.col("status") == "superseded"))
                .select("_row_id", PARTITION_COLUMN, F.lit("held").alias("status"),
                        F.lit(HELD_REASON).alias("reason")))
        gone = (latest.filter(F.col("status") == "held").join(delivered, ["_row_id", PARTITION_COLUMN], "left_anti")
                .select("_row_id", PARTITION_COLUMN, F.lit("superseded").alias("status"),
                        F.lit(SUPERSEDED_REASON).alias("reason")))
        return (held.unionByName(gone).withColumn("changed_by", F.lit(INGESTION))
                .withColumn("run_id", F.lit(run_id)))

    append_events(spark, lake, dataset, start, end, decided)
    project_statuses(spark, lake, dataset, start, end, delivered=bad)
    return spark.read.format("delta").load(uri).filter(f"{_in(start, end)} AND status = 'held'").count()


def release_held(spark: SparkSession, lake: str, dataset: str, start: date, end: date, by: str, reason: str,
                 row_ids: list[str] | None = None, run_id: str | None = None) -> int:
    """Release held rows of the interval (all, or ``row_ids``); the next run of the interval lets them through.

    Each release is appended to ``quarantine.events`` with who and why, then the statuses
    of the interval are projected. Returns the number of rows released.
    """
    _check_dataset(dataset)
    if row_ids:
        try:
            row_ids = check_row_ids(row_ids)
        except ValueError as exc:
            raise JobInputError(str(exc)) from None
    if not delta_exists(spark, table_uri(lake, f"quarantine.{dataset}")):
        return 0

    def released(latest: DataFrame) -> DataFrame:
        held = latest.filter(F.col("status") == "held")
        if row_ids:
            held = held.filter(F.col("_row_id").isin(row_ids))
        return held.select("_row_id", PARTITION_COLUMN, F.lit("released").alias("status"),
                           F.lit(by).alias("changed_by"), F.lit(reason).alias("reason"),
                           F.lit(run_id).cast("string").alias("run_id"))

    n = append_events(spark, lake, dataset, start, end, released)
    project_statuses(spark, lake, dataset, start, end)
    return n
