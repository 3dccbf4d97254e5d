"""Step factories: the DAG tasks that run on a target's compute.

DAG files never branch on the target. They ask the factory of the target chosen by
``FLIGHTS_TARGET`` (``include.targets.get_steps``) for each step, and wire what it returns
with ``>>``:

| step                 | local (``PythonSteps``)                    | aws (``include.targets.aws.steps``)               |
|----------------------|--------------------------------------------|---------------------------------------------------|
| ``spark``            | Python task running spark-submit           | deferrable EMR Serverless job run                 |
| ``gate``             | Python task: Spark gate job, then enforce  | EMR job writing the gate JSON, then Python enforce |
| ``score``            | Python task: champion, scoring job, gate   | champion lookup, EMR scoring job, Python enforce  |
| ``load_warehouse``   | Python task: DuckDB / PostgreSQL load      | deferrable Redshift Data API batches              |
| ``train``            | Python task training in process            | deferrable SageMaker training job                 |

Every Spark step runs in the ``spark`` pool. A step's return value is what downstream tasks
receive: the same value on every target (an interval's gate summary, the training set's
URI, the trainer's result), so the Python tasks around the steps do not change.
"""

from __future__ import annotations

from airflow.sdk import task

from include import pipeline
from include.dag_defaults import SPARK_POOL, SPARK_TIMEOUT, TRAINING_TIMEOUT


def _ingest_bronze(interval: dict, **context) -> None:
    pipeline.ingest_bronze(context, pipeline.as_interval(interval))


def _build_features(interval: dict, **context) -> None:
    pipeline.build_features(context, pipeline.as_interval(interval))


def _export_training_set(window: dict, **context) -> str:
    return pipeline.export_training_set(context, pipeline.as_interval(window))


def _validate(interval: dict, **context) -> dict:
    return pipeline.validate(context, pipeline.as_interval(interval))


def _score(interval: dict, **context) -> dict:
    return pipeline.score(context, pipeline.as_interval(interval))


def _load_warehouse(interval: dict, scoring: dict) -> dict:
    return pipeline.load_warehouse(pipeline.as_interval(interval), scoring)


def _train(dataset: str, **context) -> dict:
    return pipeline.train(context, dataset)


SPARK_STEPS = {"ingest_bronze": _ingest_bronze, "build_features": _build_features,
               "export_training_set": _export_training_set}


class PythonSteps:
    """Local target: every step is one Python task that runs its Spark job with spark-submit."""

    def _spark_task(self, fn, task_id: str):
        return task(fn, task_id=task_id, pool=SPARK_POOL, execution_timeout=SPARK_TIMEOUT)

    def spark(self, task_id: str, interval):
        if task_id not in SPARK_STEPS:
            raise KeyError(f"{task_id} is not a Spark step; Spark steps: {', '.join(SPARK_STEPS)}")
        return self._spark_task(SPARK_STEPS[task_id], task_id)(interval)

    def gate(self, task_id: str, interval):
        return self._spark_task(_validate, task_id)(interval)

    def score(self, task_id: str, interval):
        return self._spark_task(_score, task_id)(interval)

    def load_warehouse(self, task_id: str, interval, scoring):
        return task(_load_warehouse, task_id=task_id)(interval, scoring)

    def train(self, task_id: str, dataset, window):
        return task(_train, task_id=task_id, execution_timeout=TRAINING_TIMEOUT)(dataset)
