"""Order-independent content fingerprints of the lake and the warehouse.

Two states are "the same" when every table has the same rows, whatever their order and
whatever file layout or Delta version holds them. Columns that record *when* or *by which
run* a row was written differ between equivalent runs and are left out; landing paths
are compared by file name, so lakes under different homes compare equal.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

VOLATILE = {"_ingested_at", "_run_id", "run_id", "checked_at", "quarantined_at", "status_changed_at", "loaded_at",
            "status_changed_by", "built_at", "changed_at", "changed_by", "event_id"}
# Logs of checks, one row per run by design (as the warehouse's ops tables are): not part of the data's state.
RUN_LOGS = {"bronze.dimension_snapshots"}
PATHS = {"_source_file", "source_file", "path"}


def frame_hash(df: pd.DataFrame) -> tuple[int, int]:
    """Row count and an order-independent hash of the content."""
    df = df[[c for c in sorted(df.columns) if c not in VOLATILE]].copy()
    for c in PATHS & set(df.columns):
        df[c] = df[c].astype(str).map(lambda p: p.rsplit("/", 1)[-1])
    df = df.astype(str)
    return len(df), int(pd.util.hash_pandas_object(df, index=False).sum()) if len(df) else 0


def delta_tables(lake_root: str | Path) -> list[Path]:
    root = Path(lake_root)
    return sorted(p.parent for p in root.glob("*/*/_delta_log") if not p.parent.parent.name.startswith("_"))


def read_delta(path: Path) -> pd.DataFrame:
    """Read a Delta table with an independent reader (delta-rs): proves it is readable as committed."""
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pandas()


def lake_snapshot(lake_root: str | Path) -> dict[str, tuple[int, int]]:
    tables = {f"{p.parent.name}.{p.name}": p for p in delta_tables(lake_root)}
    return {name: frame_hash(read_delta(p)) for name, p in tables.items() if name not in RUN_LOGS}


def warehouse_snapshot(warehouse, tables=("analytics.flight_outcomes", "analytics.flight_delay_predictions")):
    out = {}
    for table in tables:
        cols, rows = warehouse.query(f"SELECT * FROM {table}")
        out[table] = frame_hash(pd.DataFrame(rows, columns=cols))
    return out
