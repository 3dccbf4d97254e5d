"""The one place that reads the environment.

Every setting has a default that runs the whole loop on this machine (`local` target,
state under ``<repo>/.state``). A cloud target is chosen with ``FLIGHTS_TARGET`` and
configured with the variables its module documents; pipeline code never branches on
the environment itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

TARGETS = ("local", "aws", "gcp", "azure")
WAREHOUSES = ("duckdb", "postgres", "redshift", "bigquery")
# The warehouse each target loads when FLIGHTS_WAREHOUSE is unset; any target can load DuckDB or
# PostgreSQL (through the lake's local copy of the export), Redshift needs the S3 lake, BigQuery the GCS lake.
DEFAULT_WAREHOUSE = {"local": "duckdb", "aws": "redshift", "gcp": "bigquery", "azure": "postgres"}
WAREHOUSE_TARGETS = {"redshift": ("aws",), "bigquery": ("gcp",)}
ALERT_CHANNELS = ("file", "slack", "smtp", "sns", "pubsub")
# The largest landing file the ingest reads; a bigger one fails the run without retries. A day
# can be delivered in several parts (flights_<day>.<part>.csv) to stay below it.
DEFAULT_MAX_LANDING_FILE_BYTES = 2 * 1024 ** 3


class ConfigError(ValueError):
    """A setting is missing or invalid: the message names the variable and the fix."""


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    target: str
    home: Path
    warehouse: str
    warehouse_conn_id: str
    alert_channels: tuple[str, ...]
    slack_conn_id: str
    smtp_conn_id: str
    alert_emails: tuple[str, ...]
    spark_master: str
    spark_driver_memory: str
    jars_dir: Path
    mlflow_tracking_uri: str
    model_name: str = "flights_delay_xgboost"
    experiment_name: str = "flights_delay"
    extra: dict = field(default_factory=dict)
    # Noisy alert channels (all but ``file``): a storm summary past this many alerts in the window,
    # and one delivery per cause per dedupe window (include.alert_policy).
    alert_burst_count: int = 5
    alert_burst_window_min: int = 10
    alert_dedupe_window_min: int = 60
    max_landing_file_bytes: int = DEFAULT_MAX_LANDING_FILE_BYTES
    pii_columns: str = ""  # FLIGHTS_PII_COLUMNS: personal columns beyond the contract's, handed to every ingest job

    @property
    def lake_root(self) -> Path:
        return self.home / "lake"

    @property
    def landing_root(self) -> Path:
        return self.home / "landing"

    @property
    def alerts_file(self) -> Path:
        return self.home / "alerts" / "alerts.jsonl"

    @property
    def duckdb_path(self) -> Path:
        return self.home / "warehouse" / "flights.duckdb"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.home / "mlflow" / "artifacts"


def _int_env(name: str, default: int, minimum: int, meaning: str) -> int:
    text = _env(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"{name}={text!r} is not a whole number >= {minimum}; set it to {meaning} "
                          f"(default {default}), or unset it.")
    return value


def max_landing_file_bytes() -> int:
    """``FLIGHTS_MAX_LANDING_FILE_BYTES``: landing files larger than this many bytes are refused (default 2 GiB)."""
    return _int_env("FLIGHTS_MAX_LANDING_FILE_BYTES", DEFAULT_MAX_LANDING_FILE_BYTES, 1,
                    "the size in bytes above which a landing file is refused")


def _float_env(name: str, default: float, meaning: str, maximum: float = 1.0) -> float:
    text = _env(name, str(default))
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= maximum:  # also refuses nan and inf
        raise ConfigError(f"{name}={text!r} is not a number between 0 and {maximum:g}; set it to {meaning} "
                          f"(default {default}), or unset it.")
    return value


@dataclass(frozen=True)
class RetrainingThresholds:
    """When a champion's realised performance or inputs call for retraining (``include.retraining``)."""

    auc_drop: float  # trailing-7-day realised AUC below the champion's holdout AUC by more than this
    max_ece: float  # trailing-7-day expected calibration error above this
    max_psi: float  # PSI of any watched feature (or of the score) above this, against the training data
    watched: tuple[str, ...]  # the features (and ``delay_probability``, the score) whose PSI is watched
    min_flights: int  # flights with an outcome the trailing 7 days need before AUC and ECE are judged


def retraining_thresholds() -> RetrainingThresholds:
    """``FLIGHTS_RETRAIN_*``: the thresholds a daily run checks the champion against (README, "Monitoring")."""
    from include.drift import SCORE
    from include.features import DAY_LEVEL_FEATURES, FEATURES

    default_watched = ",".join([f for f in FEATURES if f not in DAY_LEVEL_FEATURES] + [SCORE])
    watched = tuple(f.strip() for f in _env("FLIGHTS_RETRAIN_PSI_FEATURES", default_watched).split(",") if f.strip())
    unknown = sorted(set(watched) - set(FEATURES) - {SCORE})
    if unknown or not watched:
        raise ConfigError(f"FLIGHTS_RETRAIN_PSI_FEATURES names {unknown or 'no feature'}; use model features "
                          f"({', '.join(FEATURES)}) or {SCORE}, comma-separated, or unset it.")
    return RetrainingThresholds(
        auc_drop=_float_env("FLIGHTS_RETRAIN_AUC_DROP", 0.05, "the realised AUC drop below the champion's "
                            "holdout AUC that calls for retraining"),
        max_ece=_float_env("FLIGHTS_RETRAIN_MAX_ECE", 0.06, "the realised calibration error that calls for "
                           "retraining"),
        max_psi=_float_env("FLIGHTS_RETRAIN_MAX_PSI", 0.2, "the PSI of a watched feature that calls for retraining",
                           maximum=100.0),  # PSI is unbounded: a season can move a feature by several units
        watched=watched,
        min_flights=_int_env("FLIGHTS_RETRAIN_MIN_FLIGHTS", 3000, 1, "the flights with an outcome the trailing "
                             "7 days need before their AUC and ECE are judged"),
    )


def load_settings() -> Settings:
    """Build the settings from the environment, validating every choice."""
    target = _env("FLIGHTS_TARGET", "local").lower()
    if target not in TARGETS:
        raise ConfigError(f"FLIGHTS_TARGET={target!r} is not a known target; use one of {', '.join(TARGETS)}.")
    home = Path(_env("FLIGHTS_HOME", str(REPO_ROOT / ".state"))).expanduser().resolve()
    warehouse = _env("FLIGHTS_WAREHOUSE", DEFAULT_WAREHOUSE[target]).lower()
    if warehouse not in WAREHOUSES:
        raise ConfigError(f"FLIGHTS_WAREHOUSE={warehouse!r} is not supported; use one of {', '.join(WAREHOUSES)}.")
    if target not in WAREHOUSE_TARGETS.get(warehouse, TARGETS):
        raise ConfigError(f"FLIGHTS_WAREHOUSE={warehouse} loads from the {' or '.join(WAREHOUSE_TARGETS[warehouse])} "
                          f"lake, not FLIGHTS_TARGET={target}'s; use duckdb or postgres there.")
    channels = tuple(c.strip().lower() for c in _env("FLIGHTS_ALERT_CHANNELS", "file").split(",") if c.strip())
    unknown = set(channels) - set(ALERT_CHANNELS)
    if unknown:
        raise ConfigError(
            f"FLIGHTS_ALERT_CHANNELS names unknown channel(s) {sorted(unknown)}; use {', '.join(ALERT_CHANNELS)}."
        )
    mlflow_db = home / "mlflow" / "mlflow.db"
    from include.source.pii import PiiConfigError, parse_columns

    pii_columns = _env("FLIGHTS_PII_COLUMNS", "")
    try:
        parse_columns(pii_columns)
    except PiiConfigError as exc:
        raise ConfigError(str(exc)) from None
    return Settings(
        target=target,
        home=home,
        warehouse=warehouse,
        warehouse_conn_id=_env("FLIGHTS_WAREHOUSE_CONN_ID", "flights_warehouse"),
        alert_channels=channels,
        slack_conn_id=_env("FLIGHTS_SLACK_CONN_ID", "flights_slack"),
        smtp_conn_id=_env("FLIGHTS_SMTP_CONN_ID", "smtp_default"),
        alert_emails=tuple(e.strip() for e in _env("FLIGHTS_ALERT_EMAILS", "").split(",") if e.strip()),
        spark_master=_env("FLIGHTS_SPARK_MASTER", "local[2]"),
        spark_driver_memory=_env("FLIGHTS_SPARK_DRIVER_MEMORY", "2g"),
        jars_dir=Path(_env("FLIGHTS_JARS_DIR", str(REPO_ROOT / ".cache" / "jars"))),
        mlflow_tracking_uri=_env("FLIGHTS_MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_db}"),
        pii_columns=",".join(f"{d}.{c}" for d, c in parse_columns(pii_columns)),
        alert_burst_count=_int_env("FLIGHTS_ALERT_BURST_COUNT", 5, 1,
                                   "the number of alerts in the burst window above which one storm summary is sent"),
        alert_burst_window_min=_int_env("FLIGHTS_ALERT_BURST_WINDOW_MIN", 10, 1,
                                        "the burst window in minutes"),
        alert_dedupe_window_min=_int_env("FLIGHTS_ALERT_DEDUPE_WINDOW_MIN", 60, 0,
                                         "the minutes during which repeats of one cause are not delivered "
                                         "again (0 delivers every repeat)"),
        max_landing_file_bytes=max_landing_file_bytes(),
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """Settings of this process (cached; tests call ``settings.cache_clear()``)."""
    return load_settings()
