"""Which Spark and Delta Lake versions each runtime carries, in one table.

Each delta-spark release supports one Spark line, and a managed runtime pins its own
Spark: the lake is written locally by pyspark + delta-spark from ``requirements.txt``
and in AWS by the Spark and Delta that the EMR release ships. Every row below says
which pair that is, where it was checked, and whether it can share Delta tables with the
local pair without a protocol surprise. The EMR specs take the release from here;
``tests/aws/test_releases.py`` fails when the lock and the ``local`` row drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from include.targets.cloud.delta_jars import SparkLine


@dataclass(frozen=True)
class Runtime(SparkLine):
    name: str            # "local" or the EMR release label
    spark: str           # Spark version the runtime runs
    delta: str           # Delta Lake version on its classpath
    scala: str
    delta_jars: tuple[str, ...]  # jars to put on spark.jars ("" when the wheel/pom provides them)
    source: str          # where the versions were read
    note: str = ""
    dynamodb_log_store_jar: str = ""  # delta-storage-s3-dynamodb, for concurrent writers (FLIGHTS_AWS_DELTA_LOG_TABLE)
    delta_python: str = ""  # what puts Delta's Python package (``import delta``) on the jobs' path: the jar holds it


LOCAL = Runtime(
    name="local",
    spark="4.2.0",
    delta="4.4.0",
    scala="2.13",
    delta_jars=(),  # io.delta:delta-spark_4.2_2.13:4.4.0 from Maven Central (scripts/delta-jars.pom.xml)
    source="requirements.txt (pyspark, delta-spark)",
)

RUNTIMES: dict[str, Runtime] = {
    "local": LOCAL,
    # Spark 4 on EMR: the same major lines as the local pair (Spark 4.x, Delta 4.x, Scala 2.13).
    "emr-spark-8.0.0": Runtime(
        name="emr-spark-8.0.0",
        spark="4.0.2-amzn-0",
        delta="4.0.0-amzn-1-spark",
        scala="2.13.16",
        # To be verified on a real application: the jar names under /usr/share/aws/delta/lib/ for this
        # release (documented for 7.x as delta-spark.jar + delta-storage.jar).
        delta_jars=("/usr/share/aws/delta/lib/delta-spark.jar", "/usr/share/aws/delta/lib/delta-storage.jar"),
        source="AWS EMR Release Guide, emr-spark-8.0.0 application versions (GA on EMR Serverless, EC2, EKS)",
        dynamodb_log_store_jar="/usr/share/aws/delta/lib/delta-storage-s3-dynamodb.jar",
        delta_python="/usr/share/aws/delta/lib/delta-spark.jar",
        note="Checked with the open-source pair (pyspark 4.0.2, delta-spark 4.0.0 jar): the Spark test tier and "
             "the local loop pass, and Delta 4.0 reads, appends to and MERGEs into tables Delta 4.4 wrote "
             "(reader 1-3, writer 2-7, features appendOnly, invariants, timestampNtz) and back. The jobs use "
             "no Spark API newer than 4.0; the delta-spark 4.0.0 wheel lacks delta.exceptions "
             "(delta-io/delta#4755), so Delta's Python comes from the jar.",
    ),
    # The last Spark 3 line on EMR 7 (Spark 3.5, Scala 2.12, Delta 3.3): not the pair the jobs are verified on
    # here. They run on Spark 3.5 with Delta 3.2.1 (tests/spark_jobs/test_spark3_line.py); Delta 3.3 was not tried.
    "emr-7.12.0": Runtime(
        name="emr-7.12.0",
        spark="3.5.6-amzn-1",
        delta="3.3.2-amzn-1",
        scala="2.12.18",
        delta_jars=("/usr/share/aws/delta/lib/delta-spark.jar", "/usr/share/aws/delta/lib/delta-storage.jar"),
        source="AWS EMR Release Guide, Spark and Delta release history",
        dynamodb_log_store_jar="/usr/share/aws/delta/lib/delta-storage-s3-dynamodb.jar",
        note="Spark 3.5 / Delta 3.3: a different Spark major line from the local pair; listed so that nobody "
             "picks it by accident.",
    ),
}

DEFAULT_EMR_RELEASE = "emr-spark-8.0.0"


def runtime(name: str) -> Runtime:
    """The row for ``name``; a ValueError naming the known releases otherwise."""
    try:
        return RUNTIMES[name]
    except KeyError:
        known = ", ".join(k for k in RUNTIMES if k != "local")
        raise ValueError(
            f"EMR release {name!r} is not in include/targets/aws/releases.py; use one of {known}, or add a row "
            "with the Spark and Delta versions it ships (from the EMR Release Guide)."
        ) from None


def compatible_with_local(name: str) -> bool:
    """Same Spark major line, Scala binary version and Delta major version as the local pair."""
    r = runtime(name)
    return r.runs_jobs_of(LOCAL.spark_line, LOCAL.delta_major) and r.scala.startswith(LOCAL.scala)
