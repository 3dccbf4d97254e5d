"""The GCP data plane on loopback: Delta tables on Cloud Storage, written and read through ``gs://``.

On GCP the lake is Delta on Cloud Storage and Dataproc runs ``spark_jobs/`` with the arguments of
``include.jobs.job_args``. Here the same entry points run as spark-submit processes (the local
target's runner) with those arguments, on ``gs://`` lake and landing URIs of a fake-gcs-server, with
the Spark settings of ``include.targets.gcp.gcs.spark_gcs_conf`` (Delta's ``GCSLogStore``) and the
Cloud Storage connector of ``make gcs-jars`` on the driver's class path, as on Dataproc.

One day is landed in the bucket, ingested into bronze and built into silver and gold, then run
again. The bucket's tables must hold the rows the same jobs write to a local lake, keep exactly
those rows after the rerun, and keep their Delta log in the bucket.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from include.config import REPO_ROOT
from include.lake import export_uri, table_uri
from include.source.landing import land
from include.targets.gcp.dataproc import spark_properties
from include.targets.gcp.gcs import spark_gcs_conf, spark_gcs_emulator_conf, split_gs
from include.targets.gcp.settings import GcpSettings
from tests.lake_data_plane import (DAY, check_delta_log_in_bucket, check_rerun_duplicates_nothing,
                                   check_same_rows_as_local, connector_jars, delta_log, local_lake_summary,
                                   run_day_twice)
from tests.gcp.conftest import PROJECT, emulator_client, ensure_bucket

pytestmark = pytest.mark.slow

BUCKET = "flights-lake-dataplane"


def gcs_jars_dir() -> Path:
    """The Cloud Storage connector's jar; skips (fails on CI) when ``make gcs-jars`` has not fetched it."""
    return connector_jars("FLIGHTS_GCS_JARS_DIR", REPO_ROOT / ".cache" / "jars-gcs", "gcs-connector-*-shaded.jar",
                          "gcs-jars")


def spark_defaults(endpoint: str, jars: Path, gcp: GcpSettings) -> str:
    """``spark-defaults.conf``: Dataproc's Spark settings (``dataproc.spark_properties``), the connector's, and the
    emulator's endpoint; the Delta jars are the local ones (Dataproc's come from the artifacts bucket)."""
    conf = {**spark_properties(gcp), **spark_gcs_conf(gcp), **spark_gcs_emulator_conf(endpoint),
            "spark.driver.extraClassPath": f"{jars}/*"}
    return "".join(f"{k} {v}\n" for k, v in sorted(conf.items()))


class GcsObjects:
    """The bucket's objects under a ``gs://`` URI, through google-cloud-storage."""

    def __init__(self, client, bucket: str):
        self.client, self.bucket = client, bucket

    def key(self, uri: str) -> str:
        return split_gs(uri)[1]

    def list(self, uri: str) -> list[str]:
        return sorted(b.name for b in self.client.list_blobs(self.bucket, prefix=self.key(uri) + "/"))

    def read(self, key: str) -> bytes:
        return self.client.bucket(self.bucket).blob(key).download_as_bytes()


@pytest.fixture(scope="module")
def data_plane(fake_gcs_endpoint, tmp_path_factory):
    """The day run twice on the bucket's lake by spark-submit; returns the store, URIs and table summaries."""
    jars = gcs_jars_dir()
    gcp = GcpSettings.example(project=PROJECT, lake_bucket=BUCKET)
    client = emulator_client(fake_gcs_endpoint)
    ensure_bucket(client, BUCKET)
    lake, landing = gcp.lake_root, gcp.landing_root

    # the source system's files for the day, delivered to the landing prefix
    local_landing = tmp_path_factory.mktemp("gcs") / "landing"
    land(DAY, local_landing)
    store = GcsObjects(client, BUCKET)
    for path in sorted(local_landing.rglob("*.csv")):
        client.bucket(BUCKET).blob(store.key(f"{landing}/{path.relative_to(local_landing)}")).upload_from_filename(
            str(path))

    conf_dir = tmp_path_factory.mktemp("spark-conf-gcs")
    (conf_dir / "spark-defaults.conf").write_text(spark_defaults(fake_gcs_endpoint, jars, gcp))
    summaries = run_day_twice(conf_dir, store, lake, landing, "gcs")
    return {"store": store, "lake": lake, "landing": landing, "local_landing": local_landing, "summaries": summaries}


@pytest.fixture(scope="module")
def local_lake(data_plane, spark, tmp_path_factory):
    return local_lake_summary(tmp_path_factory.mktemp("gcs-local") / "lake", data_plane["local_landing"])


def test_the_bucket_lake_holds_the_rows_of_a_local_run(data_plane, local_lake):
    check_same_rows_as_local(data_plane, local_lake, "gs://")


def test_a_rerun_of_the_day_duplicates_no_row(data_plane):
    check_rerun_duplicates_nothing(data_plane)


def test_the_delta_log_sits_in_the_bucket(data_plane):
    check_delta_log_in_bucket(data_plane, f"gs://{BUCKET}")


def test_a_commit_cannot_be_overwritten(data_plane):
    """What GCSLogStore relies on, and the emulator enforces: a create-if-absent write of an existing commit fails."""
    from google.api_core.exceptions import PreconditionFailed

    store = data_plane["store"]
    first = delta_log(store, table_uri(data_plane["lake"], "silver.flights"))[0]
    before = store.read(first)
    with pytest.raises(PreconditionFailed):
        store.client.bucket(BUCKET).blob(first).upload_from_string(b"{}", if_generation_match=0)
    assert store.read(first) == before


def test_the_warehouse_export_sits_in_the_bucket(data_plane):
    store = data_plane["store"]
    files = [k.rsplit("/", 1)[1] for k in store.list(export_uri(data_plane["lake"], "flight_outcomes", DAY.key))]
    assert "_SUCCESS" in files  # Spark's file committer renamed its output into place in the bucket
    assert sum(f.endswith(".parquet") for f in files) == 1  # one Parquet file for the warehouse's load
