"""The lake and the code artefact on Azure Storage, and the Spark settings for Delta on ``abfss://``.

On the azure target every lake table, landing file and code object lives under an
``abfss://<container>@<account>.dfs.<suffix>/<path>`` URI (ADLS Gen2). Python tasks reach them
through ``AdlsLake`` (the ``LakeStorage`` seam: existence checks, the gates' JSON results,
prefixes downloaded into a local cache) and ``BlobStore`` (the ``ObjectStore`` the shared
code-artefact upload writes through), both over azure-storage-blob: the Blob API serves accounts
with and without a hierarchical namespace, so one client reads what Spark wrote through
``abfss://``. Spark jobs reach the lake through Hadoop's ABFS driver, configured by
``spark_azure_conf`` (OAuth with the cluster's managed identity). Delta commits on ``abfs``/
``abfss``/``wasb``/``wasbs`` through its ``AzureLogStore``, its default for those schemes (Delta's
``DelegatingLogStore``; no LogStore setting is needed, ``spark_azure_conf`` names it anyway): a
commit is written to a temporary file and renamed, and the rename fails when the version exists,
which is atomic on a hierarchical namespace.

Credentials: ``ManagedIdentityCredential`` of ``managed_identity_client_id`` when it is set,
``DefaultAzureCredential`` otherwise; the emulator's well-known account key only when
``blob_endpoint`` names an emulator (Azurite). ``spark_azure_emulator_conf`` gives Spark the
matching settings, kept apart from ``spark_azure_conf`` so that nothing emulator-only reaches a
real job.

What the emulator covers (Azurite 3.35, tested in tests/azure/): Azurite serves the Blob API only,
with no ``dfs`` endpoint. The Python side here uses only the Blob API, so it runs unchanged
against it. Spark reaches it through ABFS in its Blob mode for accounts without a hierarchical
namespace (Hadoop 3.5: ``fs.azure.fns.account.service.type=BLOB``) over plain HTTP; that mode
keeps directories as zero-byte marker blobs (``hdi_isfolder`` metadata) and renames by copy and
delete. Not covered: ABFS against the ``dfs`` endpoint of a hierarchical namespace
(Path Create/Append/Flush, the atomic rename Delta's commits rely on under concurrent writers,
ACLs), OAuth and managed identities (the emulator takes the shared key), TLS (``abfss``), and the
``wasb`` driver (removed from Hadoop 3.5, whose hadoop-azure pyspark 4.2 pairs with).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from include.config import ConfigError
from include.targets.azure.settings import AzureSettings
from include.targets.cloud.artifact import ObjectStore

# Azurite's (and the retired storage emulator's) publicly documented development account and key.
EMULATOR_ACCOUNT = "devstoreaccount1"
# pragma: allowlist nextline secret
EMULATOR_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

URI_SCHEMES = {"abfss": "dfs", "abfs": "dfs", "wasbs": "blob", "wasb": "blob"}  # scheme -> service of its host
MSI_TOKEN_PROVIDER = "org.apache.hadoop.fs.azurebfs.oauth2.MsiTokenProvider"
AZURE_LOG_STORE = "io.delta.storage.AzureLogStore"
FOLDER_MARKER = "hdi_isfolder"  # metadata of the zero-byte blob standing for a directory


class AzureUri(NamedTuple):
    container: str
    account: str
    path: str


def split_azure_uri(uri: str) -> AzureUri:
    """``abfss://lake@acct.dfs.core.windows.net/a/b`` -> ``AzureUri("lake", "acct", "a/b")``.

    ``abfs``/``abfss`` name the ``dfs`` host and ``wasb``/``wasbs`` the ``blob`` host of the account, as
    their drivers need. ValueError for any other scheme, a missing container or account, or the other host.
    """
    scheme, sep, rest = uri.partition("://")
    authority, _, path = rest.partition("/")
    container, at, host = authority.partition("@")
    service = URI_SCHEMES.get(scheme)
    account, _, suffix = host.partition(".")
    if not sep or service is None or not at or not container or not account:
        raise ValueError(f"{uri!r} is not an abfss://<container>@<account>.dfs.<suffix>/<path> URI "
                         "(the azure target keeps its lake on Azure Storage; wasbs:// names the blob host)")
    if not suffix.startswith(f"{service}."):
        raise ValueError(f"{uri!r}: a {scheme}:// URI names the account's {service} host, "
                         f"{account}.{service}.<suffix>, not {host}")
    return AzureUri(container, account, path)


def credential(azure: AzureSettings):
    """The credential for the Blob service: the emulator's key, the managed identity, or the default chain."""
    if azure.blob_endpoint:
        if azure.storage_account != EMULATOR_ACCOUNT:
            raise ConfigError(f"FLIGHTS_AZURE_BLOB_ENDPOINT={azure.blob_endpoint} is for the Azurite emulator, whose "
                              f"account is {EMULATOR_ACCOUNT}; set FLIGHTS_AZURE_STORAGE_ACCOUNT={EMULATOR_ACCOUNT}, "
                              "or unset the endpoint to reach a real account.")
        return {"account_name": EMULATOR_ACCOUNT, "account_key": EMULATOR_KEY}
    if azure.managed_identity_client_id:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=azure.managed_identity_client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def blob_service_client(azure: AzureSettings):
    """A ``BlobServiceClient`` for the account (``azure.account_url``), with ``credential(azure)``."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(azure.account_url, credential=credential(azure))


class _Blobs:
    """URI -> (container client, blob name), for the one account the client is bound to."""

    def __init__(self, client):
        self.client = client

    def locate(self, uri: str) -> tuple[object, str]:
        parts = split_azure_uri(uri)
        if parts.account != self.client.account_name:
            raise ValueError(f"{uri!r} is in storage account {parts.account!r}; this client reaches "
                             f"{self.client.account_name!r} only")
        return self.client.get_container_client(parts.container), parts.path


class AdlsLake(_Blobs):
    """The lake under ``abfss://<lake container>@<account>...``; ``local_dir`` downloads a prefix into a cache."""

    def __init__(self, azure: AzureSettings, cache_dir: Path, client=None):
        self.azure, self.cache_dir = azure, Path(cache_dir)
        self.root, self.landing_root = azure.lake_root, azure.landing_root
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = blob_service_client(self.azure)
        return self._client

    def exists(self, uri: str) -> bool:
        """Whether the URI is a blob, or a folder holding blobs."""
        container, name = self.locate(uri)
        folder = name.rstrip("/")
        if folder and container.get_blob_client(folder).exists():
            return True
        return any(True for _ in container.list_blobs(name_starts_with=folder + "/" if folder else None,
                                                      results_per_page=1))

    def read_json(self, uri: str) -> dict:
        container, name = self.locate(uri)
        return json.loads(container.download_blob(name).readall())

    def local_dir(self, uri: str) -> Path:
        """Download the blobs under ``uri`` into ``<cache>/<account>/<container>/<prefix>``; files of the same
        size are kept, folder markers skipped."""
        from include.targets.cloud.mirror import mirror

        container, prefix = self.locate(uri.rstrip("/") + "/")
        blobs = [b for b in container.list_blobs(name_starts_with=prefix, include=["metadata"])
                 if (b.metadata or {}).get(FOLDER_MARKER, "").lower() != "true"]  # ABFS's directory markers

        def download(blob, path: Path) -> None:
            with path.open("wb") as out:
                container.download_blob(blob.name).readinto(out)

        return mirror(((b.name[len(prefix):], b.size, b) for b in blobs),
                      self.cache_dir / self.client.account_name / container.container_name / prefix, download)


class BlobStore(_Blobs, ObjectStore):
    """``ObjectStore`` over a ``BlobServiceClient``: the code artefact and jars in the artifacts container."""

    def exists(self, uri: str) -> bool:
        container, name = self.locate(uri)
        return container.get_blob_client(name).exists()

    def put(self, uri: str, body: bytes, metadata: dict[str, str]) -> None:
        """Write the blob only if it is absent (``If-None-Match: *``): a content-addressed name that another
        upload created meanwhile already holds these bytes. Metadata names become C# identifiers, as Azure
        requires (``source-sha256`` -> ``source_sha256``)."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContentSettings

        container, name = self.locate(uri)
        try:
            container.upload_blob(name, body, overwrite=False, metadata=blob_metadata(metadata),
                                  content_settings=ContentSettings(content_type="application/octet-stream"))
        except ResourceExistsError:
            pass


def blob_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Metadata with names Azure accepts (C# identifiers: letters, digits, ``_``)."""
    out = {}
    for key, value in metadata.items():
        name = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in key)
        out["_" + name if name[:1].isdigit() else name] = value
    return out


def _account_host(azure: AzureSettings) -> str:
    return f"{azure.storage_account}.dfs.{azure.storage_suffix}"


def spark_azure_conf(azure: AzureSettings) -> dict[str, str]:
    """Spark settings for Delta tables on ``abfss://`` through Hadoop's ABFS driver.

    HDInsight and Synapse have hadoop-azure on their class path. Delta's ``AzureLogStore`` is named for
    ``abfs``/``abfss`` (Delta's default for them too). On HDInsight the driver authenticates with OAuth
    tokens of the cluster's managed identity from the instance metadata service (``MsiTokenProvider``; the
    user-assigned identity's client id when ``managed_identity_client_id`` is set, the system-assigned one
    otherwise), scoped to the lake's account so that the cluster's own storage keeps its settings. A Synapse
    pool reaches its workspace's linked ADLS Gen2 account with the workspace identity and needs no
    ``fs.azure.*`` setting, so none is given there.

    Args:
        azure: the settings; ``storage_scheme`` must be ``abfss`` (the wasb driver has no managed identity).
    Returns:
        ``spark.*`` settings, for a Livy batch's ``conf`` or ``spark-defaults.conf``.
    """
    if azure.storage_scheme != "abfss" and not azure.blob_endpoint:
        raise ConfigError(f"FLIGHTS_AZURE_STORAGE_SCHEME={azure.storage_scheme}: Spark reaches the lake through "
                          "the ABFS driver with the cluster's managed identity, which the wasb driver lacks (and "
                          "Hadoop 3.5 removed it); use abfss, which serves accounts without a hierarchical "
                          "namespace too.")
    conf = {f"spark.delta.logStore.{scheme}.impl": AZURE_LOG_STORE for scheme in ("abfs", "abfss")}
    if azure.spark_service == "hdinsight":
        host = _account_host(azure)
        conf.update({
            f"spark.hadoop.fs.azure.account.auth.type.{host}": "OAuth",
            f"spark.hadoop.fs.azure.account.oauth.provider.type.{host}": MSI_TOKEN_PROVIDER,
        })
        if azure.managed_identity_client_id:
            conf[f"spark.hadoop.fs.azure.account.oauth2.client.id.{host}"] = azure.managed_identity_client_id
    return conf


def spark_azure_emulator_conf(blob_endpoint: str, suffix: str = "core.windows.net") -> dict[str, str]:
    """ABFS's settings for the Azurite emulator, on top of ``spark_azure_conf``: lake URIs stay
    ``abfs://<container>@devstoreaccount1.dfs.<suffix>/...`` (plain HTTP, ``abfs`` not ``abfss``).

    Args:
        blob_endpoint: the emulator's Blob endpoint with its account, e.g.
            ``http://127.0.0.1:10000/devstoreaccount1`` (what ``blob_endpoint`` of the settings holds).
        suffix: the storage suffix of the URIs.
    Returns:
        ``spark.hadoop.fs.azure.*`` settings: the emulator's host and port (ABFS then puts the account in the
        path, as the emulator expects), no hierarchical namespace and the Blob API (Azurite serves no ``dfs``
        endpoint), HTTP without TLS through the JDK's client (ABFS's Apache client wants a TLS socket factory
        even for HTTP), the account's well-known shared key, and no metrics collection (hadoop-azure 3.5
        schedules it on a non-daemon thread that keeps a client-mode spark-submit's JVM alive after the job).
    """
    parts = urlsplit(blob_endpoint)
    if parts.scheme != "http" or not parts.port or parts.path.strip("/") != EMULATOR_ACCOUNT:
        raise ValueError(f"Emulator endpoint {blob_endpoint!r} must be a URL such as "
                         f"http://127.0.0.1:10000/{EMULATOR_ACCOUNT}")
    host = f"{EMULATOR_ACCOUNT}.dfs.{suffix}"
    return {
        "spark.hadoop.fs.azure.abfs.endpoint": f"{parts.hostname}:{parts.port}",
        "spark.hadoop.fs.azure.always.use.https": "false",
        "spark.hadoop.fs.azure.account.hns.enabled": "false",
        "spark.hadoop.fs.azure.fns.account.service.type": "BLOB",
        "spark.hadoop.fs.azure.networking.library": "JDK_HTTP_URL_CONNECTION",
        "spark.hadoop.fs.azure.metrics.collection.enabled": "false",
        f"spark.hadoop.fs.azure.account.auth.type.{host}": "SharedKey",
        f"spark.hadoop.fs.azure.account.key.{host}": EMULATOR_KEY,
    }
