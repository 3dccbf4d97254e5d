"""The local model registry: MLflow with an SQLite backend and a local artefact store.

Each training run logs params, holdout metrics of both models, the report image, the
scoring bundle and an MLflow-flavoured XGBoost model, and registers a new version of
``flights_delay_xgboost``. The ``champion`` alias marks the version that scores.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from include.config import Settings
from include.targets.base import ModelVersion, TrainingOutputs

log = logging.getLogger(__name__)

CHAMPION = "champion"


class MlflowRegistry:
    def __init__(self, cfg: Settings):
        self.cfg = cfg
        self.name = cfg.model_name
        self.ui_url = os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")

    def _client(self):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow
        from mlflow import MlflowClient

        if self.cfg.mlflow_tracking_uri.startswith("sqlite:///"):
            Path(self.cfg.mlflow_tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.cfg.mlflow_tracking_uri)
        mlflow.set_registry_uri(self.cfg.mlflow_tracking_uri)
        return mlflow, MlflowClient()

    def _experiment_id(self, mlflow, client) -> str:
        exp = client.get_experiment_by_name(self.cfg.experiment_name)
        if exp is not None:
            return exp.experiment_id
        self.cfg.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
        return client.create_experiment(self.cfg.experiment_name,
                                        artifact_location=self.cfg.mlflow_artifact_root.as_uri())

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def register(self, outputs: TrainingOutputs, tags: dict[str, str]) -> ModelVersion:
        mlflow, client = self._client()
        import xgboost as xgb

        exp_id = self._experiment_id(mlflow, client)
        out = outputs.output_dir
        with mlflow.start_run(experiment_id=exp_id, run_name=tags.get("run_name"), tags=tags) as run:
            mlflow.log_params({k: v for k, v in outputs.params.items()})
            for model, metrics in outputs.metrics.items():
                mlflow.log_metrics({f"holdout_{model}_{k}": float(v) for k, v in metrics.items()})
            mlflow.log_artifacts(str(out / "bundle"), artifact_path="bundle")
            mlflow.log_artifacts(str(out / "baseline"), artifact_path="baseline")
            mlflow.log_artifact(str(out / "report.png"))
            mlflow.log_artifact(str(out / "metrics.json"))
            booster = xgb.Booster()
            booster.load_model(str(out / "bundle" / "model.json"))
            mlflow.xgboost.log_model(booster, name="model", pip_requirements=["xgboost", "pandas"])
            run_id = run.info.run_id
        mv = mlflow.register_model(f"runs:/{run_id}/model", self.name, tags={
            "holdout_metrics": json.dumps(outputs.metrics["xgboost"]),
            "training_window": tags.get("training_window", ""),
        })
        return ModelVersion(self.name, str(mv.version), run_id, self.run_url(exp_id, run_id),
                            dict(outputs.metrics["xgboost"]))

    def champion(self) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        mlflow, client = self._client()
        try:
            mv = client.get_model_version_by_alias(self.name, CHAMPION)
        except MlflowException:
            return None
        exp_id = client.get_run(mv.run_id).info.experiment_id
        metrics = json.loads(mv.tags.get("holdout_metrics", "{}"))
        return ModelVersion(self.name, str(mv.version), mv.run_id, self.run_url(exp_id, mv.run_id), metrics)

    def bundle_dir(self, version: ModelVersion) -> Path:
        mlflow, _ = self._client()
        target = self.cfg.home / "models" / self.name / version.version
        if not (target / "bundle" / "model.json").exists():
            target.mkdir(parents=True, exist_ok=True)
            mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="bundle", dst_path=str(target))
        return target / "bundle"

    def set_champion(self, version: ModelVersion, reason: str) -> None:
        _, client = self._client()
        client.set_registered_model_alias(self.name, CHAMPION, version.version)
        client.set_model_version_tag(self.name, version.version, "promotion_reason", reason)
        log.info("%s v%s is now %s: %s", self.name, version.version, CHAMPION, reason)

    def versions(self) -> list[str]:
        _, client = self._client()
        return sorted((mv.version for mv in client.search_model_versions(f"name='{self.name}'")), key=int)
