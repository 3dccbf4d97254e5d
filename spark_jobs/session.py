"""One Spark session per job, configured for Delta Lake, plus small I/O helpers.

On the local target the Delta jars come from ``FLIGHTS_JARS_DIR`` (fetched by
``make jars``); on a managed runtime they are part of the cluster image and
``spark.jars`` is left alone.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import TypeVar

from pyspark import SparkConf
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

T = TypeVar("T")

# Exit status of a job that failed for a reason a retry cannot fix (bad input or arguments).
# The local runner turns it into a failure that is not retried; argparse's own status is 2.
PERMANENT_EXIT = 3


class JobInputError(ValueError):
    """The job's input or arguments are wrong: rerunning the same job will fail the same way."""


LOCAL_DEFAULTS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    "spark.sql.sources.partitionOverwriteMode": "static",
    # Spark 4's default, set for Spark 3.5 (the Azure runtimes), whose default is false: a cast that
    # cannot convert a value fails the job there too, instead of writing a null.
    "spark.sql.ansi.enabled": "true",
}
# Only with a local master: how many tasks list a table's folders (VACUUM, partition discovery). The
# default, 10,000, suits a cluster and a big table; on two local cores it makes a VACUUM of a small table
# take half a minute.
LOCAL_MASTER_DEFAULTS = {
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
    # A local job starts a fresh JVM and runs a hundred small queries (Delta reads and MERGEs, the gates'
    # metrics) over a day of a few thousand rows. Compiling every projection, predicate and ordering to Java
    # then costs more than it saves: evaluating them interpreted made the gated jobs about a fifth faster
    # (benchmarks/local_codegen.py). Whole-stage code generation stays on. Spark marks this setting internal;
    # its own test suites run with it. FLIGHTS_SPARK_CODEGEN=true, or the key in a spark-defaults.conf,
    # brings Spark's default back (FALLBACK: generated code, interpreted only where it fails to compile).
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}
CODEGEN_KEYS = ("spark.sql.codegen.factoryMode",)  # what FLIGHTS_SPARK_CODEGEN=true leaves to Spark


def local_master_defaults(env=None) -> dict[str, str]:
    """The settings a local master gets unless its configuration names them (see ``LOCAL_MASTER_DEFAULTS``)."""
    env = os.environ if env is None else env
    value = env.get("FLIGHTS_SPARK_CODEGEN", "").strip().lower()
    if value not in ("", "true", "false", "1", "0", "yes", "no"):
        raise JobInputError(f"FLIGHTS_SPARK_CODEGEN={value!r} is neither true nor false: set it to true for "
                            "Spark's generated code (big local runs), or unset it for the local default.")
    if value in ("true", "1", "yes"):
        return {k: v for k, v in LOCAL_MASTER_DEFAULTS.items() if k not in CODEGEN_KEYS}
    return dict(LOCAL_MASTER_DEFAULTS)


def get_spark(app_name: str) -> SparkSession:
    conf = SparkConf()
    builder = SparkSession.builder.appName(app_name)
    for key, value in LOCAL_DEFAULTS.items():
        if not conf.contains(key):
            builder = builder.config(key, value)
    if not conf.get("spark.jars", ""):
        jars_dir = os.environ.get("FLIGHTS_JARS_DIR", "")
        jars = sorted(glob.glob(os.path.join(jars_dir, "*.jar"))) if jars_dir else []
        if jars:
            builder = builder.config("spark.jars", ",".join(jars))
    if not conf.contains("spark.master"):
        builder = builder.master(os.environ.get("FLIGHTS_SPARK_MASTER", "local[2]"))
    master = conf.get("spark.master", os.environ.get("FLIGHTS_SPARK_MASTER", "local[2]"))
    if master.startswith("local"):
        for key, value in local_master_defaults().items():
            if not conf.contains(key):
                builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def interval_args(description: str) -> argparse.ArgumentParser:
    """The arguments every interval job takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--lake", required=True, help="lake root URI")
    p.add_argument("--start", required=True, type=date.fromisoformat)
    p.add_argument("--end", required=True, type=date.fromisoformat)
    p.add_argument("--run-id", required=True)
    return p


def _fs_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def path_exists(spark: SparkSession, uri: str) -> bool:
    fs, path = _fs_path(spark, uri)
    return bool(fs.exists(path))


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Write a small text file through Hadoop's file system (local, s3a, gs, abfss)."""
    fs, path = _fs_path(spark, uri)
    out = fs.create(path, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def write_json(spark: SparkSession, uri: str, payload: dict) -> None:
    write_text(spark, uri, json.dumps(payload, indent=2, default=str))


def read_chunks(spark: SparkSession, uri: str, chunk_bytes: int = 8 << 20) -> Iterator[bytes]:
    """The bytes of a file, a chunk at a time, in constant memory whatever its size.

    A ``file:`` URI (what Hadoop names a local file) is read by Python; any other (s3a, gs,
    abfss, or a bare path on the cluster's default file system) is streamed through Hadoop's
    file system on the driver.
    """
    if not uri.startswith("file:"):
        yield from hadoop_chunks(spark, uri, chunk_bytes)
        return
    with open(re.sub(r"^file:/+", "/", uri), "rb") as f:
        while chunk := f.read(chunk_bytes):
            yield chunk


def hadoop_chunks(spark: SparkSession, uri: str, chunk_bytes: int = 8 << 20) -> Iterator[bytes]:
    """The bytes of a file streamed through Hadoop's file system, one chunk per gateway call."""
    fs, path = _fs_path(spark, uri)
    jvm = spark.sparkContext._jvm
    stream = fs.open(path)
    try:
        # a JVM-side buffer: a byte[] handed to Java is a copy, never filled in place
        channel = jvm.java.nio.channels.Channels.newChannel(stream)
        buffer = jvm.java.nio.ByteBuffer.allocate(chunk_bytes)
        while True:
            buffer.clear()
            n = jvm.org.apache.commons.io.IOUtils.read(channel, buffer)  # fills the buffer unless the file ends
            if n > 0:
                chunk = bytes(buffer.array())
                yield chunk if n == chunk_bytes else chunk[:n]
            if n < chunk_bytes:
                return
    finally:
        stream.close()


def read_text(spark: SparkSession, uri: str) -> str:
    fs, path = _fs_path(spark, uri)
    stream = fs.open(path)
    try:
        jvm = spark.sparkContext._jvm
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def try_cast(column: str, data_type: str) -> Column:
    """``column`` as ``data_type``, null where a value does not convert (SQL ``TRY_CAST``).

    ``Column.try_cast`` exists from Spark 4.0 only; the SQL form is the same expression on Spark 3.5.
    """
    return F.expr(f"TRY_CAST(`{column.replace('`', '``')}` AS {data_type})")


def delta_exists(spark: SparkSession, uri: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, uri))


def replace_partitions(df, uri: str, start: date, end: date, partition_column: str = "flight_date") -> None:
    """Overwrite exactly the partitions of [start, end] with ``df`` (idempotent per interval)."""
    with_commit_retry(lambda: (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"{partition_column} >= '{start}' AND {partition_column} <= '{end}'")
        .option("mergeSchema", "true")
        .partitionBy(partition_column)
        .save(uri)
    ), uri)


def delta_conflicts() -> tuple[type[Exception], ...]:
    """Delta's commit-conflict errors (its Python classes share no common base)."""
    from delta import exceptions as dx

    try:
        # The module that turns the JVM's conflict errors into these classes. Delta 4.4 imports it with the
        # package; Delta 4.0 (the EMR runtime) does not, and its conflicts would reach Python as Py4JJavaError.
        import delta.exceptions.captured  # noqa: F401
    except ModuleNotFoundError:  # Delta 3 (Spark 3.5): delta.exceptions is one module that installs it when imported
        pass

    return (dx.DeltaConcurrentModificationException, dx.ConcurrentWriteException, dx.MetadataChangedException,
            dx.ProtocolChangedException, dx.ConcurrentAppendException, dx.ConcurrentDeleteReadException,
            dx.ConcurrentDeleteDeleteException, dx.ConcurrentTransactionException)


def with_commit_retry(action: Callable[[], T], what: str, attempts: int | None = None) -> T:
    """Run a Delta write, retrying when a concurrent commit conflicts with it.

    Runs of different days write disjoint partitions, but shared tables (dimension
    snapshots, the landing-file manifest, quarantine) can see two writers at once when
    ``max_active_runs`` is above 1. Delta then raises a concurrent-modification error for
    the loser; its write is replanned against the new snapshot and committed again.
    """
    conflicts = delta_conflicts()
    attempts = attempts or int(os.environ.get("FLIGHTS_DELTA_COMMIT_ATTEMPTS", "8"))
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except conflicts as exc:
            if attempt == attempts:
                raise
            delay = min(20.0, 0.5 * 2 ** attempt) * (0.5 + random.random())
            print(f"Concurrent Delta commit on {what} ({type(exc).__name__}); attempt {attempt + 1}/{attempts} "
                  f"in {delay:.1f}s", flush=True)
            time.sleep(delay)
    raise AssertionError("unreachable")


def run_job(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """A job's ``__main__``: a failure a retry cannot fix exits with PERMANENT_EXIT.

    Bad input (JobInputError) and plans that cannot resolve (a missing table or column:
    AnalysisException) are permanent; anything else (lost executors, I/O errors, memory)
    exits with status 1 and is retried by the task.
    """
    from pyspark.errors import AnalysisException

    try:
        main(sys.argv[1:] if argv is None else argv)
    except (JobInputError, AnalysisException) as exc:
        print(f"PERMANENT FAILURE {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(PERMANENT_EXIT)
