"""The model registry on Azure: versions of one Azure ML model, the champion marked by a tag.

``register`` registers the training job's ``model`` output (a datastore folder: bundle, baseline,
metrics.json, report.png) as a new version of ``AzureSettings.model_name``, of type
``custom_model``: the folder is the project's own bundle format, not an MLflow model (it has no
``MLmodel`` file, which Azure ML checks for ``mlflow_model``). Its tags hold the training
window, the Airflow run, the holdout metrics and the job that trained it.

**Where the champion lives.** Azure ML has no alias that is unique within a model (what Vertex AI
and MLflow give). A version's ``stage`` is one free-form word that the studio and other tools
also write (``Production``, ``Archived``...) and that cannot say *when* it was set. The champion
is therefore one tag, ``champion``, whose value is the UTC time the version became champion;
no other field means champion. Tags are mutable on a registered version (the SDK's
``create_or_update`` of the same name and version updates them). Moving the champion sets the
tag on the new version first and only then removes it from the old one, so there is never a
moment with no champion; if the second step fails, two versions carry the tag and
``champion()`` takes the one marked last (then the higher version), which is the one just
promoted. Every promotion tags the new champion with the version it replaced
(``previous_champion``), so ``rollback`` goes back one step per call, as the other registries do.

``bundle_dir`` downloads a version's files through the SDK into a local cache;
``publish_bundle`` puts the bundle into the lake for the Spark scoring job, through the object
store it is given (``exists`` / ``put``), ``model.json`` last.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from include.targets.azure.settings import AzureSettings
from include.targets.cloud.artifact import ObjectStore
from include.training.outputs import ModelVersion, RegistryError, TrainingOutputs

log = logging.getLogger(__name__)

CHAMPION = "champion"  # version tag: the UTC time the version became champion (absent: not champion)
PREVIOUS_CHAMPION = "previous_champion"  # version tag: the champion this version replaced ("none": the first)
MODEL_URI = "model_uri"  # tag register() may take: the training job's model output (azureml://datastores/...)
RECORD_TAGS = ("training_window", "airflow_run_id")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def marked_at(model) -> datetime | None:
    """When a version became champion (its ``champion`` tag), or None when it is not marked."""
    value = (model.tags or {}).get(CHAMPION)
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)  # a marking we cannot date loses any tie
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


class AzureMLModelRegistry:
    """``ModelRegistry`` over ``MLClient.models``.

    Args:
        azure: the target's settings (workspace, ``model_name``, ``lake_root``).
        cache_dir: where downloaded versions are kept.
        store: returns the object store the lake is written through (``exists(uri)``, ``put(uri, body, metadata)``);
            called once, when a bundle is first published.
        client: an ``MLClient`` (default: one for the workspace, with ``DefaultAzureCredential``).
    """

    def __init__(self, azure: AzureSettings, cache_dir: Path, *, store: Callable[[], ObjectStore], client=None):
        self.azure, self.name = azure, azure.model_name
        self.cache_dir = Path(cache_dir)
        self._store_factory, self._store, self._client = store, None, client

    # --- clients -------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from include.targets.azure.azureml import client_for

            self._client = client_for(self.azure)
        return self._client

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def studio_url(self, version: str) -> str:
        a = self.azure
        return (f"https://ml.azure.com/model/{self.name}:{version}/details?wsid=/subscriptions/{a.subscription_id}"
                f"/resourcegroups/{a.resource_group}/providers/Microsoft.MachineLearningServices/workspaces/"
                f"{a.ml_workspace}")

    # --- helpers -------------------------------------------------------------------------
    def _models(self) -> list:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return list(self.client.models.list(name=self.name))
        except ResourceNotFoundError:
            return []

    def versions(self) -> list[str]:
        return sorted((str(m.version) for m in self._models()), key=int)

    def _get(self, version: str):
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.client.models.get(name=self.name, version=str(version))
        except ResourceNotFoundError:
            raise RegistryError(f"{self.name} has no version {version!r}; versions: "
                                f"{', '.join(self.versions()) or 'none'}.") from None

    def _version(self, model) -> ModelVersion:
        tags = model.tags or {}
        try:
            metrics = json.loads(tags.get("holdout_metrics", "{}"))
        except ValueError:
            metrics = {}
        return ModelVersion(self.name, str(model.version), f"azureml:{self.name}:{model.version}",
                            self.studio_url(str(model.version)), metrics)

    def _champion_model(self):
        """The version tagged champion; of two (a move stopped half-way), the one marked last."""
        marked = [(marked_at(m), int(m.version), m) for m in self._models() if marked_at(m) is not None]
        if not marked:
            return None
        return max(marked, key=lambda t: (t[0], t[1]))[2]

    def _update(self, model, set_tags: dict[str, str] | None = None, drop: tuple[str, ...] = ()):
        """Change a version's tags (a create_or_update of the same name and version)."""
        tags = {k: v for k, v in (model.tags or {}).items() if k not in drop}
        tags.update(set_tags or {})
        model.tags = tags
        return self.client.models.create_or_update(model)

    def _mark(self, target, tags: dict[str, str]) -> None:
        """Make ``target`` the champion: tag it first, then clear every other marking (see the module docstring)."""
        self._update(target, {CHAMPION: now(), **tags})
        for other in self._models():
            if str(other.version) != str(target.version) and marked_at(other) is not None:
                self._update(other, drop=(CHAMPION,))

    # --- the ModelRegistry protocol --------------------------------------------------------
    def register(self, outputs: TrainingOutputs, tags: dict[str, str]) -> ModelVersion:
        """Register the training job's model output as a new version; returns it (not champion)."""
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

        path = (tags.get(MODEL_URI) or outputs.model_uri or "").rstrip("/")
        if not path.startswith("azureml://"):
            raise RegistryError("register() needs the training job's model output (azureml://datastores/.../model): "
                                "TrainingOutputs.model_uri from AzureMLTrainer.collect, or tags['model_uri'].")
        record = {
            **{k: str(v) for k, v in self.azure.tags.items()},
            **{k: str(v)[:256] for k, v in tags.items() if k != MODEL_URI},
            "training_window": tags.get("training_window", ""),
            "airflow_run_id": tags.get("airflow_run_id", ""),
            "holdout_metrics": json.dumps(outputs.metrics.get("xgboost", {}), sort_keys=True),
            "baseline_metrics": json.dumps(outputs.metrics.get("baseline", {}), sort_keys=True),
            "device": outputs.device,
            MODEL_URI: path,
        }
        model = self.client.models.create_or_update(Model(
            name=self.name, path=path + "/", type=AssetTypes.CUSTOM_MODEL, tags=record,
            description="flights delay model (XGBoost); champion = the version with the 'champion' tag"))
        log.info("Registered %s v%s from %s", self.name, model.version, path)
        return self._version(model)

    def champion(self) -> ModelVersion | None:
        model = self._champion_model()
        return self._version(model) if model is not None else None

    def set_champion(self, version: ModelVersion, reason: str) -> None:
        """Mark ``version`` champion, tagging it with the champion it replaces; then unmark the old one."""
        target = self._get(version.version)
        current = self._champion_model()
        if current is not None and str(current.version) == str(target.version):
            log.info("%s v%s already is %s: %s", self.name, target.version, CHAMPION, reason)
            return
        previous = str(current.version) if current is not None else "none"
        self._mark(target, {PREVIOUS_CHAMPION: previous, "promotion_reason": reason[:256], "promoted_at": now()})
        log.info("%s v%s is now %s: %s", self.name, target.version, CHAMPION, reason)

    def rollback(self, to_version: str | None, reason: str, by: str) -> tuple[ModelVersion, ModelVersion]:
        """Move ``champion`` back to ``to_version`` (default: the champion the current one replaced).

        Refuses (RollbackError), changing nothing, when no reason is given, there is no champion, no previous
        champion is recorded, the version does not exist or already is the champion.
        """
        from include.training.promotion import rollback_target

        current = self._champion_model()
        old = str(current.version) if current is not None else None
        previous = (current.tags or {}).get(PREVIOUS_CHAMPION) if current is not None else None
        wanted = rollback_target(self.name, reason, old, previous, to_version,
                                 self.versions() if current is not None else [])
        target = self._get(wanted)
        at = now()
        self._mark(target, {"rollback_by": by, "rollback_reason": reason[:256], "rollback_at": at,
                            "rollback_from": old})
        self._update(self._get(old), {"rolled_back": f"to v{wanted} by {by} at {at}: {reason}"[:256]})
        log.warning("%s %s rolled back from v%s to v%s by %s: %s", self.name, CHAMPION, old, wanted, by, reason)
        return self._version(self._get(old)), self._version(self._get(wanted))

    def training_window(self, version: str) -> str:
        """The training window a version was trained on, as registered (empty when unknown)."""
        return (self._get(version).tags or {}).get("training_window", "")

    def bundle_dir(self, version: ModelVersion) -> Path:
        """Download the version's files once into the cache; returns its ``bundle`` folder."""
        target = self.cache_dir / self.name / version.version
        bundle = target / "bundle"
        if (bundle / "model.json").exists():
            return bundle
        model = self._get(version.version)
        partial = target.with_name(target.name + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        self.client.models.download(name=self.name, version=str(model.version), download_path=str(partial))
        # models.download writes <download_path>/<model name>/<last folder of the model's path>/...
        folder = partial / self.name / Path(str(model.path).rstrip("/")).name
        if not (folder / "bundle" / "model.json").is_file():
            shutil.rmtree(partial, ignore_errors=True)
            raise RegistryError(f"{self.name} v{version.version} ({model.path}) holds no bundle/model.json: it was not "
                                "written by the project's trainer, or its training outputs were deleted.")
        shutil.rmtree(target, ignore_errors=True)
        folder.replace(target)
        shutil.rmtree(partial, ignore_errors=True)
        return bundle

    def bundle_uri(self, version: ModelVersion) -> str:
        return f"{self.azure.lake_root}/models/{self.name}/{version.version}/bundle"

    def publish_bundle(self, version: ModelVersion) -> str:
        """Put the version's scoring bundle into the lake (once, ``model.json`` last); returns its folder URI."""
        from include.targets.cloud.publish import publish_folder

        uri = self.bundle_uri(version)
        if self.store.exists(f"{uri}/model.json"):
            return uri
        return publish_folder(self.bundle_dir(version), uri, self.store)
