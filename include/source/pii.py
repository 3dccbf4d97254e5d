"""Personal data: which source columns hold it, and how it is pseudonymised at bronze ingest.

A column classified as personal (``pii``) never reaches the lake as delivered. At bronze
ingest its value is replaced by a keyed hash, HMAC-SHA-256 under a secret key, as 64 hex
digits. The same value gives the same hash under the same key, so joins and counts on the
column still work (``flights.tailnum`` against ``planes.tailnum``), but nobody without the
key can recover the value or test a guess. Nothing else of the raw value is kept:

- the quarantine's ``raw_line`` has each personal value replaced by its hash, and a line
  that did not parse (so its fields cannot be located) is withheld whole, with only the
  line's HMAC kept to tell lines apart;
- ``raw_record``, the row id and bronze's ``_corrupt_record`` are computed after hashing;
- the Data Docs failure samples and the alerts are made from bronze and quarantine, so
  they only ever see hashes.

Classification is part of the source contract (``include.source.contract.PII``: the example
data has no personal columns). A deployment can classify more without a code change:
``FLIGHTS_PII_COLUMNS=flights.tailnum,planes.tailnum``.

The key comes from the secrets backend, never from a file in the repository: Airflow
resolves the connection ``flights_pii`` (``FLIGHTS_PII_CONN_ID``; its password is the key,
at least 32 bytes) and hands it to the Spark job in the job's environment as
``FLIGHTS_PII_KEY``, never on its command line. On a cloud target the job reads the key
itself from the cloud's secret store: its command line carries only the secret's name
(``--pii-key-secret``: an AWS Secrets Manager ARN, a GCP Secret Manager version name or an
Azure Key Vault secret URL), and each cloud's package reads it (``SECRET_STORES``). A job
with personal columns and no key refuses to run (exit status 3): nothing is ingested
unhashed. Rotating the key changes every hash: re-ingest the retained landing files with
the new key, or keep the old one.
"""

from __future__ import annotations

import importlib
import os
import re

from include.source.contract import PII

KEY_ENV = "FLIGHTS_PII_KEY"
COLUMNS_ENV = "FLIGHTS_PII_COLUMNS"
MIN_KEY_BYTES = 32
BLOCK = 64  # SHA-256's block size: the HMAC key is padded (or hashed) to it
REDACTED_LINE = "[withheld: the line did not parse, so its personal fields cannot be located; line hmac "


# Where a key named by --pii-key-secret is read: a pattern of the secret's name, and the module of
# the cloud's package whose read_secret(name) -> bytes reads it with the job's own identity.
SECRET_STORES = (
    (re.compile(r"arn:aws:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+"),
     "include.targets.aws.pii_key"),
    (re.compile(r"projects/[a-z0-9-]+/secrets/[A-Za-z0-9_-]+/versions/([0-9]+|latest)"),
     "include.targets.gcp.pii_key"),
    (re.compile(r"https://[a-z0-9-]{3,24}\.vault\.azure\.net/secrets/[A-Za-z0-9-]+(/[0-9a-f]{32})?"
                r"(#client_id=[0-9a-fA-F-]{36})?"),
     "include.targets.azure.pii_key"),
)
_extra_columns = ""  # set by use_columns: more personal columns, from the job's command line
_key_secret = ""  # set by use_key_secret: the secret the key is read from when the environment has none


class PiiConfigError(ValueError):
    """Personal columns are classified but the key is missing or too short, or a classification is malformed."""


class PiiKeyUnavailable(RuntimeError):
    """The key's secret could not be read (denied, missing, unreachable): not a fault of the input, so retried."""


def secret_store(name: str) -> str:
    """The module that reads the secret ``name``; a name no store recognises is refused, naming the forms."""
    for pattern, module in SECRET_STORES:
        if pattern.fullmatch(name):
            return module
    raise PiiConfigError(
        f"--pii-key-secret {name!r} names no secret store this job can read. Give an AWS Secrets Manager ARN "
        "(arn:aws:secretsmanager:<region>:<account>:secret:<name>), a GCP Secret Manager version "
        "(projects/<project>/secrets/<secret>/versions/<n|latest>) or an Azure Key Vault secret URL "
        "(https://<vault>.vault.azure.net/secrets/<name>[#client_id=<managed identity client id>]).")


def use_key_secret(name: str) -> None:
    """Read the key from the secret ``name`` when the environment has none (checked now, read when needed)."""
    global _key_secret
    if name:
        secret_store(name)
    _key_secret = name


def pii_columns(dataset: str) -> tuple[str, ...]:
    """The columns of ``dataset`` classified as personal: the contract's, ``FLIGHTS_PII_COLUMNS``'s and
    ``use_columns``'s (the job's ``--pii-columns``)."""
    extra = [column for name, column in parse_columns(os.environ.get(COLUMNS_ENV, ""), COLUMNS_ENV)
             + parse_columns(_extra_columns, "--pii-columns") if name == dataset]
    return tuple(sorted(set(PII.get(dataset, ())) | set(extra)))


def parse_columns(text: str, source: str = COLUMNS_ENV) -> list[tuple[str, str]]:
    """``flights.tailnum,planes.tailnum`` as (dataset, column) pairs; a malformed entry is refused, naming it."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, dot, column = item.partition(".")
        if not dot or not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*",
                                                                                       column):
            raise PiiConfigError(f"{source} entry {item!r} is not <dataset>.<column> "
                                 f"(e.g. flights.tailnum); fix the value or unset it.")
        out.append((name, column))
    return out


def use_columns(text: str) -> None:
    """Classify more columns for this process (the job's ``--pii-columns``), on top of the environment's."""
    global _extra_columns
    parse_columns(text, "--pii-columns")
    _extra_columns = text


def hmac_key(dataset: str, columns: tuple[str, ...]) -> bytes:
    """The HMAC key from the job's environment; refuses to go on without one when there is personal data."""
    key = os.environ.get(KEY_ENV, "").encode()
    if not key and _key_secret:
        key = read_key_secret(_key_secret)
    if len(key) < MIN_KEY_BYTES:
        state = "not set" if not key else f"only {len(key)} bytes"
        raise PiiConfigError(
            f"{dataset} has personal column(s) {list(columns)} but {KEY_ENV} is {state}; nothing was ingested. "
            f"Store a random key of at least {MIN_KEY_BYTES} bytes as the password of the Airflow connection "
            f"flights_pii (FLIGHTS_PII_CONN_ID), e.g. `airflow connections add flights_pii --conn-type generic "
            f"--conn-password \"$(openssl rand -hex 32)\"`, then clear the task.")
    return key


def read_key_secret(name: str) -> bytes:
    """The key in the secret ``name``, read by its cloud's package; a failure names the secret and the grant."""
    module = secret_store(name)
    try:
        value = importlib.import_module(module).read_secret(name)
    except PiiConfigError:
        raise
    except Exception as exc:  # denied, missing, unreachable: the message says which, and what to check
        raise PiiKeyUnavailable(
            f"could not read the PII key from {name.split('#')[0]} ({type(exc).__name__}: {exc}); nothing was "
            "ingested. Check that the secret exists and that the Spark job's identity may read it (see the "
            "cloud's page in docs/), then clear the task.") from exc
    return value.strip()


def pads(key: bytes) -> tuple[bytes, bytes]:
    """The HMAC inner and outer padded keys (RFC 2104) for SHA-256."""
    import hashlib

    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_column(value, key: bytes):
    """HMAC-SHA-256 of a string column (UTF-8) as 64 hex digits, in Spark SQL alone: no Python UDF.

    ``H((K ^ opad) || H((K ^ ipad) || m))`` with SHA-256; null stays null.
    """
    from pyspark.sql import functions as F

    inner, outer = (bytearray(p) for p in pads(key))
    message = F.encode(value, "UTF-8")
    inner_digest = F.unhex(F.sha2(F.concat(F.lit(inner), message), 256))
    return F.sha2(F.concat(F.lit(outer), inner_digest), 256)


def located(line, header):
    """Whether each field of a CSV ``line`` sits where ``header`` says: balanced quotes, one field per column.

    A line with an unterminated quote, or too few or too many fields, may carry a personal
    value in any column, so it cannot be redacted field by field.
    """
    from pyspark.sql import functions as F

    unquoted = F.regexp_replace(line, r'"([^"]|"")*"', "")
    return (F.instr(unquoted, '"') == 0) & (F.size(F.split(unquoted, ",")) == F.size(F.split(header, ",")))


def pseudonymise(df, dataset: str, line_column: str | None = None, corrupt_column: str | None = None,
                 header_column: str = "_source_columns"):
    """Replace ``dataset``'s personal columns of ``df`` by their HMAC, and redact the raw line columns.

    ``line_column`` holds each row's line as delivered: every personal value in it is replaced
    by its hash. A line whose fields cannot be located (Spark could not parse it, or its
    quotes or field count do not match ``header_column``) is withheld whole, ``corrupt_column``
    says so (the row rules quarantine it as malformed), and every one of its fields is hashed.
    """
    from pyspark.sql import functions as F

    from include.lake import PARTITION_COLUMN

    columns = [c for c in pii_columns(dataset) if c in df.columns]
    if not columns:
        return df
    key = hmac_key(dataset, tuple(columns))
    fields = [c for c in df.columns if not c.startswith("_") and c != PARTITION_COLUMN]
    source = line_column or (corrupt_column if corrupt_column in df.columns else None)
    if source:  # the text of each line: redacted field by field where the fields are located, else withheld
        raw_line = F.col(source)
        uncertain = F.lit(False)
        if line_column:
            uncertain = ~located(raw_line, F.col(header_column))
        if corrupt_column and corrupt_column in df.columns:
            uncertain = uncertain | F.col(corrupt_column).isNotNull()
        withheld = F.concat(F.lit(REDACTED_LINE), hmac_column(raw_line, key), F.lit("]"))
        df = df.withColumn("_pii_uncertain", uncertain).withColumn("_pii_withheld", withheld)
        if line_column:
            line = raw_line
            for c in columns:
                raw = F.col(c)
                line = F.when(raw.isNull() | (raw == ""), line).otherwise(F.replace(line, raw, hmac_column(raw, key)))
            df = df.withColumn(line_column, F.when(F.col("_pii_uncertain"), F.col("_pii_withheld")).otherwise(line))
        if corrupt_column and corrupt_column in df.columns:
            df = df.withColumn(corrupt_column, F.when(F.col("_pii_uncertain"), F.col("_pii_withheld")))
        for c in fields:
            if c not in columns:
                df = df.withColumn(c, F.when(F.col("_pii_uncertain"), hmac_column(F.col(c), key)).otherwise(F.col(c)))
        df = df.drop("_pii_uncertain", "_pii_withheld")
    for c in columns:
        df = df.withColumn(c, hmac_column(F.col(c), key))
    return df
