"""Corrections flow downstream: the later days whose features were built from a day's earlier silver.

A day's gold features read the silver of the ``HISTORY_DAYS`` days before it (``include.features``). When a
day's silver changes after later days were built from it (a replayed or corrected file, released quarantine
rows, a late delivery), those days' features, and the predictions made from them, no longer match the lake.

- ``build_features`` finds them after its commit (``spark_jobs.history.stale_dependants``: built days of the
  next ``HISTORY_DAYS`` whose feature build no longer matches silver), and its gate summary lists them with
  why;
- ``find_stale_dependants`` records each in ``ops.recomputations`` with the reason, the run that caused it
  and the run that recomputes it;
- ``recompute_stale_days`` (Airflow's ``TriggerDagRunOperator``) triggers that run: one ``flights_daily``
  range run over the stale days, which rebuilds their features, scores them again with the champion and
  reloads the warehouse.

A rerun that changes no silver finds nothing and triggers nothing. The recomputing run changes no silver
(its days' files are unchanged), so nothing cascades. Its run id is derived from the cause, so a retried
trigger finds its run and does not start a second one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from include.intervals import parse_date

RUN_ID_PREFIX = "recompute__"
TABLE = "ops.recomputations"


@dataclass(frozen=True)
class Recompute:
    """The stale days (with why) and the ``flights_daily`` run that recomputes them."""

    days: dict[date, str]
    run_id: str

    @property
    def start(self) -> date:
        return min(self.days)

    @property
    def end(self) -> date:
        return max(self.days)

    def conf(self) -> dict[str, str]:
        """The triggered run's params: a range run over the stale days."""
        return {"start_date": self.start.isoformat(), "end_date": self.end.isoformat()}

    def xcom(self) -> dict:
        return {"run_id": self.run_id, "conf": self.conf(), "days": [d.isoformat() for d in sorted(self.days)]}


def plan(stale: Mapping[str, str] | None, cause_run_id: str) -> Recompute | None:
    """The recomputation of ``stale`` ({day: why}, from the gate summary) caused by run ``cause_run_id``.

    The run id names the range and a digest of the cause and of what is stale (each reason carries the feature
    build the day has and the one silver now gives), so the same finding triggers the same run once.
    """
    if not stale:
        return None
    days = {parse_date(d, "stale day"): why for d, why in stale.items()}
    digest = hashlib.sha256(json.dumps([cause_run_id, sorted((d.isoformat(), why) for d, why in days.items())])
                            .encode()).hexdigest()[:12]
    start, end = min(days), max(days)
    return Recompute(days=days, run_id=f"{RUN_ID_PREFIX}{start:%Y%m%d}_{end:%Y%m%d}__{digest}")


def recorded(warehouse, run_id: str) -> set[date]:
    """The days already recorded for the recomputing run ``run_id`` (a retried task records nothing twice)."""
    from include.monitoring import as_date

    _, rows = warehouse.query(f"SELECT flight_date FROM {TABLE} WHERE recompute_run_id = ?", [run_id])
    return {as_date(r[0]) for r in rows}
