"""The local model registry: MLflow with an SQLite backend and a local artefact store.

Each training run logs params, holdout metrics of both models, the report image, the
scoring bundle and an MLflow-flavoured XGBoost model, and registers a new version of
``flights_delay_xgboost``. The ``champion`` alias marks the version that scores.

Every promotion tags the new champion with the version it replaced
(``previous_champion``), so ``rollback`` can move the alias back in one step without
anyone having to remember which version scored before.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from include.config import Settings
from include.training.outputs import ModelVersion, RollbackError, TrainingOutputs  # noqa: F401 (RollbackError re-exported)

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"  # model-version tag: the champion this version replaced


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
        _, client = self._client()
        mv = self._champion_mv(client)
        return self._model_version(client, mv) if mv is not None else None

    def _model_version(self, client, mv) -> ModelVersion:
        exp_id = client.get_run(mv.run_id).info.experiment_id
        metrics = json.loads(mv.tags.get("holdout_metrics", "{}"))
        return ModelVersion(self.name, str(mv.version), mv.run_id, self.run_url(exp_id, mv.run_id), metrics)

    def _champion_mv(self, client):
        from mlflow.exceptions import MlflowException

        try:
            return client.get_model_version_by_alias(self.name, CHAMPION)
        except MlflowException:
            return None

    def bundle_dir(self, version: ModelVersion) -> Path:
        mlflow, _ = self._client()
        target = self.cfg.home / "models" / self.name / version.version
        if not (target / "bundle" / "model.json").exists():
            target.mkdir(parents=True, exist_ok=True)
            mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="bundle", dst_path=str(target))
        return target / "bundle"

    def publish_bundle(self, version: ModelVersion) -> str:
        """The local scoring job reads the bundle from the local folder it is downloaded to."""
        return str(self.bundle_dir(version))

    def set_champion(self, version: ModelVersion, reason: str) -> None:
        """Move ``champion`` to ``version``, remembering on it the champion it replaces."""
        _, client = self._client()
        current = self._champion_mv(client)
        if current is not None and str(current.version) != version.version:
            client.set_model_version_tag(self.name, version.version, PREVIOUS_CHAMPION, str(current.version))
        client.set_registered_model_alias(self.name, CHAMPION, version.version)
        client.set_model_version_tag(self.name, version.version, "promotion_reason", reason)
        log.info("%s v%s is now %s: %s", self.name, version.version, CHAMPION, reason)

    def rollback(self, to_version: str | None, reason: str, by: str) -> tuple[ModelVersion, ModelVersion]:
        """Move ``champion`` back to ``to_version`` (default: the previous champion); return (old, new).

        Refuses, changing nothing, when there is no champion, no previous champion recorded,
        the version does not exist or already is the champion, or no reason is given. Both
        versions are tagged with who rolled back, when and why.
        """
        from include.training.promotion import rollback_target

        _, client = self._client()
        current = self._champion_mv(client)
        old = str(current.version) if current is not None else None
        new = rollback_target(self.name, reason, old, current.tags.get(PREVIOUS_CHAMPION) if current else None,
                              to_version, self.versions())
        target = client.get_model_version(self.name, new)
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        client.set_registered_model_alias(self.name, CHAMPION, new)
        for key, value in {"rollback_by": by, "rollback_reason": reason, "rollback_at": at,
                           "rollback_from": old}.items():
            client.set_model_version_tag(self.name, new, key, value)
        client.set_model_version_tag(self.name, old, "rolled_back", f"to v{new} by {by} at {at}: {reason}")
        log.warning("%s %s rolled back from v%s to v%s by %s: %s", self.name, CHAMPION, old, new, by, reason)
        return self._model_version(client, current), self._model_version(client, target)

    def training_window(self, version: str) -> str:
        """The training window a version was trained on, as registered (empty when unknown)."""
        _, client = self._client()
        return client.get_model_version(self.name, version).tags.get("training_window", "")

    def versions(self) -> list[str]:
        _, client = self._client()
        return sorted((str(mv.version) for mv in client.search_model_versions(f"name='{self.name}'")), key=int)
