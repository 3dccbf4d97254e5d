"""Reading a secret from Azure Key Vault inside a Spark job on HDInsight (the PII key).

The job reads it with the cluster's managed identity: a token for Key Vault from the
instance metadata service (IMDS), then the Key Vault REST API's ``Get Secret``. Only the
standard library is used, so the job needs nothing the cluster image lacks. The secret is
named by its URL (``FLIGHTS_AZURE_PII_KEY_SECRET_URI``); the identity, when it is a
user-assigned one, by ``#client_id=<guid>`` after it (the fragment is never sent). The
identity needs the ``Key Vault Secrets User`` role on that secret (docs/running-on-azure.md).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

IMDS = "http://169.254.169.254/metadata/identity/oauth2/token"
RESOURCE = "https://vault.azure.net"
API_VERSION = "7.4"
ATTEMPTS = 4


def read_secret(url: str, *, imds: str = IMDS) -> bytes:
    """The value of the Key Vault secret at ``url`` (``https://<vault>.vault.azure.net/secrets/<name>[/<version>]``)."""
    url, _, fragment = url.partition("#")
    client_id = urllib.parse.parse_qs(fragment).get("client_id", [""])[0]
    query = {"api-version": "2018-02-01", "resource": RESOURCE, **({"client_id": client_id} if client_id else {})}
    token = _get_json(f"{imds}?{urllib.parse.urlencode(query)}", {"Metadata": "true"})["access_token"]
    answer = _get_json(f"{url}?api-version={API_VERSION}", {"Authorization": f"Bearer {token}"})
    return answer["value"].encode("utf-8")


def _get_json(url: str, headers: dict[str, str]) -> dict:
    """GET with retries on throttling, 5xx and dropped connections (backoff 1, 2, 4 s); other errors at once."""
    for attempt in range(ATTEMPTS):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 500, 502, 503, 504) or attempt == ATTEMPTS - 1:
                body = exc.read(300).decode("utf-8", "replace")
                raise RuntimeError(f"{url.split('?')[0]} answered {exc.code}: {body}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if attempt == ATTEMPTS - 1:
                raise
        time.sleep(2 ** attempt)
    raise AssertionError("unreachable")
