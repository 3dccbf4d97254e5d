"""The AWS data plane on loopback: Delta tables on S3, written and read through ``s3a://``.

On AWS the lake is Delta on S3 and EMR runs ``spark_jobs/`` with the arguments of
``include.jobs.job_args``. Here the same entry points run as spark-submit processes (the local
target's runner) with those arguments, on ``s3a://`` lake and landing URIs of a moto S3 server,
with EMR's Spark settings (``emr.spark_conf``) and the S3A connector of ``make s3a-jars`` on the
driver's class path. Only the scheme differs from EMR, where ``s3://`` is EMR's own connector.

One day is landed in S3, ingested into bronze and built into silver and gold, then run again.
The S3 tables must hold the rows the same jobs write to a local lake, keep exactly those rows after
the rerun, and keep their Delta log in the bucket.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import time
from datetime import date
from pathlib import Path
from urllib.parse import unquote

import pytest

from include.config import REPO_ROOT, settings
from include.intervals import Interval
from include.jobs import JOBS, RunRef, job_args
from include.lake import export_uri, table_uri
from include.source.landing import land
from include.targets.aws.emr import spark_conf
from include.targets.aws.settings import AwsSettings
from include.targets.local import LocalSparkRunner
from tests.aws.conftest import ACCOUNT, REGION

pytestmark = pytest.mark.slow

DAY = Interval(date(2013, 1, 2), date(2013, 1, 2))
FIRST_RUN = "scheduled__2013-01-02T00:00:00+00:00"
RERUN = "manual__2013-01-03T08:00:00+00:00"
# the jobs that write the day's tables (a gate writes none and adds a spark-submit of about a minute)
TASKS = ("ingest_bronze", "build_features")
BUCKET = "flights-lake-dataplane"  # its own bucket: the control-plane tests seed the example lake bucket
# table -> the column that identifies a row (None: compared by count)
TABLES = {"bronze.flights": "_row_id", "bronze.weather": "_row_id", "bronze.landing_files": "path",
          "quarantine.flights": "_row_id", "silver.flights": "flight_id", "silver.weather": None,
          "gold.flight_features": "flight_id"}


def s3a_jars_dir() -> Path:
    """The S3A connector's jars; skips (fails on CI) when ``make s3a-jars`` has not fetched them."""
    folder = Path(os.environ.get("FLIGHTS_S3A_JARS_DIR", REPO_ROOT / ".cache" / "jars-s3a"))
    if not any(folder.glob("hadoop-aws-*.jar")):
        message = f"No hadoop-aws jar in {folder}: run `make s3a-jars` (or set FLIGHTS_S3A_JARS_DIR)."
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):  # CI must not skip it silently
            pytest.fail(message)
        pytest.skip(message)
    return folder


def spark_defaults(endpoint: str, jars: Path, aws: AwsSettings) -> str:
    """``spark-defaults.conf``: EMR's settings, the S3A connector, and the moto endpoint with fake keys."""
    conf = {k: v for k, v in spark_conf(aws).items() if k != "spark.jars"}  # EMR's jar paths exist only there
    conf.update({
        "spark.driver.extraClassPath": f"{jars}/*",
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": REGION,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "spark.hadoop.fs.s3a.access.key": "testing",
        "spark.hadoop.fs.s3a.secret.key": "testing",
    })
    return "".join(f"{k} {v}\n" for k, v in sorted(conf.items()))


class S3Objects:
    """The bucket's objects under a ``s3a://`` or ``s3://`` URI, through boto3."""

    def __init__(self, s3, bucket: str):
        self.s3, self.bucket = s3, bucket

    def key(self, uri: str) -> str:
        prefix = f"://{self.bucket}/"
        return uri[uri.index(prefix) + len(prefix):]

    def list(self, uri: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key(uri) + "/")
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()


class LocalObjects:
    """The same interface over a local lake folder."""

    def key(self, uri: str) -> str:
        return uri

    def list(self, uri: str) -> list[str]:
        return sorted(str(p) for p in Path(uri).rglob("*") if p.is_file())

    def read(self, key: str) -> bytes:
        return Path(key).read_bytes()


def delta_log(store, uri: str) -> list[str]:
    """The table's commit files, in version order."""
    return [k for k in store.list(uri) if "/_delta_log/" in k and k.endswith(".json") and k.rsplit("/", 1)[1][0] != "_"]


def delta_rows(store, uri: str) -> list[dict]:
    """The rows of the table's current version: its commits replayed, then its live Parquet files read."""
    import pyarrow.parquet as pq

    assert not any(k.endswith(".checkpoint.parquet") for k in store.list(uri)), "checkpoint replay not supported"
    live: dict[str, dict] = {}
    for commit in delta_log(store, uri):
        for line in store.read(commit).decode("utf-8").splitlines():
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = action["add"]
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    rows: list[dict] = []
    root = store.key(uri)
    for path, add in live.items():
        assert not add.get("deletionVector"), f"{uri}: deletion vectors are not read here"
        table = pq.read_table(io.BytesIO(store.read(f"{root}/{unquote(path)}")))
        rows += [{**row, **add["partitionValues"]} for row in table.to_pylist()]
    return rows


def summary(store, lake: str) -> dict[str, list]:
    """Per table: the sorted identifying values of its rows (or its row count)."""
    out = {}
    for table, column in TABLES.items():
        rows = delta_rows(store, table_uri(lake, table))
        out[table] = sorted(str(r[column]) for r in rows) if column else len(rows)
    return out


@pytest.fixture(scope="module")
def data_plane(moto_endpoint, tmp_path_factory):
    """The day run twice on the S3 lake by spark-submit; returns the S3 store, URIs and table summaries."""
    import boto3

    jars = s3a_jars_dir()
    aws = AwsSettings.example(endpoint_url=moto_endpoint, account_id=ACCOUNT, lake_bucket=BUCKET)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_endpoint)
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)
    lake, landing = (uri.replace("s3://", "s3a://", 1) for uri in (aws.lake_root, aws.landing_root))

    # the source system's files for the day, delivered to the landing prefix
    local_landing = tmp_path_factory.mktemp("s3a") / "landing"
    land(DAY, local_landing)
    store = S3Objects(s3, BUCKET)
    for path in sorted(p for p in local_landing.rglob("*.csv")):
        s3.upload_file(str(path), BUCKET, store.key(f"{landing}/{path.relative_to(local_landing)}"))

    conf_dir = tmp_path_factory.mktemp("spark-conf")
    (conf_dir / "spark-defaults.conf").write_text(spark_defaults(moto_endpoint, jars, aws))
    runner = LocalSparkRunner(settings())
    timings: dict[str, float] = {}
    summaries = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_CONF_DIR", str(conf_dir))
        for label, run_id in (("first", FIRST_RUN), ("rerun", RERUN)):
            ref = RunRef.of(DAY, run_id)
            for task in TASKS:
                began = time.monotonic()
                runner.submit(JOBS[task], job_args(task, lake=lake, landing=landing, ref=ref),
                              name=f"s3a.{task}.{DAY.key}")
                timings[f"{label}.{task}"] = time.monotonic() - began
            summaries[run_id] = summary(store, lake)
    print(f"spark-submit seconds: {json.dumps({k: round(v) for k, v in timings.items()})}")
    return {"store": store, "lake": lake, "landing": landing, "local_landing": local_landing, "summaries": summaries}


@pytest.fixture(scope="module")
def local_lake(data_plane, spark, tmp_path_factory):
    """The same jobs, same day and arguments, on a local lake (in this process's Spark session)."""
    lake = tmp_path_factory.mktemp("s3a-local") / "lake"
    ref = RunRef.of(DAY, FIRST_RUN)
    for task in TASKS:
        args = job_args(task, lake=str(lake), landing=str(data_plane["local_landing"]), ref=ref)
        importlib.import_module(f"spark_jobs.{JOBS[task]}").main(args)
    return summary(LocalObjects(), str(lake))


def test_the_s3_lake_holds_the_rows_of_a_local_run(data_plane, local_lake):
    on_s3 = data_plane["summaries"][FIRST_RUN]
    landed = sum(1 for _ in (data_plane["local_landing"] / "flights" / "flights_2013-01-02.csv").open()) - 1
    assert len(on_s3["bronze.flights"]) == landed  # bronze keeps every delivered row, as received
    assert 0 < len(on_s3["silver.flights"]) <= landed
    for table in TABLES:
        if table == "bronze.landing_files":  # the manifest names each file by its own URI
            assert [Path(p).name for p in on_s3[table]] == sorted(Path(p).name for p in local_lake[table])
            assert all(p.startswith(data_plane["landing"]) for p in on_s3[table])
        else:
            assert on_s3[table] == local_lake[table], f"{table} differs between the S3 and the local lake"


def test_a_rerun_of_the_day_duplicates_no_row(data_plane):
    first, rerun = data_plane["summaries"][FIRST_RUN], data_plane["summaries"][RERUN]
    assert rerun == first  # bronze replaced its partition, silver's MERGE matched every flight
    for table, column in TABLES.items():
        if column:
            assert len(set(rerun[table])) == len(rerun[table]), f"{table} holds a {column} twice"


def test_the_delta_log_sits_in_the_bucket(data_plane):
    store, lake = data_plane["store"], data_plane["lake"]
    for table in TABLES:
        versions = [k.rsplit("/", 1)[1] for k in delta_log(store, table_uri(lake, table))]
        assert versions[:1] == ["00000000000000000000.json"], f"{table}: no first commit in s3://{BUCKET}"
        if table in ("bronze.flights", "silver.flights", "gold.flight_features"):  # rewritten by the rerun
            assert len(versions) >= 2, f"{table}: the rerun committed no new version"
    assert any(k.endswith(".parquet") for k in store.list(table_uri(lake, "silver.flights")))


def test_the_warehouse_export_sits_in_the_bucket(data_plane):
    store = data_plane["store"]
    files = [k.rsplit("/", 1)[1] for k in store.list(export_uri(data_plane["lake"], "flight_outcomes", DAY.key))]
    assert "_SUCCESS" in files  # Spark's file committer renamed its output into place on S3
    assert sum(f.endswith(".parquet") for f in files) == 1  # one Parquet file for the warehouse's COPY
