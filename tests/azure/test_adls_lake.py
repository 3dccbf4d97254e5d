"""The lake, the uploads and the Spark storage settings of the azure target, against Azurite over HTTP."""

from __future__ import annotations

import json

import pytest

from include.config import ConfigError
from include.targets.azure import artifact as azure_artifact
from include.targets.azure.adls import (EMULATOR_KEY, MSI_TOKEN_PROVIDER, AdlsLake, AzureUri, BlobStore,
                                        blob_metadata, credential, spark_azure_conf, spark_azure_emulator_conf,
                                        split_azure_uri)
from include.targets.azure.runtimes import runtime
from include.targets.azure.settings import AzureSettings
from include.targets.cloud import artifact
from tests.azure.conftest import ensure_containers

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
ON_EMULATOR = AzureSettings.example(storage_account="devstoreaccount1",
                                    blob_endpoint="http://127.0.0.1:10000/devstoreaccount1")


def test_split_azure_uri():
    assert split_azure_uri("abfss://lake@flights.dfs.core.windows.net/lake/silver/flights") == AzureUri(
        "lake", "flights", "lake/silver/flights")
    assert split_azure_uri("abfs://lake@devstoreaccount1.dfs.core.windows.net") == ("lake", "devstoreaccount1", "")
    assert split_azure_uri("wasbs://art@flights.blob.core.chinacloudapi.cn/a/b.zip") == ("art", "flights", "a/b.zip")
    assert split_azure_uri("wasb://art@flights.blob.core.windows.net/") == ("art", "flights", "")
    for wrong in ("s3://lake/x", "gs://lake/x", "/tmp/lake", "abfss://flights.dfs.core.windows.net/lake",
                  "abfss://@flights.dfs.core.windows.net/lake", "abfss://lake@/x", "abfss:/lake@a.dfs.x/y",
                  "adl://lake@flights.dfs.core.windows.net/x"):
        with pytest.raises(ValueError, match="is not an abfss://"):
            split_azure_uri(wrong)
    with pytest.raises(ValueError, match="names the account's dfs host"):  # ABFS finds no account in a blob host
        split_azure_uri("abfss://lake@flights.blob.core.windows.net/lake")
    with pytest.raises(ValueError, match="names the account's blob host"):
        split_azure_uri("wasbs://lake@flights.dfs.core.windows.net/lake")


def test_lake_reads_through_a_client_made_from_the_settings(azure, containers, tmp_path):
    lake = AdlsLake(azure, tmp_path / "cache")  # no client given: made on first use, with the emulator's key
    base = "abfss://lake@devstoreaccount1.dfs.core.windows.net"
    assert (lake.root, lake.landing_root) == (f"{base}/lake", f"{base}/landing")
    box = containers.get_container_client("lake")
    box.upload_blob("lake/_quality/x/r.json", json.dumps({"success": True}), overwrite=True)
    box.upload_blob("lake/_quality/xy/r.json", b"{}", overwrite=True)
    assert lake.client.account_name == "devstoreaccount1"
    assert lake.exists(f"{base}/lake/_quality/x/r.json")
    assert lake.exists(f"{base}/lake/_quality/x")  # a folder holding blobs exists too
    assert lake.exists(f"{base}/lake/_quality/x/")
    assert not lake.exists(f"{base}/lake/_quality/x/missing.json")
    assert not lake.exists(f"{base}/lake/_quality/x/r")  # a prefix of a name is no folder
    assert lake.read_json(f"{base}/lake/_quality/x/r.json") == {"success": True}
    with pytest.raises(ValueError, match="is not an abfss://"):
        lake.exists("gs://lake/lake/_quality/x/r.json")
    with pytest.raises(ValueError, match="in storage account 'flights'"):  # the client reaches one account only
        lake.exists("abfss://lake@flights.dfs.core.windows.net/lake/_quality/x/r.json")


def test_local_dir_downloads_a_prefix_once(azure, containers, tmp_path):
    box = containers.get_container_client("lake")
    folder = "lake/exports/flight_outcomes/20130102_20130102"
    box.upload_blob(f"{folder}/part-0.parquet", b"PAR1", overwrite=True)
    box.upload_blob(f"{folder}/sub/part-1.parquet", b"PAR1PAR1", overwrite=True)
    box.upload_blob(folder, b"", overwrite=True, metadata={"hdi_isfolder": "true"})  # ABFS's directory markers
    box.upload_blob(f"{folder}/sub", b"", overwrite=True, metadata={"hdi_isfolder": "true"})
    box.upload_blob(f"{folder}_other/part-9.parquet", b"not this folder", overwrite=True)
    lake = AdlsLake(azure, tmp_path / "cache", client=containers)
    uri = f"{azure.container_uri('lake')}/{folder}"

    local = lake.local_dir(uri + "/")
    assert local == tmp_path / "cache" / "devstoreaccount1" / "lake" / folder
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
        "part-0.parquet", "sub/part-1.parquet"]  # only this folder's files, no marker, no partial file
    assert (local / "sub" / "part-1.parquet").read_bytes() == b"PAR1PAR1"

    (local / "part-0.parquet").write_bytes(b"KEPT")  # same size as the blob: taken as already downloaded
    (local / "sub" / "part-1.parquet").write_bytes(b"short")  # a different size: downloaded again
    assert lake.local_dir(uri) == local
    assert (local / "part-0.parquet").read_bytes() == b"KEPT"
    assert (local / "sub" / "part-1.parquet").read_bytes() == b"PAR1PAR1"


def test_code_artefact_is_uploaded_once(azure, azurite, containers):
    import dataclasses
    import uuid

    azure = dataclasses.replace(azure, artifacts_container=f"upload-{uuid.uuid4().hex[:12]}")  # nothing there yet
    ensure_containers(azurite, azure.artifacts_container)
    built = artifact.build_artifact()
    store = BlobStore(containers)
    first = artifact.upload(built, azure.artifacts_root, store)
    assert first["zip"] == (f"abfss://{azure.artifacts_container}@devstoreaccount1.dfs.core.windows.net/artifacts/"
                            f"code/{built.sha256}/flights.zip")
    assert int(first["written"]) == len(built.scripts) + 2  # the zip, the training sourcedir, one script per job
    assert artifact.upload(built, azure.artifacts_root, store)["written"] == "0"  # same digest: nothing written
    blob = containers.get_blob_client(azure.artifacts_container, split_azure_uri(first["zip"]).path)
    assert blob.download_blob().readall() == built.zip_bytes
    assert blob.get_blob_properties().metadata == {"source_sha256": built.sha256}  # C# identifiers only
    assert store.exists(built.script_uri(azure.artifacts_root, "bronze_landing"))
    assert not store.exists(f"{azure.artifacts_root}/code/{'0' * 64}/flights.zip")


def test_a_put_never_overwrites(azure, containers):
    store = BlobStore(containers)
    uri = f"{azure.artifacts_root}/code/{'1' * 64}/flights.zip"
    store.put(uri, b"first", {"source-sha256": "1" * 64})
    store.put(uri, b"second", {"source-sha256": "2" * 64})  # another upload got there first: left alone
    assert containers.get_blob_client("artifacts", split_azure_uri(uri).path).download_blob().readall() == b"first"
    assert blob_metadata({"source-sha256": "x", "9lives": "y", "ok_1": "z"}) == {
        "source_sha256": "x", "_9lives": "y", "ok_1": "z"}


def _fake_jars(folder, rt):
    folder.mkdir(parents=True, exist_ok=True)
    for name in rt.delta_jar_names():
        (folder / name).write_bytes(f"jar {name}".encode())
    return folder


def test_delta_jars_are_uploaded_next_to_the_code(azure, containers, tmp_path):
    rt = runtime(azure.spark_runtime)
    jars = azure_artifact.jar_files(azure, _fake_jars(tmp_path / "jars", rt), fetch=False)
    assert [p.name for p in jars] == sorted(rt.delta_jar_names())
    store = BlobStore(containers)
    first = azure_artifact.upload(azure, store, jars)
    assert int(first["written"]) >= 2  # the jars, and the code unless an earlier test uploaded it
    for uri in rt.jar_uris(azure.artifacts_root):
        assert store.exists(uri)
    assert azure_artifact.upload(azure, store, jars)["written"] == "0"
    stray = tmp_path / "other" / "delta-spark_2.13-9.9.9.jar"
    stray.parent.mkdir()
    stray.write_bytes(b"x")
    with pytest.raises(ConfigError, match="is not a Delta jar of Azure Spark runtime"):
        azure_artifact.upload(azure, store, [stray])
    with pytest.raises(ConfigError, match="Missing Delta jars"):
        azure_artifact.jar_files(azure, tmp_path / "empty", fetch=False)


def test_the_upload_command_uses_the_environment(azure, containers, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(azure_artifact, "JARS_CACHE", _fake_jars(tmp_path / "jars", runtime(azure.spark_runtime)))
    for name, value in {"SUBSCRIPTION_ID": azure.subscription_id, "RESOURCE_GROUP": azure.resource_group,
                        "LOCATION": azure.location, "STORAGE_ACCOUNT": azure.storage_account,
                        "ML_WORKSPACE": azure.ml_workspace, "HDINSIGHT_CLUSTER": azure.hdinsight_cluster,
                        "BLOB_ENDPOINT": azure.blob_endpoint, "ARTIFACTS_PREFIX": "cli-artifacts"}.items():
        monkeypatch.setenv(f"FLIGHTS_AZURE_{name}", value)
    assert azure_artifact.main([]) == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert printed["zip"].startswith("abfss://artifacts@devstoreaccount1.dfs.core.windows.net/cli-artifacts/code/")
    assert int(printed["written"]) == len(artifact.build_artifact().scripts) + 2 + 2  # code, sourcedir, jars
    assert azure_artifact.main([]) == 0
    assert "written: 0" in capsys.readouterr().out


class Recorded:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_credentials_are_the_emulator_key_only_with_an_emulator_endpoint(monkeypatch):
    azure = ON_EMULATOR
    assert credential(azure) == {"account_name": "devstoreaccount1", "account_key": EMULATOR_KEY}
    with pytest.raises(ConfigError, match="is for the Azurite emulator, whose account is devstoreaccount1"):
        credential(AzureSettings.example(blob_endpoint=azure.blob_endpoint))  # a real account name, a local endpoint
    monkeypatch.setattr("azure.identity.ManagedIdentityCredential", Recorded)
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", Recorded)
    managed = credential(AzureSettings.example(managed_identity_client_id=CLIENT_ID))
    assert isinstance(managed, Recorded) and managed.kwargs == {"client_id": CLIENT_ID}
    default = credential(AzureSettings.example())
    assert isinstance(default, Recorded) and default.kwargs == {}


def test_spark_settings_for_abfss_with_a_managed_identity():
    host = "flightsexample.dfs.core.windows.net"
    conf = spark_azure_conf(AzureSettings.example(managed_identity_client_id=CLIENT_ID))
    assert conf == {
        "spark.delta.logStore.abfs.impl": "io.delta.storage.AzureLogStore",
        "spark.delta.logStore.abfss.impl": "io.delta.storage.AzureLogStore",
        f"spark.hadoop.fs.azure.account.auth.type.{host}": "OAuth",
        f"spark.hadoop.fs.azure.account.oauth.provider.type.{host}": MSI_TOKEN_PROVIDER,
        f"spark.hadoop.fs.azure.account.oauth2.client.id.{host}": CLIENT_ID,
    }
    system_assigned = spark_azure_conf(AzureSettings.example())
    assert f"spark.hadoop.fs.azure.account.oauth2.client.id.{host}" not in system_assigned
    assert system_assigned[f"spark.hadoop.fs.azure.account.oauth.provider.type.{host}"] == MSI_TOKEN_PROVIDER
    synapse = spark_azure_conf(AzureSettings.example(spark_service="synapse", spark_runtime="synapse-3.5",
                                                     managed_identity_client_id=CLIENT_ID))
    assert not any(k.startswith("spark.hadoop.fs.azure.") for k in synapse)  # the workspace identity, no setting
    with pytest.raises(ConfigError, match="use abfss"):
        spark_azure_conf(AzureSettings.example(storage_scheme="wasbs"))


def test_spark_emulator_settings_stay_out_of_production():
    azure = ON_EMULATOR
    emulator = spark_azure_emulator_conf("http://127.0.0.1:10000/devstoreaccount1")
    host = "devstoreaccount1.dfs.core.windows.net"
    assert emulator["spark.hadoop.fs.azure.abfs.endpoint"] == "127.0.0.1:10000"
    assert emulator["spark.hadoop.fs.azure.fns.account.service.type"] == "BLOB"
    assert emulator[f"spark.hadoop.fs.azure.account.key.{host}"] == EMULATOR_KEY
    production = spark_azure_conf(AzureSettings.example(managed_identity_client_id=CLIENT_ID))
    assert not any("account.key" in k or "abfs.endpoint" in k or "always.use.https" in k for k in production)
    merged = {**spark_azure_conf(azure), **spark_azure_emulator_conf(azure.blob_endpoint)}
    assert merged[f"spark.hadoop.fs.azure.account.auth.type.{host}"] == "SharedKey"  # the emulator's key wins
    for wrong in ("127.0.0.1:10000", "http://127.0.0.1/devstoreaccount1", "https://127.0.0.1:10000/devstoreaccount1",
                  "http://127.0.0.1:10000/otheraccount"):
        with pytest.raises(ValueError, match="must be a URL such as"):
            spark_azure_emulator_conf(wrong)
