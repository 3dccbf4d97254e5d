"""Drift: how far a day's features and scores have moved from what the model was trained on.

At training, ``reference`` bins every feature of the training rows and the model's scores on
them, and keeps each bin's share; the reference travels inside the scoring bundle
(``feature_spec.json``, key ``reference``), so it follows the version through promotion and
rollback. Each scoring run counts the interval's rows in the same bins (``spark_counts``: one
Spark aggregation) and computes the Population Stability Index of each feature and of the
score distribution (``psi``).

Bins: a numeric feature is cut at its training deciles (repeated edges merged); a categorical
one has a bin per category the model knows and one for any other value; missing values have
a bin of their own in both. The score is cut at the deciles of the training scores.

PSI = Σ (actual − expected) · ln(actual / expected) over the bins, with shares floored at
0.0001 so an empty bin counts as rare rather than infinite. The usual reading, used for
``level``: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a major one.
"""

from __future__ import annotations

import math

SCORE = "delay_probability"  # the score's entry in the reference, beside the features
FLOOR = 1e-4
MODERATE, MAJOR = 0.1, 0.25
MISSING = "__missing__"
OTHER = "__other__"


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [c / total for c in counts] if total else [0.0] * len(counts)


def psi(expected: list[float], actual: list[float]) -> float:
    """The Population Stability Index of two distributions over the same bins (shares)."""
    if len(expected) != len(actual):
        raise ValueError(f"PSI needs the same bins: {len(expected)} expected shares, {len(actual)} actual")
    total = 0.0
    for e, a in zip(expected, actual):
        e, a = max(e, FLOOR), max(a, FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def level(value: float) -> str:
    return "major" if value > MAJOR else "moderate" if value >= MODERATE else "stable"


def _edges(values) -> list[float]:
    import numpy as np

    values = np.asarray(values, dtype="float64")
    values = values[~np.isnan(values)]
    if not len(values):
        return []
    return sorted({float(q) for q in np.quantile(values, [i / 10 for i in range(1, 10)])})


def numeric_bin(value, edges: list[float]) -> int:
    """The bin of ``value``: 0 for missing, then 1 + the number of edges at or below it."""
    import bisect

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    return 1 + bisect.bisect_right(edges, float(value))


def _numeric_counts(values, edges: list[float]) -> list[int]:
    """Rows per bin (``numeric_bin``), vectorised."""
    import numpy as np

    values = np.asarray(values, dtype="float64")
    bins = np.where(np.isnan(values), 0, 1 + np.searchsorted(np.asarray(edges, dtype="float64"), values,
                                                              side="right"))
    return np.bincount(bins.astype("int64"), minlength=len(edges) + 2).tolist()


def reference(frame, spec: dict, scores) -> dict:
    """Bins and training shares of every feature of ``spec`` in ``frame`` (pandas), and of ``scores``."""
    import pandas as pd

    out = {}
    for column in spec["numeric"]:
        values = pd.to_numeric(frame[column], errors="coerce").astype("float64").to_numpy()
        edges = _edges(values)
        out[column] = {"kind": "numeric", "edges": edges, "shares": _shares(_numeric_counts(values, edges)),
                       "rows": len(values)}
    for column, categories in spec["categorical"].items():
        values = frame[column].astype("string")
        known = {c: i + 2 for i, c in enumerate(categories)}
        bins = values.map(lambda v: 0 if pd.isna(v) else known.get(str(v), 1))
        counts = bins.value_counts().reindex(range(len(categories) + 2), fill_value=0).tolist()
        out[column] = {"kind": "categorical", "categories": list(categories), "shares": _shares(counts),
                       "rows": len(values)}
    edges = _edges(scores)
    out[SCORE] = {"kind": "numeric", "edges": edges, "shares": _shares(_numeric_counts(scores, edges)),
                  "rows": len(scores)}
    return out


def _bin_column(column: str, ref: dict):
    """A Spark column holding the bin of ``column`` as ``numeric_bin`` / ``reference`` define it."""
    from pyspark.sql import functions as F

    col = F.col(column)
    if ref["kind"] == "numeric":
        value = col.cast("double")
        expr = F.lit(1)
        for edge in ref["edges"]:
            expr = expr + F.when(value >= F.lit(edge), 1).otherwise(0)
        return F.when(value.isNull() | F.isnan(value), 0).otherwise(expr)
    expr = F.lit(1)  # any other value
    for i, category in enumerate(ref["categories"]):
        expr = F.when(col.cast("string") == F.lit(category), i + 2).otherwise(expr)
    return F.when(col.isNull(), 0).otherwise(expr)


def spark_counts(df, references: dict) -> dict[str, list[int]]:
    """Rows of ``df`` per bin of every referenced column it has, in one aggregation."""
    from pyspark.sql import functions as F

    columns = [c for c in references if c in df.columns]
    binned = df.select(*[_bin_column(c, references[c]).alias(c) for c in columns])
    aggregates = [F.sum(F.when(F.col(c) == i, 1).otherwise(0)).alias(f"{c}#{i}")
                  for c in columns for i in range(len(references[c]["shares"]))]
    row = binned.agg(*aggregates).collect()[0].asDict() if columns else {}
    return {c: [int(row[f"{c}#{i}"] or 0) for i in range(len(references[c]["shares"]))] for c in columns}


def compare(references: dict, counts: dict[str, list[int]]) -> dict[str, dict]:
    """Per column: PSI against the reference, its level and the rows counted."""
    out = {}
    for column, actual in counts.items():
        value = psi(references[column]["shares"], _shares(actual)) if sum(actual) else None
        out[column] = {"psi": value, "level": "no rows" if value is None else level(value), "rows": sum(actual),
                       "reference_rows": references[column]["rows"]}
    return out
