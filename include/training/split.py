"""Time-based train / validation / holdout split of a training window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class Split:
    train: tuple[date, date]
    validation: tuple[date, date]
    holdout: tuple[date, date]

    def label(self, d: date) -> str:
        if d >= self.holdout[0]:
            return "holdout"
        if d >= self.validation[0]:
            return "validation"
        return "train"


def time_split(start: date, end: date, validation_days: int, holdout_days: int) -> Split:
    """The last ``holdout_days`` are the holdout, the ``validation_days`` before them validate."""
    if validation_days < 1 or holdout_days < 1:
        raise ValueError("validation_days and holdout_days must each be at least 1.")
    days = (end - start).days + 1
    if days < validation_days + holdout_days + 1:
        raise ValueError(
            f"The training window {start}..{end} has {days} days; it needs at least "
            f"{validation_days + holdout_days + 1} (validation {validation_days} + holdout {holdout_days} + 1 to train)."
        )
    h0 = end - timedelta(days=holdout_days - 1)
    v0 = h0 - timedelta(days=validation_days)
    return Split(train=(start, v0 - timedelta(days=1)), validation=(v0, h0 - timedelta(days=1)), holdout=(h0, end))
