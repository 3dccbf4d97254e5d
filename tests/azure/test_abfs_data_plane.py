"""The Azure data plane on loopback: Delta tables on Azure Storage, written by the real jobs submitted through Livy.

On Azure the lake is Delta on ADLS Gen2 and HDInsight runs ``spark_jobs/`` as Livy batches with the
arguments of ``include.jobs.job_args``. Here each job is submitted by the target's own operator
(``ReattachingLivyOperator``, built by ``include.targets.azure.livy.batch``) to the local Livy server of
``tests/azure/livy_server.py``, which runs it with spark-submit: the entry point and the code zip are
read from the artifacts container on Azurite (this checkout's artefact, uploaded by
``include.targets.azure.artifact``), the lake and landing URIs are in an Azurite container, and the batch
carries the target's Spark settings (``livy.spark_conf``: Delta's extension and ``AzureLogStore``), plus
the emulator's and hadoop-azure on the driver's class path (``make azure-jars``; HDInsight has it there).
The runtime's Delta jars stand for this machine's (``make jars``), since the local Spark is not the
runtime's.

One day is landed in the container, ingested into bronze and built into silver and gold, then run
again. The container's tables must hold the rows the same jobs write to a local lake, keep exactly
those rows after the rerun, and keep their Delta log in the container; the warehouse export must come
back through ``AdlsLake.local_dir`` as the local run wrote it.

What differs from Azure, because of the emulator: Azurite serves the Blob API only, so the URIs are
``abfs://<container>@devstoreaccount1.dfs.core.windows.net/`` (plain HTTP, not ``abfss``) and ABFS
runs in its Blob mode for accounts without a hierarchical namespace (``spark_azure_emulator_conf``):
directories are marker blobs, renames are copies and deletes, the account's shared key stands for
the managed identity. The ``wasb://`` driver is not tested: hadoop-azure 3.5, the release matching
pyspark 4.2's Hadoop, no longer has it (``NativeAzureFileSystem`` only throws).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from include.config import REPO_ROOT
from include.lake import export_uri
from include.source.landing import land
from include.targets.azure.adls import AdlsLake, spark_azure_emulator_conf, split_azure_uri
from include.targets.azure.settings import AzureSettings
from tests.azure.conftest import azure_jars_dir, ensure_containers, over_http
from tests.lake_data_plane import (DAY, check_delta_log_in_bucket, check_rerun_duplicates_nothing,
                                   check_same_rows_as_local, connector_jars, local_lake_summary, run_day_twice)

pytestmark = pytest.mark.slow

CONTAINER = "flights-lake-dataplane"  # its own containers: the other Azure tests use the example ones
ARTIFACTS = "flights-artifacts-dataplane"


def emulator_conf(azure: AzureSettings, jars: Path) -> dict[str, str]:
    """What the batches carry beyond the target's settings: the emulator's, and hadoop-azure on the class path."""
    return {**spark_azure_emulator_conf(azure.blob_endpoint, azure.storage_suffix),
            "spark.driver.extraClassPath": f"{jars}/*"}


class BlobObjects:
    """The container's blobs under an ``abfs(s)://`` URI, through azure-storage-blob."""

    def __init__(self, client, container: str):
        self.client, self.container = client, container
        self.box = client.get_container_client(container)

    def key(self, uri: str) -> str:
        return split_azure_uri(uri).path

    def list(self, uri: str) -> list[str]:
        return sorted(b.name for b in self.box.list_blobs(name_starts_with=self.key(uri) + "/"))

    def read(self, key: str) -> bytes:
        return self.box.download_blob(key).readall()


@pytest.fixture(scope="module")
def data_plane(azurite, tmp_path_factory):
    """The day run twice on the container's lake by spark-submit; returns the store, URIs and table summaries."""
    jars = azure_jars_dir()
    azure = AzureSettings.example(storage_account=azurite.account, blob_endpoint=azurite.blob_endpoint,
                                  lake_container=CONTAINER, artifacts_container=ARTIFACTS,
                                  poll_s=1)  # the batch's end is seen within a second, not half a minute
    client = ensure_containers(azurite, CONTAINER)
    lake, landing = over_http(azure.lake_root), over_http(azure.landing_root)

    # the source system's files for the day, delivered to the landing folder
    local_landing = tmp_path_factory.mktemp("adls") / "landing"
    land(DAY, local_landing)
    store = BlobObjects(client, CONTAINER)
    for path in sorted(local_landing.rglob("*.csv")):
        with path.open("rb") as body:
            store.box.upload_blob(store.key(f"{landing}/{path.relative_to(local_landing).as_posix()}"), body)

    # the code artefact in the artifacts container, as `python -m include.targets.azure.artifact` leaves it
    from include.targets.azure import artifact, livy
    from include.targets.azure.adls import BlobStore
    from include.targets.cloud.spec import instantiate
    from tests.azure.livy_server import LivyServer

    ensure_containers(azurite, azure.artifacts_container)
    delta = sorted(connector_jars("FLIGHTS_JARS_DIR", REPO_ROOT / ".cache" / "jars", "delta-spark*.jar",
                                  "jars").glob("*.jar"))
    code = artifact.upload(azure, BlobStore(client), jars=[])
    fetched = tmp_path_factory.mktemp("cluster-reads")

    def resolve(uri: str):
        """How the cluster reads a batch's files: from the storage account (Delta: this machine's jars)."""
        if uri.startswith(f"{azure.artifacts_root}/jars/"):
            return [str(p) for p in delta]
        parts = split_azure_uri(uri)
        dest = fetched / parts.container / parts.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(client.get_blob_client(parts.container, parts.path).download_blob().readall())
        return str(dest)

    extra = emulator_conf(azure, jars)
    submitted = []

    def submit(job: str, args: list[str], *, name: str) -> None:
        task_id, run_id = name.split(".")[1], args[args.index("--run-id") + 1]
        op = instantiate(livy.batch(azure, task_id=task_id, job=job, args=args, code=code, interval_key=DAY.key,
                                    deferrable=False, require_code=False, exists=lambda uri: True))
        op.spark_params["conf"].update(extra)
        ti = SimpleNamespace(dag_id="flights_daily", task_id=task_id, try_number=1, max_tries=1, run_id=run_id,
                             map_index=-1, xcom_push=lambda *a, **k: None)
        op.execute({"ti": ti, "run_id": run_id, "task_instance": ti})
        submitted.append(op.batch_name)

    with LivyServer(master="local[2]", resolve=resolve) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_AZURE_HDINSIGHT_LIVY", server.url)
        summaries = run_day_twice(tmp_path_factory.mktemp("spark-conf-adls"), store, lake, landing, "adls",
                                  submit=submit)
        posted = list(server.posted)
    assert len(submitted) == len(set(submitted)) == 4  # two jobs, run twice: four batches, one name each
    assert all(p["file"].startswith(code["prefix"]) and p["pyFiles"][0] == code["zip"] for p in posted)
    return {"azure": azure, "store": store, "lake": lake, "landing": landing, "local_landing": local_landing,
            "summaries": summaries, "cache": tmp_path_factory.mktemp("adls-cache")}


@pytest.fixture(scope="module")
def local_lake(data_plane, spark, tmp_path_factory):
    """The same day on a local lake: its table summaries and its folder."""
    lake = tmp_path_factory.mktemp("adls-local") / "lake"
    return {"summary": local_lake_summary(lake, data_plane["local_landing"]), "root": lake}


def test_the_container_lake_holds_the_rows_of_a_local_run(data_plane, local_lake):
    check_same_rows_as_local(data_plane, local_lake["summary"], "abfs://")


def test_a_rerun_of_the_day_duplicates_no_row(data_plane):
    check_rerun_duplicates_nothing(data_plane)


def test_the_delta_log_sits_in_the_container(data_plane):
    check_delta_log_in_bucket(data_plane, f"abfs://{CONTAINER}@devstoreaccount1.dfs.core.windows.net")


def test_the_warehouse_export_comes_back_through_the_lake(data_plane, local_lake):
    import pyarrow.parquet as pq

    store = data_plane["store"]
    uri = export_uri(data_plane["lake"], "flight_outcomes", DAY.key)
    files = [k.rsplit("/", 1)[1] for k in store.list(uri)]
    assert "_SUCCESS" in files  # Spark's file committer renamed its output into place in the container
    assert sum(f.endswith(".parquet") for f in files) == 1  # one Parquet file for the warehouse's load

    lake = AdlsLake(data_plane["azure"], data_plane["cache"])  # what a warehouse load reads the export through
    local = lake.local_dir(uri)
    downloaded = sorted(p.name for p in local.rglob("*") if p.is_file())
    assert downloaded == sorted(f for f in files if f.endswith(".parquet") or f == "_SUCCESS")  # no folder marker
    on_azure = pq.read_table(next(local.glob("*.parquet")))
    on_disk = pq.read_table(next(Path(export_uri(str(local_lake["root"]), "flight_outcomes", DAY.key)).glob(
        "*.parquet")))
    assert on_azure.num_rows == on_disk.num_rows > 0  # the day's outcomes, as the local run exported them
    assert on_azure.schema == on_disk.schema
