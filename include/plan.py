"""Explain plan: every step of one daily run and one training run, as it would run, with its cost.

    python -m include.plan --target aws     # operators, rendered job specs, estimated cost per run
    python -m include.plan --target local   # spark-submit command lines, warehouse, registry (cost 0)

Nothing is submitted and no AWS call is made. The AWS plan uses the FLIGHTS_AWS_*
settings when they are set, otherwise placeholder settings (it says which). Prices and
durations come from ``include/pricing.json`` (illustrative list prices with an ``as_of``
date: check them before relying on the totals).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from include.intervals import Interval
from include.jobs import JOBS, RunRef, job_args
from include.lake import export_uri

PRICING_FILE = Path(__file__).with_name("pricing.json")
DAY = Interval(date(2013, 3, 1), date(2013, 3, 1))
WINDOW = Interval(date(2013, 1, 1), date(2013, 2, 28))
RUN_ID = "scheduled__2013-03-01T00:00:00+00:00"
TRAIN_RUN_ID = "manual__2013-03-01T00:00:00+00:00"
TRAIN_PARAMS = {"n_estimators": 400, "max_depth": 6, "learning_rate": 0.08, "device": "cuda"}


@dataclass
class Step:
    run: str         # "daily" or "training"
    task_id: str
    operator: str
    spec: dict = field(default_factory=dict)
    cost: float = 0.0
    cost_note: str = ""


def load_pricing(path: Path = PRICING_FILE) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    for key in ("as_of", "note", "prices", "estimates"):
        if key not in data:
            raise ValueError(f"{path} has no {key!r}: it needs as_of, note, prices and estimates.")
    return data


def spark_jobs(lake: str, landing: str) -> list[tuple[str, str, str, list[str]]]:
    """(run, task_id, job, args) of every Spark job, with the arguments ``include.jobs.job_args`` gives."""
    day, window = RunRef.of(DAY, RUN_ID), RunRef.of(WINDOW, TRAIN_RUN_ID)
    daily = {"score_flights": {"model_dir": "<champion bundle>", "model_name": "flights_delay_xgboost",
                               "model_version": "<champion>"}}
    out = [("daily", t, JOBS[t], job_args(t, lake=lake, landing=landing, ref=day, **daily.get(t, {})))
           for t in ("ingest_bronze", "validate_bronze", "build_features", "validate_gold", "score_flights")]
    out.append(("training", "export_training_set", JOBS["export_training_set"],
                job_args("export_training_set", lake=lake, landing=landing, ref=window, validation_days=7,
                         holdout_days=7)))
    return out


def _name(run: str, task_id: str, interval: Interval) -> str:
    dag = "flights_daily" if run == "daily" else "flights_training"
    return f"{dag}.{task_id}.{interval.key}.try1"


# --- costs -------------------------------------------------------------------------------------


def emr_serverless_cost(prices: dict, est: dict) -> float:
    p = prices["emr_serverless"]
    hours = max(est["minutes"], p["min_billed_minutes"]) / 60
    return est["vcpu"] * hours * p["vcpu_hour"] + est["memory_gb"] * hours * p["gb_hour"]


def sagemaker_cost(prices: dict, instance_type: str, count: int, minutes: float, spot: bool) -> float:
    try:
        hourly = prices["sagemaker_training"][instance_type]
    except KeyError:
        raise ValueError(f"include/pricing.json has no SageMaker price for {instance_type}; add it.") from None
    cost = hourly * count * minutes / 60
    return cost * (1 - prices["sagemaker_spot_savings"]) if spot else cost


def redshift_cost(prices: dict, seconds: float) -> float:
    p = prices["redshift_serverless"]
    return p["base_rpu"] * p["rpu_hour"] * max(seconds, p["min_billed_seconds"]) / 3600


def emr_ec2_cost(prices: dict, aws, minutes: float) -> float:
    def hourly(t):
        try:
            return prices["emr_ec2"][t]["ec2_hour"] + prices["emr_ec2"][t]["emr_hour"]
        except KeyError:
            raise ValueError(f"include/pricing.json has no EMR on EC2 price for {t}; add it.") from None
    per_hour = hourly(aws.emr_primary_instance_type) + aws.emr_core_instance_count * hourly(aws.emr_core_instance_type)
    return per_hour * minutes / 60


# --- plans -------------------------------------------------------------------------------------


def aws_plan(aws, pricing: dict) -> list[Step]:
    from include.targets.aws import emr, redshift, sagemaker

    prices, est = pricing["prices"], pricing["estimates"]
    code = {"prefix": f"{aws.artifacts_root}/code/<sha256>", "zip": f"{aws.artifacts_root}/code/<sha256>/flights.zip"}
    steps: list[Step] = []
    jobs = spark_jobs(aws.lake_root, aws.landing_root)
    if aws.spark_mode == "serverless":
        for run, task_id, job, args in jobs:
            interval = DAY if run == "daily" else WINDOW
            spec = emr.serverless_job(aws, task_id=task_id, job=job, args=args, code=code, interval_key=interval.key)
            kw = spec.kwargs
            steps.append(Step(run, task_id, spec.class_name, {
                "name": _name(run, task_id, interval), "application_id": kw["application_id"],
                "release": aws.emr_release, "job_driver": kw["job_driver"],
                "executionTimeoutMinutes": kw["config"]["executionTimeoutMinutes"]},
                emr_serverless_cost(prices, est[task_id]),
                f"{est[task_id]['vcpu']} vCPU, {est[task_id]['memory_gb']} GB for {est[task_id]['minutes']} min"))
    else:
        for run in ("daily", "training"):
            interval = DAY if run == "daily" else WINDOW
            run_jobs = [{"task_id": t, "job": j, "args": a} for r, t, j, a in jobs if r == run]
            specs = emr.ec2_jobs(aws, jobs=run_jobs, code=code, interval_key=interval.key)
            minutes = sum(est[j["task_id"]]["minutes"] for j in run_jobs) + est["emr_ec2_cluster_overhead_minutes"]
            for s in specs:
                is_create = s.operator == emr.CLUSTER_OPERATOR
                if is_create:
                    spec = {**s.kwargs["job_flow_overrides"], "Name": f"flights_{run}.{interval.key}.<run digest>"}
                elif s.operator == emr.STEP_OPERATOR:
                    spec = {**s.kwargs["step"], "Name": _name(run, s.kwargs["task_id"], interval)}
                else:
                    spec = {k: v for k, v in s.kwargs.items() if k != "task_id"}
                steps.append(Step(run, s.kwargs["task_id"], s.class_name, spec,
                                  emr_ec2_cost(prices, aws, minutes) if is_create else 0.0,
                                  f"cluster up {minutes} min" if is_create else "billed with the cluster"))
    for table, task_id in (("analytics.flight_outcomes", "load_warehouse"),
                           ("analytics.flight_delay_predictions", "load_warehouse")):
        dataset = "flight_outcomes" if table.endswith("outcomes") else "predictions"
        spec = redshift.load_job(aws, task_id=task_id, table=table, s3_prefix=export_uri(aws.lake_root, dataset, DAY.key)
                                 + "/", start=DAY.start, end=DAY.end)
        seconds = est["load_warehouse"]["seconds_per_table"]
        steps.append(Step("daily", f"{task_id} ({table})", spec.class_name,
                          {"sql": spec.kwargs["sql"], **aws.warehouse_kwargs}, redshift_cost(prices, seconds),
                          f"{prices['redshift_serverless']['base_rpu']} RPU for {seconds} s (min 60 s)"))
    export_args = next(a for _, t, _, a in jobs if t == "export_training_set")
    dataset = export_args[export_args.index("--output") + 1]  # where export_training_set writes
    spec = sagemaker.training_job(aws, task_id="train_models", interval_key=WINDOW.key, dataset_uri=dataset,
                                  sourcedir_uri=f"{aws.artifacts_root}/code/<sha256>/sourcedir.tar.gz",
                                  params=TRAIN_PARAMS)
    cfg = spec.kwargs["config"]
    minutes = est["train_models"]["minutes"]
    steps.append(Step("training", "train_models", spec.class_name, {
        k: cfg[k] for k in ("AlgorithmSpecification", "ResourceConfig", "StoppingCondition", "InputDataConfig",
                            "OutputDataConfig", "HyperParameters", "EnableManagedSpotTraining")
        if k in cfg} | ({"CheckpointConfig": cfg["CheckpointConfig"]} if "CheckpointConfig" in cfg else {}),
        sagemaker_cost(prices, aws.training_instance_type, aws.training_instance_count, minutes, aws.training_spot),
        f"{aws.training_instance_count} x {aws.training_instance_type} for {minutes} min"
        + (" (managed spot)" if aws.training_spot else "")))
    for task_id, what in (("register_model", "create_model_package (PendingManualApproval)"),
                          ("promote_champion", "update_model_package -> Approved when it beats the champion")):
        steps.append(Step("training", task_id, "SageMakerModelRegistry",
                          {"model_package_group": aws.model_package_group, "call": what}, 0.0, "API calls"))
    return steps


def local_plan(cfg) -> list[Step]:
    from include.config import ConfigError
    from include.targets.local import LocalSparkRunner

    runner = LocalSparkRunner(cfg)
    steps = []
    for run, task_id, job, args in spark_jobs(str(cfg.lake_root), str(cfg.landing_root)):
        name = _name(run, task_id, DAY if run == "daily" else WINDOW)
        try:
            command = runner.command(job, args, name=name)
        except ConfigError as exc:  # no Delta jars yet: show the command with the fix
            command = ["spark-submit", "--name", name, "--jars", f"<{exc}>", f"spark_jobs/{job}.py", *args]
        steps.append(Step(run, task_id, "spark-submit", {"command": command}))
    warehouse = f"DuckDB {cfg.duckdb_path}" if cfg.warehouse == "duckdb" else f"PostgreSQL ({cfg.warehouse_conn_id})"
    steps.append(Step("daily", "load_warehouse", "Warehouse.load_interval", {"warehouse": warehouse}))
    steps.append(Step("training", "train_models", "LocalTrainer",
                      {"entry": "include.training.train.train_and_evaluate", "params": TRAIN_PARAMS}))
    for task_id in ("register_model", "promote_champion"):
        steps.append(Step("training", task_id, "MlflowRegistry", {"tracking_uri": cfg.mlflow_tracking_uri}))
    return steps


def render(steps: list[Step], header: str, pricing: dict | None) -> str:
    lines = [header]
    if pricing:
        lines.append(f"Prices as of {pricing['as_of']} ({pricing['currency']}, {pricing['region']}): {pricing['note']}")
    for run in ("daily", "training"):
        title = {"daily": f"flights_daily, one day ({DAY})", "training": f"flights_training, window {WINDOW}"}[run]
        lines.append(f"\n== {title} ==")
        total = 0.0
        for s in (s for s in steps if s.run == run):
            total += s.cost
            lines.append(f"- {s.task_id}: {s.operator}   cost ${s.cost:.4f}" + (f" ({s.cost_note})" if s.cost_note else ""))
            lines.extend("    " + line for line in json.dumps(s.spec, indent=2, default=str).splitlines())
        lines.append(f"Estimated cost per {run} run: ${total:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=("aws", "local"), required=True)
    p.add_argument("--pricing", type=Path, default=PRICING_FILE)
    a = p.parse_args(argv)
    if a.target == "local":
        from include.config import load_settings

        print(render(local_plan(load_settings()), "Target local: everything on this machine, cost 0.", None))
        return 0
    import os

    from include.targets.aws.settings import AwsSettings, load_aws_settings

    if os.environ.get("FLIGHTS_AWS_REGION"):
        aws, source = load_aws_settings(), "settings from FLIGHTS_AWS_* variables"
    else:
        mode = os.environ.get("FLIGHTS_AWS_SPARK_MODE", "").strip().lower() or "serverless"
        aws, source = AwsSettings.example(spark_mode=mode), "placeholder settings (FLIGHTS_AWS_REGION not set)"
    pricing = load_pricing(a.pricing)
    print(render(aws_plan(aws, pricing), f"Target aws, Spark on EMR {aws.spark_mode} ({aws.emr_release}); {source}.",
                 pricing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
