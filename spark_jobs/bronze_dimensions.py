"""Dimension snapshots (planes, airlines, airports): delivered whole, checked, then loaded into bronze whole.

Each run of ``bronze_landing.py`` reads ``<landing>/dimensions/<name>.csv`` of the three
dimensions and checks every snapshot before any of them replaces its table:

- the file: present, not compressed under its plain ``.csv`` name, UTF-8, a header with
  every contract column (``include.source.contract.DIMENSION_COLUMNS``; a byte-order mark
  and quoted names read as the plain header, as for the daily files), at least one row;
- the rows, against the suite ``expectations/bronze/<name>.json``: the key (planes.tailnum,
  airlines.carrier, airports.faa) present and unique, and the values in shape and range.
  A snapshot is replaced whole, so a row that breaks one refuses the whole snapshot;
- the change, against the current ``bronze.<name>``: keys may be added, but a snapshot
  that would drop more than ``FLIGHTS_DIMENSION_MAX_KEY_LOSS`` (default 0.01, 1%) of the
  current keys, or has that many fewer rows, is refused. An intended large change is
  accepted for one run when its ``accept_dimension_change`` param names the dimension
  (``bronze_landing.py --accept-dimension-change airlines``; comma-separated), or for every
  run while ``FLIGHTS_ACCEPT_DIMENSION_CHANGE`` does.

When a snapshot is refused the job fails without retries (exit status 3), naming the file,
what is wrong and what to do, and no dimension table is written. Every check is recorded
in ``bronze.dimension_snapshots`` (dimension, path, sha256, rows, keys, status, issues,
table_version, checked_at, run_id) with status ``accepted`` (written as ``table_version``),
``unchanged`` (same content as the snapshot the table holds: not rewritten), ``rejected``,
``skipped`` (passed, but not written because another snapshot of the run was refused) or
``restored``.

Earlier versions of a dimension stay readable with Delta time travel
(``spark.read.format("delta").option("versionAsOf", N).load(<lake>/bronze/<name>)``), and
one can be made current again; the restore is recorded too:

    spark-submit spark_jobs/bronze_dimensions.py --lake LAKE --restore airlines --version N [--run-id ID]

The next run compares the delivered file with the restored version: the snapshot that version
was loaded from counts as unchanged, any other is checked and gated like a new one. Redeliver
the snapshot that should stand before the next run.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include.config import ConfigError
from include.lake import dimension_file, table_uri
from include.quality.rows import apply_row_rules
from include.quality.suites import load_suite_dict
from include.source.contract import DIMENSION_COLUMNS
from include.source.delivery import inspect_file, parse_header
from include.source.pii import PiiConfigError, pseudonymise
from spark_jobs.bronze_landing import read_landing_file, with_metadata
from spark_jobs.session import JobInputError, delta_exists, get_spark, read_chunks, run_job, with_commit_retry

KEYS = {"planes": "tailnum", "airlines": "carrier", "airports": "faa"}
KEY_NOUNS = {"planes": "tail numbers", "airlines": "carriers", "airports": "airports"}
MAX_KEY_LOSS_ENV, ACCEPT_CHANGE_ENV = "FLIGHTS_DIMENSION_MAX_KEY_LOSS", "FLIGHTS_ACCEPT_DIMENSION_CHANGE"
DEFAULT_MAX_KEY_LOSS = 0.01
SNAPSHOTS_TABLE = "bronze.dimension_snapshots"
SNAPSHOTS_SCHEMA = ("dimension string, path string, sha256 string, rows long, keys long, status string, "
                    "issues array<string>, table_version long, checked_at timestamp, run_id string")
SHOWN_KEYS = 20  # keys named in a message; the rest are counted
# Delta operations that commit a version with the same rows (lake_maintenance vacuums every table)
KEEPS_DATA = ("VACUUM START", "VACUUM END", "OPTIMIZE")


class DimensionSnapshotRejected(JobInputError):
    """A dimension snapshot breaks its contract or its gate: fix and redeliver it (or accept the change)."""


def max_dimension_key_loss() -> float:
    """``FLIGHTS_DIMENSION_MAX_KEY_LOSS``: the share of current keys (and rows) a snapshot may drop (default 0.01)."""
    text = os.environ.get(MAX_KEY_LOSS_ENV, "").strip() or str(DEFAULT_MAX_KEY_LOSS)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # also refuses nan
        raise ConfigError(f"{MAX_KEY_LOSS_ENV}={text!r} is not a share between 0 and 1; set it to the share of a "
                          f"dimension's current keys a new snapshot may drop (default {DEFAULT_MAX_KEY_LOSS}), "
                          "or unset it.")
    return value


def accepted_dimension_changes(extra: str = "") -> frozenset[str]:
    """The dimensions whose next snapshot may drop any share of keys and rows.

    ``FLIGHTS_ACCEPT_DIMENSION_CHANGE`` (a deployment's standing choice) plus ``extra`` (the run's
    ``accept_dimension_change`` param, as the job's ``--accept-dimension-change``).
    """
    names = set()
    for source, text in ((ACCEPT_CHANGE_ENV, os.environ.get(ACCEPT_CHANGE_ENV, "")),
                         ("--accept-dimension-change", extra)):
        given = {n.strip().lower() for n in text.split(",") if n.strip()}
        unknown = sorted(given - set(DIMENSION_COLUMNS))
        if unknown:
            raise ConfigError(f"{source}={text!r} names unknown dimension(s) {unknown}; use a comma-separated "
                              f"list of {', '.join(DIMENSION_COLUMNS)}, or leave it empty.")
        names |= given
    return frozenset(names)


@dataclass
class SnapshotCheck:
    """One dimension snapshot as checked: what was found, and whether it may be written."""

    name: str
    path: str
    sha256: str | None = None
    rows: int | None = None
    keys: int | None = None
    status: str = "rejected"
    issues: list[str] = field(default_factory=list)
    gated: bool = False  # refused by the change gate only: the allow variable would accept it
    frame: DataFrame | None = None
    table_version: int | None = None
    checked_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def file(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def file_issues(name: str, stats: dict) -> list[str]:
    """Why a delivered snapshot (``include.source.delivery.inspect_file`` of it) breaks the file contract."""
    contract, file = DIMENSION_COLUMNS[name], stats["path"].rsplit("/", 1)[-1]
    if stats["bytes"] == 0:
        return [f"{file} is empty (0 bytes)"]
    if stats["problem"]:
        return [stats["problem"]]
    if not stats["utf8"]:
        return [f"{file} is not valid UTF-8: re-export it as UTF-8"]
    header = parse_header(stats["header"])
    if len(header) < 2:
        return [f"{file} is unreadable: no comma-separated header line"]
    missing, added = [c for c in contract if c not in header], [c for c in header if c not in contract]
    if missing:
        hint = f" (renamed to {added}?)" if added else ""
        return [f"{file} lacks column(s) {missing}{hint}: the contract requires {contract}"]
    if stats["data_lines"] == 0:
        return [f"{file} has a header only: a snapshot needs at least one row"]
    return []


def _share(value: float) -> str:
    return f"{value * 100:g}%"


def _keys_text(keys: list, total: int) -> str:
    more = f", ... and {total - len(keys)} more" if total > len(keys) else ""
    return ", ".join(str(k) for k in keys) + more


def check_rows(spark: SparkSession, check: SnapshotCheck, header: list[str], run_id: str) -> None:
    """Read the snapshot and check its rows against ``expectations/bronze/<name>.json``; sets rows, keys, frame."""
    key, suite = KEYS[check.name], load_suite_dict(f"bronze/{check.name}")
    try:  # personal columns (a key classified in the contract) are hashed before any check or message sees them
        delivered = pseudonymise(read_landing_file(spark, check.path, header), check.name,
                                 corrupt_column="_corrupt_record")
    except PiiConfigError as exc:
        raise JobInputError(str(exc)) from None
    df = (with_metadata(delivered, check.path, run_id, sha=check.sha256)
          .withColumn("_row_seq", F.monotonically_increasing_id()))
    df = apply_row_rules(df, suite).cache()
    totals = df.agg(F.count("*").alias("rows"), F.countDistinct(key).alias("keys")).first()
    check.rows, check.keys, check.frame = int(totals["rows"]), int(totals["keys"]), df
    broken = (df.select(F.explode("_reasons").alias("reason"), key).groupBy("reason")
              .agg(F.count("*").alias("n"), F.slice(F.sort_array(F.collect_set(key)), 1, 5).alias("examples"))
              .orderBy("reason").collect())
    for r in broken:
        examples = f" (e.g. {key} {', '.join(r['examples'])})" if r["examples"] else ""
        check.issues.append(f"{check.file}: {r['n']} row(s) break {r['reason']}{examples}")
    for exp in suite["expectations"]:
        if (exp.get("meta") or {}).get("level") != "row":
            check.issues += batch_issues(df, check, exp)


def batch_issues(df: DataFrame, check: SnapshotCheck, exp: dict) -> list[str]:
    """What a batch-level expectation of the suite finds wrong with the whole snapshot ``df``."""
    t, kw, reason = exp["type"], exp["kwargs"], (exp.get("meta") or {}).get("reason") or exp["type"]
    if t == "expect_table_row_count_to_be_between":
        low, high = kw.get("min_value"), kw.get("max_value")
        if (low is not None and check.rows < low) or (high is not None and check.rows > high):
            return [f"{check.file} has {check.rows} row(s), breaking {reason}: its suite expects {low}..{high}"]
        return []
    if t == "expect_column_values_to_be_unique":
        col = kw["column"]
        dup = (df.where(F.col(col).isNotNull()).groupBy(col).count().where("count > 1")
               .agg(F.count("*").alias("n"), F.slice(F.sort_array(F.collect_list(col)), 1, 5).alias("examples"))
               .first())
        if dup["n"]:
            return [f"{check.file}: {dup['n']} {col} value(s) on more than one row break {reason} "
                    f"(e.g. {col} {', '.join(dup['examples'])})"]
        return []
    raise ValueError(f"Suite bronze/{check.name}: {t} is not checked on dimension snapshots; mark it "
                     "meta.level='row' if it applies per row, or check it in spark_jobs/bronze_dimensions.py.")


def gate_change(spark: SparkSession, lake: str, check: SnapshotCheck, max_loss: float, accept: bool) -> None:
    """Refuse a snapshot that would drop more than ``max_loss`` of the current keys or rows (unless ``accept``)."""
    uri, key, noun = table_uri(lake, f"bronze.{check.name}"), KEYS[check.name], KEY_NOUNS[check.name]
    if not delta_exists(spark, uri):
        return
    current = spark.read.format("delta").load(uri)
    now = current.agg(F.count("*").alias("rows"), F.countDistinct(key).alias("keys")).first()
    lost = (current.select(key).where(F.col(key).isNotNull()).distinct()
            .join(check.frame.select(key), key, "left_anti")
            .agg(F.count("*").alias("n"), F.slice(F.sort_array(F.collect_list(key)), 1, SHOWN_KEYS).alias("shown"))
            .first())
    issues = []
    if lost["n"] > max_loss * now["keys"]:
        issues.append(f"{check.file} has {check.keys} {noun}; the current snapshot has {now['keys']} and "
                      f"{lost['n']} of them would disappear: {_keys_text(lost['shown'], lost['n'])} "
                      f"(more than the {_share(max_loss)} allowed by {MAX_KEY_LOSS_ENV})")
    elif check.rows < (1 - max_loss) * now["rows"]:  # the current snapshot may predate the key checks
        issues.append(f"{check.file} has {check.rows} row(s); the current snapshot has {now['rows']}, and more "
                      f"than the {_share(max_loss)} fewer allowed by {MAX_KEY_LOSS_ENV}")
    if issues and accept:
        check.issues += [f"{i}: accepted by {ACCEPT_CHANGE_ENV}" for i in issues]
    elif issues:
        check.issues += issues
        check.gated = True


def table_version(spark: SparkSession, uri: str) -> int | None:
    """The current version of a Delta table, or None when there is no table."""
    if not delta_exists(spark, uri):
        return None
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, uri).history(1).select("version").first()[0])


def holds_version(spark: SparkSession, uri: str, version: int) -> bool:
    """Whether the rows of a Delta table are still those of ``version``: no later commit changed them.

    VACUUM and OPTIMIZE (lake_maintenance vacuums every table) commit versions that keep the rows;
    when the log no longer holds every later commit, the rows count as changed.
    """
    if not delta_exists(spark, uri):
        return False
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, uri)
    latest = int(table.history(1).select("version").first()[0])
    if latest <= version:
        return latest == version
    later = (table.history().where(F.col("version") > version)
             .agg(F.count("*").alias("commits"), F.count(F.when(~F.col("operation").isin(*KEEPS_DATA), 1))
                  .alias("changes")).first())
    return later["commits"] == latest - version and later["changes"] == 0  # every later commit known, none a change


def last_written(spark: SparkSession, lake: str) -> dict[str, dict]:
    """Per dimension, the recorded snapshot its table's latest recorded version holds (accepted or restored)."""
    uri = table_uri(lake, SNAPSHOTS_TABLE)
    if not delta_exists(spark, uri):
        return {}
    rows = (spark.read.format("delta").load(uri).where(F.col("table_version").isNotNull())
            .select("dimension", "sha256", "rows", "keys", "table_version").collect())
    out: dict[str, dict] = {}
    for r in rows:
        if r["dimension"] not in out or r["table_version"] > out[r["dimension"]]["table_version"]:
            out[r["dimension"]] = r.asDict()
    return out


def record(spark: SparkSession, lake: str, checks: list[SnapshotCheck], run_id: str) -> None:
    """Append the checks to ``bronze.dimension_snapshots``."""
    rows = [(c.name, c.path, c.sha256, c.rows, c.keys, c.status, c.issues, c.table_version, c.checked_at, run_id)
            for c in checks]
    uri = table_uri(lake, SNAPSHOTS_TABLE)
    df = spark.createDataFrame(rows, SNAPSHOTS_SCHEMA)
    with_commit_retry(lambda: df.write.format("delta").mode("append").save(uri), uri)


def delivered_path(spark: SparkSession, uri: str) -> str | None:
    """The file as Hadoop names it (``file:/…`` for a local one, so that it is read by Python), or None if absent."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return str(fs.makeQualified(path).toString()) if fs.exists(path) else None


def check_snapshot(spark: SparkSession, lake: str, landing: str, name: str, run_id: str, written: dict | None,
                   max_loss: float, accept: bool) -> SnapshotCheck:
    """File, rows and change checks of one dimension's snapshot; ``written``: what its table holds, if recorded."""
    check = SnapshotCheck(name, delivered_path(spark, dimension_file(landing, name)))
    if check.path is None:
        check.path = dimension_file(landing, name)
        check.issues.append(f"{check.file} is missing: deliver the {name} snapshot at {check.path}")
        return check
    stats = inspect_file(check.path, read_chunks(spark, check.path, chunk_bytes=1 << 20))
    check.sha256, check.issues = stats["sha256"], file_issues(name, stats)
    if check.issues:
        return check
    if (written and written["sha256"] == check.sha256
            and holds_version(spark, table_uri(lake, f"bronze.{name}"), written["table_version"])):
        check.status, check.rows, check.keys = "unchanged", written["rows"], written["keys"]
        return check
    header = parse_header(stats["header"])
    added = [c for c in header if c not in DIMENSION_COLUMNS[name]]
    check_rows(spark, check, header, run_id)
    if not check.issues:
        gate_change(spark, lake, check, max_loss, accept)
    if all(i.endswith(f"accepted by {ACCEPT_CHANGE_ENV}") for i in check.issues):
        check.status = "accepted"
    if added:
        check.issues.append(f"{check.file}: added column(s) {added}: accepted and kept in bronze, unused downstream")
    return check


def refusal(checks: list[SnapshotCheck]) -> str:
    """The message of a refused run: each refused file, what is wrong, and what to do."""
    refused = [c for c in checks if c.status == "rejected"]
    lines = [f"{len(refused)} dimension snapshot(s) refused; no dimension table was written "
             f"({', '.join(c.name for c in checks)} keep their current version):"]
    lines += [f"  - {c.path}: {issue}" for c in refused for issue in c.issues]
    lines.append("Fix the file(s) and deliver them again, then clear the task.")
    gated = [c.name for c in refused if c.gated]
    if gated:
        lines.append(f"If the change is intended, set {ACCEPT_CHANGE_ENV}={','.join(gated)} for one run (unset it "
                     "afterwards), then clear the task.")
    return "\n".join(lines)


def ingest_dimensions(spark: SparkSession, lake: str, landing: str, run_id: str, *, max_key_loss: float | None = None,
                      accept_changes: frozenset[str] | set[str] | None = None) -> dict[str, str]:
    """Check the three snapshots, then write those that changed; returns each dimension's status.

    Args:
        max_key_loss: the share of current keys and rows a snapshot may drop (default: $FLIGHTS_DIMENSION_MAX_KEY_LOSS).
        accept_changes: dimensions whose snapshot may drop more (default: $FLIGHTS_ACCEPT_DIMENSION_CHANGE).

    Raises:
        DimensionSnapshotRejected: a snapshot broke its contract or its gate; nothing was written.
    """
    try:
        max_loss = max_dimension_key_loss() if max_key_loss is None else max_key_loss
        accept = accepted_dimension_changes() if accept_changes is None else frozenset(accept_changes)
    except ConfigError as exc:
        raise JobInputError(str(exc)) from None
    written = last_written(spark, lake)
    checks = [check_snapshot(spark, lake, landing, name, run_id, written.get(name), max_loss, name in accept)
              for name in DIMENSION_COLUMNS]
    try:
        if any(c.status == "rejected" for c in checks):
            for c in checks:
                if c.status == "accepted":
                    c.status = "skipped"
                    c.issues.append(f"not written: another snapshot of the run was refused "
                                    f"({', '.join(r.file for r in checks if r.status == 'rejected')})")
            record(spark, lake, checks, run_id)
            raise DimensionSnapshotRejected(refusal(checks))
        for c in checks:
            if c.status == "accepted":
                uri, df = table_uri(lake, f"bronze.{c.name}"), c.frame.drop("_corrupt_record", "_row_seq", "_reasons")
                with_commit_retry(lambda: df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
                                  .save(uri), uri)
                c.table_version = table_version(spark, uri)
        record(spark, lake, checks, run_id)
    finally:
        for c in checks:
            if c.frame is not None:
                c.frame.unpersist()
    for c in checks:
        print(f"bronze.{c.name} {c.path}: {c.status} {'; '.join(c.issues)}")
    return {c.name: c.status for c in checks}


def restore_dimension(spark: SparkSession, lake: str, name: str, version: int, run_id: str = "restore") -> int:
    """Make ``version`` of ``bronze.<name>`` current again (Delta RESTORE); returns the version the restore wrote.

    The restore is recorded in ``bronze.dimension_snapshots`` with status ``restored``, the content
    hash of the snapshot that version held (when it was recorded) and the restored rows and keys.
    """
    if name not in DIMENSION_COLUMNS:
        raise JobInputError(f"{name!r} is not a dimension; use one of {', '.join(DIMENSION_COLUMNS)}.")
    uri = table_uri(lake, f"bronze.{name}")
    latest = table_version(spark, uri)
    if latest is None:
        raise JobInputError(f"bronze.{name} does not exist at {uri}: there is no version to restore.")
    if not 0 <= version < latest:
        raise JobInputError(f"bronze.{name} has versions 0..{latest} (the latest is current); "
                            f"{version} is not an earlier one. See DESCRIBE HISTORY or {SNAPSHOTS_TABLE}.")
    from delta.tables import DeltaTable

    with_commit_retry(lambda: DeltaTable.forPath(spark, uri).restoreToVersion(version), uri)
    key, log = KEYS[name], table_uri(lake, SNAPSHOTS_TABLE)
    source = (spark.read.format("delta").load(log)
              .where((F.col("dimension") == name) & (F.col("table_version") == version)).select("sha256").collect()
              if delta_exists(spark, log) else [])
    totals = spark.read.format("delta").load(uri).agg(F.count("*").alias("rows"),
                                                      F.countDistinct(key).alias("keys")).first()
    check = SnapshotCheck(name, uri, sha256=source[0]["sha256"] if source else None, rows=int(totals["rows"]),
                          keys=int(totals["keys"]), status="restored",
                          issues=[f"restored version {version} of bronze.{name} (was version {latest})"],
                          table_version=table_version(spark, uri))
    record(spark, lake, [check], run_id)
    print(f"bronze.{name}: version {version} restored as version {check.table_version}")
    return check.table_version


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True, help="lake root URI")
    p.add_argument("--restore", required=True, choices=list(DIMENSION_COLUMNS), help="the dimension to restore")
    p.add_argument("--version", required=True, type=int, help="the earlier version of bronze.<dimension> to restore")
    p.add_argument("--run-id", default="restore", help="recorded with the restore")
    a = p.parse_args(argv)
    spark = get_spark(f"bronze_dimensions_restore_{a.restore}")
    restore_dimension(spark, a.lake, a.restore, a.version, a.run_id)


if __name__ == "__main__":
    run_job(main)
