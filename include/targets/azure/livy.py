"""Job specs for Spark on Azure: Livy batches on an HDInsight Spark cluster, or Spark batch jobs on a Synapse pool.

Each builder returns an ``OperatorSpec`` (plain dicts, no Azure call and no provider import);
``instantiate`` turns it into the operator when a DAG is built. The CLI arguments are passed
through as given, so they may be Jinja strings that render the interval from XCom at run time,
exactly like the local ``spark-submit`` arguments.

* HDInsight (``FLIGHTS_AZURE_SPARK_SERVICE=hdinsight``, the default): the cluster's Livy endpoint
  (connection ``livy_conn_id``: ``https://<cluster>.azurehdinsight.net/livy`` with the cluster
  login) runs one batch per job, ``ReattachingLivyOperator`` (deferrable; the batch is named from
  DAG, task, interval, run and try when it is submitted; reattaches on retry, deletes the batch on
  kill or timeout, checks the final state and the output).
* Synapse (``synapse``): ``SynapseSparkBatchOperator``, the Azure provider's Spark batch operator
  with its Livy-compatible payload rendered at run time and named the same way.

Both run ``<code prefix>/spark_jobs/<job>.py`` with the code zip and the delta-spark jar (which
holds Delta's Python package) as Python files, the runtime's Delta jars from the artifacts
container (``include.targets.azure.runtimes``), Delta's session extension and catalog, and the
ABFS settings of ``include.targets.azure.adls.spark_azure_conf``.
"""

from __future__ import annotations

from include.targets.azure.runtimes import runtime
from include.targets.azure.settings import AzureSettings
from include.targets.cloud.spec import OperatorSpec, instantiate  # noqa: F401 (re-exported)

LIVY_OPERATOR = "include.targets.azure.livy_operators.ReattachingLivyOperator"
SYNAPSE_OPERATOR = "include.targets.azure.livy_operators.SynapseSparkBatchOperator"
# Livy's CSRF protection (on in HDInsight) refuses a POST or DELETE without this header.
LIVY_HEADERS = {"X-Requested-By": "airflow"}


def spark_conf(azure: AzureSettings) -> dict[str, str]:
    """Spark settings every job needs: Delta's session extension and catalog, UTC, static overwrite, ABFS."""
    from include.targets.azure.adls import spark_azure_conf

    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "static",
        **spark_azure_conf(azure),
    }
    return {k: str(v) for k, v in conf.items() if v not in (None, "")}  # Livy refuses empty values


def delta_jars(azure: AzureSettings) -> list[str]:
    """The Delta jars of the configured runtime in the artifacts container."""
    return runtime(azure.spark_runtime).jar_uris(azure.artifacts_root)


def python_files(azure: AzureSettings, zip_uri: str) -> list[str]:
    """``pyFiles``: the code zip, and the delta-spark jar, which holds Delta's Python package."""
    return [zip_uri, delta_jars(azure)[0]]


def entry_point(code: dict[str, str], job: str) -> str:
    return f"{code['prefix']}/spark_jobs/{job}.py"


def livy_request(azure: AzureSettings, *, job: str, args: list[str], code: dict[str, str]) -> dict:
    """The ``LivyOperator`` arguments of a batch running ``spark_jobs/<job>.py`` (its ``name`` is set per try)."""
    return {
        "file": entry_point(code, job),
        "args": [str(a) for a in args],
        "py_files": python_files(azure, code["zip"]),
        "jars": delta_jars(azure),
        "conf": spark_conf(azure),
        "driver_memory": azure.spark_driver_memory,
        "executor_memory": azure.spark_executor_memory,
        "executor_cores": int(azure.spark_executor_cores),
        "num_executors": int(azure.spark_num_executors),
    }


def synapse_payload(azure: AzureSettings, *, job: str, args: list[str], code: dict[str, str]) -> dict:
    """The ``SparkBatchJobOptions`` (attribute names) of the same job; its ``name`` is set per try."""
    return {
        "name": "",
        "file": entry_point(code, job),
        "arguments": [str(a) for a in args],
        "python_files": python_files(azure, code["zip"]),
        "jars": delta_jars(azure),
        "configuration": spark_conf(azure),
        "driver_memory": azure.spark_driver_memory,
        "driver_cores": int(azure.spark_executor_cores),
        "executor_memory": azure.spark_executor_memory,
        "executor_cores": int(azure.spark_executor_cores),
        "executor_count": int(azure.spark_num_executors),
        "tags": {str(k): str(v) for k, v in azure.tags.items()},
    }


def batch(azure: AzureSettings, *, task_id: str, job: str, args: list[str], code: dict[str, str], interval_key: str,
          job_output: str | None = None, timeout_minutes: int | None = None, **operator_kwargs) -> OperatorSpec:
    """One Spark job as a Livy batch on HDInsight, or a Spark batch job on the Synapse pool.

    Args:
        task_id: the Airflow task id (the batch name is derived from it, the interval, the run and the try).
        job: ``spark_jobs/<job>.py``.
        args: the job's CLI arguments, as the local target passes them (may be Jinja strings).
        code: the URIs of the code artefact (``zip`` and ``prefix``, ``include.targets.cloud.artifact``).
        interval_key: the interval's key or a template rendering it.
        job_output: what the job writes (``abfss://`` URI, may be templated); success needs it to exist,
            and the task returns it.
        timeout_minutes: how long the batch may run before it is deleted (default
            ``FLIGHTS_AZURE_SPARK_JOB_TIMEOUT_MIN``).
        operator_kwargs: passed to the operator (``execution_timeout``, ``require_code``, ...).
    Returns:
        The spec of a ``ReattachingLivyOperator`` or a ``SynapseSparkBatchOperator``.
    """
    minutes = int(timeout_minutes or azure.spark_job_timeout_minutes)
    if azure.spark_service == "synapse":
        kwargs = {
            "task_id": task_id,
            "azure_synapse_conn_id": azure.synapse_conn_id,
            "spark_pool": azure.synapse_spark_pool,
            "payload": synapse_payload(azure, job=job, args=args, code=code),
            "interval_key": interval_key,
            "job_output": job_output,
            "check_interval": azure.poll_s,
            "timeout": minutes * 60,
        }
        return OperatorSpec(SYNAPSE_OPERATOR, {**kwargs, **operator_kwargs})
    kwargs = {
        "task_id": task_id,
        **livy_request(azure, job=job, args=args, code=code),
        "livy_conn_id": azure.livy_conn_id,
        "extra_headers": dict(LIVY_HEADERS),
        "interval_key": interval_key,
        "job_output": job_output,
        "deferrable": azure.deferrable,
        "polling_interval": azure.poll_s,
        "timeout_minutes": minutes,
    }
    return OperatorSpec(LIVY_OPERATOR, {**kwargs, **operator_kwargs})
