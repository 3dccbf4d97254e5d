"""Names and locations of the lake's tables and exchange areas.

Tables are named ``layer.table``; their location is ``<lake root>/<layer>/<table>``,
whatever the storage (a local folder, ``s3://``, ``gs://`` or ``abfss://``). Every table
holding flights is partitioned by ``flight_date``.
"""

from __future__ import annotations

PARTITION_COLUMN = "flight_date"

TABLES = (
    "bronze.flights",
    "bronze.weather",
    "bronze.planes",
    "bronze.airlines",
    "bronze.airports",
    "bronze.dimension_snapshots",
    "silver.flights",
    "silver.weather",
    "silver.planes",
    "silver.airlines",
    "silver.flight_days",
    "gold.flight_features",
    "gold.feature_days",
    "predictions.flight_delay_risk",
    "bronze.landing_files",
    "quarantine.flights",
    "quarantine.weather",
    "quarantine.events",
)


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def table_uri(root: str, name: str) -> str:
    if name not in TABLES:
        raise KeyError(f"Unknown lake table {name!r}; known tables: {', '.join(TABLES)}")
    layer, table = name.split(".")
    return join(root, layer, table)


def export_uri(root: str, dataset: str, interval_key: str) -> str:
    """Parquet hand-off area between Spark and the warehouse / trainer, one folder per interval."""
    return join(root, "exports", dataset, interval_key)


def quality_result_uri(root: str, suite: str, interval_key: str, run_id: str) -> str:
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return join(root, "_quality", suite.replace("/", "."), interval_key, f"{safe_run}.json")


LANDING_SUFFIXES = (".csv", ".csv.gz")  # a day's extract, plain or gzip-compressed


def landing_file(landing_root: str, dataset: str, day, suffix: str = ".csv") -> str:
    """Where the source system drops one day's extract of ``flights`` or ``weather`` (suffix: a LANDING_SUFFIXES)."""
    return join(landing_root, dataset, f"{dataset}_{day:%Y-%m-%d}{suffix}")


def dimension_file(landing_root: str, dataset: str) -> str:
    return join(landing_root, "dimensions", f"{dataset}.csv")
