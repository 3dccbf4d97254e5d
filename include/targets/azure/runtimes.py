"""Which Spark, Scala, Java, Python and Delta Lake each Azure Spark runtime carries, in one table.

HDInsight (through its Livy endpoint) and Synapse Spark pools pin their own Spark; each
delta-spark release supports one Spark line. The jobs bring the row's Delta jars from the
artifacts container (``jar_uris``) rather than relying on a preinstalled Delta, so the Delta
release is the one the jobs were tested with.

The jobs run on Spark 4 (locally, EMR, Dataproc) and on Spark 3.5 with Delta 3.2, the line of the
Synapse 3.5 pools: ``scripts/spark3-requirements.txt`` pins that pair, and
``tests/spark_jobs/test_spark3_line.py`` runs one day's jobs with it and finds the same tables and
gate verdicts as on Spark 4. ``compatible_with_jobs`` says which rows are on that tested line.

Sources, as of 2025 (no row was checked against a live subscription from this repository yet):
Microsoft Learn "Azure Synapse Runtime for Apache Spark 3.5" and "3.4", "HDInsight 5.1 component
versions", and the delta-io/delta compatibility table (Delta 3.x on Spark 3.5, 2.4 on 3.4,
2.3 on 3.3). Each row says what is unverified.
"""

from __future__ import annotations

from dataclasses import dataclass

from include.targets.cloud import delta_jars

# The Spark 3 line the jobs are tested on, and the delta-spark release they are tested with there
# (the pins of scripts/spark3-requirements.txt; tests/azure/test_runtimes.py keeps them equal).
JOBS_SPARK3_LINE = "3.5"
JOBS_SPARK3_DELTA = "3.2.1"


@dataclass(frozen=True)
class Runtime(delta_jars.SparkLine):
    name: str
    service: str        # hdinsight | synapse
    spark: str          # Spark line (major.minor)
    scala: str
    java: str
    python: str
    delta: str          # the delta-spark release the jobs use on this line
    source: str
    note: str = ""

    @property
    def delta_artifact(self) -> str:
        """Maven artifact of Delta's Spark connector: ``delta-core`` up to Delta 2.x, ``delta-spark`` from 3.0."""
        return delta_jars.connector(self.delta)

    def delta_jar_names(self) -> tuple[str, str]:
        """The connector jar (it also holds Delta's Python package, so it goes on pyFiles too) and delta-storage."""
        return delta_jars.jar_names(self.scala, self.delta)

    def delta_packages(self) -> tuple[str, str]:
        return delta_jars.packages(self.scala, self.delta)

    def jar_uris(self, artifacts_root: str) -> list[str]:
        return delta_jars.jar_uris(artifacts_root, self.scala, self.delta)


RUNTIMES: dict[str, Runtime] = {
    "hdinsight-5.1": Runtime(
        name="hdinsight-5.1", service="hdinsight", spark="3.3", scala="2.12", java="8", python="3.10",
        delta="2.3.0",
        source="Microsoft Learn, HDInsight 5.1 component versions: Spark 3.3.1, Scala 2.12; "
               "delta-io/delta compatibility table: Delta 2.3.x on Spark 3.3.x.",
        note="The jobs do NOT run on Spark 3.3. Tried with pyspark 3.3.4 and the delta-core_2.12 2.3.0 jar on "
             "Java 17: Spark 3.3 lacks try_to_timestamp and make_timestamp_ntz (silver and gold hold a "
             "TIMESTAMP_NTZ column) and pyspark.errors, and Delta 2.3 refuses to read silver.flights and "
             "gold.flight_features (reader feature timestampNtz). On Python 3.11 every Python function "
             "(binaryFiles().map, mapInPandas) also fails in pyspark 3.3's cloudpickle; the cluster's Python "
             "3.10 was not available to try. Unverified: the Python and Java minor versions of the image.",
    ),
    "livy-spark-3.5": Runtime(
        name="livy-spark-3.5", service="hdinsight", spark="3.5", scala="2.12", java="17", python="3.11",
        delta="3.2.1",
        source="Apache Livy 0.8's batch API in front of Spark 3.5 (Scala 2.12): the pair the jobs are tested on "
               "(pyspark 3.5.9 + delta-spark_2.12 3.2.1, as synapse-3.5).",
        note="The Livy path's default: HDInsight 5.1 ships Spark 3.3, which cannot run the jobs (hdinsight-5.1), "
             "so the Livy operator needs an endpoint whose Spark is 3.5: a cluster of your own behind Livy, or "
             "HDInsight once it ships Spark 3.5 (add its row). Synapse 3.5 is the managed service on this line.",
    ),
    "synapse-3.4": Runtime(
        name="synapse-3.4", service="synapse", spark="3.4", scala="2.12", java="11", python="3.10", delta="2.4.0",
        source="Microsoft Learn, Azure Synapse Runtime for Apache Spark 3.4: Spark 3.4, Java 11, Scala 2.12, "
               "Python 3.10, Delta Lake 2.4.",
        note="Not tested with the jobs, which call try_to_timestamp and make_timestamp_ntz, Python functions "
             "from Spark 3.5 on. End of support announced for March 2026.",
    ),
    "synapse-3.5": Runtime(
        name="synapse-3.5", service="synapse", spark="3.5", scala="2.12", java="17", python="3.11", delta="3.2.1",
        source="Microsoft Learn, Azure Synapse Runtime for Apache Spark 3.5: Spark 3.5, Java 17, Scala 2.12.18, "
               "Python 3.11, Delta Lake 3.2; delta-spark 3.2.1 is the last 3.2 release (built on Spark 3.5.3, "
               "its POM says).",
        note="Tested with the open-source pair pyspark 3.5.9 + delta-spark_2.12 3.2.1 on Java 17 and Python 3.11 "
             "(scripts/spark3-requirements.txt, tests/spark_jobs/test_spark3_line.py). Unverified on a live "
             "pool: its Spark patch release, and that the Delta jars a batch brings take precedence over the "
             "pool's own Delta 3.2 without a class conflict.",
    ),
}


def runtime(name: str) -> Runtime:
    """The row for ``name``; a ValueError naming the known runtimes otherwise."""
    try:
        return RUNTIMES[str(name).strip()]
    except KeyError:
        raise ValueError(f"Azure Spark runtime {name!r} is not in include/targets/azure/runtimes.py; use one of "
                         f"{', '.join(RUNTIMES)}, or add a row from Microsoft's runtime page.") from None


def compatible_with_jobs(name: str) -> bool:
    """Whether the runtime is on the Spark 3 line the jobs are tested on, with the tested Delta release."""
    r = runtime(name)
    return r.spark_line == JOBS_SPARK3_LINE and r.delta == JOBS_SPARK3_DELTA
