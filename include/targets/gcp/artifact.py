"""Everything a Dataproc batch and a Vertex AI job read from the artifacts bucket, uploaded once per version.

    python -m include.targets.gcp.artifact      # upload this checkout's code and the runtime's Delta jars

* the code artefact (``include.targets.cloud.artifact``): content-addressed, idempotent;
* the two Delta Lake jars of the configured Dataproc runtime (``runtimes.Runtime``), under
  ``<artifacts root>/jars/``: Dataproc Serverless runtimes carry no Delta. They are fetched from
  Maven Central with ``mvn dependency:copy`` into ``.cache/jars-dataproc/`` when not there yet.

Objects already in the bucket are left alone, so a second run writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from include.config import REPO_ROOT
from include.targets.cloud import artifact as code
from include.targets.gcp.runtimes import runtime
from include.targets.gcp.settings import GcpSettings

JARS_CACHE = REPO_ROOT / ".cache" / "jars-dataproc"


def jar_files(gcp: GcpSettings, folder: Path = JARS_CACHE, fetch: bool = True) -> list[Path]:
    """The runtime's Delta jars (Serverless and, in cluster mode, the image's Scala), fetched when missing."""
    rt = runtime(gcp.dataproc_runtime)
    scalas = {rt.scala} | ({rt.image_scala} if gcp.spark_mode == "cluster" else set())
    wanted = {name: coordinate for scala in sorted(scalas)
              for name, coordinate in zip(rt.delta_jar_names(scala), rt.delta_packages(scala))}
    return code.fetch_jars(wanted, folder, f"Dataproc runtime {rt.version}", fetch)


def upload(gcp: GcpSettings, store: code.ObjectStore, jars: list[Path] | None = None) -> dict[str, str]:
    """Upload the code artefact and the Delta jars; returns the code URIs and how many objects were written."""
    rt = runtime(gcp.dataproc_runtime)
    allowed = rt.jar_uris(gcp.artifacts_root, rt.scala) + rt.jar_uris(gcp.artifacts_root, rt.image_scala)
    return code.upload_with_jars(gcp.artifacts_root, store, jars if jars is not None else jar_files(gcp), allowed,
                                 f"Dataproc runtime {rt.version}")


def main(argv: list[str] | None = None) -> int:
    """Upload with the FLIGHTS_GCP_* settings; print the URIs."""
    def upload_now() -> dict[str, str]:
        from include.targets.gcp.gcs import GcsStore, storage_client
        from include.targets.gcp.settings import load_gcp_settings

        gcp = load_gcp_settings()
        return upload(gcp, GcsStore(storage_client(gcp)))

    return code.upload_command(argv, "Upload the code and jars the GCP target's jobs run (idempotent).", upload_now)


if __name__ == "__main__":
    raise SystemExit(main())
