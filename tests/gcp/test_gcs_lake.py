"""The lake and the code artefact on Cloud Storage, against gcp-storage-emulator over HTTP."""

from __future__ import annotations

import json

import pytest

from include.targets.cloud import artifact
from include.targets.gcp.gcs import (GcsLake, GcsStore, spark_gcs_conf, spark_gcs_emulator_conf, split_gs,
                                     storage_client)
from include.targets.gcp.settings import GcpSettings


def test_split_gs():
    assert split_gs("gs://flights-lake/lake/silver/flights") == ("flights-lake", "lake/silver/flights")
    assert split_gs("gs://flights-lake") == ("flights-lake", "")
    for wrong in ("s3://flights-lake/lake", "/tmp/lake", "gs:///lake"):
        with pytest.raises(ValueError, match=f"{wrong!r} is not a gs://"):
            split_gs(wrong)


def test_lake_reads_through_a_client_made_from_the_environment(gcp, buckets, tmp_path):
    lake = GcsLake(gcp, tmp_path / "cache")  # no client given: made on first use, from STORAGE_EMULATOR_HOST
    assert (lake.root, lake.landing_root) == ("gs://flights-lake-example/lake", "gs://flights-lake-example/landing")
    bucket = buckets.bucket(gcp.lake_bucket)
    bucket.blob("lake/_quality/x/r.json").upload_from_string(json.dumps({"success": True}))
    assert lake.client.project == gcp.project
    assert lake.exists("gs://flights-lake-example/lake/_quality/x/r.json")
    assert lake.exists("gs://flights-lake-example/lake/_quality/x")  # a folder holding objects exists too
    assert not lake.exists("gs://flights-lake-example/lake/_quality/x/missing.json")
    assert lake.read_json("gs://flights-lake-example/lake/_quality/x/r.json") == {"success": True}
    with pytest.raises(ValueError, match="is not a gs://"):
        lake.exists("s3://flights-lake-example/lake/_quality/x/r.json")


def test_local_dir_downloads_a_prefix_once(gcp, buckets, tmp_path):
    bucket = buckets.bucket(gcp.lake_bucket)
    folder = "lake/exports/flight_outcomes/20130102_20130102"
    bucket.blob(f"{folder}/part-0.parquet").upload_from_string(b"PAR1")
    bucket.blob(f"{folder}/sub/part-1.parquet").upload_from_string(b"PAR1PAR1")
    bucket.blob(f"{folder}/").upload_from_string(b"")  # the folder placeholder the Hadoop connector writes
    bucket.blob(f"{folder}_other/part-9.parquet").upload_from_string(b"not this folder")
    lake = GcsLake(gcp, tmp_path / "cache", client=buckets)

    local = lake.local_dir(f"gs://{gcp.lake_bucket}/{folder}/")
    assert local == tmp_path / "cache" / gcp.lake_bucket / folder
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
        "part-0.parquet", "sub/part-1.parquet"]  # only this folder's files, no placeholder, no partial file
    assert (local / "sub" / "part-1.parquet").read_bytes() == b"PAR1PAR1"

    (local / "part-0.parquet").write_bytes(b"KEPT")  # same size as the object: taken as already downloaded
    (local / "sub" / "part-1.parquet").write_bytes(b"short")  # a different size: downloaded again
    assert lake.local_dir(f"gs://{gcp.lake_bucket}/{folder}") == local
    assert (local / "part-0.parquet").read_bytes() == b"KEPT"
    assert (local / "sub" / "part-1.parquet").read_bytes() == b"PAR1PAR1"


def test_code_artefact_is_uploaded_once(gcp, buckets):
    built = artifact.build_artifact()
    store = GcsStore(buckets)
    first = artifact.upload(built, gcp.artifacts_root, store)
    assert first["zip"] == f"gs://{gcp.artifacts_bucket}/artifacts/code/{built.sha256}/flights.zip"
    assert int(first["written"]) == len(built.scripts) + 2  # the zip, the training sourcedir, one script per job
    assert artifact.upload(built, gcp.artifacts_root, store)["written"] == "0"  # same digest: nothing written
    blob = buckets.bucket(gcp.artifacts_bucket).get_blob(split_gs(first["zip"])[1])
    assert blob.download_as_bytes() == built.zip_bytes
    assert blob.metadata == {"source-sha256": built.sha256}
    assert store.exists(built.script_uri(gcp.artifacts_root, "bronze_landing"))
    assert not store.exists(f"{gcp.artifacts_root}/code/{'0' * 64}/flights.zip")


class LookedForCredentials(Exception):
    pass


def test_storage_client_is_anonymous_only_on_an_emulator(gcp, monkeypatch):
    from google.auth.credentials import AnonymousCredentials

    client = storage_client(gcp)
    assert isinstance(client._credentials, AnonymousCredentials) and client.project == gcp.project

    def default(*args, **kwargs):
        raise LookedForCredentials

    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setattr("google.auth.default", default)
    with pytest.raises(LookedForCredentials):
        storage_client(gcp)  # without the emulator the client uses application default credentials


def test_spark_settings_keep_the_emulator_out_of_production():
    conf = spark_gcs_conf()
    assert conf["spark.hadoop.fs.gs.impl"] == "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem"
    assert conf["spark.hadoop.fs.AbstractFileSystem.gs.impl"] == "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFS"
    assert conf["spark.delta.logStore.gs.impl"] == "io.delta.storage.GCSLogStore"
    assert conf["spark.hadoop.fs.gs.block.size"] == str(64 * 1024 * 1024)  # a number, not Hadoop 3.5's "64m"
    assert all(v.isdigit() for k, v in conf.items() if k.endswith((".size", ".limit")))
    assert "spark.hadoop.fs.gs.project.id" not in conf
    assert spark_gcs_conf(GcpSettings.example())["spark.hadoop.fs.gs.project.id"] == "flights-example"
    emulator = spark_gcs_emulator_conf("http://127.0.0.1:4443")
    assert emulator["spark.hadoop.fs.gs.storage.root.url"] == "http://127.0.0.1:4443/"
    assert emulator["spark.hadoop.fs.gs.auth.type"] == "UNAUTHENTICATED"
    assert not set(emulator) & set(conf)  # nothing emulator-only in what a real job gets
    with pytest.raises(ValueError, match="127.0.0.1:4443"):
        spark_gcs_emulator_conf("127.0.0.1:4443")

