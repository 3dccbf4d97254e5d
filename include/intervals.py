"""The run's data interval as a closed range of flight dates.

A scheduled run covers one day; a manual or backfill run may cover a range. Manual runs
without a logical date (Airflow 3) must name the range explicitly through the
``start_date`` / ``end_date`` params, which are validated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

MAX_RANGE_DAYS = 366


class IntervalError(ValueError):
    """The run's date range is missing or invalid (a permanent error: retrying will not help)."""


@dataclass(frozen=True)
class Interval:
    start: date
    end: date  # inclusive

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise IntervalError(f"end_date {self.end} is before start_date {self.start}.")
        if self.num_days > MAX_RANGE_DAYS:
            raise IntervalError(
                f"The range {self.start}..{self.end} spans {self.num_days} days; split it into runs of at most "
                f"{MAX_RANGE_DAYS} days."
            )

    @property
    def num_days(self) -> int:
        return (self.end - self.start).days + 1

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.num_days)]

    @property
    def key(self) -> str:
        """A path-safe name for this interval, used for export folders and job names."""
        return f"{self.start:%Y%m%d}_{self.end:%Y%m%d}"

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> "Interval":
        return cls(parse_date(d["start"], "start"), parse_date(d["end"], "end"))

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}..{self.end}"


def parse_date(value: object, name: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise IntervalError(f"Param {name}={value!r} is not a date; use the form YYYY-MM-DD.") from None


def resolve_interval(
    params: dict | None,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
) -> Interval:
    """Pick the closed date range a run works on.

    Explicit params win (both or neither); otherwise the data interval of the run, whose
    end is exclusive. A run with neither is refused with a message saying what to pass.
    """
    params = params or {}
    start, end = params.get("start_date"), params.get("end_date")
    if start or end:
        if not (start and end):
            raise IntervalError("Pass both start_date and end_date (YYYY-MM-DD), or neither to use the data interval.")
        return Interval(parse_date(start, "start_date"), parse_date(end, "end_date"))
    if data_interval_start is None or data_interval_end is None:
        raise IntervalError(
            "This run has no data interval (a manual run without a logical date). Trigger it with a logical date, "
            'or with params {"start_date": "YYYY-MM-DD", "end_date": "YYYY-MM-DD"}.'
        )
    last = data_interval_end - timedelta(microseconds=1)
    if last < data_interval_start:
        last = data_interval_start
    return Interval(data_interval_start.date(), last.date())
