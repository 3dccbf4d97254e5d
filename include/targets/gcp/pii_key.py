"""Reading a secret from GCP Secret Manager inside a Spark job on Dataproc (the PII key).

The job reads it with the Dataproc runtime service account, bound to
``roles/secretmanager.secretAccessor`` on that one secret (``FLIGHTS_GCP_PII_KEY_SECRET``;
docs/running-on-gcp.md). It calls the REST method ``versions.access`` with Application
Default Credentials through ``google-auth``, which every Dataproc image has, so the job
needs no client library that the runtime may lack.
"""

from __future__ import annotations

import base64
import time

ENDPOINT = "https://secretmanager.googleapis.com/v1"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
RETRIED, ATTEMPTS = (429, 500, 502, 503, 504), 4


def read_secret(name: str, *, endpoint: str = ENDPOINT, session=None) -> bytes:
    """The payload of the secret version ``name`` (``projects/<p>/secrets/<s>/versions/<v>``), checksum checked."""
    if session is None:
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _ = google.auth.default(scopes=[SCOPE])
        session = AuthorizedSession(credentials)
    for attempt in range(ATTEMPTS):  # throttling and 5xx are retried with backoff (1, 2, 4 s)
        answer = session.get(f"{endpoint}/{name}:access", timeout=30)
        if answer.status_code not in RETRIED or attempt == ATTEMPTS - 1:
            break
        time.sleep(2 ** attempt)
    if answer.status_code != 200:
        raise RuntimeError(f"Secret Manager answered {answer.status_code} for {name}: {answer.text[:300]}")
    payload = answer.json()["payload"]
    data = base64.b64decode(payload["data"])
    crc = payload.get("dataCrc32c")
    if crc is not None and int(crc) != _crc32c(data):
        raise RuntimeError(f"the payload of {name} does not match its CRC32C checksum; it was corrupted in transit")
    return data


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as Secret Manager's ``dataCrc32c``; ``google-crc32c`` when present."""
    try:
        import google_crc32c

        return int(google_crc32c.value(data))
    except ImportError:
        pass
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

