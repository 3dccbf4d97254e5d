"""Explain plan: every step of one daily run and one training run, as it would run, with its cost.

    python -m include.plan --target aws     # EMR, SageMaker, Redshift: rendered requests, estimated cost per run
    python -m include.plan --target gcp     # Dataproc, Vertex AI, BigQuery: rendered requests, estimated cost per run
    python -m include.plan --target azure   # HDInsight (Livy) or Synapse, Azure ML: rendered requests, cost per run
    python -m include.plan --target local   # spark-submit command lines, warehouse, registry (cost 0)

Nothing is submitted and no cloud is called. The plan walks the steps the DAGs build, in their
order, and asks the target's ``StepBackend`` (``include.targets.base``) for each one, exactly as
the step factory (``include.steps``) does, but with concrete values instead of Jinja templates:
the sample day 2013-03-01 for ``flights_daily``, the window 2013-01-01..2013-02-28 for
``flights_training``, the job arguments of ``include.jobs.job_args`` with ``RunRef.of`` and the
values the DAGs' parameters render to by default. A step the backend runs as a Python task
(``None``) is shown as what that task does (a BigQuery load job and MERGE, a warehouse load,
a local spark-submit).

A cloud plan uses the target's settings (``FLIGHTS_AWS_*``, ``FLIGHTS_GCP_*``, ``FLIGHTS_AZURE_*``)
when they are set, and otherwise placeholder settings (``AwsSettings.example()`` and the like);
the first line says which. Prices and durations come from ``include/pricing.json``, one dated
table per cloud (illustrative list prices with an ``as_of`` date and a region: check them
before relying on the totals).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from include.intervals import Interval
from include.jobs import DEFAULT_RELEASE_REASON, JOBS, RunRef, job_args, result_uri, training_set_uri
from include.lake import export_uri

PRICING_FILE = Path(__file__).with_name("pricing.json")
PRICED_TARGETS = ("aws", "gcp", "azure")
DAY = Interval(date(2013, 3, 1), date(2013, 3, 1))
WINDOW = Interval(date(2013, 1, 1), date(2013, 2, 28))
RUN_ID = "scheduled__2013-03-01T00:00:00+00:00"
TRAIN_RUN_ID = "manual__2013-03-01T00:00:00+00:00"
TRAIN_PARAMS = {"n_estimators": 400, "max_depth": 6, "learning_rate": 0.08, "device": "auto"}  # the DAG defaults
DAGS = {"daily": "flights_daily", "training": "flights_training"}
# The Spark steps of each DAG, in the order the DAG files ask the step factory for them.
SPARK_STEPS = {"daily": ("ingest_bronze", "build_features", "score_flights"),
               "training": ("export_training_set",)}
TRAIN_TASK = "train_models"
REGISTRY_TASKS = (("register_model", "a new version, its metrics and report"),
                  ("promote_champion", "champion moved when the new version beats it"))
# score_flights reads the champion that find_champion publishes at run time.
CHAMPION = {"model_dir": "<champion bundle>", "model_name": "flights_delay_xgboost", "model_version": "<champion>"}
# What the DAGs' parameters render to by default (flights_daily: release_quarantined, release_reason;
# flights_training: validation_days, holdout_days).
DEFAULT_PARAMS = {"release_quarantined": False, "release_reason": None, "accept_dimension_change": None,
                  "validation_days": 7, "holdout_days": 7}


@dataclass
class Step:
    run: str         # "daily" or "training"
    task_id: str
    operator: str
    spec: dict = field(default_factory=dict)
    cost: float = 0.0
    cost_note: str = ""


@dataclass(frozen=True)
class Call:
    """One step of a run as the step factory asks the target's backend for it, with concrete values.

    ``kind``: ``spark``, ``cluster_create``, ``cluster_delete``, ``load`` or ``train``. ``spec`` is the
    backend's ``OperatorSpec``, or None where the step runs as a Python task.
    """

    run: str
    kind: str
    task_id: str
    spec: Any
    ref: RunRef
    inputs: dict

    @property
    def dag_id(self) -> str:
        return DAGS[self.run]


def load_pricing(target: str, path: Path = PRICING_FILE) -> dict:
    """The price table of ``target`` (``aws`` or ``gcp``) in ``path``, checked for what the plan needs."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if target not in data:
        raise ValueError(f"{path} has no price table for {target!r} (it has {', '.join(sorted(data)) or 'none'}); "
                         f"add a {target!r} section with as_of, currency, region, note, prices and estimates.")
    table = data[target]
    for key in ("as_of", "currency", "region", "note", "prices", "estimates"):
        if key not in table:
            raise ValueError(f"{path}: the {target!r} table has no {key!r}: it needs as_of, currency, region, note, "
                             "prices and estimates.")
    return table


# --- the steps of both DAGs, asked of the backend ------------------------------------------------


def sample_ref(run: str) -> RunRef:
    return RunRef.of(DAY, RUN_ID) if run == "daily" else RunRef.of(WINDOW, TRAIN_RUN_ID)


def sample_job(task_id: str, lake: str, landing: str, ref: RunRef,
               pii_key_secret: str = "") -> tuple[list[str], str | None]:
    """(args, output) of a Spark step as the step factory passes them, rendered for ``ref`` and default params."""
    dag = DAGS["training" if task_id == "export_training_set" else "daily"]
    if task_id == "ingest_bronze":
        from include.config import settings

        return job_args(task_id, lake=lake, landing=landing, ref=ref,
                        release=str(DEFAULT_PARAMS["release_quarantined"]), released_by=f"{dag} run {ref.run_id}",
                        release_reason=DEFAULT_PARAMS["release_reason"] or DEFAULT_RELEASE_REASON,
                        accept_dimension_change=DEFAULT_PARAMS["accept_dimension_change"] or "",
                        pii_columns=settings().pii_columns,
                        pii_key_secret=pii_key_secret), result_uri(lake, "bronze", ref)
    if task_id == "build_features":
        return job_args(task_id, lake=lake, landing=landing, ref=ref), result_uri(lake, "gold", ref)
    if task_id == "score_flights":
        return job_args(task_id, lake=lake, landing="", ref=ref, **CHAMPION), result_uri(lake, "predictions", ref)
    if task_id == "export_training_set":
        return job_args(task_id, lake=lake, landing=landing, ref=ref,
                        validation_days=str(DEFAULT_PARAMS["validation_days"]),
                        holdout_days=str(DEFAULT_PARAMS["holdout_days"])), training_set_uri(lake, ref)
    return job_args(task_id, lake=lake, landing=landing, ref=ref), None


def walk(backend) -> list[Call]:
    """Every step of one daily and one training run that the backend decides, in DAG order.

    Mirrors ``include.steps.Steps``: the Spark steps (between the run's cluster setup and teardown
    when the backend has a per-run cluster), the warehouse loads of ``include.steps.LOADS``, and
    the training job.
    """
    from include.steps import HYPERPARAMETERS, LOADS

    if set(TRAIN_PARAMS) != set(HYPERPARAMETERS):
        raise ValueError(f"TRAIN_PARAMS in {__name__} has {sorted(TRAIN_PARAMS)}; the DAG passes "
                         f"{sorted(HYPERPARAMETERS)}: give it the same hyperparameters.")
    lake, landing = backend.lake_root, backend.landing_root
    calls: list[Call] = []
    for run, tasks in SPARK_STEPS.items():
        ref = sample_ref(run)
        jobs = []
        for task_id in tasks:
            args, output = sample_job(task_id, lake, landing, ref, backend.pii_key_secret)
            spec = backend.spark_job(task_id=task_id, job=JOBS[task_id], args=args, output=output,
                                     interval_key=ref.key)
            jobs.append(Call(run, "spark", task_id, spec, ref, {"job": JOBS[task_id], "args": args, "output": output}))
        pair = backend.cluster(ref.key) if any(c.spec is not None for c in jobs) else None
        if pair is not None:
            create, delete = pair
            jobs = [Call(run, "cluster_create", create.kwargs["task_id"], create, ref, {}), *jobs,
                    Call(run, "cluster_delete", delete.kwargs["task_id"], delete, ref, {})]
        calls.extend(jobs)
        if run == "daily":
            for load_id, table, dataset, _rule in LOADS:
                source = export_uri(lake, dataset, ref.key)
                spec = backend.load_job(task_id=load_id, table=table, source=source, start=ref.start, end=ref.end)
                calls.append(Call(run, "load", load_id, spec, ref, {"table": table, "source": source}))
        else:
            dataset = training_set_uri(lake, ref)
            spec = backend.training_job(task_id=TRAIN_TASK, dataset_uri=dataset, interval_key=ref.key,
                                        params=dict(TRAIN_PARAMS))
            calls.append(Call(run, "train", TRAIN_TASK, spec, ref, {"dataset_uri": dataset, "params": TRAIN_PARAMS}))
    return calls


def _name(call: Call) -> str:
    """The project's job name of the call's first try (``include.targets.cloud.naming.job_name``)."""
    from include.targets.cloud.naming import job_name

    return job_name(call.dag_id, call.task_id, call.ref.key, 1)


def _estimate(est: dict, task_id: str, target: str) -> dict:
    try:
        return est[task_id]
    except KeyError:
        raise ValueError(f"include/pricing.json has no {target} estimate for {task_id}; add one under "
                         f"{target}.estimates.") from None


def _cluster_minutes(calls: list[Call], call: Call, est: dict, overhead_key: str, target: str) -> float:
    """How long the run's cluster is up: its Spark jobs one after another, plus start and stop."""
    jobs = [c for c in calls if c.run == call.run and c.kind == "spark"]
    return sum(_estimate(est, c.task_id, target)["minutes"] for c in jobs) + est[overhead_key]


def _python_load(call: Call, warehouse: str) -> Step:
    return Step(call.run, call.task_id, "Warehouse.load_interval",
                {"warehouse": warehouse, "table": call.inputs["table"], "source": call.inputs["source"],
                 "start": call.ref.start, "end": call.ref.end}, 0.0, "Python task in the worker")


# --- AWS ---------------------------------------------------------------------------------------


def emr_serverless_cost(prices: dict, est: dict) -> float:
    p = prices["emr_serverless"]
    hours = max(est["minutes"], p["min_billed_minutes"]) / 60
    return est["vcpu"] * hours * p["vcpu_hour"] + est["memory_gb"] * hours * p["gb_hour"]


def sagemaker_cost(prices: dict, instance_type: str, count: int, minutes: float, spot: bool) -> float:
    try:
        hourly = prices["sagemaker_training"][instance_type]
    except KeyError:
        raise ValueError(f"include/pricing.json has no SageMaker price for {instance_type}; add it under "
                         "aws.prices.sagemaker_training.") from None
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
            raise ValueError(f"include/pricing.json has no EMR on EC2 price for {t}; add it under "
                             "aws.prices.emr_ec2.") from None
    per_hour = hourly(aws.emr_primary_instance_type) + aws.emr_core_instance_count * hourly(aws.emr_core_instance_type)
    return per_hour * minutes / 60


def aws_plan(aws, pricing: dict, *, backend=None, code: dict | None = None, warehouse: str = "redshift") -> list[Step]:
    """The aws plan: ``backend`` (the target's ``AwsSteps``), or one built from ``aws``, ``code`` and ``warehouse``."""
    if backend is None:
        from include.targets.aws import code_uris
        from include.targets.aws.steps import AwsSteps

        backend = AwsSteps(aws, code or code_uris(aws.artifacts_root), warehouse)
    aws = backend.aws
    prices, est = pricing["prices"], pricing["estimates"]
    calls = walk(backend)
    steps: list[Step] = []
    for call in calls:
        spec = call.spec
        if call.kind == "spark" and aws.spark_mode == "serverless":
            kw, e = spec.kwargs, _estimate(est, call.task_id, "aws")
            steps.append(Step(call.run, call.task_id, spec.class_name, {
                "name": _name(call), "application_id": kw["application_id"], "release": aws.emr_release,
                "job_driver": kw["job_driver"], "executionTimeoutMinutes": kw["config"]["executionTimeoutMinutes"]},
                emr_serverless_cost(prices, e), f"{e['vcpu']} vCPU, {e['memory_gb']} GB for {e['minutes']} min"))
        elif call.kind == "spark":
            steps.append(Step(call.run, call.task_id, spec.class_name, {**spec.kwargs["step"], "Name": _name(call)},
                              0.0, "billed with the cluster"))
        elif call.kind == "cluster_create":
            minutes = _cluster_minutes(calls, call, est, "emr_ec2_cluster_overhead_minutes", "aws")
            spec_out = {**spec.kwargs["job_flow_overrides"], "Name": f"{call.dag_id}.{call.ref.key}.<run digest>"}
            steps.append(Step(call.run, call.task_id, spec.class_name, spec_out, emr_ec2_cost(prices, aws, minutes),
                              f"cluster up {minutes} min"))
        elif call.kind == "cluster_delete":
            steps.append(Step(call.run, call.task_id, spec.class_name,
                              {k: v for k, v in spec.kwargs.items() if k != "task_id"}, 0.0, "billed with the cluster"))
        elif call.kind == "load" and spec is None:
            steps.append(_python_load(call, backend.warehouse))
        elif call.kind == "load":
            seconds = est["load_warehouse"]["seconds_per_table"]
            steps.append(Step(call.run, call.task_id, spec.class_name,
                              {"sql": spec.kwargs["sql"], **aws.warehouse_kwargs}, redshift_cost(prices, seconds),
                              f"{prices['redshift_serverless']['base_rpu']} RPU for {seconds} s (min 60 s)"))
        elif call.kind == "train":
            cfg = spec.kwargs["config"]
            minutes = _estimate(est, call.task_id, "aws")["minutes"]
            keys = ("AlgorithmSpecification", "ResourceConfig", "StoppingCondition", "InputDataConfig",
                    "OutputDataConfig", "HyperParameters", "EnableManagedSpotTraining", "CheckpointConfig")
            steps.append(Step(call.run, call.task_id, spec.class_name, {k: cfg[k] for k in keys if k in cfg},
                              sagemaker_cost(prices, aws.training_instance_type, aws.training_instance_count,
                                             minutes, aws.training_spot),
                              f"{aws.training_instance_count} x {aws.training_instance_type} for {minutes} min"
                              + (" (managed spot)" if aws.training_spot else "")))
    for task_id, what in REGISTRY_TASKS:
        steps.append(Step("training", task_id, "SageMakerModelRegistry",
                          {"model_package_group": aws.model_package_group, "call": what}, 0.0, "API calls"))
    return steps


# --- GCP ---------------------------------------------------------------------------------------


def dataproc_serverless_cost(prices: dict, est: dict) -> float:
    """DCU-hours and shuffle storage of one batch (standard tier), billed for at least the minimum."""
    p = prices["dataproc_serverless"]
    hours = max(est["minutes"], p["min_billed_minutes"]) / 60
    return est["dcu"] * hours * p["dcu_hour"] + est["shuffle_gb"] * hours * p["shuffle_gb_month"] / prices[
        "hours_per_month"]


def dataproc_cluster_cost(prices: dict, gcp, minutes: float) -> float:
    """The run's cluster: Compute Engine instances, Dataproc's per-vCPU premium and boot disks, while it is up."""
    p, machines = prices["dataproc_compute_engine"], prices["compute_engine"]

    def hourly(machine: str) -> float:
        try:
            m = machines[machine]
        except KeyError:
            raise ValueError(f"include/pricing.json has no Compute Engine price for {machine}; add it under "
                             "gcp.prices.compute_engine (vcpu and hour).") from None
        disk = p["boot_disk_gb"] * p["boot_disk_gb_month"] / prices["hours_per_month"]
        return m["hour"] + m["vcpu"] * p["premium_vcpu_hour"] + disk

    per_hour = hourly(gcp.dataproc_master_machine_type) + gcp.dataproc_worker_count * hourly(
        gcp.dataproc_worker_machine_type)
    return per_hour * max(minutes, p["min_billed_minutes"]) / 60


def vertex_cost(prices: dict, gcp, minutes: float) -> float:
    """A Vertex AI custom job on one replica: the machine, its accelerators, spot when set."""
    p = prices["vertex_training"]
    try:
        hourly = p["machines"][gcp.training_machine_type]
        if gcp.training_accelerator_count > 0:
            hourly += gcp.training_accelerator_count * p["accelerators"][gcp.training_accelerator_type]
    except KeyError as exc:
        raise ValueError(f"include/pricing.json has no Vertex AI training price for {exc.args[0]}; add it under "
                         "gcp.prices.vertex_training (machines or accelerators).") from None
    cost = hourly * max(minutes, p["min_billed_minutes"]) / 60
    return cost * (1 - p["spot_savings"]) if gcp.training_spot else cost


def bigquery_load_cost(prices: dict, est: dict) -> tuple[float, float]:
    """(cost, billed MiB) of one table's load: the load job is free; the MERGE and the row count are queries.

    On-demand queries bill the bytes they read, at least the minimum per table referenced: the
    MERGE reads the staging table and the target, the count reads the target's interval.
    """
    p = prices["bigquery"]
    floor = p["min_billed_mb_per_table"]
    mib = sum(max(mb, floor) for mb in est["merge_scanned_mb"].values()) + max(est["count_scanned_mb"], floor)
    return mib / (1024 * 1024) * p["on_demand_tib"] + p["load_job"], mib


def _gcp_bigquery_load(call: Call, gcp, prices: dict, est: dict) -> Step:
    """What ``BigQueryWarehouse.load_interval`` submits for the call's table and interval."""
    from include.targets.gcp import bigquery as bq
    from include.warehouse import LOADS as COLUMNS

    wh = bq.BigQueryWarehouse(gcp)  # builds no client: names, labels and schemas only
    table, start, end = call.inputs["table"], date.fromisoformat(call.ref.start), date.fromisoformat(call.ref.end)
    suffix = "<random>"  # the Python task passes no job name, so the ids end in a random suffix
    stage_id = f"{wh.project}.{wh.dataset}.{bq.staging_name(table, start, end, suffix)}"
    by_name = {c.name: c for c in wh.schemas[table]}
    columns = [bq.Column(n, by_name[n].type) for n in COLUMNS[table]]
    try:
        load_config = bq.load_job_config(wh.labels).to_api_repr()["load"]
        sql, _ = bq.merge_statement(wh.table_id(table), stage_id, columns, start, end, wh.labels)
    except ImportError as exc:
        raise ValueError(f"The gcp plan renders the BigQuery requests with google-cloud-bigquery ({exc}); install "
                         "the project's requirements (make install).") from None
    cost, mib = bigquery_load_cost(prices, est["load_warehouse"])
    return Step(call.run, call.task_id, "BigQueryWarehouse.load_interval", {
        "location": wh.location,
        "load_job": {"job_id": bq.job_id("load", table, start, end, suffix), "source_uris": [bq.source_uris(
            call.inputs["source"])], "destination_table": stage_id, **load_config},
        "merge_job": {"job_id": bq.job_id("merge", table, start, end, suffix), "query": sql,
                      "query_parameters": {"start": call.ref.start, "end": call.ref.end}},
    }, cost, f"load job free; MERGE + row count bill {mib:g} MiB on demand (min "
             f"{prices['bigquery']['min_billed_mb_per_table']} MiB per table read)")


def gcp_plan(gcp, pricing: dict, *, backend=None, code: dict | None = None, warehouse: str = "bigquery") -> list[Step]:
    """The gcp plan: ``backend`` (the target's ``GcpSteps``), or one built from ``gcp`` and ``code``."""
    from include.targets.cloud.naming import short_job_name
    from include.targets.gcp import dataproc, vertex

    if backend is None:
        from include.targets.gcp import GcpSteps, code_uris

        backend = GcpSteps(gcp, code or code_uris(gcp.artifacts_root))
    gcp = backend.gcp
    prices, est = pricing["prices"], pricing["estimates"]
    calls = walk(backend)
    cluster = {run: dataproc.cluster_name(DAGS[run], sample_ref(run).key, sample_ref(run).run_id) for run in DAGS}
    steps: list[Step] = []
    for call in calls:
        spec = call.spec
        kw = spec.kwargs if spec is not None else {}
        job_id = short_job_name(call.dag_id, call.task_id, call.ref.key, call.ref.run_id, 1, lower=True)
        if call.kind == "spark" and spec.operator == dataproc.BATCH_OPERATOR:
            e = _estimate(est, call.task_id, "gcp")
            steps.append(Step(call.run, call.task_id, spec.class_name, {
                "parent": f"projects/{kw['project_id']}/locations/{kw['region']}", "batch_id": job_id,
                "batch": kw["batch"], "job_output": kw["job_output"]},
                dataproc_serverless_cost(prices, e),
                f"{e['dcu']} DCU and {e['shuffle_gb']} GB shuffle storage for {e['minutes']} min (standard tier)"))
        elif call.kind == "spark":
            job = {**kw["job"], "reference": {"project_id": kw["project_id"], "job_id": job_id},
                   "placement": {**kw["job"]["placement"], "cluster_name": cluster[call.run]}}
            steps.append(Step(call.run, call.task_id, spec.class_name,
                              {"project_id": kw["project_id"], "region": kw["region"], "job": job,
                               "job_output": kw["job_output"]}, 0.0, "billed with the cluster"))
        elif call.kind == "cluster_create":
            minutes = _cluster_minutes(calls, call, est, "dataproc_cluster_overhead_minutes", "gcp")
            n = 1 + gcp.dataproc_worker_count
            steps.append(Step(call.run, call.task_id, spec.class_name, {
                "project_id": kw["project_id"], "region": kw["region"], "cluster_name": cluster[call.run],
                "cluster_config": kw["cluster_config"], "labels": kw["labels"]},
                dataproc_cluster_cost(prices, gcp, minutes),
                f"{n} nodes ({gcp.dataproc_master_machine_type} + {gcp.dataproc_worker_count} x "
                f"{gcp.dataproc_worker_machine_type}) up {minutes} min"))
        elif call.kind == "cluster_delete":
            steps.append(Step(call.run, call.task_id, spec.class_name, {
                "project_id": kw["project_id"], "region": kw["region"], "cluster_name": cluster[call.run],
                "trigger_rule": kw["trigger_rule"]}, 0.0, "ends the cluster's billing"))
        elif call.kind == "load" and spec is None and warehouse == "bigquery":
            steps.append(_gcp_bigquery_load(call, gcp, prices, est))
        elif call.kind == "load" and spec is None:
            steps.append(_python_load(call, warehouse))
        elif call.kind == "train":
            display = short_job_name(call.dag_id, call.task_id, call.ref.key, call.ref.run_id, 1)
            labels = {vertex.LABEL_JOB: vertex.job_key(call.dag_id, call.task_id, call.ref.key, call.ref.run_id),
                      vertex.LABEL_TRY: "1", vertex.LABEL_DAG: vertex.label_value(call.dag_id),
                      vertex.LABEL_TASK: vertex.label_value(call.task_id)}
            body = vertex.with_identity(kw["custom_job"], display_name=display, output_root=kw["output_root"],
                                        labels=labels)
            minutes = _estimate(est, call.task_id, "gcp")["minutes"]
            machine = gcp.training_machine_type + (
                f" + {gcp.training_accelerator_count} x {gcp.training_accelerator_type}"
                if gcp.training_accelerator_count else "")
            steps.append(Step(call.run, call.task_id, spec.class_name, {
                "parent": f"projects/{kw['project_id']}/locations/{kw['region']}", "custom_job": body},
                vertex_cost(prices, gcp, minutes),
                f"{machine} for {minutes} min" + (" (spot)" if gcp.training_spot else "")))
        else:
            raise ValueError(f"The gcp plan cannot show {call.kind} step {call.task_id} ({spec and spec.operator}); "
                             f"teach include.plan.gcp_plan about it.")
    for task_id, what in REGISTRY_TASKS:
        steps.append(Step("training", task_id, "VertexModelRegistry",
                          {"project": gcp.project, "region": gcp.region, "model": gcp.model_display_name,
                           "call": what}, 0.0, "API calls"))
    return steps


# --- azure -------------------------------------------------------------------------------------


def hdinsight_share_cost(prices: dict, minutes: float) -> float:
    """The share of the long-lived HDInsight cluster's hours that ``minutes`` of a job occupy."""
    p = prices["hdinsight"]
    try:
        per_hour = sum(p["node_hour"][size] * count for size, count in p["cluster"].values())
    except KeyError as exc:
        raise ValueError(f"include/pricing.json has no HDInsight price for {exc}; add it under "
                         "azure.prices.hdinsight.node_hour.") from None
    return per_hour * minutes / 60


def synapse_cost(prices: dict, est: dict) -> float:
    p = prices["synapse_spark"]
    return p["vcore_hour"] * est["vcores"] * max(est["minutes"], p["min_billed_minutes"]) / 60


def azureml_cost(prices: dict, azure, minutes: float) -> float:
    p = prices["azureml_training"]
    try:
        hourly = p["vm_hour"][azure.training_vm_size]
    except KeyError:
        raise ValueError(f"include/pricing.json has no Azure ML price for {azure.training_vm_size}; add it under "
                         "azure.prices.azureml_training.vm_hour.") from None
    cost = hourly * azure.training_instance_count * max(minutes, p["min_billed_minutes"]) / 60
    return cost * (1 - p["low_priority_savings"]) if azure.training_low_priority else cost


def azure_plan(azure, pricing: dict, *, backend=None, code: dict | None = None,
               warehouse: str = "postgres") -> list[Step]:
    """The azure plan: ``backend`` (the target's ``AzureSteps``), or one built from ``azure`` and ``code``."""
    from include.targets.azure import azureml
    from include.targets.azure.settings import AzureSettings
    from include.targets.cloud.naming import short_job_name, training_job_name

    if backend is None:
        from include.targets.azure import AzureSteps, code_uris

        backend = AzureSteps(azure, code or code_uris(azure.artifacts_root))
    azure = backend.azure
    prices, est = pricing["prices"], pricing["estimates"]
    steps: list[Step] = []
    for call in walk(backend):
        spec = call.spec
        kw = spec.kwargs if spec is not None else {}
        name = short_job_name(call.dag_id, call.task_id, call.ref.key, call.ref.run_id, 1)
        if call.kind == "spark" and azure.spark_service == "synapse":
            e = _estimate(est, call.task_id, "azure")
            steps.append(Step(call.run, call.task_id, spec.class_name, {
                "workspace": azure.synapse_workspace, "spark_pool": kw["spark_pool"],
                "payload": {**kw["payload"], "name": name}, "job_output": kw["job_output"]},
                synapse_cost(prices, e), f"{e['vcores']} vCores for {e['minutes']} min"))
        elif call.kind == "spark":
            minutes = _estimate(est, call.task_id, "azure")["minutes"]
            body = {"name": name, "file": kw["file"], "args": kw["args"], "pyFiles": kw["py_files"],
                    "jars": kw["jars"], "conf": kw["conf"], "driverMemory": kw["driver_memory"],
                    "executorMemory": kw["executor_memory"], "executorCores": kw["executor_cores"],
                    "numExecutors": kw["num_executors"]}
            steps.append(Step(call.run, call.task_id, spec.class_name, {
                "POST": f"<{kw['livy_conn_id']}>/batches", "headers": kw["extra_headers"], "body": body,
                "job_output": kw["job_output"]},
                hdinsight_share_cost(prices, minutes), f"{minutes} min of the HDInsight cluster"))
        elif call.kind == "load":
            steps.append(_python_load(call, warehouse))
        elif call.kind == "train":
            minutes = _estimate(est, call.task_id, "azure")["minutes"]
            job_name = training_job_name(call.dag_id, call.task_id, call.ref.key, call.ref.run_id, 1)
            try:
                job = azureml.command_job(AzureSettings(**kw["settings"]), name=job_name,
                                          dataset_uri=kw["dataset_uri"], sourcedir_uri=kw["sourcedir_uri"],
                                          params=kw["hyperparameters"], requirements=kw["requirements"])
                request = azureml.job_request(job)
            except ImportError as exc:
                raise ValueError(f"The azure plan renders the Azure ML job with azure-ai-ml ({exc}); install the "
                                 "locked requirements (make install).") from None
            steps.append(Step(call.run, call.task_id, spec.class_name, {
                "PUT": f"{azure.workspace_scope}/jobs/{job_name}", "body": request},
                azureml_cost(prices, azure, minutes),
                f"{azure.training_instance_count} x {azure.training_vm_size} for {minutes} min"
                + (" (low priority)" if azure.training_low_priority else "")))
        else:
            raise ValueError(f"The azure plan cannot show {call.kind} step {call.task_id} ({spec and spec.operator}); "
                             f"teach include.plan.azure_plan about it.")
    for task_id, what in REGISTRY_TASKS:
        steps.append(Step("training", task_id, "AzureMLModelRegistry",
                          {"workspace": azure.ml_workspace, "model": azure.model_name, "call": what}, 0.0,
                          "API calls"))
    return steps


# --- local -------------------------------------------------------------------------------------


def local_plan(cfg) -> list[Step]:
    from include.config import ConfigError
    from include.targets.local import LocalSparkRunner, step_backend

    runner = LocalSparkRunner(cfg)
    warehouse = f"DuckDB {cfg.duckdb_path}" if cfg.warehouse == "duckdb" else f"PostgreSQL ({cfg.warehouse_conn_id})"
    steps = []
    for call in walk(step_backend(cfg)):
        if call.kind == "spark":
            name, job, args = _name(call), call.inputs["job"], call.inputs["args"]
            try:
                command = runner.command(job, args, name=name)
            except ConfigError as exc:  # no Delta jars yet: show the command with the fix
                command = ["spark-submit", "--name", name, "--jars", f"<{exc}>", f"spark_jobs/{job}.py", *args]
            steps.append(Step(call.run, call.task_id, "spark-submit", {"command": command}))
        elif call.kind == "load":
            steps.append(_python_load(call, warehouse))
        elif call.kind == "train":
            steps.append(Step(call.run, call.task_id, "LocalTrainer",
                              {"entry": "include.training.train.train_and_evaluate", "params": TRAIN_PARAMS}))
    for task_id, _ in REGISTRY_TASKS:
        steps.append(Step("training", task_id, "MlflowRegistry", {"tracking_uri": cfg.mlflow_tracking_uri}))
    return steps


# --- output ------------------------------------------------------------------------------------


def render(steps: list[Step], header: str, pricing: dict | None) -> str:
    lines = [header]
    if pricing:
        lines.append(f"Prices as of {pricing['as_of']} ({pricing['currency']}, {pricing['region']}): {pricing['note']}")
        for what, why in pricing.get("negligible", {}).items():
            lines.append(f"Not counted: {what}: {why}")
    for run in DAGS:
        title = {"daily": f"flights_daily, one day ({DAY})", "training": f"flights_training, window {WINDOW}"}[run]
        lines.append(f"\n== {title} ==")
        total = 0.0
        for s in (s for s in steps if s.run == run):
            total += s.cost
            note = f" ({s.cost_note})" if s.cost_note else ""
            lines.append(f"- {s.task_id}: {s.operator}   cost ${s.cost:.4f}{note}")
            lines.extend("    " + line for line in json.dumps(s.spec, indent=2, default=str).splitlines())
        lines.append(f"Estimated cost per {run} run: ${total:.4f}")
    return "\n".join(lines)


def target_settings(target: str):
    """``include.config`` settings as they are for ``target`` (its default warehouse unless FLIGHTS_WAREHOUSE)."""
    from include.config import load_settings

    saved = os.environ.get("FLIGHTS_TARGET")
    os.environ["FLIGHTS_TARGET"] = target
    try:
        return load_settings()
    finally:
        if saved is None:
            del os.environ["FLIGHTS_TARGET"]
        else:
            os.environ["FLIGHTS_TARGET"] = saved


def plan(target: str, pricing_file: Path = PRICING_FILE) -> str:
    """The rendered plan of ``target``: its settings when set, else placeholders (the header says which)."""
    import importlib

    from include.config import ConfigError

    cfg = target_settings(target)
    if target == "local":
        return render(local_plan(cfg), "Target local: everything on this machine, cost 0.", None)
    pricing = load_pricing(target, pricing_file)
    module = importlib.import_module(f"include.targets.{target}")
    if target == "aws":
        from include.targets.aws.settings import AwsSettings

        if os.environ.get("FLIGHTS_AWS_REGION"):
            backend, source = module.step_backend(cfg), "settings from FLIGHTS_AWS_* variables"
            aws = backend.aws
        else:
            mode = os.environ.get("FLIGHTS_AWS_SPARK_MODE", "").strip().lower() or "serverless"
            aws, backend = AwsSettings.example(spark_mode=mode), None
            source = "placeholder settings (FLIGHTS_AWS_REGION not set)"
        return render(aws_plan(aws, pricing, backend=backend, warehouse=cfg.warehouse),
                      f"Target aws, Spark on EMR {aws.spark_mode} ({aws.emr_release}), warehouse {cfg.warehouse}; "
                      f"{source}.", pricing)
    if target == "azure":
        from include.targets.azure.settings import AzureSettings

        if os.environ.get("FLIGHTS_AZURE_SUBSCRIPTION_ID"):
            backend, source = module.step_backend(cfg), "settings from FLIGHTS_AZURE_* variables"
            azure = backend.azure
        else:
            service = os.environ.get("FLIGHTS_AZURE_SPARK_SERVICE", "").strip().lower() or "hdinsight"
            if service not in ("hdinsight", "synapse"):
                raise ConfigError(f"FLIGHTS_AZURE_SPARK_SERVICE={service!r} is not supported; "
                                  "use hdinsight or synapse.")
            from include.targets.azure.settings import DEFAULT_SPARK_RUNTIME

            azure = AzureSettings.example(spark_service=service, spark_runtime=DEFAULT_SPARK_RUNTIME[service])
            backend, source = None, "placeholder settings (FLIGHTS_AZURE_SUBSCRIPTION_ID not set)"
        spark = (f"HDInsight through Livy ({azure.spark_runtime})" if azure.spark_service == "hdinsight"
                 else f"a Synapse Spark pool ({azure.spark_runtime})")
        return render(azure_plan(azure, pricing, backend=backend, warehouse=cfg.warehouse),
                      f"Target azure, Spark on {spark}, training on Azure ML, warehouse {cfg.warehouse}; {source}.",
                      pricing)
    from include.targets.gcp.settings import SPARK_MODES, GcpSettings

    if os.environ.get("FLIGHTS_GCP_PROJECT"):
        backend, source = module.step_backend(cfg), "settings from FLIGHTS_GCP_* variables"
        gcp = backend.gcp
    else:
        mode = os.environ.get("FLIGHTS_GCP_SPARK_MODE", "").strip().lower() or "serverless"
        if mode not in SPARK_MODES:
            raise ConfigError(f"FLIGHTS_GCP_SPARK_MODE={mode!r} is not supported; use {' or '.join(SPARK_MODES)}.")
        gcp, backend = GcpSettings.example(spark_mode=mode), None
        source = "placeholder settings (FLIGHTS_GCP_PROJECT not set)"
    spark = ("Dataproc Serverless" if gcp.spark_mode == "serverless" else "a Dataproc cluster per run") + (
        f" (runtime {gcp.dataproc_runtime})")
    return render(gcp_plan(gcp, pricing, backend=backend, warehouse=cfg.warehouse),
                  f"Target gcp, Spark on {spark}, training on Vertex AI, warehouse {cfg.warehouse}; {source}.",
                  pricing)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=("local", *PRICED_TARGETS), required=True)
    p.add_argument("--pricing", type=Path, default=PRICING_FILE, help="price tables (default include/pricing.json)")
    a = p.parse_args(argv)
    from include.config import ConfigError

    try:
        print(plan(a.target, a.pricing))
    except (ConfigError, ValueError) as exc:
        print(f"Cannot plan target {a.target}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
