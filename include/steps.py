"""The one step factory: the tasks that run on a target's compute, the same graph on every target.

DAG files never branch on the target. They ask ``get_steps()`` for each step and wire what it
returns with ``>>``. ``Steps`` builds the task graph itself, once for every target: task ids,
order, task groups, trigger rules and pools are the same on ``local``, ``aws``, ``gcp`` and
``azure`` (``tests/dags/test_same_graph.py`` asserts it). A target supplies only a
``StepBackend`` (``include.targets.base``), which answers, per step, with an ``OperatorSpec``
(a cloud operator that submits, reattaches to, cancels and checks a job) or ``None`` (a Python
task runs the step through the target's seams: spark-submit on ``local``, a warehouse load):

* ``spark``: ``<step>``, the Spark job. ``ingest_bronze`` and ``build_features`` run their quality
  gate after their commits, in the same Spark session, and write its JSON summary: a gate costs
  its validations, never a job start of its own (a minute and more on a cloud).
* ``gate``: ``enforce_<gate>_gate`` (Python, after the job that computed the gate: record the
  summary, pass or fail the run, alert with the Data Docs page).
* ``score``: group ``scoring``: ``find_champion`` (Python: publish the champion's bundle; skips the
  rest until a champion exists), ``score_flights`` (the job, with the predictions gate),
  ``enforce_predictions_gate``.
* ``load_warehouse``: group ``load_warehouse``: ``load_flight_outcomes`` (none_failed) and
  ``load_flight_delay_predictions`` (all_success).
* ``train``: ``train_models``, the training job.

Every Spark job runs in the ``spark`` pool. The arguments of every job are built once, by
``include.jobs.job_args``, as Jinja templates rendered from the ``resolve_interval`` /
``resolve_window`` XCom, for cloud operators and Python tasks alike, so they cannot drift
between targets. A backend with a per-run cluster (EMR on EC2, a Dataproc cluster) adds its
setup and teardown tasks around the Spark jobs (``StepBackend.cluster``); nothing else differs.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import TaskGroup, task

from include import pipeline
from include.config import Settings, settings
from include.dag_defaults import SPARK_POOL, SPARK_TIMEOUT, TRAINING_TIMEOUT
from include.jobs import (DEFAULT_RELEASE_REASON, GATE_TASKS, GATES_OF_JOBS, JOBS, RunRef, job_args, result_uri,
                          training_set_uri)
from include.lake import export_uri
from include.targets.base import StepBackend
from include.targets.cloud.spec import instantiate
from include.training.hyperparameters import HYPERPARAMETERS

# Warehouse loads: task id, table, export dataset, trigger rule. Outcomes load even when scoring
# was skipped (no champion yet); nothing loads after a failure.
LOADS = (("load_flight_outcomes", "analytics.flight_outcomes", "flight_outcomes", "none_failed"),
         ("load_flight_delay_predictions", "analytics.flight_delay_predictions", "predictions", "all_success"))


# --- the Python tasks (every target's Python steps, and the local target's jobs) ----------------


def _spark_job(interval: dict, job: str, args: list[str], output: str | None = None, **context) -> str | None:
    return pipeline.spark_job(context, pipeline.as_interval(interval), job, args, output)


def _enforce_gate(interval: dict, result: str, **context) -> dict:
    return pipeline.enforce_gate(context, pipeline.as_interval(interval), result)


def _find_champion(interval: dict) -> dict:
    return pipeline.find_champion(pipeline.as_interval(interval))


def _enforce_predictions_gate(interval: dict, champion: dict, result: str, **context) -> dict:
    return pipeline.enforce_predictions_gate(context, pipeline.as_interval(interval), champion, result)


def _load_table(interval: dict, table: str, source: str) -> int:
    return pipeline.load_table(pipeline.as_interval(interval), table, source)


def _train(dataset: str, hyperparameters: dict, **context) -> dict:
    # not "params": Airflow passes the DAG's params in the context under that name
    return pipeline.train(context, dataset, hyperparameters)


class Steps:
    """Builds the steps of both DAGs from a target's ``StepBackend``; see the module docstring."""

    def __init__(self, backend: StepBackend, cfg: Settings | None = None):
        self.backend, self.cfg = backend, cfg or settings()
        self.lake, self.landing = backend.lake_root, backend.landing_root
        self._cluster: tuple[Any, Any] | None = None

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _ref(interval) -> RunRef:
        return RunRef.template(interval.operator.task_id)

    def _around_cluster(self, op, ref: RunRef, interval) -> None:
        """Put a Spark job between the run's cluster setup and teardown, when the backend has them."""
        if self._cluster is None:
            pair = self.backend.cluster(ref.key)
            if pair is None:
                return
            create, delete = instantiate(pair[0]), instantiate(pair[1])
            interval >> create >> delete.as_teardown(setups=create)
            self._cluster = (create, delete)
        create, delete = self._cluster
        create >> op >> delete

    def _job(self, task_id: str, ref: RunRef, args: list[str], interval, output: str | None = None):
        """One Spark job: the backend's cloud operator, or a Python task running it through the target."""
        job = JOBS[task_id]
        spec = self.backend.spark_job(task_id=task_id, job=job, args=args, output=output, interval_key=ref.key)
        if spec is None:
            op = task(_spark_job, task_id=task_id, pool=SPARK_POOL, execution_timeout=SPARK_TIMEOUT)(
                interval, job=job, args=args, output=output).operator
        else:
            op = instantiate(spec, pool=SPARK_POOL)
            self._around_cluster(op, ref, interval)
        interval >> op
        return op

    # --- the steps -----------------------------------------------------------------------------
    def spark(self, task_id: str, interval):
        """A Spark step of ``include.jobs.JOBS``; returns what downstream tasks wire (the output for a dataset)."""
        ref = self._ref(interval)
        extra, output = {}, None
        if task_id in GATES_OF_JOBS:  # the job's XCom is its gate's summary, for enforce_<gate>_gate
            output = result_uri(self.lake, GATE_TASKS[task_id], ref)
        if task_id == "ingest_bronze":
            extra = {"release": "{{ params.release_quarantined }}", "released_by": "{{ dag.dag_id }} run {{ run_id }}",
                     "release_reason": "{{ params.release_reason or '%s' }}" % DEFAULT_RELEASE_REASON,
                     "accept_dimension_change": "{{ params.accept_dimension_change or '' }}",
                     "pii_columns": self.cfg.pii_columns, "pii_key_secret": self.backend.pii_key_secret}
        elif task_id == "export_training_set":
            extra = {"validation_days": "{{ params.validation_days }}", "holdout_days": "{{ params.holdout_days }}"}
            output = training_set_uri(self.lake, ref)
        elif task_id == "maintain_lake":
            extra = {"retain_hours": "{{ params.retain_hours }}",
                     "quarantine_retention_days": "{{ params.quarantine_retention_days }}"}
        op = self._job(task_id, ref, job_args(task_id, lake=self.lake, landing=self.landing, ref=ref, **extra),
                       interval, output)
        return op.output if output else op

    def gate(self, job, interval):
        """The Python task that records and enforces the gate ``job`` (a ``spark`` step's output) computed."""
        task_id = job.operator.task_id
        return task(_enforce_gate, task_id=f"enforce_{GATE_TASKS[task_id]}_gate")(interval, job).operator

    def score(self, task_id: str, interval):
        """The champion's bundle published, the scoring job (with the predictions gate), then enforcement."""
        ref = self._ref(interval)
        champion = "ti.xcom_pull(task_ids='find_champion')"
        args = job_args(task_id, lake=self.lake, landing="", ref=ref, model_dir="{{ %s['model_dir'] }}" % champion,
                        model_name="{{ %s['model_name'] }}" % champion,
                        model_version="{{ %s['model_version'] }}" % champion)
        with TaskGroup("scoring", prefix_group_id=False) as group:
            found = task(_find_champion, task_id="find_champion")(interval)
            job = self._job(task_id, ref, args, interval, output=result_uri(self.lake, "predictions", ref))
            found >> job
            task(_enforce_predictions_gate, task_id="enforce_predictions_gate")(interval, found, job.output)
        return group

    def load_warehouse(self, task_id: str, interval, scoring):
        """One task per warehouse table, each replacing exactly the interval's rows."""
        ref = self._ref(interval)
        with TaskGroup(task_id, prefix_group_id=False) as group:
            for load_id, table, dataset, rule in LOADS:
                source = export_uri(self.lake, dataset, ref.key)
                spec = self.backend.load_job(task_id=load_id, table=table, source=source, start=ref.start,
                                             end=ref.end)
                if spec is None:
                    op = task(_load_table, task_id=load_id, trigger_rule=rule)(interval, table=table,
                                                                               source=source).operator
                else:
                    op = instantiate(spec, trigger_rule=rule)
                interval >> op
        scoring >> group
        return group

    def train(self, task_id: str, dataset, window):
        """The training job (a managed GPU job in the clouds); returns what ``trainer.collect`` reads."""
        ref = self._ref(window)
        params = {k: "{{ params.%s }}" % k for k in HYPERPARAMETERS}
        spec = self.backend.training_job(task_id=task_id, dataset_uri=training_set_uri(self.lake, ref),
                                         interval_key=ref.key, params=params)
        if spec is None:
            return task(_train, task_id=task_id, execution_timeout=TRAINING_TIMEOUT)(dataset, params)
        op = instantiate(spec)
        dataset >> op
        return op.output


def get_steps(cfg: Settings | None = None) -> Steps:
    """The step factory of the target chosen by ``FLIGHTS_TARGET``, for DAG files at parse time.

    Reads settings only; no connection or cloud call.
    """
    from include.targets import get_step_backend

    cfg = cfg or settings()
    return Steps(get_step_backend(cfg), cfg)
