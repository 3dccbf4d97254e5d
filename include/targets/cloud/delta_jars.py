"""The Spark and Delta line of a managed runtime, and the Delta Lake jars its jobs bring: names, Maven
coordinates, where they are uploaded.

Dataproc Serverless carries no Delta and the Azure runtimes carry their own; either way the jobs bring
the two jars of the runtime row's Delta release from ``<artifacts root>/jars/``. The connector is
``delta-core`` up to Delta 2.x and ``delta-spark`` from 3.0; the first jar also holds Delta's Python
package, so it goes on the Python path too.
"""

from __future__ import annotations

JARS_FOLDER = "jars"  # under the artifacts root, next to code/


class SparkLine:
    """What every cloud's runtime row derives from its ``spark`` and ``delta`` versions.

    A mixin for the frozen dataclasses of ``aws/releases.py``, ``gcp/runtimes.py`` and
    ``azure/runtimes.py``; ``spark`` may carry a vendor suffix (EMR's ``3.5.2-amzn-1``).
    """

    spark: str
    delta: str

    @property
    def spark_line(self) -> str:
        """Major.minor of the runtime's Spark."""
        return ".".join(self.spark.split("-")[0].split(".")[:2])

    @property
    def delta_major(self) -> int:
        return int(self.delta.split(".")[0])

    def runs_jobs_of(self, spark_line: str, delta_major: int) -> bool:
        """Whether the runtime has the Spark major line and Delta major version the jobs are verified on."""
        return self.spark_line.split(".")[0] == spark_line.split(".")[0] and self.delta_major == delta_major


def connector(delta: str) -> str:
    """Maven artifact of Delta's Spark connector for the release ``delta``."""
    return "delta-spark" if int(delta.split(".")[0]) >= 3 else "delta-core"


def jar_names(scala: str, delta: str) -> tuple[str, str]:
    """File names of the connector jar and delta-storage, as Maven Central names them."""
    return (f"{connector(delta)}_{scala}-{delta}.jar", f"delta-storage-{delta}.jar")


def packages(scala: str, delta: str) -> tuple[str, str]:
    """Maven coordinates of the same jars (what the upload fetches, or ``spark.jars.packages``)."""
    return (f"io.delta:{connector(delta)}_{scala}:{delta}", f"io.delta:delta-storage:{delta}")


def jar_uris(artifacts_root: str, scala: str, delta: str) -> list[str]:
    """The jars' URIs in the artifacts storage: ``<artifacts root>/jars/<file>``."""
    return [f"{artifacts_root.rstrip('/')}/{JARS_FOLDER}/{n}" for n in jar_names(scala, delta)]
