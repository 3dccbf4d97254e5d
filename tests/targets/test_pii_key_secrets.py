"""The PII key on a cloud target: the job's command line names a secret, and the job reads the key from it.

Secret Manager (GCP) and Key Vault (Azure) have no emulator: ``SecretManagerStandIn`` and
``AzureStandIn`` below answer the two REST calls the readers make as the services document
them (paths, headers, query parameters, the payload's base64 and CRC32C, the IMDS token
exchange), and refuse what the services refuse (a missing ``Metadata`` header, a wrong bearer
token, a missing ``api-version``). They check the readers' requests; they prove nothing about
the clouds' IAM, which ``tests/*/test_iam.py`` and the docs cover. AWS is tested against the
moto server (``tests/aws/test_pii_key_secret.py``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from include.config import ConfigError
from include.source import pii

KEY = hashlib.sha256(b"test key material").hexdigest()  # 64 bytes of hex, derived: no literal secret
GCP_NAME = "projects/flights-example/secrets/flights-pii/versions/latest"
VAULT = "https://flights-kv.vault.azure.net/secrets/flights-pii"
CLIENT_ID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"


@pytest.fixture(autouse=True)
def _no_key_in_the_environment(monkeypatch):
    monkeypatch.delenv(pii.KEY_ENV, raising=False)
    yield
    pii.use_key_secret("")


@pytest.mark.parametrize("name, module", [
    ("arn:aws:secretsmanager:us-east-1:123456789012:secret:flights/pii-AbCdEf", "include.targets.aws.pii_key"),
    (GCP_NAME, "include.targets.gcp.pii_key"),
    ("projects/p-1/secrets/k/versions/3", "include.targets.gcp.pii_key"),
    (VAULT, "include.targets.azure.pii_key"),
    (f"{VAULT}/0123456789abcdef0123456789abcdef#client_id={CLIENT_ID}", "include.targets.azure.pii_key"),
])
def test_each_clouds_secret_name_is_read_by_that_clouds_package(name, module):
    assert pii.secret_store(name) == module


@pytest.mark.parametrize("value", [
    KEY,  # the key itself: never accepted on a command line
    "arn:aws:s3:::flights-lake/pii-key",  # an ARN, but not of a secret
    "projects/p/secrets/k",  # no version
    "https://flights-kv.vault.azure.net.evil.example/secrets/flights-pii",
    "http://flights-kv.vault.azure.net/secrets/flights-pii",
    f"{GCP_NAME}\n--lake=/tmp/x",
])
def test_anything_else_is_refused_naming_the_forms(value):
    with pytest.raises(pii.PiiConfigError, match="names no secret store.*Secrets Manager ARN.*Key Vault"):
        pii.use_key_secret(value)


def test_the_ingest_job_refuses_a_bad_secret_name_before_spark_starts(monkeypatch):
    from spark_jobs import bronze_landing
    from spark_jobs.session import JobInputError

    def no_spark(*_, **__):
        raise AssertionError("Spark was started for a job that cannot run")

    monkeypatch.setattr(bronze_landing, "get_spark", no_spark)
    argv = ["--lake", "/nonexistent/lake", "--landing", "/nonexistent/landing", "--start", "2013-01-01",
            "--end", "2013-01-01", "--run-id", "r"]
    with pytest.raises(JobInputError, match="names no secret store"):
        bronze_landing.main([*argv, "--pii-key-secret", KEY])
    with pytest.raises(JobInputError, match=r"--accept-dimension-change='carriers'.*unknown dimension"):
        bronze_landing.main([*argv, "--accept-dimension-change=carriers"])
    with pytest.raises(JobInputError, match="--pii-columns entry 'tailnum'"):
        bronze_landing.main([*argv, "--pii-columns=tailnum"])


# --- GCP Secret Manager ------------------------------------------------------------------------------


def _crc32c_reference(data: bytes) -> int:
    """CRC-32C, bit by bit from its definition (reflected polynomial 0x82F63B78), independent of the reader's."""
    crc = 0xFFFFFFFF
    for byte in data:
        for bit in range(8):
            if (crc ^ (byte >> bit)) & 1:
                crc = (crc >> 1) ^ 0x82F63B78
            else:
                crc >>= 1
    return crc ^ 0xFFFFFFFF


class _Server:
    def __init__(self, handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _JsonHandler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: dict):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *_):
        pass


class SecretManagerStandIn(_JsonHandler):
    """``GET /v1/{name}:access``: the version's payload, base64 with its CRC32C, as Secret Manager answers."""

    secrets: dict[str, bytes] = {}
    failures: list[int] = []  # statuses to answer first, one per request
    seen: list[str] = []
    corrupt = False

    def do_GET(self):  # noqa: N802 - the http.server interface
        self.seen.append(self.path)
        if self.failures:
            return self._send(self.failures.pop(0), {"error": {"status": "UNAVAILABLE"}})
        path = urlparse(self.path).path
        name = path.removeprefix("/v1/").removesuffix(":access")
        if not path.endswith(":access") or name not in self.secrets:
            return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": f"{name} not found"}})
        data = self.secrets[name]
        crc = _crc32c_reference(data) ^ (1 if self.corrupt else 0)
        self._send(200, {"name": name, "payload": {"data": base64.b64encode(data).decode(),
                                                   "dataCrc32c": str(crc)}})



@pytest.fixture()
def secret_manager(monkeypatch):
    import requests

    from include.targets.gcp import pii_key as secrets

    SecretManagerStandIn.secrets = {GCP_NAME: KEY.encode() + b"\n"}
    SecretManagerStandIn.failures, SecretManagerStandIn.seen, SecretManagerStandIn.corrupt = [], [], False
    server = _Server(SecretManagerStandIn)
    monkeypatch.setattr(secrets, "ENDPOINT", f"{server.url}/v1")
    real = secrets.read_secret
    monkeypatch.setattr(secrets, "read_secret",
                        lambda name: real(name, endpoint=f"{server.url}/v1", session=requests.Session()))
    monkeypatch.setattr(secrets.time, "sleep", lambda s: None)
    yield SecretManagerStandIn
    server.close()


def test_the_crc32c_of_the_reader_is_castagnolis():
    from include.targets.gcp.pii_key import _crc32c

    assert _crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    for data in (b"", KEY.encode(), bytes(range(256))):
        assert _crc32c(data) == _crc32c_reference(data)


def test_a_dataproc_job_reads_the_key_from_secret_manager(secret_manager):
    pii.use_key_secret(GCP_NAME)
    assert pii.hmac_key("flights", ("tailnum",)) == KEY.encode()  # the trailing newline of the payload is dropped
    assert secret_manager.seen == [f"/v1/{GCP_NAME}:access"]


def test_secret_manager_throttling_is_retried_and_corruption_and_absence_are_named(secret_manager):
    secret_manager.failures = [429, 503]
    pii.use_key_secret(GCP_NAME)
    assert pii.hmac_key("flights", ("tailnum",)) == KEY.encode()
    assert len(secret_manager.seen) == 3
    secret_manager.corrupt = True
    with pytest.raises(pii.PiiKeyUnavailable, match="CRC32C"):
        pii.hmac_key("flights", ("tailnum",))
    pii.use_key_secret("projects/flights-example/secrets/other/versions/1")
    with pytest.raises(pii.PiiKeyUnavailable, match=r"could not read the PII key from projects/flights-example/"
                                                    r"secrets/other/versions/1 .*404.*identity may read it"):
        pii.hmac_key("flights", ("tailnum",))


# --- Azure Key Vault through the managed identity ------------------------------------------------------


class AzureStandIn(_JsonHandler):
    """IMDS's token endpoint and Key Vault's ``Get Secret``, with the checks both make of a request."""

    token = hashlib.sha256(b"imds token").hexdigest()
    secrets: dict[str, str] = {}
    failures: list[int] = []
    seen: list[tuple[str, dict]] = []

    def do_GET(self):  # noqa: N802
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.seen.append((url.path, query))
        if self.failures:
            return self._send(self.failures.pop(0), {"error": "throttled"})
        if url.path == "/metadata/identity/oauth2/token":
            if self.headers.get("Metadata") != "true" or query.get("resource") != "https://vault.azure.net":
                return self._send(400, {"error": "invalid_request", "error_description": "Required metadata header"})
            if query.get("client_id") not in (None, CLIENT_ID):
                return self._send(400, {"error": "invalid_request", "error_description": "Identity not found"})
            return self._send(200, {"access_token": self.token, "token_type": "Bearer"})
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(401, {"error": {"code": "Unauthorized"}})
        if query.get("api-version") != "7.4":
            return self._send(400, {"error": {"code": "MissingApiVersionParameter"}})
        name = url.path.removeprefix("/secrets/")
        if name not in self.secrets:
            message = f"A secret with (name/id) {name} was not found in this key vault."
            return self._send(404, {"error": {"code": "SecretNotFound", "message": message}})
        return self._send(200, {"value": self.secrets[name], "id": f"{VAULT}/{name}"})



@pytest.fixture()
def azure_endpoints(monkeypatch):
    from include.targets.azure import pii_key as secrets

    AzureStandIn.secrets, AzureStandIn.failures, AzureStandIn.seen = {"flights-pii": KEY}, [], []
    server = _Server(AzureStandIn)
    real = secrets.read_secret

    def read(url: str) -> bytes:  # the vault's host is the stand-in's; the path and fragment are the job's
        local = url.replace("https://flights-kv.vault.azure.net", server.url)
        return real(local, imds=f"{server.url}/metadata/identity/oauth2/token")

    monkeypatch.setattr(secrets, "read_secret", read)
    monkeypatch.setattr(secrets.time, "sleep", lambda s: None)
    yield AzureStandIn
    server.close()


def test_an_hdinsight_job_reads_the_key_from_key_vault_with_its_managed_identity(azure_endpoints):
    pii.use_key_secret(f"{VAULT}#client_id={CLIENT_ID}")
    assert pii.hmac_key("flights", ("tailnum",)) == KEY.encode()
    (token_path, token_query), (secret_path, secret_query) = azure_endpoints.seen
    assert token_path == "/metadata/identity/oauth2/token" and token_query["client_id"] == CLIENT_ID
    assert secret_path == "/secrets/flights-pii" and "client_id" not in secret_query  # the fragment stays local


def test_key_vault_throttling_is_retried_and_a_missing_secret_is_named(azure_endpoints):
    azure_endpoints.failures = [429, 503]
    pii.use_key_secret(VAULT)
    assert pii.hmac_key("flights", ("tailnum",)) == KEY.encode()
    pii.use_key_secret("https://flights-kv.vault.azure.net/secrets/absent")
    with pytest.raises(pii.PiiKeyUnavailable, match=r"secrets/absent .*404.*SecretNotFound"):
        pii.hmac_key("flights", ("tailnum",))


# --- settings and the task's arguments ------------------------------------------------------------------


@pytest.mark.parametrize("variable, value, settings_module, loader", [
    ("FLIGHTS_AWS_PII_KEY_SECRET_ARN", GCP_NAME, "include.targets.aws.settings", "load_aws_settings"),
    ("FLIGHTS_GCP_PII_KEY_SECRET", VAULT, "include.targets.gcp.settings", "load_gcp_settings"),
    ("FLIGHTS_AZURE_PII_KEY_SECRET_URI", "arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf",
     "include.targets.azure.settings", "load_azure_settings"),
    ("FLIGHTS_GCP_PII_KEY_SECRET", KEY, "include.targets.gcp.settings", "load_gcp_settings"),
])
def test_each_cloud_takes_only_its_own_secret_store(variable, value, settings_module, loader, cloud_env):
    import importlib

    env = {**cloud_env, variable: value}
    with pytest.raises(ConfigError, match=f"{variable}=.* is not a"):
        getattr(importlib.import_module(settings_module), loader)(env)


@pytest.fixture()
def cloud_env() -> dict[str, str]:
    """The required variables of all three clouds, with example values."""
    return {
        "FLIGHTS_AWS_REGION": "us-east-1", "FLIGHTS_AWS_ACCOUNT_ID": "123456789012",
        "FLIGHTS_AWS_LAKE_BUCKET": "flights-lake", "FLIGHTS_AWS_EMR_APPLICATION_ID": "00fabcdefghij012",
        "FLIGHTS_AWS_EMR_JOB_ROLE_ARN": "arn:aws:iam::123456789012:role/flights-emr-job",
        "FLIGHTS_AWS_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/flights-sagemaker",
        "FLIGHTS_GCP_PROJECT": "flights-example", "FLIGHTS_GCP_REGION": "us-central1",
        "FLIGHTS_GCP_LAKE_BUCKET": "flights-lake-example",
        "FLIGHTS_GCP_DATAPROC_SERVICE_ACCOUNT": "flights-dataproc@flights-example.iam.gserviceaccount.com",
        "FLIGHTS_GCP_VERTEX_SERVICE_ACCOUNT": "flights-vertex@flights-example.iam.gserviceaccount.com",
        "FLIGHTS_AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
        "FLIGHTS_AZURE_RESOURCE_GROUP": "flights", "FLIGHTS_AZURE_LOCATION": "eastus",
        "FLIGHTS_AZURE_STORAGE_ACCOUNT": "flightslake", "FLIGHTS_AZURE_ML_WORKSPACE": "flights-ml",
        "FLIGHTS_AZURE_HDINSIGHT_CLUSTER": "flights-spark",
    }


def test_the_ingest_task_of_each_cloud_names_the_secret_and_never_carries_a_key(cloud_env):
    from include.plan import sample_job, sample_ref
    from include.targets.aws.settings import load_aws_settings
    from include.targets.azure.settings import load_azure_settings
    from include.targets.gcp.settings import load_gcp_settings

    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:flights/pii-AbCdEf"
    env = {**cloud_env, "FLIGHTS_AWS_PII_KEY_SECRET_ARN": arn, "FLIGHTS_GCP_PII_KEY_SECRET": GCP_NAME,
           "FLIGHTS_AZURE_PII_KEY_SECRET_URI": f"{VAULT}#client_id={CLIENT_ID}"}
    names = {"aws": load_aws_settings(env).pii_key_secret_arn, "gcp": load_gcp_settings(env).pii_key_secret,
             "azure": load_azure_settings(env).pii_key_secret_uri}
    assert names == {"aws": arn, "gcp": GCP_NAME, "azure": f"{VAULT}#client_id={CLIENT_ID}"}
    for name in names.values():
        args, _ = sample_job("ingest_bronze", "lake", "landing", sample_ref("daily"), name)
        assert args[args.index("--pii-key-secret") + 1] == name
    args, _ = sample_job("ingest_bronze", "lake", "landing", sample_ref("daily"))
    assert "--pii-key-secret" not in args  # local: the key travels in the job's environment
