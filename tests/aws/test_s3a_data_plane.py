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

from pathlib import Path

import pytest

from include.config import REPO_ROOT
from include.lake import export_uri
from include.source.landing import land
from include.targets.aws.emr import spark_conf
from include.targets.aws.settings import AwsSettings
from tests.aws.conftest import ACCOUNT, REGION
from tests.lake_data_plane import (DAY, check_delta_log_in_bucket, check_rerun_duplicates_nothing,
                                   check_same_rows_as_local, connector_jars, local_lake_summary, run_day_twice)

pytestmark = pytest.mark.slow

BUCKET = "flights-lake-dataplane"  # its own bucket: the control-plane tests seed the example lake bucket


def s3a_jars_dir() -> Path:
    """The S3A connector's jars; skips (fails on CI) when ``make s3a-jars`` has not fetched them."""
    return connector_jars("FLIGHTS_S3A_JARS_DIR", REPO_ROOT / ".cache" / "jars-s3a", "hadoop-aws-*.jar", "s3a-jars")


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
    summaries = run_day_twice(conf_dir, store, lake, landing, "s3a")
    return {"store": store, "lake": lake, "landing": landing, "local_landing": local_landing, "summaries": summaries}


@pytest.fixture(scope="module")
def local_lake(data_plane, spark, tmp_path_factory):
    return local_lake_summary(tmp_path_factory.mktemp("s3a-local") / "lake", data_plane["local_landing"])


def test_the_s3_lake_holds_the_rows_of_a_local_run(data_plane, local_lake):
    check_same_rows_as_local(data_plane, local_lake, "S3")


def test_a_rerun_of_the_day_duplicates_no_row(data_plane):
    check_rerun_duplicates_nothing(data_plane)


def test_the_delta_log_sits_in_the_bucket(data_plane):
    check_delta_log_in_bucket(data_plane, f"s3://{BUCKET}")


def test_the_warehouse_export_sits_in_the_bucket(data_plane):
    store = data_plane["store"]
    files = [k.rsplit("/", 1)[1] for k in store.list(export_uri(data_plane["lake"], "flight_outcomes", DAY.key))]
    assert "_SUCCESS" in files  # Spark's file committer renamed its output into place on S3
    assert sum(f.endswith(".parquet") for f in files) == 1  # one Parquet file for the warehouse's COPY
