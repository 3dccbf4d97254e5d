"""Cloud Storage emulators on loopback for the GCP tests, with a fake project set only here.

Two real HTTP servers of the JSON API, each started once per test session on a free port:

* ``gcs_endpoint``: ``gcp-storage-emulator`` (PyPI, in memory), which ``STORAGE_EMULATOR_HOST``
  names for the whole session: google-cloud-storage talks to it and sends no credentials.
* ``fake_gcs_endpoint``: ``fake-gcs-server`` (a Go program, ``make fake-gcs-server``), for the
  Hadoop connector in Spark; reached only through explicit endpoints (``emulator_client``,
  ``spark_gcs_emulator_conf``), so the environment keeps naming the first. gcp-storage-emulator
  cannot serve the connector: its 404s have no JSON error body (the connector then takes "not
  found" for a failure), it answers no batched GETs, and it ignores ``ifGenerationMatch``, the
  precondition Delta's ``GCSLogStore`` commits with.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from include.config import REPO_ROOT
from include.targets.gcp.settings import GcpSettings

PROJECT = "flights-example"
FAKE_GCS_SERVER = "github.com/fsouza/fake-gcs-server@v1.56.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emulator_client(endpoint: str):
    """A google-cloud-storage client bound to ``endpoint`` (whatever ``STORAGE_EMULATOR_HOST`` says)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project=PROJECT, credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": endpoint})


def ensure_bucket(client, name: str) -> None:
    """Create the bucket on the emulator unless it is there."""
    if client.lookup_bucket(name) is None:
        client.create_bucket(name)


@pytest.fixture(scope="session")
def gcs_endpoint():
    """gcp-storage-emulator's base URL; ``STORAGE_EMULATOR_HOST`` points at it until the session ends."""
    import logging

    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)  # one log line per request otherwise
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    mp.setenv("STORAGE_EMULATOR_HOST", url)
    mp.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    mp.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)  # never a real key file next to an emulator
    try:
        yield url
    finally:
        mp.undo()
        server.stop()


def fake_gcs_server_binary() -> Path:
    """The fake-gcs-server program; skips (fails on CI) when ``make fake-gcs-server`` has not built it."""
    configured = os.environ.get("FLIGHTS_FAKE_GCS_SERVER")
    if configured:
        if not os.access(configured, os.X_OK):
            pytest.fail(f"FLIGHTS_FAKE_GCS_SERVER={configured} is not an executable fake-gcs-server.")
        return Path(configured)
    built = REPO_ROOT / ".cache" / "go" / "bin" / "fake-gcs-server"
    found = built if os.access(built, os.X_OK) else shutil.which("fake-gcs-server")
    if not found:
        message = (f"No fake-gcs-server in {built.parent} or on PATH: run `make fake-gcs-server` (needs Go; "
                   f"`go install {FAKE_GCS_SERVER}`) or set FLIGHTS_FAKE_GCS_SERVER.")
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):  # CI must not skip it silently
            pytest.fail(message)
        pytest.skip(message)
    return Path(found)


@pytest.fixture(scope="session")
def fake_gcs_endpoint(tmp_path_factory):
    """fake-gcs-server's base URL (in memory); the environment is left alone."""
    binary = fake_gcs_server_binary()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("fake-gcs-server") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
             "-external-url", url, "-public-host", f"127.0.0.1:{port}", "-log-level", "warn"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"fake-gcs-server did not start on {url}: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def gcs(gcs_endpoint):
    """A google-cloud-storage client on gcp-storage-emulator."""
    return emulator_client(gcs_endpoint)


@pytest.fixture()
def gcp(gcs_endpoint) -> GcpSettings:
    return GcpSettings.example(project=PROJECT)


@pytest.fixture()
def buckets(gcp, gcs):
    """The lake and artifacts buckets of ``gcp``, created once on the server; returns the client."""
    for bucket in (gcp.lake_bucket, gcp.artifacts_bucket):
        ensure_bucket(gcs, bucket)
    return gcs
