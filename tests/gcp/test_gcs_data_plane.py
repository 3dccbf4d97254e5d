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

import importlib
import json
import os
import time
from pathlib import Path

import pytest

from include.config import REPO_ROOT, settings
from include.jobs import JOBS, RunRef, job_args
from include.lake import export_uri, table_uri
from include.source.landing import land
from include.targets.gcp.dataproc import spark_properties
from include.targets.gcp.gcs import spark_gcs_conf, spark_gcs_emulator_conf, split_gs
from include.targets.gcp.settings import GcpSettings
from include.targets.local import LocalSparkRunner
from tests.aws.test_s3a_data_plane import (DAY, FIRST_RUN, RERUN, TABLES, TASKS, LocalObjects, delta_log,
                                           summary)
from tests.gcp.conftest import PROJECT, emulator_client, ensure_bucket

pytestmark = pytest.mark.slow

BUCKET = "flights-lake-dataplane"


def gcs_jars_dir() -> Path:
    """The Cloud Storage connector's jar; skips (fails on CI) when ``make gcs-jars`` has not fetched it."""
    folder = Path(os.environ.get("FLIGHTS_GCS_JARS_DIR", REPO_ROOT / ".cache" / "jars-gcs"))
    if not any(folder.glob("gcs-connector-*-shaded.jar")):
        message = f"No gcs-connector shaded jar in {folder}: run `make gcs-jars` (or set FLIGHTS_GCS_JARS_DIR)."
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):  # CI must not skip it silently
            pytest.fail(message)
        pytest.skip(message)
    return folder


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
                              name=f"gcs.{task}.{DAY.key}")
                timings[f"{label}.{task}"] = time.monotonic() - began
            summaries[run_id] = summary(store, lake)
    print(f"spark-submit seconds: {json.dumps({k: round(v) for k, v in timings.items()})}")
    return {"store": store, "lake": lake, "landing": landing, "local_landing": local_landing, "summaries": summaries}


@pytest.fixture(scope="module")
def local_lake(data_plane, spark, tmp_path_factory):
    """The same jobs, same day and arguments, on a local lake (in this process's Spark session)."""
    lake = tmp_path_factory.mktemp("gcs-local") / "lake"
    ref = RunRef.of(DAY, FIRST_RUN)
    for task in TASKS:
        args = job_args(task, lake=str(lake), landing=str(data_plane["local_landing"]), ref=ref)
        importlib.import_module(f"spark_jobs.{JOBS[task]}").main(args)
    return summary(LocalObjects(), str(lake))


def test_the_bucket_lake_holds_the_rows_of_a_local_run(data_plane, local_lake):
    on_gcs = data_plane["summaries"][FIRST_RUN]
    landed = sum(1 for _ in (data_plane["local_landing"] / "flights" / "flights_2013-01-02.csv").open()) - 1
    assert len(on_gcs["bronze.flights"]) == landed  # bronze keeps every delivered row, as received
    assert 0 < len(on_gcs["silver.flights"]) <= landed
    for table in TABLES:
        if table == "bronze.landing_files":  # the manifest names each file by its own URI
            assert [Path(p).name for p in on_gcs[table]] == sorted(Path(p).name for p in local_lake[table])
            assert all(p.startswith(data_plane["landing"]) for p in on_gcs[table])
        else:
            assert on_gcs[table] == local_lake[table], f"{table} differs between the gs:// and the local lake"


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
        assert versions[:1] == ["00000000000000000000.json"], f"{table}: no first commit in gs://{BUCKET}"
        if table in ("bronze.flights", "silver.flights", "gold.flight_features"):  # rewritten by the rerun
            assert len(versions) >= 2, f"{table}: the rerun committed no new version"
    assert any(k.endswith(".parquet") for k in store.list(table_uri(lake, "silver.flights")))


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
