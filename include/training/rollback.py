"""One-step rollback of the champion model, for when the model in production misbehaves.

    python -m include.training.rollback --reason "why" [--to-version N] [--by NAME]

Moves the registry's ``champion`` alias back to the champion it replaced (every promotion
records it on the new champion) or to ``--to-version``, records the decision in
``ops.model_decisions`` and sends a ``model_rollback`` alert through the configured
channels. Scoring reads the champion when it runs, so the next ``flights_daily`` run
scores with the restored version; predictions already loaded keep the version that made
them until their interval is rerun. Nothing changes when the rollback is refused.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from datetime import datetime, timezone

from include.alerts import Alert, send_alert
from include.config import settings
from include.targets import get_target
from include.training.outputs import ModelVersion, RegistryError

log = logging.getLogger(__name__)

# A rollback overrides the promotion decision of this DAG; alerts and ops rows name it.
DAG_ID = "flights_training"
TASK_ID = "manual_rollback"


def default_user() -> str:
    """Who rolls back when --by is not given: the OS user."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry and no LOGNAME/USER (some containers)
        return "unknown"


def rollback_alert(old: ModelVersion, new: ModelVersion, reason: str, by: str, run_id: str,
                   window: str) -> Alert:
    """The alert announcing that ``new`` replaced ``old`` as champion."""
    return Alert(
        kind="model_rollback",
        title=f"Champion {new.name} rolled back from v{old.version} to v{new.version}",
        reason=f"rolled back by {by}: {reason}",
        dag_id=DAG_ID, task_id=TASK_ID, run_id=run_id,
        interval=window,  # the training window of the restored version
        log_url=new.url,
        details={"from_version": old.version, "to_version": new.version, "by": by, "why": reason,
                 "from_url": old.url, "from_metrics": old.metrics, "to_metrics": new.metrics},
    )


def rollback(to_version: str | None, reason: str, by: str) -> dict:
    """Move the champion back, record the decision and alert; return what was done."""
    target = get_target()
    old, new = target.registry.rollback(to_version, reason, by)
    run_id = "rollback__" + datetime.now(timezone.utc).isoformat(timespec="seconds")
    window = target.registry.training_window(new.version)
    try:
        target.warehouse.record("ops.model_decisions", {
            "model_name": new.name, "challenger_version": new.version, "champion_version": old.version,
            "promoted": True, "reason": f"rollback by {by}: {reason} (champion v{old.version} -> v{new.version})",
            "challenger_auc": None, "champion_auc": None, "baseline_auc": None, "run_id": run_id,
            "action": "rollback", "cause": f"rollback by {by}"})
    finally:  # the alias has moved: say so even if the warehouse is unreachable
        send_alert(rollback_alert(old, new, reason, by, run_id, window))
    return {"model": new.name, "from": old.version, "to": new.version, "by": by, "reason": reason,
            "run_id": run_id, "window": window, "url": new.url}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m include.training.rollback", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--to-version", default=None,
                   help="version to restore (default: the champion the current one replaced)")
    p.add_argument("--reason", required=True, help="why: recorded in ops.model_decisions and in the alert")
    p.add_argument("--by", default=None, help="who rolls back (default: the OS user)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; 0 when rolled back, 2 when refused."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    by = args.by or default_user()
    try:
        done = rollback(args.to_version, args.reason, by)
    except RegistryError as exc:  # RollbackError and every registry's refusal
        print(f"Rollback refused, nothing changed: {exc}", file=sys.stderr)
        return 2
    print(f"Rolled back {done['model']}: champion v{done['from']} -> v{done['to']}, by {by}: {done['reason']}\n"
          f"  recorded in ops.model_decisions (run_id {done['run_id']})\n"
          f"  alert model_rollback sent to: {', '.join(settings().alert_channels)}\n"
          f"  v{done['to']}: {done['url']}\n"
          f"The next flights_daily run scores with v{done['to']}; rerun intervals already scored by "
          f"v{done['from']} to replace their predictions.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
