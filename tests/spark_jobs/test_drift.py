"""Drift: the training reference, its bins in Spark, and the PSI that tells a shifted day from a usual one."""

from __future__ import annotations

import math
import random

import pytest

from include import drift


def test_psi_from_its_definition():
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0
    want = (0.7 - 0.5) * math.log(0.7 / 0.5) + (0.3 - 0.5) * math.log(0.3 / 0.5)
    assert drift.psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(want)
    assert drift.psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) == pytest.approx(
        (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - 1e-4) * math.log(0.1 / 1e-4))  # an empty bin is rare, not infinite
    assert [drift.level(v) for v in (0.0, 0.099, 0.1, 0.25, 0.26)] == ["stable"] * 2 + ["moderate"] * 2 + ["major"]
    with pytest.raises(ValueError, match="same bins"):
        drift.psi([1.0], [0.5, 0.5])


def _frame(n: int, seed: int, shift: float = 0.0):
    import pandas as pd

    rng = random.Random(seed)
    return pd.DataFrame({
        "distance": [None if rng.random() < 0.05 else rng.gauss(1000 + shift, 300) for _ in range(n)],
        "sched_dep_hour": [rng.randint(5, 23) for _ in range(n)],
        "carrier": [rng.choice(["AA", "UA", "DL"] if not shift else ["AA", "ZZ", "ZZ"]) for _ in range(n)],
    })


SPEC = {"numeric": ["distance", "sched_dep_hour"], "categorical": {"carrier": ["AA", "DL", "UA"]}}


def test_the_reference_bins_every_row_and_keeps_shares():
    frame, rng = _frame(5000, 1), random.Random(2)
    ref = drift.reference(frame, SPEC, [rng.random() for _ in range(5000)])
    assert set(ref) == {"distance", "sched_dep_hour", "carrier", drift.SCORE}
    for column, r in ref.items():
        assert sum(r["shares"]) == pytest.approx(1) and r["rows"] == 5000, column
    assert len(ref["distance"]["edges"]) == 9 and ref["distance"]["shares"][0] == pytest.approx(
        frame["distance"].isna().mean())  # the missing bin
    assert ref["carrier"]["shares"][1] == 0  # no value outside the known categories
    assert all(s == pytest.approx(0.1, abs=0.02) for s in ref[drift.SCORE]["shares"][1:])  # deciles


@pytest.mark.slow
def test_spark_counts_the_same_bins_and_a_shifted_day_drifts(spark):
    train, same_day, shifted_day = _frame(5000, 1), _frame(1000, 7), _frame(1000, 8, shift=400)
    ref = drift.reference(train, SPEC, [0.5] * 5000)
    del ref[drift.SCORE]
    for frame in (same_day, shifted_day):
        counts = drift.spark_counts(spark.createDataFrame(frame.astype(object).where(frame.notna(), None)), ref)
        for column, r in ref.items():  # Spark's bins are the reference's bins
            if r["kind"] == "numeric":
                want = [0] * (len(r["edges"]) + 2)
                for v in frame[column]:
                    want[drift.numeric_bin(None if v != v else v, r["edges"])] += 1
            else:
                known = {c: i + 2 for i, c in enumerate(r["categories"])}
                want = [0] * (len(r["categories"]) + 2)
                for v in frame[column]:
                    want[known.get(v, 1)] += 1
            assert counts[column] == want, column
        result = drift.compare(ref, counts)
        if frame is same_day:
            assert {c: d["level"] for c, d in result.items()} == dict.fromkeys(ref, "stable"), result
        else:
            assert result["distance"]["level"] == "major" and result["carrier"]["level"] == "major"
            assert result["sched_dep_hour"]["level"] == "stable"
    assert drift.compare(ref, {"distance": [0] * 11})["distance"] == {
        "psi": None, "level": "no rows", "rows": 0, "reference_rows": 5000}
