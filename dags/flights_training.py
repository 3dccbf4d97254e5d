"""
### flights_training

Trains the delay-risk model on gold features and promotes it only when it is better:

1. **resolve_window** – the training window: `train_start`/`train_end`; for a run started by a retraining
   request (`flights_daily`'s `request_retraining`), the `window_days` ending on the day that breached;
   else the last `window_days` of the interval;
2. **export_training_set** – Spark: gold rows with labels, split by time into train / validation / holdout;
3. **train_models** – XGBoost (`tree_method="hist"`, CUDA when a GPU is visible) and a logistic-regression
   baseline; holdout AUC, log loss, Brier score and calibration error for both;
4. **register_model** – params, metrics, report image and model logged to the registry as a new version;
5. **promote_champion** – the `champion` alias moves to the new version only if it beats the current
   champion on the same holdout, scored now; a rejected challenger alerts. The decision and its cause (the
   schedule, a manual run, or the breach that requested the retraining) go to `ops.model_decisions`.

Where the export and the training run comes from `FLIGHTS_TARGET`: spark-submit and in-process
training on `local`; EMR and a SageMaker training job (GPU) on `aws`; Dataproc and a Vertex AI custom
job (GPU) on `gcp`. The task graph is the same on every target.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from include import pipeline
from include.dag_defaults import default_args
from include.retraining import requests_asset
from include.steps import get_steps

# ASCII digits only (\d also matches other scripts' digits); maxLength refuses a trailing newline.
DATE_PARAM = {"type": ["null", "string"], "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "maxLength": 10}


@dag(
    dag_id="flights_training",
    # weekly, and whenever a daily run finds the champion past a retraining threshold (include.retraining)
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("@weekly", timezone="UTC"),
                                 assets=[requests_asset()]),
    start_date=datetime(2013, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["flights", "ml", "training"],
    params={
        "train_start": Param(None, description="First day of the training window (YYYY-MM-DD)", **DATE_PARAM),
        "train_end": Param(None, description="Last day of the training window (YYYY-MM-DD)", **DATE_PARAM),
        "window_days": Param(56, type="integer", minimum=7, maximum=366,
                             description="Window length when train_start/train_end are not given"),
        "validation_days": Param(7, type="integer", minimum=1, maximum=60),
        "holdout_days": Param(7, type="integer", minimum=1, maximum=60),
        "n_estimators": Param(400, type="integer", minimum=10, maximum=5000),
        "max_depth": Param(6, type="integer", minimum=2, maximum=16),
        "learning_rate": Param(0.08, type="number", exclusiveMinimum=0, maximum=1),
        "device": Param("auto", enum=["auto", "cpu", "cuda"], description="XGBoost device"),
        "min_auc_gain": Param(0.0, type="number", minimum=0, maximum=0.5,
                              description="AUC the challenger must gain over the champion"),
    },
    doc_md=__doc__,
)
def flights_training():
    steps = get_steps()  # the target chosen by FLIGHTS_TARGET builds the Spark and training tasks

    @task
    def resolve_window(**context) -> dict:
        return pipeline.resolve_window(context)

    @task
    def register_model(trained: dict, window: dict, **context) -> dict:
        return pipeline.register(context, trained, pipeline.as_interval(window))

    @task
    def promote_champion(registered: dict, trained: dict, dataset: str, **context) -> dict:
        return pipeline.promote(context, registered, trained, dataset, float(context["params"]["min_auc_gain"]))

    window = resolve_window()
    dataset = steps.spark("export_training_set", window)
    trained = steps.train("train_models", dataset, window)
    registered = register_model(trained, window)
    promote_champion(registered, trained, dataset)


flights_training()
