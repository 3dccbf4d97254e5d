"""The AWS target's step factory: the DAG tasks that run on EMR Serverless, SageMaker and Redshift.

Built at parse time from settings only (no AWS call). Each step is a deferrable operator
whose arguments are Jinja templates rendered from the ``resolve_interval`` /
``resolve_window`` XCom (``include.jobs.RunRef.template``), so the arguments are exactly the
ones the local target passes to spark-submit (``include.jobs.job_args``):

* ``spark``: one EMR Serverless job run, named ``<dag>.<task>.<interval>.try<n>``; a retry
  reattaches, a kill cancels, success is checked against the job's final state and the
  presence of its output. With ``FLIGHTS_AWS_SPARK_MODE=ec2`` the job is instead a step of
  the run's transient EMR cluster, with the same names and guarantees: the first Spark step
  of a DAG adds ``emr_create_cluster`` (setup) and ``emr_terminate_cluster`` (teardown), and
  every Spark step sits between them (``include.targets.aws.cluster``).
* ``gate``: the gate's EMR job writes its JSON summary to the lake, then a Python task
  (``enforce_<gate>_gate``) reads it, records it in ``ops.quality_gates`` and fails the run
  when the data broke its contract.
* ``score``: ``find_champion`` (Python) publishes the champion's bundle to S3, the EMR job
  scores and runs the predictions gate, ``enforce_predictions_gate`` enforces it. Without a
  champion the three are skipped, and only the outcomes are loaded.
* ``load_warehouse``: one deferrable Redshift Data API batch per table (delete and insert the
  interval in one transaction).
* ``train``: a deferrable SageMaker training job on a GPU instance.

Deferred waits need aiobotocore where the triggerer runs; ``FLIGHTS_AWS_DEFERRABLE=false``
waits inside the worker instead (every ``FLIGHTS_AWS_POLL_S`` seconds).
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta

from airflow.sdk import TaskGroup, task

from include import pipeline
from include.config import ConfigError
from include.dag_defaults import SPARK_POOL
from include.jobs import DEFAULT_RELEASE_REASON, GATE_TASKS, JOBS, RunRef, job_args, result_uri, training_set_uri
from include.lake import export_uri
from include.targets.aws import emr, redshift, sagemaker
from include.targets.aws.settings import AwsSettings

# Warehouse loads: task id, table, export dataset, trigger rule. Outcomes load even when scoring
# was skipped (no champion yet); nothing loads after a failure.
LOADS = (("load_flight_outcomes", "analytics.flight_outcomes", "flight_outcomes", "none_failed"),
         ("load_flight_delay_predictions", "analytics.flight_delay_predictions", "predictions", "all_success"))


def _enforce_gate(interval: dict, result: str, **context) -> dict:
    return pipeline.enforce_gate(context, pipeline.as_interval(interval), result)


def _find_champion(interval: dict) -> dict:
    return pipeline.find_champion(pipeline.as_interval(interval))


def _enforce_predictions_gate(interval: dict, champion: dict, result: str, **context) -> dict:
    return pipeline.enforce_predictions_gate(context, pipeline.as_interval(interval), champion, result)


class AwsSteps:
    def __init__(self, aws: AwsSettings, code: dict[str, str]):
        if aws.deferrable and importlib.util.find_spec("aiobotocore") is None:
            raise ConfigError("FLIGHTS_AWS_DEFERRABLE=true needs aiobotocore where the triggerer runs (the Amazon "
                              "provider's async hooks): install apache-airflow-providers-amazon[aiobotocore], or set "
                              "FLIGHTS_AWS_DEFERRABLE=false to wait for cloud jobs inside the worker.")
        self.aws, self.code = aws, code
        self.lake = aws.lake_root
        self._cluster = None  # (create, terminate) of this DAG's EMR cluster, in ec2 mode

    def _cluster_tasks(self, ref: RunRef, interval):
        """The run's cluster: created as a setup task on the first Spark step, torn down after the last."""
        if self._cluster is None:
            create = emr.instantiate(emr.create_cluster(self.aws, interval_key=ref.key))
            terminate = emr.instantiate(emr.terminate_cluster(self.aws))
            interval >> create >> terminate.as_teardown(setups=create)
            self._cluster = (create, terminate)
        return self._cluster

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _ref(interval) -> RunRef:
        return RunRef.template(interval.operator.task_id)

    def _emr(self, task_id: str, ref: RunRef, args: list[str], output: str | None = None, interval=None):
        minutes = self.aws.emr_job_timeout_minutes
        common = dict(task_id=task_id, job=JOBS[task_id], args=args, code=self.code, interval_key=ref.key,
                      job_output=output, require_code=True, pool=SPARK_POOL, deferrable=self.aws.deferrable,
                      waiter_delay=self.aws.poll_s,
                      execution_timeout=timedelta(minutes=minutes + 15))  # EMR stops the job first (its own timeout)
        if self.aws.spark_mode == "ec2":
            create, terminate = self._cluster_tasks(ref, interval)
            op = emr.instantiate(emr.cluster_step(self.aws, **common))
            create >> op >> terminate
            return op
        return emr.instantiate(emr.serverless_job(
            self.aws, waiter_max_attempts=(minutes + 10) * 60 // self.aws.poll_s, **common))

    # --- the Steps protocol --------------------------------------------------------------------
    def spark(self, task_id: str, interval):
        ref = self._ref(interval)
        extra, output = {}, None
        if task_id == "ingest_bronze":
            extra = {"release": "{{ params.release_quarantined }}", "released_by": "{{ dag.dag_id }} run {{ run_id }}",
                     "release_reason": "{{ params.release_reason or '%s' }}" % DEFAULT_RELEASE_REASON}
        elif task_id == "export_training_set":
            extra = {"validation_days": "{{ params.validation_days }}", "holdout_days": "{{ params.holdout_days }}"}
            output = training_set_uri(self.lake, ref)
        op = self._emr(task_id, ref, job_args(task_id, lake=self.lake, landing=self.aws.landing_root, ref=ref,
                                              **extra), output, interval)
        interval >> op
        return op.output if output else op

    def gate(self, task_id: str, interval):
        ref, gate = self._ref(interval), GATE_TASKS[task_id]
        with TaskGroup(f"{gate}_gate", prefix_group_id=False) as group:
            job = self._emr(task_id, ref, job_args(task_id, lake=self.lake, landing="", ref=ref),
                            output=result_uri(self.lake, gate, ref), interval=interval)
            interval >> job
            task(_enforce_gate, task_id=f"enforce_{gate}_gate")(interval, job.output)
        return group

    def score(self, task_id: str, interval):
        ref = self._ref(interval)
        champion = "ti.xcom_pull(task_ids='find_champion')"
        args = job_args(task_id, lake=self.lake, landing="", ref=ref, model_dir="{{ %s['model_dir'] }}" % champion,
                        model_name="{{ %s['model_name'] }}" % champion,
                        model_version="{{ %s['model_version'] }}" % champion)
        with TaskGroup("scoring", prefix_group_id=False) as group:
            found = task(_find_champion, task_id="find_champion")(interval)
            job = self._emr(task_id, ref, args, output=result_uri(self.lake, "predictions", ref), interval=interval)
            found >> job
            task(_enforce_predictions_gate, task_id="enforce_predictions_gate")(interval, found, job.output)
        return group

    def load_warehouse(self, task_id: str, interval, scoring):
        ref = self._ref(interval)
        with TaskGroup(task_id, prefix_group_id=False) as group:
            for load_id, table, dataset, rule in LOADS:
                redshift.instantiate_load(self.aws, task_id=load_id, table=table,
                                          s3_prefix=export_uri(self.lake, dataset, ref.key) + "/",
                                          start=ref.start, end=ref.end, trigger_rule=rule,
                                          deferrable=self.aws.deferrable, poll_interval=self.aws.poll_s,
                                          execution_timeout=timedelta(minutes=30))
        scoring >> group
        return group

    def train(self, task_id: str, dataset, window):
        ref = self._ref(window)
        aws = self.aws
        seconds = (aws.training_max_wait_s if aws.training_spot else aws.training_max_runtime_s) + 900
        spec = sagemaker.training_job(
            aws, task_id=task_id, interval_key=ref.key, dataset_uri=training_set_uri(self.lake, ref),
            sourcedir_uri=self.code["sourcedir"], params={k: "{{ params.%s }}" % k for k in sagemaker.HYPERPARAMETERS},
            deferrable=self.aws.deferrable, check_interval=self.aws.poll_s, execution_timeout=timedelta(seconds=seconds))
        op = emr.instantiate(spec)
        dataset >> op
        return op.output
