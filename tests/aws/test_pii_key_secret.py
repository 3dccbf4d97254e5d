"""The ingest job on EMR reads the PII key from Secrets Manager (the moto server), with its own role."""

from __future__ import annotations

import hashlib

import pytest

from include.source import pii
from tests.aws.conftest import REGION

KEY = hashlib.sha256(b"emr test key").hexdigest()


@pytest.fixture()
def secret_arn(boto, moto_endpoint, monkeypatch):
    monkeypatch.delenv(pii.KEY_ENV, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)  # what the job's boto3 client honours
    arn = boto("secretsmanager").create_secret(Name="flights/pii", SecretString=KEY + "\n")["ARN"]
    yield arn
    pii.use_key_secret("")
    boto("secretsmanager").delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def test_the_job_reads_the_key_from_the_secret_its_arn_names(secret_arn):
    assert secret_arn.startswith(f"arn:aws:secretsmanager:{REGION}:")
    pii.use_key_secret(secret_arn)
    assert pii.hmac_key("flights", ("tailnum",)) == KEY.encode()


def test_the_environment_wins_and_a_missing_secret_is_named(secret_arn, monkeypatch):
    pii.use_key_secret(secret_arn.replace("flights/pii", "flights/absent"))
    with pytest.raises(pii.PiiKeyUnavailable, match=r"secret:flights/absent.*ResourceNotFoundException.*identity "
                                                    r"may read it"):
        pii.hmac_key("flights", ("tailnum",))
    other = hashlib.sha256(b"from the environment").hexdigest()
    monkeypatch.setenv(pii.KEY_ENV, other)  # the local target's way: the secret is not read at all
    assert pii.hmac_key("flights", ("tailnum",)) == other.encode()


def test_a_binary_secret_is_read_as_its_bytes(secret_arn, boto):
    raw = hashlib.sha256(b"binary").digest() * 2
    arn = boto("secretsmanager").create_secret(Name="flights/pii-binary", SecretBinary=raw)["ARN"]
    pii.use_key_secret(arn)
    assert pii.hmac_key("flights", ("tailnum",)) == raw.strip()
