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


def rollback_target(model: str, reason: str, champion: str | None, previous: str | None, to_version: str | None,
                    versions: list[str]) -> str:
    """The version a rollback restores, or ``RollbackError`` naming why nothing may change.

    The one rule every registry applies: a reason is required; there must be a champion; the default
    target is the champion the current one replaced (``previous``); an explicit ``to_version``
    (``3`` or ``v3``) must exist; the target must not already be the champion.
    """
    from include.training.outputs import RollbackError

    champion_word = "champion"
    if not reason or not reason.strip():
        raise RollbackError("Say why you roll back (--reason): it is recorded with the decision.")
    if champion is None:
        raise RollbackError(f"{model} has no {champion_word}: there is nothing to roll back.")
    asked = "version"
    if to_version is None:
        asked, to_version = "previous champion", previous
        if not to_version or to_version == "none":
            raise RollbackError(
                f"{model} v{champion} is {champion_word} but no previous champion is recorded for it (it was the "
                f"first champion); pass --to-version N to choose one. Versions: {', '.join(versions)}.")
    to_version = str(to_version).strip()
    if to_version.lower().startswith("v"):
        to_version = to_version[1:]
    if to_version not in versions:
        raise RollbackError(f"{model} has no {asked} {to_version!r} (v{champion} is {champion_word}); versions: "
                            f"{', '.join(versions) or 'none'}.")
    if to_version == champion:
        raise RollbackError(f"{model} v{to_version} already is {champion_word}: nothing to roll back.")
    return to_version
