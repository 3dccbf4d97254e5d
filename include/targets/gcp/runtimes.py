"""Which Spark, Scala, Java, Python and Delta Lake each Dataproc runtime carries, in one table.

Each delta-spark release supports one Spark line, and Dataproc pins its own Spark. Delta Lake is
not part of the Dataproc Serverless runtimes, so every batch brings its own Delta jars: the two
jars of the row's Delta release (``delta-spark_<scala>`` and ``delta-storage``), uploaded to the
artifacts bucket under ``<artifacts root>/jars/`` (``jar_uris``) and passed as ``jar_file_uris``.
The delta-spark jar also holds Delta's Python package (``import delta``), so it goes on the
Python path too, as on EMR (``include/targets/aws/releases.py``). Pulling the jars with
``spark.jars.packages`` instead would need Maven Central from the workload's subnet, i.e.
Cloud NAT on a subnet without external IPs; uploaded jars need nothing but the bucket.

Cluster mode (``FLIGHTS_GCP_SPARK_MODE=cluster``) runs on Dataproc on Compute Engine, whose image
versions are a separate line from the Serverless runtimes; each row names the image with the same
Spark line (``image_version``) and that image's Scala (``image_scala``: Spark 3 images are 2.12).

Sources, as of 2025 (no row was checked against a live project from this repository yet):
Google Cloud "Serverless for Apache Spark runtime releases" and "Dataproc image version list"
pages as published in 2025, and the delta-io/delta release notes (Delta 4.0.0 is built on
Spark 4.0; Delta 3.3.x on Spark 3.5). Each row says which of its values are unverified. To check
a row in a project: submit any batch with ``--version=<row>`` and read ``runtimeConfig.version``
and ``runtimeInfo`` from ``gcloud dataproc batches describe``; ``spark.version`` printed by a job
gives the exact Spark patch release, which Dataproc picks at submission (sub-minor ``3.0.N``).
"""

from __future__ import annotations

from dataclasses import dataclass

from include.targets.cloud import delta_jars


@dataclass(frozen=True)
class Runtime(delta_jars.SparkLine):
    version: str        # Serverless runtime version, as passed in runtime_config.version
    spark: str          # Spark line (major.minor); the patch release follows the runtime's sub-minor version
    scala: str          # Scala binary version of the Serverless runtime
    java: str
    python: str
    delta: str          # the delta-spark release built for this Spark line
    image_version: str  # Dataproc on Compute Engine image with the same Spark line (cluster mode)
    image_scala: str    # Scala binary version of that image
    source: str
    note: str = ""

    def delta_jar_names(self, scala: str | None = None) -> tuple[str, str]:
        """File names of the two Delta jars (as Maven Central names them) for ``scala`` (default: Serverless)."""
        return delta_jars.jar_names(scala or self.scala, self.delta)

    def delta_packages(self, scala: str | None = None) -> tuple[str, str]:
        """Maven coordinates of the same jars (what the jar upload fetches, or ``spark.jars.packages``)."""
        return delta_jars.packages(scala or self.scala, self.delta)

    def jar_uris(self, artifacts_root: str, scala: str | None = None) -> list[str]:
        """The Delta jars' URIs in the artifacts bucket: ``<artifacts root>/jars/<file>``."""
        return delta_jars.jar_uris(artifacts_root, scala or self.scala, self.delta)


RUNTIMES: dict[str, Runtime] = {
    # Spark 4.0: the line the jobs are verified on (pyspark 4.0.2 + delta-spark_2.13 4.0.0, the EMR
    # emr-spark-8.0.0 pairing, see include/targets/aws/releases.py and docs/running-on-aws.md).
    "3.0": Runtime(
        version="3.0", spark="4.0", scala="2.13", java="17", python="3.11", delta="4.0.0",
        image_version="3.0-debian12", image_scala="2.13",
        source="Serverless for Apache Spark runtime 3.0 release notes (2025): Spark 4.0, Java 17, Scala 2.13; "
               "delta-io/delta 4.0.0 release notes: built on Spark 4.0.0, Scala 2.13 only.",
        note="Unverified: the Python minor version (3.11 recalled; the code zip is pure Python and runs on 3.11+) "
             "and the image name 3.0-debian12 for cluster mode (Spark 4.0 images were newer than the Serverless "
             "runtime; check `gcloud dataproc clusters create --image-version=3.0-debian12` in the project).",
    ),
    # Spark 3.5 lines with Delta 3.3: not the pairs the jobs are verified on here. The jobs do run on Spark 3.5
    # with Delta 3.2.1 (tests/spark_jobs/test_spark3_line.py, the Azure line), but Delta 3.3 on Dataproc's
    # Scala 2.13 build was not tried; listed so that nobody picks them by accident.
    "2.3": Runtime(
        version="2.3", spark="3.5", scala="2.13", java="17", python="3.11", delta="3.3.2",
        image_version="2.3-debian12", image_scala="2.12",
        source="Serverless for Apache Spark runtime 2.3 release notes (2025): Spark 3.5, Java 17, Scala 2.13; "
               "Dataproc image 2.3: Spark 3.5, Scala 2.12; delta-io/delta 3.3.2 (Spark 3.5).",
        note="Spark 3.5 / Delta 3.3: a different Spark major line from the jobs' (4.x).",
    ),
    "2.2": Runtime(
        version="2.2", spark="3.5", scala="2.13", java="17", python="3.12", delta="3.3.2",
        image_version="2.2-debian12", image_scala="2.12",
        source="Serverless for Apache Spark runtime 2.2 release notes (2024-2025): Spark 3.5, Java 17, Scala 2.13, "
               "Python 3.12; Dataproc image 2.2: Spark 3.5, Scala 2.12; delta-io/delta 3.3.2 (Spark 3.5).",
        note="Spark 3.5 / Delta 3.3: a different Spark major line from the jobs' (4.x).",
    ),
}

# The runtime whose Spark line the jobs are verified on (Spark 4.0 with Delta 4.0.0).
DEFAULT_RUNTIME = "3.0"


def runtime(version: str) -> Runtime:
    """The row for the Serverless runtime ``version``; a ValueError naming the supported versions otherwise."""
    try:
        return RUNTIMES[str(version).strip()]
    except KeyError:
        known = ", ".join(RUNTIMES)
        raise ValueError(
            f"Dataproc runtime {version!r} is not in include/targets/gcp/runtimes.py; use one of {known} "
            f"({DEFAULT_RUNTIME} runs the jobs' Spark line), or add a row with the Spark, Scala and Delta "
            "versions from Google's runtime release notes."
        ) from None


def compatible_with_jobs(version: str, spark_line: str = "4.0", delta_major: int = 4) -> bool:
    """Whether the runtime has the Spark major line and Delta major version the jobs are verified on."""
    return runtime(version).runs_jobs_of(spark_line, delta_major)
