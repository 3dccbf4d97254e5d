"""The Azure Storage emulator (Azurite) on loopback for the Azure tests.

``azurite`` starts ``azurite-blob`` (``make azurite``: Azurite 3.35.0 from npm, a Node.js program)
once per test session on a free port of 127.0.0.1, in memory, and stops it at the end. It serves
the Blob API of the well-known development account ``devstoreaccount1`` with its shared key; the
Python side (azure-storage-blob) talks to it through ``blob_endpoint``, Spark through the ABFS
driver (``include.targets.azure.adls.spark_azure_emulator_conf``). Azurite has no ``dfs`` endpoint
(ADLS Gen2), no queue or table service is started, and the environment is left alone: every client
is given the endpoint explicitly.

Fixtures for other modules: ``azurite`` (the endpoint, account, key, connection string and a client),
``azure`` (``AzureSettings.example`` on the emulator) and ``containers`` (its lake and artifacts
containers, created); ``ensure_containers`` creates others. For Spark on the emulator:
``spark_azure_emulator_conf(azurite.blob_endpoint)``, hadoop-azure from ``azure_jars_dir()`` on the
driver's class path, and the lake URIs through ``over_http`` (``abfs://``: Azurite serves no TLS here).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from include.config import REPO_ROOT
from include.targets.azure.adls import EMULATOR_ACCOUNT, EMULATOR_KEY
from include.targets.azure.settings import AzureSettings

AZURITE_VERSION = "3.35.0"
DEFAULT_AZURITE = REPO_ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "azurite"


@dataclass(frozen=True)
class Azurite:
    """A running Azurite Blob service."""

    blob_endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1
    account: str = EMULATOR_ACCOUNT
    key: str = EMULATOR_KEY

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
                f"BlobEndpoint={self.blob_endpoint};")

    def client(self):
        """A ``BlobServiceClient`` on the emulator, with the account's shared key."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)


def ensure_containers(azurite: Azurite, *names: str):
    """Create the containers on the emulator unless they are there; returns a client."""
    from azure.core.exceptions import ResourceExistsError

    client = azurite.client()
    for name in names:
        try:
            client.create_container(name)
        except ResourceExistsError:
            pass
    return client


def azure_jars_dir() -> Path:
    """hadoop-azure and its dependencies (``make azure-jars``) for a Spark driver's class path; skips (fails on
    CI) when they have not been fetched."""
    from tests.lake_data_plane import connector_jars

    return connector_jars("FLIGHTS_AZURE_JARS_DIR", REPO_ROOT / ".cache" / "jars-azure", "hadoop-azure-*.jar",
                          "azure-jars")


def over_http(uri: str) -> str:
    """The URI Spark reaches the emulator with for an ``abfss://`` one: ``abfs://``, as Azurite serves HTTP only."""
    if not uri.startswith("abfss://"):
        raise ValueError(f"{uri!r} is not an abfss:// URI")
    return "abfs://" + uri[len("abfss://"):]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def azurite_blob_binary() -> Path:
    """``azurite-blob`` next to ``$FLIGHTS_AZURITE`` (``make azurite``); skips (fails on CI) when absent."""
    configured = os.environ.get("FLIGHTS_AZURITE")
    binary = Path(configured or DEFAULT_AZURITE).with_name("azurite-blob")
    problem = ""
    if not os.access(binary, os.X_OK):
        problem = (f"No azurite-blob in {binary.parent}: run `make azurite` (npm install azurite@{AZURITE_VERSION}) "
                   "or set FLIGHTS_AZURITE to its azurite program.")
    elif shutil.which("node") is None:
        problem = "Azurite is installed but Node.js (node) is not on PATH."
    if problem:
        if configured or os.environ.get("CI", "").lower() not in ("", "0", "false"):  # CI must not skip it silently
            pytest.fail(problem)
        pytest.skip(problem)
    return binary


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Azurite:
    """Azurite's Blob service on a free loopback port, in memory, for the whole session."""
    import logging

    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)  # every request
    binary = azurite_blob_binary()
    port = _free_port()
    workspace = tmp_path_factory.mktemp("azurite")
    log = workspace / "azurite.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
             "--extentMemoryLimit", "2048", "--disableTelemetry", "--skipApiVersionCheck", "--loose", "--silent"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workspace)  # in memory: nothing written there
    endpoint = f"http://127.0.0.1:{port}/{EMULATOR_ACCOUNT}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}?comp=list", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers (403 to an unsigned request): up
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Azurite did not start on {endpoint}: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield Azurite(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def azure(azurite) -> AzureSettings:
    """Example settings whose account is the emulator's (abfss URIs; the Python side uses ``blob_endpoint``)."""
    return AzureSettings.example(storage_account=azurite.account, blob_endpoint=azurite.blob_endpoint)


@pytest.fixture()
def containers(azure, azurite):
    """The lake and artifacts containers of ``azure``, created once on the emulator; returns a client."""
    return ensure_containers(azurite, azure.lake_container, azure.artifacts_container)
