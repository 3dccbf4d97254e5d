"""Everything a Dataproc batch and a Vertex AI job read from the artifacts bucket, uploaded once per version.

    python -m include.targets.gcp.artifact      # upload this checkout's code and the runtime's Delta jars

* the code artefact (``include.targets.cloud.artifact``): content-addressed, idempotent;
* the two Delta Lake jars of the configured Dataproc runtime (``runtimes.Runtime``), under
  ``<artifacts root>/jars/``: Dataproc Serverless runtimes carry no Delta. They are fetched from
  Maven Central with ``mvn dependency:copy`` into ``.cache/jars-dataproc/`` when not there yet.

Objects already in the bucket are left alone, so a second run writes nothing.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from include.config import REPO_ROOT, ConfigError
from include.targets.cloud import artifact as code
from include.targets.gcp.runtimes import runtime
from include.targets.gcp.settings import GcpSettings

log = logging.getLogger(__name__)

JARS_CACHE = REPO_ROOT / ".cache" / "jars-dataproc"


def jar_files(gcp: GcpSettings, folder: Path = JARS_CACHE, fetch: bool = True) -> list[Path]:
    """The runtime's Delta jars (Serverless and, in cluster mode, the image's Scala), fetched when missing."""
    rt = runtime(gcp.dataproc_runtime)
    scalas = {rt.scala} | ({rt.image_scala} if gcp.spark_mode == "cluster" else set())
    wanted = {name: coordinate for scala in sorted(scalas)
              for name, coordinate in zip(rt.delta_jar_names(scala), rt.delta_packages(scala))}
    missing = [c for n, c in wanted.items() if not (folder / n).exists()]
    if missing and fetch:
        if shutil.which("mvn") is None:
            raise ConfigError(f"The Delta jars {missing} are not in {folder} and Maven (mvn) is not installed to fetch "
                              "them: apt-get install maven, or copy the jars there from Maven Central.")
        folder.mkdir(parents=True, exist_ok=True)
        for coordinate in missing:
            subprocess.run(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={coordinate}",
                            f"-DoutputDirectory={folder}", f"-Dmaven.repo.local={REPO_ROOT / '.cache' / 'm2'}"],
                           check=True)
    absent = [n for n in wanted if not (folder / n).exists()]
    if absent:
        raise ConfigError(f"Missing Delta jars {absent} in {folder} for Dataproc runtime {rt.version}.")
    return [folder / n for n in sorted(wanted)]


def upload(gcp: GcpSettings, store: code.ObjectStore, jars: list[Path] | None = None) -> dict[str, str]:
    """Upload the code artefact and the Delta jars; returns the code URIs and how many objects were written."""
    uris = code.upload(code.build_artifact(), gcp.artifacts_root, store)
    written = int(uris["written"])
    rt = runtime(gcp.dataproc_runtime)
    for path in jars if jars is not None else jar_files(gcp):
        uri = f"{gcp.artifacts_root}/jars/{path.name}"
        if uri not in rt.jar_uris(gcp.artifacts_root, rt.scala) + rt.jar_uris(gcp.artifacts_root, rt.image_scala):
            raise ConfigError(f"{path.name} is not a Delta jar of Dataproc runtime {rt.version}.")
        if not store.exists(uri):
            store.put(uri, path.read_bytes(), {"source": "Maven Central"})
            written += 1
    log.info("Artifacts under %s: %d object(s) written", gcp.artifacts_root, written)
    return {**uris, "written": str(written)}


def main(argv: list[str] | None = None) -> int:
    """Upload with the FLIGHTS_GCP_* settings; print the URIs."""
    import argparse

    from include.targets.gcp.gcs import GcsStore, storage_client
    from include.targets.gcp.settings import load_gcp_settings

    argparse.ArgumentParser(description="Upload the code and jars the GCP target's jobs run (idempotent).").parse_args(
        argv)
    gcp = load_gcp_settings()
    uris = upload(gcp, GcsStore(storage_client(gcp)))
    for key in ("sha256", "zip", "sourcedir", "prefix", "written"):
        print(f"{key}: {uris[key]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
