"""Everything a Livy (HDInsight or Synapse) batch and an Azure ML job read from the artifacts container.

    python -m include.targets.azure.artifact      # upload this checkout's code and the runtime's Delta jars

* the code artefact (``include.targets.cloud.artifact``): content-addressed, idempotent;
* the two Delta Lake jars of the configured Spark runtime (``runtimes.Runtime``), under
  ``<artifacts root>/jars/``: the batches bring their own Delta rather than the cluster's or the
  pool's. They are fetched from Maven Central with ``mvn dependency:copy`` into
  ``.cache/jars-azure-delta/`` when not there yet.

Blobs already in the container are left alone, so a second run writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from include.config import REPO_ROOT
from include.targets.azure.runtimes import runtime
from include.targets.azure.settings import AzureSettings
from include.targets.cloud import artifact as code

JARS_CACHE = REPO_ROOT / ".cache" / "jars-azure-delta"


def jar_files(azure: AzureSettings, folder: Path | None = None, fetch: bool = True) -> list[Path]:
    """The runtime's Delta jars (``delta_jar_names``) in ``folder`` (default ``JARS_CACHE``), fetched from
    Maven Central when missing."""
    rt = runtime(azure.spark_runtime)
    return code.fetch_jars(dict(zip(rt.delta_jar_names(), rt.delta_packages())),
                           JARS_CACHE if folder is None else folder, f"Azure Spark runtime {rt.name}", fetch)


def upload(azure: AzureSettings, store: code.ObjectStore, jars: list[Path] | None = None) -> dict[str, str]:
    """Upload the code artefact and the Delta jars; returns the code URIs and how many blobs were written."""
    rt = runtime(azure.spark_runtime)
    return code.upload_with_jars(azure.artifacts_root, store, jars if jars is not None else jar_files(azure),
                                 rt.jar_uris(azure.artifacts_root), f"Azure Spark runtime {rt.name}")


def main(argv: list[str] | None = None) -> int:
    """Upload with the FLIGHTS_AZURE_* settings; print the URIs."""
    def upload_now() -> dict[str, str]:
        from include.targets.azure.adls import BlobStore, blob_service_client
        from include.targets.azure.settings import load_azure_settings

        azure = load_azure_settings()
        return upload(azure, BlobStore(blob_service_client(azure)))

    return code.upload_command(argv, "Upload the code and jars the Azure target's jobs run (idempotent).", upload_now)


if __name__ == "__main__":
    raise SystemExit(main())
