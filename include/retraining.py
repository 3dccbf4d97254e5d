"""Continuous training: when the champion's realised performance or its inputs call for a new model.

After each daily run has recorded the champion's realised performance (``ops.model_performance``,
``include.monitoring``) and its drift (``ops.feature_drift``, ``include.drift``), ``breaches`` checks
them against the thresholds of ``include.config.retraining_thresholds``:

* **AUC drop**: the trailing-7-day realised AUC is below the champion's own holdout AUC (from the
  registry, so it follows promotion and rollback) by more than ``auc_drop``;
* **calibration**: the trailing-7-day expected calibration error is above ``max_ece``;
* **drift**: the PSI of a watched feature, or of the score, is above ``max_psi``.

AUC and ECE are judged only once the trailing 7 days hold ``min_flights`` flights with an outcome;
fewer make them too noisy to act on. Each breach says which metric, its value and threshold, and
since when it has held: the first day of the unbroken run of breaching days that ends on the day
checked.

A breach is one episode per champion: ``request`` turns the breaches into at most one retraining
request per champion version, recorded in ``ops.model_decisions`` (``action = 'retraining_requested'``).
Later breaching days of the same champion find that request and request nothing more, however many
days breach; a champion that takes over (promoted, or rolled back to) starts a new episode. The request is sent
to ``flights_training`` as an event of the ``RETRAINING_REQUESTS`` asset, and the usual promotion
rule decides what the retraining yields.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from include.config import RetrainingThresholds
from include.monitoring import as_date

REQUESTED = "retraining_requested"  # ops.model_decisions.action of a request
ASSET_NAME = "flights_retraining_requests"  # the asset flights_daily updates and flights_training is scheduled on


@dataclass(frozen=True)
class Breach:
    metric: str  # "auc_drop", "ece" or "psi:<feature>"
    value: float
    threshold: float
    since: date
    detail: str

    def text(self) -> str:
        return f"{self.detail} since {self.since}"


def _since(rows: list[tuple[date, float | None]], breached, last: date) -> date | None:
    """The first day of the unbroken run of breaching days ending on ``last`` (rows: (day, value), any order)."""
    by_day = {d: v for d, v in rows}
    if by_day.get(last) is None or not breached(by_day[last]):
        return None
    since = last
    while by_day.get(since - timedelta(days=1)) is not None and breached(by_day[since - timedelta(days=1)]):
        since -= timedelta(days=1)
    return since


def _performance(warehouse, model_name: str, version: str, last: date, min_flights: int) -> list[tuple]:
    """(period_end, flights, auc, ece) of the champion's trailing-7-day measurements up to ``last``."""
    # ``last`` is a date rendered by isoformat(); the model's name and version are parameters
    _, rows = warehouse.query(
        "SELECT period_end, flights, auc, ece FROM ops.model_performance_latest "
        "WHERE model_name = ? AND model_version = ? AND scope = 'trailing_7d' "
        f"AND period_end <= DATE '{last.isoformat()}' AND flights >= ?", [model_name, str(version), min_flights])
    return [(as_date(r[0]), int(r[1]), None if r[2] is None else float(r[2]), None if r[3] is None else float(r[3]))
            for r in rows]


def _drift(warehouse, model_name: str, version: str, last: date, watched: tuple[str, ...]) -> dict[str, list]:
    """{feature: [(day, psi)]} of the champion's scored days up to ``last``, the latest scoring of each day."""
    _, rows = warehouse.query(
        "SELECT interval_start, interval_end, feature, psi, recorded_at FROM ops.feature_drift "
        f"WHERE model_name = ? AND model_version = ? AND interval_end <= DATE '{last.isoformat()}'",
        [model_name, str(version)])
    latest: dict[tuple[str, date], tuple] = {}
    for start, end, feature, psi, recorded_at in rows:
        if feature not in watched or psi is None:  # None: the interval had no rows to compare
            continue
        start, end = as_date(start), as_date(end)
        for i in range((end - start).days + 1):  # a range run's PSI stands for each of its days
            key = (feature, start + timedelta(days=i))
            if key not in latest or str(recorded_at) > str(latest[key][1]):
                latest[key] = (float(psi), recorded_at)
    out: dict[str, list] = {}
    for (feature, day), (psi, _) in latest.items():
        out.setdefault(feature, []).append((day, psi))
    return out


def breaches(warehouse, model_name: str, version: str, holdout_auc: float | None, last: date,
             thresholds: RetrainingThresholds) -> list[Breach]:
    """What of the champion ``model_name`` v``version`` is past its threshold on ``last`` (see the module doc)."""
    out = []
    perf = _performance(warehouse, model_name, version, last, thresholds.min_flights)
    if holdout_auc is not None:
        floor = holdout_auc - thresholds.auc_drop
        since = _since([(d, a) for d, _, a, _ in perf], lambda a: a < floor, last)
        if since:
            auc = next(a for d, _, a, _ in perf if d == last)
            out.append(Breach("auc_drop", auc, floor, since,
                              f"realised AUC over the 7 days to {last} is {auc:.4f}, {holdout_auc - auc:.4f} below "
                              f"the holdout AUC {holdout_auc:.4f} (allowed drop {thresholds.auc_drop})"))
    since = _since([(d, e) for d, _, _, e in perf], lambda e: e > thresholds.max_ece, last)
    if since:
        ece = next(e for d, _, _, e in perf if d == last)
        out.append(Breach("ece", ece, thresholds.max_ece, since,
                          f"realised ECE over the 7 days to {last} is {ece:.4f}, above {thresholds.max_ece}"))
    for feature, rows in sorted(_drift(warehouse, model_name, version, last, thresholds.watched).items()):
        since = _since(rows, lambda p: p > thresholds.max_psi, last)
        if since:
            psi = dict(rows)[last]
            out.append(Breach(f"psi:{feature}", psi, thresholds.max_psi, since,
                              f"PSI of {feature} on {last} is {psi:.3f}, above {thresholds.max_psi}"))
    return out


def open_request(warehouse, model_name: str, version: str) -> tuple | None:
    """(run_id, recorded_at, reason) of the retraining already requested since this version last became champion
    (promoted, or rolled back to: ``ops.model_decisions``), if any."""
    _, became = warehouse.query(
        "SELECT max(recorded_at) FROM ops.model_decisions WHERE model_name = ? AND challenger_version = ? "
        "AND promoted", [model_name, str(version)])
    since = became[0][0] if became and became[0][0] is not None else None
    _, rows = warehouse.query(
        "SELECT run_id, recorded_at, reason FROM ops.model_decisions WHERE model_name = ? AND champion_version = ? "
        "AND action = ? ORDER BY recorded_at", [model_name, str(version), REQUESTED])
    rows = [r for r in rows if since is None or r[1] >= since]
    return tuple(rows[0]) if rows else None


def reason(found: list[Breach]) -> str:
    return "; ".join(b.text() for b in found)


def requests_asset():
    """The asset ``request_retraining`` updates and ``flights_training`` is scheduled on (besides weekly)."""
    from airflow.sdk import Asset

    return Asset(name=ASSET_NAME)
