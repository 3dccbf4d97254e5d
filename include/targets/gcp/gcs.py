"""The lake and the code artefact on Cloud Storage, and the Spark settings for Delta on ``gs://``.

On the gcp target every lake table, landing file and code object lives under a ``gs://``
URI. Python tasks reach them through ``GcsLake`` (the ``LakeStorage`` seam: existence checks,
the gates' JSON results, prefixes downloaded into a local cache) and ``GcsStore`` (the
``ObjectStore`` the shared code-artefact upload writes through). Spark jobs reach them through
the Hadoop Cloud Storage connector, configured by ``spark_gcs_conf``; Delta's ``GCSLogStore``
makes each commit a create-if-absent write, so two writers can never both commit a version.

``google.cloud.storage`` is imported only when a client is first needed. When
``STORAGE_EMULATOR_HOST`` is set (tests against a loopback emulator) the client sends no
credentials; ``spark_gcs_emulator_conf`` gives Spark the matching settings, kept apart from
``spark_gcs_conf`` so that nothing emulator-only reaches a real job.
"""

from __future__ import annotations

import os
from pathlib import Path

from include.targets.cloud.artifact import ObjectStore
from include.targets.gcp.settings import GcpSettings

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
GCS_FILESYSTEM = "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem"
GCS_ABSTRACT_FILESYSTEM = "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFS"
GCS_LOG_STORE = "io.delta.storage.GCSLogStore"
# Hadoop 3.5's core-default.xml sets these for its own gs:// connector with unit suffixes ("64m"), which the
# Cloud Storage connector reads as plain numbers and fails on; the same defaults, in bytes.
CONNECTOR_SIZES = {
    "fs.gs.block.size": 64 << 20,
    "fs.gs.outputstream.buffer.size": 8 << 20,
    "fs.gs.inputstream.inplace.seek.limit": 8 << 20,
    "fs.gs.inputstream.min.range.request.size": 2 << 20,
    "fs.gs.rewrite.max.chunk.size": 512 << 20,
}


def split_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``; ValueError for any other scheme or no bucket."""
    if not uri.startswith("gs://") or not uri[len("gs://"):].split("/", 1)[0]:
        raise ValueError(f"{uri!r} is not a gs://<bucket>/<key> URI (the gcp target keeps its lake on Cloud Storage)")
    bucket, _, key = uri[len("gs://"):].partition("/")
    return bucket, key


def storage_client(gcp: GcpSettings):
    """A ``google.cloud.storage.Client`` for ``gcp.project``: application default credentials, or none
    when ``STORAGE_EMULATOR_HOST`` points the client at an emulator."""
    from google.cloud import storage

    if os.environ.get(EMULATOR_ENV):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=gcp.project, credentials=AnonymousCredentials())
    return storage.Client(project=gcp.project)


class GcsLake:
    """The lake under ``gs://<lake bucket>/<prefix>``; ``local_dir`` downloads a prefix into a cache."""

    def __init__(self, gcp: GcpSettings, cache_dir: Path, client=None):
        self.gcp, self.cache_dir = gcp, Path(cache_dir)
        self.root, self.landing_root = gcp.lake_root, gcp.landing_root
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = storage_client(self.gcp)
        return self._client

    def exists(self, uri: str) -> bool:
        """Whether any object's name starts with the URI's key (an object, or a folder holding objects)."""
        bucket, key = split_gs(uri)
        return any(True for _ in self.client.list_blobs(bucket, prefix=key, max_results=1))

    def read_json(self, uri: str) -> dict:
        import json

        bucket, key = split_gs(uri)
        return json.loads(self.client.bucket(bucket).blob(key).download_as_bytes())

    def local_dir(self, uri: str) -> Path:
        """Download the objects under ``uri`` into ``<cache>/<bucket>/<prefix>``; files of the same size are kept."""
        from include.targets.cloud.mirror import mirror

        bucket, prefix = split_gs(uri.rstrip("/") + "/")
        blobs = self.client.list_blobs(bucket, prefix=prefix)  # names ending in "/": the connector's folders
        return mirror(((b.name[len(prefix):], b.size, b) for b in blobs), self.cache_dir / bucket / prefix,
                      lambda blob, path: blob.download_to_filename(str(path)))


class GcsStore(ObjectStore):
    """``ObjectStore`` over a Cloud Storage client: the code artefact uploaded under ``gs://``."""

    def __init__(self, client):
        self.client = client

    def exists(self, uri: str) -> bool:
        bucket, key = split_gs(uri)
        return self.client.bucket(bucket).blob(key).exists()

    def put(self, uri: str, body: bytes, metadata: dict[str, str]) -> None:
        """Write the object only if it is absent (``ifGenerationMatch=0``): a content-addressed key that
        another upload created meanwhile already holds these bytes."""
        from google.api_core.exceptions import PreconditionFailed

        bucket, key = split_gs(uri)
        blob = self.client.bucket(bucket).blob(key)
        blob.metadata = dict(metadata)
        try:
            blob.upload_from_string(body, content_type="application/octet-stream", if_generation_match=0)
        except PreconditionFailed:
            pass


def spark_gcs_conf(gcp: GcpSettings | None = None) -> dict[str, str]:
    """Spark settings for Delta tables on ``gs://`` through the Hadoop Cloud Storage connector.

    Dataproc has the connector on its class path; elsewhere add the shaded jar of ``make gcs-jars``.
    Credentials are the connector's default (the VM's or the job's service account).

    Args:
        gcp: when given, its project is the connector's project (``fs.gs.project.id``).
    Returns:
        ``spark.*`` settings, for ``--conf`` or ``spark-defaults.conf``.
    """
    conf = {
        "spark.hadoop.fs.gs.impl": GCS_FILESYSTEM,
        "spark.hadoop.fs.AbstractFileSystem.gs.impl": GCS_ABSTRACT_FILESYSTEM,
        # Delta commits on gs:// as create-if-absent writes (ifGenerationMatch=0): safe with concurrent writers.
        "spark.delta.logStore.gs.impl": GCS_LOG_STORE,
        **{f"spark.hadoop.{key}": str(value) for key, value in CONNECTOR_SIZES.items()},
    }
    if gcp is not None:
        conf["spark.hadoop.fs.gs.project.id"] = gcp.project
    return conf


def spark_gcs_emulator_conf(endpoint: str) -> dict[str, str]:
    """The connector's settings for a loopback Cloud Storage emulator, on top of ``spark_gcs_conf``.

    Args:
        endpoint: the emulator's base URL, e.g. ``http://127.0.0.1:4443`` (what ``STORAGE_EMULATOR_HOST`` holds).
    Returns:
        ``spark.hadoop.fs.gs.*`` settings: the emulator's JSON API root, no authentication, and renames as
        copy and delete (emulators serve no ``objects.move``, which the connector uses by default).
    """
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"Emulator endpoint {endpoint!r} must be a URL such as http://127.0.0.1:4443")
    return {
        "spark.hadoop.fs.gs.storage.root.url": endpoint.rstrip("/") + "/",
        "spark.hadoop.fs.gs.storage.service.path": "storage/v1/",
        "spark.hadoop.fs.gs.auth.type": "UNAUTHENTICATED",
        "spark.hadoop.fs.gs.operation.move.enable": "false",
    }
