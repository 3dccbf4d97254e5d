"""The model registry on GCP: one Vertex AI Model, a version per trained model, the ``champion`` alias.

``register`` uploads the training job's model folder as a new version (``parent_model``; the
first upload creates the model with the id derived from ``model_display_name``), served by the
prebuilt XGBoost prediction image. Each version's ``version_description`` holds a JSON record
(training window, run, holdout metrics, and the promotions and rollbacks that touched it);
its labels hold the searchable part.

The champion is the version with the ``champion`` alias. An alias is unique within a model:
adding it to a version moves it from the one that held it, in one ``MergeVersionAliases`` call,
so there is never a moment with no champion or two. Every promotion labels the new champion
with the version it replaced (``previous_champion``), so ``rollback`` moves the alias back in
one step, and a second rollback goes one further back, as ``MlflowRegistry`` does.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path

from include.targets.gcp.settings import GcpSettings
from include.targets.gcp.vertex import label_value
from include.training.outputs import ModelVersion, RegistryError, TrainingOutputs

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"  # version label: the champion this version replaced ("none": the first)
HISTORY_KEPT = 20  # decisions kept in a version's record
MODEL_DIR = "model_dir"  # tag register() may take: the training job's model folder (gs://)


def model_id_of(display_name: str) -> str:
    """The model's resource id: ``[a-z0-9_-]{1,63}``, starting with a letter."""
    mid = re.sub(r"[^a-z0-9_-]+", "-", display_name.lower()).strip("-_")
    if not mid or not mid[0].isalpha():
        mid = "m-" + mid
    return mid[:63]


def serving_image(region: str) -> str:
    """Vertex AI's prebuilt XGBoost prediction image for the region's continent."""
    host = {"us": "us-docker.pkg.dev", "eu": "europe-docker.pkg.dev",
            "as": "asia-docker.pkg.dev"}.get(region.split("-")[0][:2], "us-docker.pkg.dev")
    return f"{host}/vertex-ai/prediction/xgboost-cpu.2-1:latest"


class VertexModelRegistry:
    def __init__(self, gcp: GcpSettings, cache_dir: Path, client=None, storage_client=None):
        self.gcp = gcp
        self.cache_dir = Path(cache_dir)
        self.model_id = model_id_of(gcp.model_display_name)
        self.parent = f"projects/{gcp.project}/locations/{gcp.region}"
        self.model_name = f"{self.parent}/models/{self.model_id}"
        self._client, self._storage = client, storage_client

    # --- clients -------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from google.cloud.aiplatform_v1 import ModelServiceClient

            self._client = ModelServiceClient(
                client_options={"api_endpoint": f"{self.gcp.region}-aiplatform.googleapis.com"})
        return self._client

    @property
    def storage(self):
        if self._storage is None:
            from include.targets.gcp.gcs import storage_client

            self._storage = storage_client(self.gcp)
        return self._storage

    def console_url(self, version: str) -> str:
        return (f"https://console.cloud.google.com/vertex-ai/models/locations/{self.gcp.region}/models/"
                f"{self.model_id}/versions/{version}?project={self.gcp.project}")

    # --- helpers -------------------------------------------------------------------------
    def _models(self) -> list:
        from google.api_core.exceptions import NotFound

        try:
            return list(self.client.list_model_versions(name=self.model_name))
        except NotFound:
            return []

    def versions(self) -> list[str]:
        return sorted((m.version_id for m in self._models()), key=int)

    def _get(self, version: str):
        from google.api_core.exceptions import NotFound

        try:
            return self.client.get_model(name=f"{self.model_name}@{version}")
        except NotFound:
            raise RegistryError(f"{self.gcp.model_display_name} ({self.model_name}) has no version {version!r}; "
                                f"versions: {', '.join(self.versions()) or 'none'}.") from None

    @staticmethod
    def record(model) -> dict:
        """The JSON record of a version (from its version_description); {} when absent or not ours."""
        try:
            data = json.loads(model.version_description or "{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _version(self, model) -> ModelVersion:
        return ModelVersion(self.gcp.model_display_name, model.version_id, f"{self.model_name}@{model.version_id}",
                            self.console_url(model.version_id), dict(self.record(model).get("holdout_metrics", {})))

    def _update(self, model, *, labels: dict[str, str] | None = None, decision: dict | None = None):
        """Update a version's labels and/or append a decision to its record (version-level update)."""
        from google.cloud.aiplatform_v1 import Model
        from google.protobuf.field_mask_pb2 import FieldMask

        paths, fields = [], {"name": f"{self.model_name}@{model.version_id}"}
        if labels is not None:
            paths.append("labels")
            fields["labels"] = {**dict(model.labels), **labels}
        if decision is not None:
            record = self.record(model)
            record["history"] = (record.get("history", []) + [decision])[-HISTORY_KEPT:]
            paths.append("version_description")
            fields["version_description"] = json.dumps(record, sort_keys=True)
        return self.client.update_model(model=Model(fields), update_mask=FieldMask(paths=paths))

    def _move_champion(self, version: str) -> None:
        """Put ``champion`` on ``version``; the service takes it off the version that held it, atomically."""
        self.client.merge_version_aliases(name=f"{self.model_name}@{version}", version_aliases=[CHAMPION])

    @staticmethod
    def _now() -> str:
        return datetime.now(timezone.utc).isoformat(timespec="seconds")

    # --- the ModelRegistry protocol --------------------------------------------------------
    def register(self, outputs: TrainingOutputs, tags: dict[str, str]) -> ModelVersion:
        """Upload the training outputs' model folder as a new version; returns it (not champion)."""
        from google.cloud.aiplatform_v1 import Model

        artifact = (tags.get(MODEL_DIR) or outputs.model_uri or "").rstrip("/")
        if not artifact.startswith("gs://"):
            raise RegistryError("register() needs the training job's model folder (gs://.../model): "
                                "TrainingOutputs.model_uri from VertexTrainer.collect, or tags['model_dir'].")
        record = {"training_window": tags.get("training_window", ""), "airflow_run_id": tags.get("airflow_run_id", ""),
                  "holdout_metrics": outputs.metrics.get("xgboost", {}),
                  "baseline_metrics": outputs.metrics.get("baseline", {}), "device": outputs.device,
                  "tags": {k: str(v)[:256] for k, v in tags.items() if k not in ("training_window", "airflow_run_id",
                                                                                MODEL_DIR)},
                  "history": []}
        labels = {**{k: label_value(v) for k, v in self.gcp.labels.items()},
                  "training_window": label_value(tags.get("training_window", "")) or "unknown",
                  "airflow_run": label_value(tags.get("airflow_run_id", "")) or "unknown"}
        model = Model(display_name=self.gcp.model_display_name, artifact_uri=artifact,
                      container_spec={"image_uri": serving_image(self.gcp.region)}, labels=labels,
                      version_description=json.dumps(record, sort_keys=True),
                      description="flights delay model (XGBoost); champion = the version with alias 'champion'")
        request = {"parent": self.parent, "model": model}
        if self._models():
            request["parent_model"] = self.model_name
        else:
            request["model_id"] = self.model_id  # the first version creates the model
        response = self.client.upload_model(request=request).result(timeout=1800)
        version = response.model_version_id
        log.info("Registered %s v%s from %s", self.gcp.model_display_name, version, artifact)
        return self._version(self._get(version))

    def champion(self) -> ModelVersion | None:
        from google.api_core.exceptions import NotFound

        try:
            return self._version(self.client.get_model(name=f"{self.model_name}@{CHAMPION}"))
        except NotFound:
            return None

    def set_champion(self, version: ModelVersion, reason: str) -> None:
        """Move ``champion`` to ``version``, labelling it with the champion it replaces."""
        target = self._get(version.version)
        current = self.champion()
        if current is not None and current.version == target.version_id:
            log.info("%s v%s already is %s: %s", self.gcp.model_display_name, target.version_id, CHAMPION, reason)
            return
        previous = current.version if current is not None else "none"
        self._update(target, labels={PREVIOUS_CHAMPION: previous},
                     decision={"action": "promoted", "at": self._now(), "reason": reason, "replaced": previous})
        self._move_champion(target.version_id)
        log.info("%s v%s is now %s: %s", self.gcp.model_display_name, target.version_id, CHAMPION, reason)

    def rollback(self, to_version: str | None, reason: str, by: str) -> tuple[ModelVersion, ModelVersion]:
        """Move ``champion`` back to ``to_version`` (default: the champion the current one replaced).

        Refuses (RollbackError), changing nothing, when no reason is given, there is no champion, no previous
        champion is recorded, the version does not exist or already is the champion.
        """
        from google.api_core.exceptions import NotFound

        from include.training.promotion import rollback_target

        name = self.gcp.model_display_name
        try:
            current = self.client.get_model(name=f"{self.model_name}@{CHAMPION}")
        except NotFound:
            current = None
        old = current.version_id if current is not None else None
        wanted = rollback_target(name, reason, old, current.labels.get(PREVIOUS_CHAMPION) if current else None,
                                 to_version, self.versions() if current is not None else [])
        target = self._get(wanted)
        at = self._now()
        note = {"by": by, "reason": reason, "at": at}
        self._update(target, decision={"action": "restored_by_rollback", "from": old, **note})
        self._update(current, decision={"action": "rolled_back", "to": target.version_id, **note})
        self._move_champion(target.version_id)
        log.warning("%s %s rolled back from v%s to v%s by %s: %s", name, CHAMPION, old, target.version_id, by,
                    reason)
        return self._version(current), self._version(self._get(target.version_id))

    def training_window(self, version: str) -> str:
        """The training window a version was trained on, as registered (empty when unknown)."""
        return self.record(self._get(version)).get("training_window", "")

    def history(self, version: str) -> list[dict]:
        """The promotions and rollbacks recorded on a version, oldest first."""
        return self.record(self._get(version)).get("history", [])

    def bundle_uri(self, version: ModelVersion) -> str:
        return self._get(version.version).artifact_uri.rstrip("/") + "/bundle"

    def publish_bundle(self, version: ModelVersion) -> str:
        """The gs:// folder of the version's scoring bundle, for Spark scoring jobs (already in Cloud Storage)."""
        from include.targets.gcp.gcs import split_gs

        uri = self.bundle_uri(version)
        bucket, key = split_gs(uri + "/model.json")
        if not self.storage.bucket(bucket).blob(key).exists():
            raise RegistryError(f"{uri} holds no model.json: v{version.version} was not written by the project's "
                                "trainer, or its training outputs were deleted.")
        return uri

    def bundle_dir(self, version: ModelVersion) -> Path:
        """Download the version's ``bundle`` folder once into the cache; returns it."""
        from include.targets.gcp.gcs import split_gs

        target = self.cache_dir / self.model_id / version.version / "bundle"
        if (target / "model.json").exists():
            return target
        uri = self.bundle_uri(version)
        from include.targets.cloud.mirror import mirror

        bucket, prefix = split_gs(uri + "/")
        mirror(((b.name[len(prefix):], b.size, b) for b in self.storage.list_blobs(bucket, prefix=prefix)), target,
               lambda blob, path: blob.download_to_filename(str(path)), last="model.json")
        if not (target / "model.json").exists():
            raise RegistryError(f"{uri} holds no model.json: it was not written by the project's trainer.")
        return target
