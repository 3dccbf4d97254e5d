"""Which alerts reach the noisy channels (Slack, e-mail, SNS, Pub/Sub): dedupe and storm escalation.

A broken source fails every day of a backfill, on every retry; without a policy each try is a
message on every channel. The file channel still receives every alert (it is the audit log);
for the others this module decides, per alert:

* **Dedupe.** Alerts with the same fingerprint (kind, DAG, task and the reason with dates,
  numbers and ids stripped) are delivered once per ``FLIGHTS_ALERT_DEDUPE_WINDOW_MIN``
  (default 60). Repeats inside the window are recorded but held; the next one delivered after
  the window says how many were held ("and 7 more like it since 02:14 UTC").
* **Storm.** When more than ``FLIGHTS_ALERT_BURST_COUNT`` alerts (default 5) arrive within
  ``FLIGHTS_ALERT_BURST_WINDOW_MIN`` minutes (default 10), one ``alert_storm`` summary is
  delivered instead, listing the distinct causes with their counts, and every further alert
  is held until the rate falls back to the threshold; then dedupe applies again.

The state is the ``ops.alerts`` table of the warehouse (``include.warehouse.DDL``), read with
parameterised ``Warehouse.query`` calls and written with ``Warehouse.record``, so the decision
holds across task processes and workers. Two processes deciding in the same instant may both
deliver; nothing is ever lost. When the warehouse cannot be read the alert is delivered
anyway and the log says why.

This module imports neither ``include.alerts`` nor ``include.targets`` at the top: an alert is
any object with ``Alert``'s fields, and the summary is built with ``dataclasses.replace``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from include.config import Settings

log = logging.getLogger(__name__)

TABLE = "ops.alerts"
STORM_KIND = "alert_storm"
DUPLICATE, STORM = "duplicate", "storm"  # ops.alerts.suppressed_by
FAILURE_KINDS = ("task_failed", "quality_gate_failed")
MAX_REASON_CHARS = 4000  # stored; Redshift's widest VARCHAR is 65535 bytes
MAX_CAUSES = 20  # listed in one storm summary
EPOCH = datetime(1970, 1, 1)

_NORMALISE = [  # (pattern, replacement), applied in order to the lower-cased reason
    (re.compile(r"\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:z|[+-]\d{2}:?\d{2})?)?"), "<date>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<id>"),
    (re.compile(r"\b(?=[0-9a-z]*\d)(?=[0-9a-z]*[a-z])[0-9a-z]{6,}\b"), "<id>"),  # job, run, statement ids
    (re.compile(r"\d+"), "#"),
    (re.compile(r"\s+"), " "),
]


def normalise_reason(reason: str) -> str:
    """The reason with what differs between repeats of one cause removed: dates, ids, numbers, spacing."""
    text = (reason or "").lower()
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    return text.strip()[:2000]


def fingerprint(alert) -> str:
    """What makes two alerts "the same cause": kind, DAG, task and the normalised reason (a hex digest)."""
    key = "\x1f".join([alert.kind, alert.dag_id or "", alert.task_id or "", normalise_reason(alert.reason)])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


@dataclass
class Decision:
    """What the noisy channels do with one alert.

    ``deliver`` holds the messages to send (the alert, possibly annotated; or a storm
    summary; or nothing), ``suppressed_by`` why the alert itself is held (``duplicate``,
    ``storm``) or None, ``checked`` whether the history could be read.
    """

    fingerprint: str
    deliver: list = field(default_factory=list)
    suppressed_by: str | None = None
    checked: bool = True
    why: str = ""

    @property
    def delivered(self) -> bool:
        return self.suppressed_by is None

    def as_details(self) -> dict[str, Any]:
        """How the file channel records the decision (under ``details["alert_policy"]``)."""
        return {"fingerprint": self.fingerprint, "delivered": self.delivered, "suppressed_by": self.suppressed_by,
                "checked": self.checked, "why": self.why}


@dataclass
class _Group:
    """One row of the recent-history query: alerts of one cause with one outcome."""

    fingerprint: str
    kind: str
    dag_id: str
    task_id: str
    delivered: bool
    suppressed_by: str | None
    count: int
    in_burst: int
    last_at: datetime
    reason: str


class AlertPolicy:
    """Decides, from ``ops.alerts``, whether an alert goes to the noisy channels (see the module docstring).

    Args:
        cfg: the settings (thresholds and windows, the channel names).
        warehouse: a ``Warehouse`` (``record``, ``query``), or a zero-argument callable returning one
            (called on first use; an error there counts as an unreachable warehouse).
        clock: returns the current time (timezone-aware); the wall clock by default.
    """

    def __init__(self, cfg: Settings, warehouse: Any = None,
                 clock: Callable[[], datetime] | None = None):
        self.cfg = cfg
        self._warehouse = warehouse
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.burst_count = cfg.alert_burst_count
        self.burst_window = timedelta(minutes=cfg.alert_burst_window_min)
        self.dedupe_window = timedelta(minutes=cfg.alert_dedupe_window_min)

    @property
    def warehouse(self):
        if callable(self._warehouse) and not hasattr(self._warehouse, "query"):
            self._warehouse = self._warehouse()
        if self._warehouse is None:
            from include.targets import get_target  # imported here: the targets import this module's users

            self._warehouse = get_target(self.cfg).warehouse
        return self._warehouse

    def decide(self, alert) -> Decision:
        """Decide for ``alert`` and record it in ``ops.alerts``; never raises, never loses the alert."""
        fp = fingerprint(alert)
        now = _utc_naive(self.clock())
        try:
            groups = self._recent(now)
        except Exception as exc:  # any failure to read the history: deliver, say why
            why = f"{TABLE} could not be read ({type(exc).__name__}: {_first_line(exc)})"
            log.warning("Alert %s (%s) delivered without dedupe: %s. Check the warehouse connection "
                        "(FLIGHTS_WAREHOUSE=%s).", alert.kind, fp[:12], why, self.cfg.warehouse)
            return Decision(fp, [alert], checked=False, why=why)

        decision = self._decide(alert, fp, now, groups)
        rows = [self._row(alert, fp, now, decision.delivered, decision.suppressed_by)]
        rows += [self._row(s, fingerprint(s), now, True, None) for s in decision.deliver if s.kind == STORM_KIND]
        for row in rows:
            try:
                self.warehouse.record(TABLE, row)
            except Exception as exc:
                log.warning("Alert %s (%s) not recorded in %s (%s: %s): later repeats may be delivered again.",
                            row["kind"], row["fingerprint"][:12], TABLE, type(exc).__name__, _first_line(exc))
        return decision

    # --- the decision ---------------------------------------------------------------------------

    def _decide(self, alert, fp: str, now: datetime, groups: list[_Group]) -> Decision:
        alerts = [g for g in groups if g.kind != STORM_KIND]
        in_burst = sum(g.in_burst for g in alerts) + 1  # this alert included
        if in_burst > self.burst_count:
            latest = max(groups, key=lambda g: (g.last_at, g.kind == STORM_KIND or g.suppressed_by == STORM))
            if latest.kind == STORM_KIND or latest.suppressed_by == STORM:
                return Decision(fp, [], STORM, why=f"storm continues: {in_burst} alerts in the burst window")
            summary = self._storm_summary(alert, fp, now, alerts, in_burst)
            return Decision(fp, [summary], STORM, why=f"storm: {in_burst} alerts in the burst window, summary sent")

        if self.dedupe_window:
            last = max((g.last_at for g in groups if g.fingerprint == fp and g.delivered), default=None)
            if last is not None and now - last < self.dedupe_window:
                return Decision(fp, [], DUPLICATE, why=f"same cause delivered at {_hhmm(last, now)}")

        held, since = self._held_since_last_delivery(fp)
        if held:
            note = f"and {held} more like it since {_hhmm(since, now)}"
            details = {**(alert.details or {}), "suppressed": held, "suppressed_since": since.isoformat() + "Z"}
            alert = replace(alert, title=f"{alert.title} ({note})", details=details)
            return Decision(fp, [alert], why=note)
        return Decision(fp, [alert], why="first of its cause in the dedupe window")

    def _recent(self, now: datetime) -> list[_Group]:
        """``ops.alerts`` of the longer of the two windows, grouped by cause and outcome."""
        since = now - max(self.burst_window, self.dedupe_window)
        _, rows = self.warehouse.query(
            "SELECT fingerprint, kind, dag_id, task_id, delivered, suppressed_by, COUNT(*) AS n, "
            "SUM(CASE WHEN raised_at > CAST(? AS TIMESTAMP) THEN 1 ELSE 0 END) AS n_burst, "
            f"MAX(raised_at) AS last_at, MIN(reason) AS reason FROM {TABLE} WHERE raised_at > CAST(? AS TIMESTAMP) "
            "GROUP BY fingerprint, kind, dag_id, task_id, delivered, suppressed_by",
            [now - self.burst_window, since])
        return [_Group(r[0], r[1], r[2] or "", r[3] or "", _bool(r[4]), r[5] or None, int(r[6]), int(r[7] or 0),
                       _as_naive(r[8]), r[9] or "") for r in rows]

    def _held_since_last_delivery(self, fp: str) -> tuple[int, datetime | None]:
        """How many alerts of ``fp`` were held since it was last delivered, and since when."""
        try:
            _, [(last,)] = self.warehouse.query(
                f"SELECT MAX(raised_at) FROM {TABLE} WHERE fingerprint = ? AND delivered", [fp])
            last = _as_naive(last) if last is not None else None
            _, [(n, first)] = self.warehouse.query(
                f"SELECT COUNT(*), MIN(raised_at) FROM {TABLE} WHERE fingerprint = ? AND NOT delivered "
                "AND raised_at > CAST(? AS TIMESTAMP)", [fp, last or EPOCH])
        except Exception as exc:
            log.warning("Alert %s: the held count could not be read from %s (%s: %s); delivered without it.",
                        fp[:12], TABLE, type(exc).__name__, _first_line(exc))
            return 0, None
        n = int(n or 0)
        return n, (last or (_as_naive(first) if first is not None else None))

    def _storm_summary(self, alert, fp: str, now: datetime, groups: list[_Group], in_burst: int):
        """The one ``alert_storm`` message of a burst: how many alerts, and each distinct cause with its count."""
        causes: dict[str, dict] = {}
        for g in groups:
            if g.in_burst:
                c = causes.setdefault(g.fingerprint, {"fingerprint": g.fingerprint, "kind": g.kind, "dag_id": g.dag_id,
                                                      "task_id": g.task_id, "count": 0, "reason": g.reason})
                c["count"] += g.in_burst
        mine = causes.setdefault(fp, {"fingerprint": fp, "kind": alert.kind, "dag_id": alert.dag_id or "",
                                      "task_id": alert.task_id or "", "count": 0, "reason": alert.reason})
        mine["count"] += 1
        ordered = sorted(causes.values(), key=lambda c: (-c["count"], c["dag_id"], c["task_id"]))
        window = self.cfg.alert_burst_window_min
        noun = "failures" if all(c["kind"] in FAILURE_KINDS for c in ordered) else "alerts"
        noisy = ", ".join(c for c in self.cfg.alert_channels if c != "file")
        lines = [f"{in_burst} {noun} in {window} minutes (more than {self.burst_count}), "
                 f"{len(ordered)} distinct cause(s):"]
        for c in ordered[:MAX_CAUSES]:
            where = ".".join(x for x in (c["dag_id"], c["task_id"]) if x) or "-"
            lines.append(f"  {c['count']} x {where} ({c['kind']}): {_first_line(c['reason'])[:200]}")
        if len(ordered) > MAX_CAUSES:
            lines.append(f"  ... and {len(ordered) - MAX_CAUSES} more cause(s)")
        lines.append(f"Further alerts are held on {noisy} until no more than {self.burst_count} arrive in "
                     f"{window} minutes; every alert is in {TABLE} and the alert file.")
        return replace(alert, kind=STORM_KIND, title=f"{in_burst} {noun} in {window} minutes", reason="\n".join(lines),
                       dag_id="", task_id="", run_id="", interval="", log_url="",
                       details={"causes": ordered, "burst_count": self.burst_count, "burst_window_min": window},
                       at=now.isoformat(timespec="seconds") + "+00:00")

    @staticmethod
    def _row(alert, fp: str, now: datetime, delivered: bool, suppressed_by: str | None) -> dict[str, Any]:
        return {"fingerprint": fp, "kind": alert.kind[:64], "dag_id": (alert.dag_id or "")[:250],
                "task_id": (alert.task_id or "")[:250], "run_id": (alert.run_id or "")[:250],
                "run_interval": (alert.interval or "")[:250], "reason": (alert.reason or "")[:MAX_REASON_CHARS],
                "delivered": delivered, "suppressed_by": suppressed_by, "raised_at": now}


# --- values as the warehouses return them -------------------------------------------------------------


def _utc_naive(value: datetime) -> datetime:
    """A UTC time without tzinfo: how ``raised_at`` (TIMESTAMP) is written and compared."""
    if value.tzinfo is None:
        raise ValueError("The alert policy's clock must return a timezone-aware datetime (UTC).")
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def _as_naive(value) -> datetime:
    """``raised_at`` as read back: a datetime (DuckDB, PostgreSQL, BigQuery) or a string (Redshift)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _bool(value) -> bool:
    return value.strip().lower() in ("true", "t", "1") if isinstance(value, str) else bool(value)


def _hhmm(at: datetime, now: datetime) -> str:
    return f"{at:%H:%M} UTC" if at.date() == now.date() else f"{at:%Y-%m-%d %H:%M} UTC"


def _first_line(value) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""
