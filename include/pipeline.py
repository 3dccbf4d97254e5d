"""What each task of the DAGs does. DAG files only wire these steps together.

Every step takes the run's interval (or training window) explicitly and talks to the
target's seams, never to a concrete cloud.
"""

from __future__ import annotations

import functools
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from include.config import ConfigError
from include.intervals import Interval, IntervalError, parse_date, resolve_interval
from include.jobs import safe_run_key
from include.lake import LANDING_SUFFIXES, landing_file
from include.targets import get_target

log = logging.getLogger(__name__)

# Errors a retry cannot fix. Everything else (a lost executor, a network blip, a locked
# file) is retried with exponential backoff by the task's default_args.
PERMANENT_ERRORS = (ConfigError, IntervalError)


def fails_fast(step):
    """Turn a configuration or input error into a failure Airflow does not retry."""

    @functools.wraps(step)
    def run(*args, **kwargs):
        try:
            return step(*args, **kwargs)
        except PERMANENT_ERRORS as exc:
            raise AirflowFailException(f"{exc}\n(Not retried: fix the setting or the input, then clear the task.)") \
                from exc

    return run


def job_name(context: dict, interval: Interval) -> str:
    """Deterministic per DAG, task, interval and try: a retry is recognisable, never anonymous."""
    ti = context["ti"]
    return f"{ti.dag_id}.{ti.task_id}.{interval.key}.try{ti.try_number}"


@fails_fast
def spark_job(context: dict, interval: Interval, job: str, args: list[str], output: str | None = None) -> str | None:
    """Run ``spark_jobs/<job>.py`` with its rendered arguments through the target's Spark runner.

    The arguments come from ``include.jobs.job_args`` through the step factory, rendered by Airflow
    from the same templates a cloud operator gets. Returns ``output`` (what the job wrote, when it
    names one), as a cloud operator does.
    """
    get_target().spark.submit(job, [str(a) for a in args], name=job_name(context, interval))
    return output


def interval_xcom(interval: Interval, run_id: str) -> dict:
    """What ``resolve_interval`` / ``resolve_window`` return: the interval, its key and the run's path segment.

    Cloud jobs render their arguments from these values (``include.jobs.RunRef.template``).
    """
    return {**interval.to_dict(), "key": interval.key, "run_key": safe_run_key(run_id)}


# --- flights_daily ---------------------------------------------------------------------------


@fails_fast
def resolve(context: dict) -> dict:
    try:
        interval = resolve_interval(context["params"], context.get("data_interval_start"),
                                    context.get("data_interval_end"))
    except IntervalError as exc:
        raise AirflowFailException(str(exc)) from exc
    log.info("This run covers %s (%d day(s))", interval, interval.num_days)
    return interval_xcom(interval, context["run_id"])


def resolve_maintenance(context: dict) -> dict:
    """The days a maintenance run is recorded against: its data interval, or today for a manual run without one."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        today = datetime.now(timezone.utc).date()
        interval = Interval(today, today)
    else:
        interval = resolve_interval({}, start, end)
    return interval_xcom(interval, context["run_id"])


@fails_fast
def check_landing(interval: Interval) -> dict:
    """Every day of the interval has its flights and weather extract, as ``.csv`` or ``.csv.gz``."""
    target = get_target()
    expected = [[landing_file(target.lake.landing_root, ds, d, suffix) for suffix in LANDING_SUFFIXES]
                for d in interval.days() for ds in ("flights", "weather")]
    missing = [names[0] for names in expected if not any(target.lake.exists(p) for p in names)]
    if missing:
        raise AirflowFailException(
            f"{len(missing)} landing file(s) missing for {interval}; first expected at {missing[0]} (or .csv.gz). "
            "Deliver the file(s) (locally: `make land START=... END=...`) and clear this task."
        )
    return {"files": len(expected)}


@fails_fast
def enforce_gate(context: dict, interval: Interval, uri: str) -> dict:
    """Enforce a gate whose Spark job ran in an earlier task (a cloud job): record, then pass or fail."""
    from include.quality.gate import enforce

    return enforce(get_target(), uri, interval, context["run_id"], context["ti"].dag_id)


@fails_fast
def find_stale_dependants(context: dict, interval: Interval, uri: str) -> dict:
    """The later days built from this interval's earlier silver (``include.recompute``): recorded, then recomputed.

    ``uri`` is the gold gate's summary, in which ``build_features`` listed them. Each is recorded in
    ``ops.recomputations`` with why and the run that recomputes them; ``recompute_stale_days`` then triggers that
    run. When none is stale the task is skipped, and so is the trigger.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from include.recompute import TABLE, plan, recorded

    if not uri:  # build_features was marked done by hand: it computed nothing, so nothing became stale
        raise AirflowSkipException(f"build_features returned no gate summary for {interval} (marked done without "
                                   "running?): no stale later day to look for.")
    target = get_target()
    found = plan(target.lake.read_json(uri).get("stale_dependants"), context["run_id"])
    if found is None:
        raise AirflowSkipException(f"No day built from the silver of {interval} has changed since: nothing to "
                                   "recompute.")
    done = recorded(target.warehouse, found.run_id)  # this task's earlier try recorded some
    for day, why in sorted(found.days.items()):
        if day not in done:
            target.warehouse.record(TABLE, {
                "flight_date": day, "reason": why, "cause_dag_id": context["ti"].dag_id,
                "cause_run_id": context["run_id"], "cause_start": interval.start, "cause_end": interval.end,
                "recompute_run_id": found.run_id})
    log.warning("%d later day(s) were built from the earlier silver of %s and are stale; run %s recomputes "
                "%s..%s: %s", len(found.days), interval, found.run_id, found.start, found.end,
                "; ".join(f"{d}: {why}" for d, why in sorted(found.days.items())))
    return found.xcom()


@fails_fast
def find_champion(interval: Interval) -> dict:
    """The champion a cloud scoring job loads, with its bundle published to the lake's storage.

    Skips the scoring tasks (with a log line saying why) until a champion exists.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    target = get_target()
    champion = target.registry.champion()
    if champion is None:
        raise AirflowSkipException(f"No champion model is registered yet: scoring is skipped for {interval}. Run the "
                                   "flights_training DAG to train and promote one; later runs will score.")
    return {"scored": True, "model_name": champion.name, "model_version": champion.version,
            "model_dir": target.registry.publish_bundle(champion)}


@fails_fast
def enforce_predictions_gate(context: dict, interval: Interval, champion: dict, uri: str) -> dict:
    enforce_gate(context, interval, uri)
    drift = record_drift(context, interval, champion, uri)
    return {"scored": True, "model_version": champion["model_version"], "drift": drift}


def record_drift(context: dict, interval: Interval, champion: dict, uri: str) -> dict[str, str]:
    """``ops.feature_drift``: the scoring job's PSI per feature and score (``include.drift``); level by column."""
    target = get_target()
    drift = target.lake.read_json(uri).get("drift") or {}
    for column, d in sorted(drift.items()):
        target.warehouse.record("ops.feature_drift", {
            "model_name": champion["model_name"], "model_version": str(champion["model_version"]),
            "interval_start": interval.start, "interval_end": interval.end, "feature": column, "psi": d["psi"],
            "level": d["level"], "flights": d["rows"], "reference_rows": d["reference_rows"],
            "run_id": context["run_id"]})
    shifted = {c: round(d["psi"], 3) for c, d in drift.items() if d["level"] == "major"}
    if shifted:
        log.warning("Major drift (PSI > 0.25) from %s v%s's training data in %s: %s", champion["model_name"],
                    champion["model_version"], interval, shifted)
    return {c: d["level"] for c, d in drift.items()}


@fails_fast
def load_table(interval: Interval, table: str, source: str) -> int:
    """Replace the interval's rows of one warehouse table with the lake's export at ``source``."""
    n = get_target().warehouse.load_interval(table, source, interval.start, interval.end)
    log.info("Loaded %d row(s) into %s for %s", n, table, interval)
    return n


def evaluate_realised_performance(context: dict, interval: Interval) -> dict:
    """Score the loaded predictions against the loaded outcomes and record it in ``ops.model_performance``."""
    from include.monitoring import realised_performance

    warehouse = get_target().warehouse
    rows = realised_performance(warehouse, interval.start, interval.end)
    for row in rows:
        warehouse.record("ops.model_performance", {**row, "run_id": context["run_id"]})
    for row in rows:
        if row["scope"] == "trailing_7d" and row["period_end"] == interval.end:
            log.info("%s v%s over %s..%s: %d flights, AUC %s, log loss %.4f, Brier %.4f, ECE %.4f",
                     row["model_name"], row["model_version"], row["period_start"], row["period_end"], row["flights"],
                     "n/a" if row["auc"] is None else f"{row['auc']:.4f}", row["log_loss"], row["brier"], row["ece"])
    return {"measurements": len(rows), "versions": sorted({r["model_version"] for r in rows})}


@fails_fast
def request_retraining(context: dict, interval: Interval, asset) -> dict:
    """Check the champion against the retraining thresholds on the interval's last day (``include.retraining``).

    A breach that no earlier day of this champion has acted on is recorded in ``ops.model_decisions``, alerted
    (which metric, by how much, since when) and sent to ``flights_training`` as an event of ``asset`` carrying
    the training window's last day and the reason. Otherwise the task is skipped, saying why: a skipped task
    emits no event.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from include.alerts import Alert, send_alert
    from include.config import retraining_thresholds
    from include.retraining import REQUESTED, breaches, open_request, reason

    thresholds = retraining_thresholds()
    target = get_target()
    champion = target.registry.champion()
    if champion is None:
        raise AirflowSkipException("No champion is registered: there is nothing to retrain against.")
    holdout_auc = champion.metrics.get("auc")
    if holdout_auc is None:
        log.warning("%s v%s has no holdout AUC in the registry: its realised AUC is not compared.", champion.name,
                    champion.version)
    found = breaches(target.warehouse, champion.name, champion.version, holdout_auc, interval.end, thresholds)
    if not found:
        raise AirflowSkipException(f"{champion.name} v{champion.version} is within every retraining threshold on "
                                   f"{interval.end}.")
    why = reason(found)
    run_id, train_end = context["run_id"], interval.end.isoformat()
    earlier = open_request(target.warehouse, champion.name, champion.version)
    if earlier is not None and not _event_sent(context, asset, earlier[0]):
        # the run that recorded the request died before its event went out (this run's earlier try, or an
        # earlier day's run that never succeeded): send it now, so the breach is acted on exactly once
        log.warning("Sending the retraining request that run %s recorded at %s: its event was never sent.",
                    earlier[0], earlier[1])
        return _send_request(context, asset, champion, train_end, earlier[2], earlier[0])
    if earlier is not None:
        raise AirflowSkipException(f"Still breaching ({why}), but retraining was already requested for v"
                                   f"{champion.version} by run {earlier[0]} at {earlier[1]}: one retraining per "
                                   "breach of a champion.")
    target.warehouse.record("ops.model_decisions", {
        "model_name": champion.name, "challenger_version": None, "champion_version": champion.version,
        "promoted": None, "reason": why, "challenger_auc": None, "champion_auc": holdout_auc,
        "baseline_auc": None, "run_id": run_id, "action": REQUESTED,
        "cause": ", ".join(f"{b.metric}={b.value:.4f} (threshold {b.threshold:.4f}, since {b.since})" for b in found)})
    ti = context["ti"]
    send_alert(Alert(
        kind=REQUESTED, title=f"{champion.name} v{champion.version} breached its thresholds: retraining requested",
        reason=why, dag_id=ti.dag_id, task_id=ti.task_id, run_id=run_id, interval=str(interval),
        log_url=getattr(ti, "log_url", "") or "",
        details={"champion_version": champion.version, "breaches": [
            {"metric": b.metric, "value": b.value, "threshold": b.threshold, "since": b.since.isoformat()}
            for b in found]}))
    log.warning("Retraining requested for %s v%s: %s", champion.name, champion.version, why)
    return _send_request(context, asset, champion, train_end, why, run_id)


def _send_request(context: dict, asset, champion, train_end: str, why: str, recorded_by: str) -> dict:
    """The asset event that starts flights_training (emitted when the task succeeds); ``recorded_by`` is the run
    that recorded the request in ops.model_decisions, whichever run sends it."""
    context["outlet_events"][asset].extra = {"train_end": train_end, "reason": why, "model_name": champion.name,
                                             "champion_version": champion.version, "request_run_id": recorded_by}
    return {"requested": True, "champion_version": champion.version, "train_end": train_end, "reason": why}


def _event_sent(context: dict, asset, recorded_by: str) -> bool:
    """Whether an event of ``asset`` went out for the request that run ``recorded_by`` recorded (the task reads
    the asset's events as its inlet events)."""
    return any((getattr(e, "extra", None) or {}).get("request_run_id") == recorded_by
               or getattr(e, "source_run_id", None) == recorded_by for e in context["inlet_events"][asset])


# --- flights_training ------------------------------------------------------------------------


def retraining_request(context: dict) -> dict | None:
    """The latest retraining request among the events that triggered this run (``request_retraining``), if any."""
    from include.retraining import ASSET_NAME

    events = context.get("triggering_asset_events") or {}
    found = []
    for asset, asset_events in events.items():
        if getattr(asset, "name", None) != ASSET_NAME:
            continue
        found += [e for e in asset_events if (getattr(e, "extra", None) or {}).get("train_end")]
    if not found:
        return None
    latest = max(found, key=lambda e: (e.extra["train_end"], str(e.timestamp)))
    return {**latest.extra, "source_run_id": getattr(latest, "source_run_id", None)}


def training_cause(context: dict) -> str:
    """Why this training run ran: a retraining request (with its reason), the schedule, or a manual trigger."""
    request = retraining_request(context)
    if request is not None:
        return (f"retraining requested by flights_daily run {request.get('source_run_id')}: "
                f"{request.get('reason')}")
    run_type = getattr(context.get("dag_run"), "run_type", None)
    run_type = str(getattr(run_type, "value", run_type) or "manual").lower()  # DagRunType or its string
    return "scheduled" if run_type == "scheduled" else f"{run_type} run {context.get('run_id')}"


@fails_fast
def resolve_window(context: dict) -> dict:
    p = context["params"]
    try:
        request = retraining_request(context)
        if p.get("train_start") or p.get("train_end"):
            if not (p.get("train_start") and p.get("train_end")):
                raise IntervalError("Pass both train_start and train_end, or neither to use window_days.")
            window = Interval(parse_date(p["train_start"], "train_start"), parse_date(p["train_end"], "train_end"))
        elif request is not None:  # a retraining request: the window ends on the last day that breached
            last = parse_date(request["train_end"], "the retraining request's train_end")
            window = Interval(last - timedelta(days=int(p["window_days"]) - 1), last)
            log.info("Retraining requested by flights_daily run %s: %s", request.get("source_run_id"),
                     request.get("reason"))
        else:
            end = context.get("data_interval_end")
            if end is None:
                raise IntervalError('This run has no data interval: pass {"train_start": ..., "train_end": ...}.')
            last = (end - timedelta(microseconds=1)).date()
            window = Interval(last - timedelta(days=int(p["window_days"]) - 1), last)
        from include.training.split import time_split

        time_split(window.start, window.end, int(p["validation_days"]), int(p["holdout_days"]))
    except (IntervalError, ValueError) as exc:
        raise AirflowFailException(str(exc)) from exc
    return interval_xcom(window, context["run_id"])


HYPERPARAMETER_TYPES = {"n_estimators": int, "max_depth": int, "learning_rate": float, "device": str}


@fails_fast
def train(context: dict, dataset_uri: str, params: dict) -> dict:
    """Train in this task's process (the local target); ``params`` are the rendered hyperparameters."""
    from include.targets.base import TrainingRequest

    target = get_target()
    try:
        hyper = {k: cast(params[k]) for k, cast in HYPERPARAMETER_TYPES.items()}
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"Bad hyperparameters {params!r}: {exc}; see the flights_training params.") from exc
    data_dir = target.lake.local_dir(dataset_uri)
    outputs = target.trainer.train(TrainingRequest(data_dir / "data", data_dir / "model", hyper,
                                                   name=context["run_id"]))
    log.info("Holdout metrics: %s", json.dumps(outputs.metrics, indent=2))
    return {"output_dir": str(outputs.output_dir), "metrics": outputs.metrics, "params": outputs.params,
            "device": outputs.device}


@fails_fast
def register(context: dict, trained: dict, window: Interval) -> dict:
    target = get_target()
    outputs = target.trainer.collect(trained)  # the trainer's outputs, local (downloaded when remote)
    version = target.registry.register(outputs, tags={
        "run_name": context["run_id"], "airflow_dag_id": context["ti"].dag_id,
        "airflow_run_id": context["run_id"], "training_window": str(window)})
    context["ti"].xcom_push(key="mlflow_run_url", value=version.url)
    log.info("Registered %s v%s: %s", version.name, version.version, version.url)
    return {"name": version.name, "version": version.version, "run_id": version.run_id, "url": version.url}


@fails_fast
def promote(context: dict, registered: dict, trained: dict, dataset_uri: str, min_auc_gain: float) -> dict:
    from include.alerts import Alert, interval_of, send_alert
    from include.targets.base import ModelVersion
    from include.training.promotion import decide

    target = get_target()
    challenger = ModelVersion(registered["name"], registered["version"], registered["run_id"], registered["url"])
    champion = target.registry.champion()
    champion_metrics = None
    if champion is not None and champion.version != challenger.version:
        champion_metrics = score_holdout(target.registry.bundle_dir(champion),
                                         target.lake.local_dir(dataset_uri) / "data")
    metrics = target.trainer.collect(trained).metrics
    decision = decide(metrics["xgboost"], metrics["baseline"], champion_metrics, min_auc_gain)
    target.warehouse.record("ops.model_decisions", {
        "model_name": challenger.name, "challenger_version": challenger.version,
        "champion_version": champion.version if champion else None, "promoted": decision.promote,
        "reason": decision.reason, "challenger_auc": metrics["xgboost"]["auc"],
        "champion_auc": champion_metrics["auc"] if champion_metrics else None,
        "baseline_auc": metrics["baseline"]["auc"], "run_id": context["run_id"],
        "action": "promoted" if decision.promote else "refused", "cause": training_cause(context)})
    if decision.promote:
        target.registry.set_champion(challenger, decision.reason)
    else:
        ti = context["ti"]
        send_alert(Alert(
            kind="model_rejected", title=f"Challenger {challenger.name} v{challenger.version} was not promoted",
            reason=decision.reason, dag_id=ti.dag_id, task_id=ti.task_id, run_id=context["run_id"],
            interval=interval_of(context),
            log_url=getattr(ti, "log_url", "") or "",
            details={"challenger": metrics["xgboost"], "baseline": metrics["baseline"], "champion": champion_metrics,
                     "champion_version": champion.version if champion else None}))
    log.info("Promotion decision for v%s: %s (%s)", challenger.version, decision.promote, decision.reason)
    return {"promoted": decision.promote, "reason": decision.reason, "version": challenger.version,
            "champion_metrics": champion_metrics}


def score_holdout(bundle_dir: Path, data_dir: Path) -> dict[str, float]:
    """Score the holdout rows of a training set with a bundle, now."""
    from include.features import LABEL
    from include.training.bundle import load_bundle
    from include.training.metrics import evaluate
    from include.training.train import load_dataset

    hold = load_dataset(data_dir)["holdout"]
    return evaluate(hold[LABEL], load_bundle(bundle_dir).predict(hold))


def as_interval(d: dict[str, Any]) -> Interval:
    return Interval.from_dict(d)
