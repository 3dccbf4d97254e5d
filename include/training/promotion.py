"""The champion/challenger rule: promote only a model that is better on the same holdout."""

from __future__ import annotations

import math
from dataclasses import dataclass

PRIMARY_METRIC = "auc"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    challenger: dict[str, float],
    baseline: dict[str, float],
    champion: dict[str, float] | None,
    min_auc_gain: float = 0.0,
) -> Decision:
    """Compare holdout metrics scored now on the same rows.

    The challenger must beat the logistic-regression baseline (a sanity floor), and then
    either there is no champion, or its AUC exceeds the champion's by more than
    ``min_auc_gain`` without a worse log loss.
    """
    c_auc = challenger.get(PRIMARY_METRIC, float("nan"))
    if math.isnan(c_auc):
        return Decision(False, "challenger AUC is undefined (the holdout has a single class)")
    if c_auc <= baseline.get(PRIMARY_METRIC, float("nan")):
        return Decision(
            False,
            f"challenger AUC {c_auc:.4f} does not beat the logistic-regression baseline "
            f"{baseline.get(PRIMARY_METRIC, float('nan')):.4f}",
        )
    if champion is None:
        return Decision(True, f"no champion yet; challenger AUC {c_auc:.4f} beats the baseline")
    ch_auc = champion[PRIMARY_METRIC]
    if c_auc <= ch_auc + min_auc_gain:
        return Decision(
            False, f"challenger AUC {c_auc:.4f} does not beat champion AUC {ch_auc:.4f} by more than {min_auc_gain}"
        )
    if challenger["log_loss"] > champion["log_loss"]:
        return Decision(
            False,
            f"challenger AUC {c_auc:.4f} > champion {ch_auc:.4f} but its log loss "
            f"{challenger['log_loss']:.4f} is worse than {champion['log_loss']:.4f}",
        )
    return Decision(True, f"challenger AUC {c_auc:.4f} beats champion AUC {ch_auc:.4f} on the same holdout")
