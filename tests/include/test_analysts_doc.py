"""The analysts' guide names every warehouse table and view, and every column of each, under its own heading.

The warehouse is created from the shipped DDL in a real DuckDB file; its catalogue is compared with
``docs/analysts.md``, so a column added to the DDL without a line in the guide fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from include.warehouse.duckdb import DuckDBWarehouse

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"


def _sections() -> dict[str, str]:
    """``### `schema.name` ...`` heading → its text, one entry per table or view the heading names."""
    out: dict[str, str] = {}
    parts = re.split(r"^### (.+)$", GUIDE.read_text(encoding="utf-8"), flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2]):
        for name in re.findall(r"`((?:analytics|ops)\.\w+)`", heading):
            out[name] = body
    return out


def test_every_table_view_and_column_of_the_warehouse_is_in_the_analysts_guide(tmp_path):
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    warehouse.ensure_schema()
    with warehouse.connect(read_only=True) as con:
        rows = con.execute("SELECT table_schema || '.' || table_name, column_name FROM information_schema.columns "
                           "WHERE table_schema IN ('analytics', 'ops')").fetchall()
    catalogue: dict[str, set[str]] = {}
    for table, column in rows:
        catalogue.setdefault(table, set()).add(column)
    sections = _sections()
    assert set(catalogue) - set(sections) == set(), "tables or views without a section in docs/analysts.md"
    undocumented = {table: sorted(c for c in columns if f"`{c}`" not in sections[table])
                    for table, columns in catalogue.items()}
    assert {t: c for t, c in undocumented.items() if c} == {}, "columns missing from their section"
