"""The Spark job behind each DAG task, and its command-line arguments.

``job_args`` is the one place that builds a job's arguments. The local target calls it
with the run's concrete interval and run id; the AWS target calls it with Jinja
templates that render them at run time from the ``resolve_interval`` /
``resolve_window`` XCom; the explain plan calls it with a sample day. So the arguments
a job gets cannot drift between targets.

Imports nothing heavy: DAG files reach it at parse time through the targets' step
factories.
"""

from __future__ import annotations

from dataclasses import dataclass

from include.lake import export_uri, join, quality_result_uri

# Spark tasks of the DAGs: task id -> spark_jobs/<job>.py
JOBS = {
    "ingest_bronze": "bronze_landing",
    "build_features": "gold_flight_features",
    "score_flights": "predictions_flight_delay_risk",
    "export_training_set": "gold_training_set",
    "maintain_lake": "lake_maintenance",
}

# Quality gates: gate name -> {suite: lake table}. Each gate runs inside the job that wrote its tables,
# while that job's Spark session is up (``spark_jobs.quality_gate.run_gate``), and writes its JSON summary
# for the Python task that enforces it; no gate costs a job start of its own.
GATES = {
    "bronze": {"bronze/flights": "bronze.flights", "bronze/weather": "bronze.weather"},
    "gold": {"gold/flight_features": "gold.flight_features"},
}
# the job's task id -> the gate it computes (the predictions gate has its own checks in the scoring job)
GATE_TASKS = {"ingest_bronze": "bronze", "build_features": "gold", "score_flights": "predictions"}
GATES_OF_JOBS = ("ingest_bronze", "build_features")  # the jobs that run a suite gate after their writes
DEFAULT_RELEASE_REASON = "released by the release_quarantined param"


def safe_run_key(run_id: str) -> str:
    """The run id as a path segment (the same rule ``include.lake.quality_result_uri`` applies)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


@dataclass(frozen=True)
class RunRef:
    """The interval and run a job works on: concrete values, or Jinja templates rendering them."""

    start: str
    end: str
    key: str  # the interval's path-safe key, 20130101_20130107
    run_id: str
    run_key: str  # the run id as a path segment

    @classmethod
    def of(cls, interval, run_id: str) -> "RunRef":
        return cls(str(interval.start), str(interval.end), interval.key, run_id, safe_run_key(run_id))

    @classmethod
    def template(cls, interval_task: str) -> "RunRef":
        """Values rendered at run time from the XCom of ``interval_task`` (``include.pipeline.resolve``)."""
        x = f"ti.xcom_pull(task_ids='{interval_task}')"
        return cls("{{ %s['start'] }}" % x, "{{ %s['end'] }}" % x, "{{ %s['key'] }}" % x, "{{ run_id }}",
                   "{{ %s['run_key'] }}" % x)


def result_uri(lake: str, gate: str, ref: RunRef) -> str:
    """Where a gate's JSON summary is written (``include.lake.quality_result_uri`` for concrete runs)."""
    if ref.run_id.startswith("{{"):
        return join(lake, "_quality", gate.replace("/", "."), ref.key, f"{ref.run_key}.json")
    return quality_result_uri(lake, gate, ref.key, ref.run_id)


def training_set_uri(lake: str, ref: RunRef) -> str:
    """Where ``export_training_set`` writes the window's training set (``data/`` + ``manifest.json``)."""
    return join(export_uri(lake, "training", ref.key), ref.run_key)


def job_args(task_id: str, *, lake: str, landing: str, ref: RunRef, release=False, released_by: str = "",
             release_reason: str = "", accept_dimension_change: str = "", pii_columns: str = "",
             pii_key_secret: str = "", model_dir: str = "", model_name: str = "", model_version: str = "",
             validation_days="7", holdout_days="7", retain_hours="168", quarantine_retention_days="365",
             gate: bool = True) -> list[str]:
    """The CLI arguments of the Spark job of ``task_id``.

    Args:
        ref: the interval and run (``RunRef.of`` or ``RunRef.template``).
        release: ingest_bronze: True/False, or a template rendering ``True``/``False``.
        accept_dimension_change: ingest_bronze: dimensions whose snapshot may shrink (the run's param).
        pii_columns, pii_key_secret: ingest_bronze: more personal columns (``FLIGHTS_PII_COLUMNS``), and the
            secret a cloud job reads the HMAC key from (a name, never the key).
        model_dir, model_name, model_version: score_flights: the champion's bundle folder and identity.
        validation_days, holdout_days: export_training_set: the time split.
        retain_hours, quarantine_retention_days: maintain_lake: the retention policy.
        gate: ingest_bronze, build_features: run the job's quality gate after its writes (``--check`` and
            ``--result``), as the DAGs do; False for a run that compares tables only.
    """
    if task_id not in JOBS:
        raise KeyError(f"{task_id} runs no Spark job; Spark tasks: {', '.join(JOBS)}")
    args = ["--lake", lake, "--start", ref.start, "--end", ref.end, "--run-id", ref.run_id]
    if task_id == "ingest_bronze":
        args += ["--landing", landing]
        if isinstance(release, str):  # a template: the flag carries the rendered value
            args += [f"--release-held={release}", "--released-by", released_by, "--release-reason", release_reason]
        elif release:
            args += ["--release-held", "--released-by", released_by, "--release-reason",
                     release_reason or DEFAULT_RELEASE_REASON]
        args += [f"--accept-dimension-change={accept_dimension_change}"]  # one argument, even when empty
        if pii_columns:
            args += [f"--pii-columns={pii_columns}"]
        if pii_key_secret:
            args += ["--pii-key-secret", pii_key_secret]
    if gate and task_id in GATES_OF_JOBS:
        name = GATE_TASKS[task_id]
        args += ["--result", result_uri(lake, name, ref)]
        for suite, table in GATES[name].items():
            args += ["--check", f"{suite}={table}"]
    if task_id == "score_flights":
        args += ["--model-dir", model_dir, "--model-name", model_name, "--model-version", model_version,
                 "--result", result_uri(lake, "predictions", ref)]
    elif task_id == "export_training_set":
        args += ["--output", training_set_uri(lake, ref), "--validation-days", str(validation_days),
                 "--holdout-days", str(holdout_days)]
    elif task_id == "maintain_lake":
        args += ["--retain-hours", str(retain_hours), "--quarantine-retention-days", str(quarantine_retention_days)]
    return args
