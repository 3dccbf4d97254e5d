"""Ingest the interval's landing files into bronze, as received, with quarantine.

A day's extract is ``<dataset>_<day>[.<part>].csv``, or the same gzip-compressed as
``.csv.gz``. A header may start with a UTF-8 byte-order mark and quote its names (as
spreadsheet exports write it); it reads as the plain header. A file over
``--max-file-bytes`` (``FLIGHTS_MAX_LANDING_FILE_BYTES``, default 2 GiB) fails the run at
once, without retries (exit status 3), before anything is read or written.

For every delivered file the job first inspects the bytes in one streaming pass (content
hash, compression, UTF-8, header, rows) and records it in ``bronze.landing_files``:

- rejected (the whole interval is then blocked by the bronze gate): empty, header-only,
  not UTF-8 or unreadable files, compressed files whose compression their name does not
  announce (zip, bzip2, xz, zstd, or gzip named ``.csv``), and files whose header lacks a
  contract column (missing or renamed);
- duplicate: the same content already delivered for that day (ingested once); the hash is
  of the CSV content, so a day delivered both plain and as ``.csv.gz`` counts once;
- accepted: rows go to bronze as strings exactly as received (``NA`` read as null), with
  source file, content hash, load time and run id. An added column is accepted with a
  warning and kept.

Each accepted row is checked against the row-level expectations of its suite: rows that
break one are written to ``quarantine.<dataset>`` with their reason codes, the line exactly
as delivered (``raw_line``) and its parsed fields (``raw_record``), status ``held`` (every status
change is appended to ``quarantine.events``); the good
rows continue. Rerunning an interval replaces exactly its partitions; a release of
quarantined rows survives reruns.

    spark-submit spark_jobs/bronze_landing.py --lake LAKE --landing LANDING \
        --start 2013-01-01 --end 2013-01-31 --run-id RUN_ID [--release-held --released-by WHO] \
        [--max-file-bytes N] [--accept-dimension-change airlines,...] [--pii-columns flights.tailnum,...] \
        [--pii-key-secret SECRET] [--check SUITE=TABLE ... --result URI]

``--pii-columns`` classifies more columns as personal than the contract does, and
``--pii-key-secret`` names the secret (AWS Secrets Manager, GCP Secret Manager, Azure Key
Vault) the job reads the HMAC key from when its environment has no ``FLIGHTS_PII_KEY``
(``include.source.pii``). ``--accept-dimension-change`` lets the named dimension snapshots
drop more keys than the change gate allows (``spark_jobs.bronze_dimensions``). With
``--check`` and ``--result`` the job then runs the bronze gate on what it committed, in the same
session (``spark_jobs.quality_gate.run_gate``).
"""

from __future__ import annotations

import argparse
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from include.config import DEFAULT_MAX_LANDING_FILE_BYTES, ConfigError, max_landing_file_bytes
from include.lake import LANDING_SUFFIXES, PARTITION_COLUMN, join, landing_file, table_uri
from include.quality.rows import apply_row_rules
from include.quality.suites import load_suite_dict
from include.source.contract import CONTRACTS, NULL_TOKEN
from include.source.delivery import BOM, inspect_file, parse_header
from include.source.pii import PiiConfigError, pseudonymise, use_columns, use_key_secret
from spark_jobs.quality_gate import add_gate_args, reference_params, require_gate_args, run_gate
from spark_jobs.quarantine_store import merge_quarantine, release_held
from spark_jobs.session import (JobInputError, delta_exists, get_spark, interval_args, read_chunks,
                                replace_partitions, run_job, with_commit_retry)

DAILY_DATASETS = ("flights", "weather")


class LandingFileMissing(JobInputError, FileNotFoundError):
    """An expected landing file is not there: deliver it, then clear the task."""


class LandingFileTooLarge(JobInputError):
    """A landing file is over the size limit: a retry reads the same file, so the run fails at once."""


def _plain(uri: str) -> str:
    """The same file named by Hadoop's glob and by Spark's input_file_name: ``file:/x``, ``file:///x``, ``/x`` agree."""
    return re.sub(r"^file:/+", "/", uri)


def classify(dataset: str, stats: dict, seen: dict[str, str]) -> tuple[str, list[str]]:
    """Status (accepted / duplicate / rejected) and issues of one delivered file."""
    contract = CONTRACTS[dataset]
    if stats["bytes"] == 0:
        return "rejected", ["empty file (0 bytes)"]
    if stats["problem"]:
        return "rejected", [stats["problem"]]
    if stats["content_bytes"] == 0:
        return "rejected", ["empty file (no content once decompressed)"]
    if not stats["utf8"]:
        return "rejected", ["not valid UTF-8: re-export the file as UTF-8"]
    header = parse_header(stats["header"])
    if len(header) < 2:
        return "rejected", ["unreadable: no comma-separated header line"]
    issues: list[str] = []
    missing = [c for c in contract if c not in header]
    added = [c for c in header if c not in contract]
    if missing:
        hint = f" (renamed to {added}?)" if added else ""
        return "rejected", [f"missing column(s) {missing}{hint}: the contract requires {contract}"]
    if stats["data_lines"] == 0:
        return "rejected", ["header only: the file has no rows"]
    if stats["sha256"] in seen:
        return "duplicate", [f"same content as {seen[stats['sha256']]}: ingested once"]
    if added:
        issues.append(f"added column(s) {added}: accepted and kept in bronze, unused downstream")
    return "accepted", issues


def daily_files(spark: SparkSession, landing: str, dataset: str, day: date) -> list[tuple[str, int]]:
    """The day's delivered files (``<dataset>_<day>*.csv`` or ``.csv.gz``) with their sizes in bytes, by name."""
    jvm = spark.sparkContext._jvm
    suffixes = ",".join(s.lstrip(".") for s in LANDING_SUFFIXES)  # plain or gzip-compressed
    pattern = jvm.org.apache.hadoop.fs.Path(join(landing, dataset, f"{dataset}_{day:%Y-%m-%d}*.{{{suffixes}}}"))
    fs = pattern.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    statuses = fs.globStatus(pattern) or []
    return sorted((str(s.getPath().toString()), int(s.getLen())) for s in statuses)


def inspect_files(spark: SparkSession, paths: list[str], threads: int = 8) -> dict[str, dict]:
    """``include.source.delivery.inspect_file`` of each file, streamed on the driver a chunk at a time.

    No file is ever held in memory whole (``binaryFiles`` would, and cannot pass 2 GiB);
    a few files are read at once, since most of the time is spent waiting on storage.
    """
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths)))) as pool:
        return dict(zip(paths, pool.map(lambda p: inspect_file(p, read_chunks(spark, p)), paths)))


def refuse_large_files(dataset: str, files: list[tuple[str, int]], max_bytes: int) -> None:
    """Fail the run without retries when a file is over ``max_bytes``: nothing of it is read."""
    large = [(path, size) for path, size in files if size > max_bytes]
    if large:
        path, size = large[0]
        raise LandingFileTooLarge(
            f"{len(large)} {dataset} landing file(s) over the {max_bytes:,}-byte limit "
            f"(FLIGHTS_MAX_LANDING_FILE_BYTES), first {path} at {size:,} bytes. Deliver the day in smaller parts "
            f"({dataset}_<day>.<part>.csv or .csv.gz) or raise the limit, then clear the task.")


def read_landing_file(spark: SparkSession, path: str | list[str], header: list[str] | None = None) -> DataFrame:
    """Delivered CSVs as strings under their header; unparsable rows keep ``_corrupt_record``."""
    reader = spark.read.option("header", True).option("nullValue", NULL_TOKEN).option("encoding", "UTF-8")
    if header is not None:
        schema = T.StructType([T.StructField(c, T.StringType()) for c in header]
                              + [T.StructField("_corrupt_record", T.StringType())])
        reader = reader.schema(schema).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord",
                                                                           "_corrupt_record")
    df = reader.csv(path)
    return df.withColumn("_source_columns", F.lit(",".join(header or df.columns)))


def read_accepted(spark: SparkSession, accepted: list[tuple[str, date, str, str]], run_id: str) -> DataFrame:
    """The accepted files (path, day, hash, header line) of an interval, one read per distinct header.

    Each line is parsed as the CSV reader parses it (strings, ``NA`` read as null, a line that
    does not parse keeps ``_corrupt_record``) and keeps its text exactly as delivered in
    ``_raw_line``. The header line and blank lines are skipped, as the CSV reader skips them.
    Each row is tagged with its file, the day the file was delivered for and the file's
    hash, by joining Spark's own record of the file a row came from with the manifest.
    A range run over a year reads its 365 files in one scan instead of a 365-way union.
    """
    groups: dict[tuple[str, ...], list[tuple[str, date, str, str]]] = {}
    for path, day, sha, header_line in accepted:
        groups.setdefault(tuple(parse_header(header_line)), []).append((path, day, sha, header_line.removeprefix(BOM)))
    options = {"nullValue": NULL_TOKEN, "mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt_record"}
    frames = []
    for header, files in groups.items():
        meta = spark.createDataFrame([(_plain(p), p, d, s, h) for p, d, s, h in files],
                                     "_plain string, _source_file string, flight_date date, _source_sha256 string, "
                                     "_header_line string")
        schema = T.StructType([T.StructField(c, T.StringType()) for c in header]
                              + [T.StructField("_corrupt_record", T.StringType())])
        lines = (spark.read.text([p for p, *_ in files])  # decompresses .csv.gz as the CSV reader does
                 .withColumn("_plain", F.regexp_replace(F.input_file_name(), r"^file:/+", "/"))
                 .join(F.broadcast(meta), "_plain", "left").drop("_plain"))
        content = F.regexp_replace("value", f"^{BOM}", "")
        lines = lines.filter(F.col("value").rlike(r"[^\x00-\x20]") & ~content.eqNullSafe(F.col("_header_line")))
        df = (lines.select(F.from_csv("value", schema.simpleString(), options).alias("_row"),
                           F.col("value").alias("_raw_line"), "_source_file", "_source_sha256", PARTITION_COLUMN)
              .select("_row.*", F.lit(",".join(header)).alias("_source_columns"), "_raw_line", "_source_file",
                      "_source_sha256", PARTITION_COLUMN)
              .withColumn("_ingested_at", F.current_timestamp()).withColumn("_run_id", F.lit(run_id)))
        frames.append(df.select(*[c for c in df.columns if c not in META_COLUMNS], *META_COLUMNS))
    out = frames[0]
    for other in frames[1:]:
        out = out.unionByName(other, allowMissingColumns=True)
    return out


META_COLUMNS = ("_source_file", "_source_sha256", "_ingested_at", "_run_id", PARTITION_COLUMN)


def with_metadata(df: DataFrame, source_file: str, run_id: str, day: date | None = None, sha: str = "") -> DataFrame:
    df = (
        df.withColumn("_source_file", F.lit(source_file))
        .withColumn("_source_sha256", F.lit(sha))
        .withColumn("_ingested_at", F.current_timestamp())
        .withColumn("_run_id", F.lit(run_id))
    )
    if day is not None:
        df = df.withColumn(PARTITION_COLUMN, F.lit(day).cast("date"))
    return df


def _row_ids(df: DataFrame, dataset: str, data_cols: list[str]) -> DataFrame:
    raw = F.to_json(F.struct(*[F.col(c) for c in data_cols]))
    df = df.withColumn("_raw", raw).withColumn("_row_seq", F.monotonically_increasing_id())
    occurrence = F.row_number().over(Window.partitionBy(PARTITION_COLUMN, "_raw").orderBy("_source_file", "_row_seq"))
    return df.withColumn("_row_id", F.sha2(F.concat_ws("|", F.lit(dataset), F.col(PARTITION_COLUMN).cast("string"),
                                                         "_raw", occurrence.cast("string")), 256))


def with_row_date(df: DataFrame) -> DataFrame:
    """The date a row claims (year-month-day), beside the day of the file that delivered it."""
    if not {"year", "month", "day"} <= set(df.columns):
        return df
    # try_to_timestamp, not try_to_date: Spark 4.0 (the EMR runtime) has no try_to_date; same result.
    claimed = F.try_to_timestamp(F.concat_ws("-", "year", F.lpad("month", 2, "0"), F.lpad("day", 2, "0")),
                                 F.lit("yyyy-MM-dd")).cast("date")
    return df.withColumn("_row_date", claimed.cast("string")).withColumn("_file_date",
                                                                        F.col(PARTITION_COLUMN).cast("string"))


def landed_files(spark: SparkSession, landing: str, dataset: str, start: date, end: date
                 ) -> dict[date, list[tuple[str, int]]]:
    """The interval's delivered files (path, bytes) per day; a day without one fails the run."""
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    files = {d: daily_files(spark, landing, dataset, d) for d in days}
    missing = [d for d, fs in files.items() if not fs]
    if missing:
        raise LandingFileMissing(
            f"{len(missing)} {dataset} landing file(s) missing for {start}..{end}, first expected at "
            f"{landing_file(landing, dataset, missing[0])} (or .csv.gz). Deliver the file(s) and clear the task.")
    return files


def ingest_daily(spark: SparkSession, lake: str, landing: str, dataset: str, start: date, end: date,
                 run_id: str, params: dict | None = None, max_file_bytes: int = DEFAULT_MAX_LANDING_FILE_BYTES,
                 files: dict[date, list[tuple[str, int]]] | None = None) -> dict:
    """Inspect, record and ingest the interval's files of ``dataset`` (``files``: as ``landed_files`` lists them)."""
    files = files or landed_files(spark, landing, dataset, start, end)
    refuse_large_files(dataset, [f for fs in files.values() for f in fs], max_file_bytes)
    paths = [p for fs in files.values() for p, _ in fs]
    stats = inspect_files(spark, paths)  # one streaming pass over each file's bytes
    manifest, accepted = [], []
    for day, day_files in files.items():
        seen: dict[str, str] = {}
        for path, _ in day_files:
            st = stats[path]
            status, issues = classify(dataset, st, seen)
            if status == "accepted":
                seen[st["sha256"]] = path
                accepted.append((path, day, st["sha256"], st["header"]))
            manifest.append((dataset, day, path, st["sha256"], st["bytes"], st["data_lines"], status, issues, run_id))
            print(f"{dataset} {day} {path}: {status} {'; '.join(issues)}")

    mf = spark.createDataFrame(manifest, "dataset string, flight_date date, path string, sha256 string, bytes long, "
                                         "data_lines long, status string, issues array<string>, run_id string")
    mf = mf.withColumn("checked_at", F.current_timestamp())
    _replace_dataset_partitions(spark, mf, table_uri(lake, "bronze.landing_files"), dataset, start, end)

    uri = table_uri(lake, f"bronze.{dataset}")
    if not accepted:
        if delta_exists(spark, uri):  # every file of the interval was rejected: bronze holds nothing for it
            from delta.tables import DeltaTable

            with_commit_retry(lambda: DeltaTable.forPath(spark, uri).delete(
                f"{PARTITION_COLUMN} >= '{start}' AND {PARTITION_COLUMN} <= '{end}'"), uri)
        return {"files": len(paths), "rows": 0, "quarantined": 0}
    try:  # personal columns are hashed before anything is derived from them (row id, raw record, quarantine)
        df = pseudonymise(read_accepted(spark, accepted, run_id), dataset, "_raw_line", "_corrupt_record")
    except PiiConfigError as exc:
        raise JobInputError(str(exc)) from None
    data_cols = [c for c in df.columns if not c.startswith("_") and c != PARTITION_COLUMN]
    df = apply_row_rules(with_row_date(_row_ids(df, dataset, data_cols)), load_suite_dict(f"bronze/{dataset}"),
                         params)
    df = df.drop("_row_seq").cache()
    if df.filter(F.col("_source_sha256").isNull()).limit(1).count():  # never write a row without its file
        raise RuntimeError(f"Could not attribute every {dataset} row of {start}..{end} to its landing file "
                           f"(Spark named a file differently from the manifest): nothing was written.")
    replace_partitions(df.drop("_raw", "_raw_line"), uri, start, end)
    held = merge_quarantine(spark, df, lake, dataset, start, end, run_id)
    return {"files": len(paths), "rows": df.count(), "quarantined": held}


def _replace_dataset_partitions(spark, df: DataFrame, uri: str, dataset: str, start: date, end: date) -> None:
    with_commit_retry(lambda: (
        df.write.format("delta").mode("overwrite").partitionBy(PARTITION_COLUMN)
        .option("replaceWhere", f"dataset = '{dataset}' AND {PARTITION_COLUMN} >= '{start}' AND "
                                f"{PARTITION_COLUMN} <= '{end}'")
        .save(uri)), uri)


def _flag(value: str) -> bool:
    """``--release-held=True`` / ``=false`` (a rendered template) as well as the bare flag."""
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a boolean; use true or false")
    return text in ("true", "1", "yes")


def _positive(value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of bytes >= 1")
    return int(value)


def main(argv: list[str] | None = None) -> None:
    p = interval_args(__doc__)
    p.add_argument("--landing", required=True, help="landing zone root URI")
    p.add_argument("--release-held", nargs="?", const=True, default=False, type=_flag,
                   help="release the interval's held rows after ingesting (--release-held, or =true/false)")
    p.add_argument("--released-by", default="flights_daily")
    p.add_argument("--release-reason", default="released by a run parameter")
    p.add_argument("--max-file-bytes", type=_positive, default=None,
                   help="refuse landing files larger than this (default: $FLIGHTS_MAX_LANDING_FILE_BYTES, 2 GiB)")
    p.add_argument("--accept-dimension-change", default="",
                   help="dimensions whose snapshot may drop more keys than the change gate allows (comma-separated)")
    p.add_argument("--pii-columns", default="", help="more personal columns, <dataset>.<column>,... (as "
                                                     "$FLIGHTS_PII_COLUMNS)")
    p.add_argument("--pii-key-secret", default="", help="the secret holding the HMAC key, read when "
                                                        "$FLIGHTS_PII_KEY is unset (a name, never the key)")
    add_gate_args(p)
    a = p.parse_args(argv)
    from spark_jobs.bronze_dimensions import accepted_dimension_changes, ingest_dimensions

    try:  # every setting is checked before Spark starts: a wrong one fails in seconds, permanently
        max_file_bytes = a.max_file_bytes or max_landing_file_bytes()
        accept = accepted_dimension_changes(a.accept_dimension_change)
        use_columns(a.pii_columns)
        use_key_secret(a.pii_key_secret)
        require_gate_args(a)
    except (ConfigError, PiiConfigError) as exc:
        raise JobInputError(str(exc)) from None
    spark = get_spark(f"bronze_landing_{a.start}_{a.end}")
    landed = {ds: landed_files(spark, a.landing, ds, a.start, a.end) for ds in DAILY_DATASETS}
    for dataset, files in landed.items():  # before anything is written: every rerun would fail the same way
        refuse_large_files(dataset, [f for fs in files.values() for f in fs], max_file_bytes)
    ingest_dimensions(spark, a.lake, a.landing, a.run_id, accept_changes=accept)
    params = reference_params(spark, a.lake, max_quarantine_share=1.0)
    for dataset in DAILY_DATASETS:
        out = ingest_daily(spark, a.lake, a.landing, dataset, a.start, a.end, a.run_id, params, max_file_bytes,
                           landed[dataset])
        print(f"bronze.{dataset} {a.start}..{a.end}: {out}")
        if a.release_held:
            n = release_held(spark, a.lake, dataset, a.start, a.end, a.released_by, a.release_reason, run_id=a.run_id)
            print(f"quarantine.{dataset}: released {n} held row(s) for {a.start}..{a.end}")
    run_gate(spark, a)  # the bronze gate on what was just committed, in this session


if __name__ == "__main__":
    run_job(main)
