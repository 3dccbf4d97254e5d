"""Row-level rules from the suites: which rows to quarantine, and why.

An expectation whose ``meta.level`` is ``"row"`` is also applied to each row before the
batch is validated: a row that breaks it is quarantined with the expectation's reason
code, and the good rows of the same file continue. The suite file stays the single
source of truth; Great Expectations then validates the rows that were kept.

Imported by Spark jobs only (it needs pyspark).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

MALFORMED = "malformed_row"


@dataclass(frozen=True)
class RowRule:
    reason: str
    bad: Column  # true when the row breaks the rule


def _num(col: str) -> Column:
    # SQL TRY_CAST: Column.try_cast exists from Spark 4.0 only (the Azure Spark 3.5 runtimes lack it)
    return F.expr(f"TRY_CAST(`{col.replace('`', '``')}` AS DOUBLE)")


def resolve(kwargs: dict, params: dict) -> dict:
    """Substitute ``{"$PARAMETER": name}`` values, as Great Expectations does at validation."""
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, dict) and "$PARAMETER" in v:
            if v["$PARAMETER"] not in params:
                raise KeyError(f"Suite parameter {v['$PARAMETER']!r} has no value for this validation.")
            v = params[v["$PARAMETER"]]
        out[k] = v
    return out


def rule_from_expectation(exp: dict, params: dict | None = None) -> RowRule | None:
    """A Spark condition for one row-level expectation (None for batch-only ones)."""
    meta = exp.get("meta") or {}
    if meta.get("level") != "row":
        return None
    t, kw = exp["type"], resolve(exp["kwargs"], params or {})
    col = kw.get("column")
    reason = meta.get("reason") or f"{t.replace('expect_column_values_to_', '')}:{col}"
    if t == "expect_column_values_to_not_be_null":
        bad = F.col(col).isNull()
    elif t == "expect_column_values_to_match_regex":
        bad = F.col(col).isNotNull() & ~F.col(col).rlike(kw["regex"])
    elif t == "expect_column_values_to_be_in_set":
        bad = F.col(col).isNotNull() & ~F.col(col).isin(list(kw["value_set"]))
    elif t == "expect_column_values_to_be_between":
        v = _num(col)
        bad = F.col(col).isNotNull() & (
            v.isNull()
            | (F.lit(kw["min_value"] is not None) & (v < F.lit(kw.get("min_value"))))
            | (F.lit(kw["max_value"] is not None) & (v > F.lit(kw.get("max_value"))))
        )
    elif t == "expect_column_pair_values_to_be_equal":
        a, b = F.col(kw["column_A"]), F.col(kw["column_B"])
        bad = a.isNull() | b.isNull() | (a != b)
    elif t == "expect_compound_columns_to_be_unique":
        return RowRule(reason, F.lit(False))  # handled by apply_row_rules with a window
    else:
        raise ValueError(f"Expectation {t} cannot be applied per row; remove meta.level='row' from it.")
    return RowRule(reason, F.coalesce(bad, F.lit(True)))


def apply_row_rules(df: DataFrame, suite: dict, params: dict | None = None) -> DataFrame:
    """Add ``_reasons`` (array of reason codes, empty when the row is good) to ``df``.

    Rows Spark could not parse (``_corrupt_record`` set) get ``malformed_row``. For a
    compound-unique rule, every repeat of a key after its first delivery is flagged.
    """
    present = set(df.columns)
    checks: list[Column] = []
    if "_corrupt_record" in present:
        checks.append(F.when(F.col("_corrupt_record").isNotNull(), F.lit(MALFORMED)))
    for exp in suite["expectations"]:
        rule = rule_from_expectation(exp, params)
        if rule is None:
            continue
        cols = exp["kwargs"].get("column_list") or [
            exp["kwargs"].get(k) for k in ("column", "column_A", "column_B") if exp["kwargs"].get(k)]
        if any(c not in present for c in cols):
            continue  # a missing column blocks the whole file; it is not a row problem
        if exp["type"] == "expect_compound_columns_to_be_unique":
            key = [F.col(c) for c in cols]
            first = Window.partitionBy(*key).orderBy("_source_file", "_row_seq")
            df = df.withColumn(f"_dup_{len(checks)}", F.row_number().over(first) > 1)
            checks.append(F.when(F.col(f"_dup_{len(checks)}"), F.lit(rule.reason)))
            continue
        checks.append(F.when(rule.bad, F.lit(rule.reason)))
    reasons = F.filter(F.array(*checks), lambda x: x.isNotNull()) if checks else F.array().cast("array<string>")
    out = df.withColumn("_reasons", reasons)
    return out.drop(*[c for c in out.columns if c.startswith("_dup_")])
