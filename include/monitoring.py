"""Realised performance: how the models that scored each day did, once the day's outcomes are in.

A day's outcomes (``analytics.flight_outcomes``) are known after the day; the daily run loads
them beside the day's predictions (``analytics.flight_delay_predictions``). After both loads,
``evaluate_realised_performance`` scores the predictions against the outcomes, per model
version that made them:

* ``scope = 'day'``: each day of the run's interval;
* ``scope = 'trailing_7d'``: the 7 days ending on each day of the interval (a day scored by
  another version, before a promotion, counts for that version).

Each measurement is AUC, log loss, Brier score, expected calibration error (10 equal-width
bins, as ``include.training.metrics``) and the calibration by decile of predicted risk (ten
groups of about equal size: flights, mean predicted, observed rate), with the flights and the
delayed flights it covers. A metric a sample cannot define (AUC when every flight was on time)
is NULL. Only flights with a known outcome count: a cancelled or diverted flight has no
label (``include.features.LABEL``) and is left out, as in training.

Rows are appended to ``ops.model_performance`` (a rerun records the measurement again, with the
later ``recorded_at``); ``ops.model_performance_latest`` keeps the latest row per model version,
scope and period, which is what analysts and alerts read.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import date, timedelta

TRAILING_DAYS = 7
DECILES = 10


def _scored_outcomes(warehouse, start: date, end: date) -> list[tuple]:
    """(flight_date, model_name, model_version, delay_probability, is_delayed) of the scored flights with an outcome."""
    # the dates are date objects rendered by isoformat(): nothing from a user reaches the SQL text
    _, rows = warehouse.query(
        "SELECT p.flight_date, p.model_name, p.model_version, p.delay_probability, o.is_delayed "
        "FROM analytics.flight_delay_predictions p "
        "JOIN analytics.flight_outcomes o ON o.flight_id = p.flight_id "
        f"WHERE p.flight_date BETWEEN DATE '{start.isoformat()}' AND DATE '{end.isoformat()}' "
        "AND o.is_delayed IS NOT NULL")
    return [(as_date(r[0]), str(r[1]), str(r[2]), float(r[3]), int(r[4])) for r in rows]


def as_date(value) -> date:
    """A warehouse's DATE as a date, whatever type its driver returns (date, datetime or ISO text)."""
    if isinstance(value, date):
        return value if type(value) is date else value.date()
    return date.fromisoformat(str(value)[:10])


def calibration_by_decile(labels: list[int], probabilities: list[float]) -> list[dict]:
    """Ten groups of about equal size by predicted risk (ties kept together): flights, mean predicted, observed."""
    order = sorted(range(len(probabilities)), key=lambda i: probabilities[i])
    n = len(order)
    groups: dict[int, list[int]] = defaultdict(list)
    rank = 0
    for pos, i in enumerate(order):
        if pos == 0 or probabilities[i] != probabilities[order[pos - 1]]:
            rank = pos  # RANK(): ties share the first position
        groups[DECILES * rank // n + 1].append(i)
    return [{"decile": d, "flights": len(ix),
             "mean_predicted": round(sum(probabilities[i] for i in ix) / len(ix), 6),
             "observed_rate": round(sum(labels[i] for i in ix) / len(ix), 6)} for d, ix in sorted(groups.items())]


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def measure(labels: list[int], probabilities: list[float]) -> dict:
    """The metrics of one sample (see the module docstring)."""
    from include.training.metrics import evaluate

    m = evaluate(labels, probabilities)
    return {"flights": len(labels), "delayed": int(sum(labels)), "auc": _finite(m["auc"]),
            "log_loss": _finite(m["log_loss"]), "brier": _finite(m["brier"]), "ece": _finite(m["ece"]),
            "calibration": json.dumps(calibration_by_decile(labels, probabilities))}


def realised_performance(warehouse, start: date, end: date) -> list[dict]:
    """One measurement per model version, scope and period for the days ``start``..``end``."""
    rows = _scored_outcomes(warehouse, start - timedelta(days=TRAILING_DAYS - 1), end)
    by_day: dict[tuple[str, str], dict[date, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:  # grouped once, so a long range costs its rows times the window, not rows times days
        by_day[(row[1], row[2])][row[0]].append(row)
    out = []
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    for (name, version), scored in sorted(by_day.items()):
        for day in days:
            for scope, first in (("day", day), ("trailing_7d", day - timedelta(days=TRAILING_DAYS - 1))):
                sample = [r for d in range((day - first).days + 1) for r in scored.get(first + timedelta(days=d), [])]
                if not sample:
                    continue
                out.append({"model_name": name, "model_version": version, "scope": scope, "period_start": first,
                            "period_end": day, **measure([r[4] for r in sample], [r[3] for r in sample])})
    return out
