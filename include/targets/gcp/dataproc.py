"""Job specs for Spark on Dataproc: Serverless batches, or jobs on a Dataproc cluster on Compute Engine.

Each builder returns an ``OperatorSpec`` (plain dicts, no Google call and no provider import);
``instantiate`` turns it into the operator when a DAG is built. The CLI arguments are passed
through as given, so they may be Jinja strings that render the interval from XCom at run time,
exactly like the local ``spark-submit`` arguments. Every request is a dict of the client
library's own messages (``google.cloud.dataproc_v1.Batch``, ``Cluster``, ``Job``).

* Serverless (``FLIGHTS_GCP_SPARK_MODE=serverless``, the default): one batch per job,
  ``ReattachingDataprocBatchOperator`` (deferrable; batch id from DAG, task, interval, run and
  try; reattaches on retry, cancels on kill, checks the final state and the output).
* Cluster (``FLIGHTS_GCP_SPARK_MODE=cluster``): one cluster per DAG run (``dataproc_create_cluster``,
  a setup task) → one job per Spark job on it (``ReattachingDataprocJobOperator``, same
  guarantees) → ``dataproc_delete_cluster`` (the teardown, whatever the jobs' outcome). The
  cluster's idle-delete TTL is the backstop when even the teardown cannot run.

Versions come from ``include.targets.gcp.runtimes``: the runtime (or image) and the Delta jars
that match its Spark, uploaded to ``<artifacts root>/jars/`` next to the code.
"""

from __future__ import annotations

import hashlib
import re

from include.targets.cloud.spec import OperatorSpec, instantiate  # noqa: F401 (re-exported)
from include.targets.gcp.runtimes import Runtime, runtime
from include.targets.gcp.gcs import spark_gcs_conf
from include.targets.gcp.settings import GcpSettings

BATCH_OPERATOR = "include.targets.gcp.operators.ReattachingDataprocBatchOperator"
CLUSTER_OPERATOR = "include.targets.gcp.operators.ReattachingDataprocClusterOperator"
JOB_OPERATOR = "include.targets.gcp.operators.ReattachingDataprocJobOperator"
DELETE_OPERATOR = "include.targets.gcp.operators.DataprocDeleteRunClusterOperator"
CREATE_CLUSTER_TASK, DELETE_CLUSTER_TASK = "dataproc_create_cluster", "dataproc_delete_cluster"
CLUSTER_NAME_KEY = "cluster_name"  # XCom key the create task pushes before it creates anything
CLUSTER_NAME = "{{ ti.xcom_pull(task_ids='%s', key='%s') }}" % (CREATE_CLUSTER_TASK, CLUSTER_NAME_KEY)
CLUSTER_IDLE_DELETE_S = 3600  # a backstop if the teardown never runs
CLUSTER_NAME_MAX = 50  # Dataproc: a lower-case letter, then lower-case letters, digits and hyphens
DEFERRAL_MARGIN_MINUTES = 10  # the deferral outlives the batch's own TTL, so Dataproc ends the job first


def spark_properties(gcp: GcpSettings) -> dict[str, str]:
    """Spark settings every job needs on Dataproc: Delta's session extension and catalog, the local defaults.

    The Cloud Storage connector is on Dataproc's class path already; ``spark.delta.logStore.gs.impl``
    is the value ``include.targets.gcp.gcs.spark_gcs_conf`` sets for ``gs://`` (create-if-absent commits).
    """
    return {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "static",
        "spark.delta.logStore.gs.impl": spark_gcs_conf()["spark.delta.logStore.gs.impl"],
    }


def delta_jars(gcp: GcpSettings, scala: str | None = None) -> list[str]:
    """The Delta jars of the configured runtime in the artifacts bucket (``jar_file_uris``)."""
    return runtime(gcp.dataproc_runtime).jar_uris(gcp.artifacts_root, scala)


def python_files(gcp: GcpSettings, zip_uri: str, scala: str | None = None) -> list[str]:
    """``python_file_uris``: the code zip, and the delta-spark jar, which holds Delta's Python package."""
    return [zip_uri, delta_jars(gcp, scala)[0]]


def _ttl(minutes: int) -> dict[str, int]:
    """A batch TTL as a ``google.protobuf.Duration`` dict; Dataproc takes 10 minutes to 14 days."""
    return {"seconds": min(max(int(minutes), 10), 14 * 24 * 60) * 60}


def batch_request(gcp: GcpSettings, *, job: str, args: list[str], code: dict[str, str],
                  timeout_minutes: int | None = None) -> dict:
    """The ``Batch`` (dict form) running ``spark_jobs/<job>.py`` from the code artefact on the runtime."""
    rt = runtime(gcp.dataproc_runtime)
    execution: dict = {
        "service_account": gcp.dataproc_service_account,
        "staging_bucket": gcp.artifacts_bucket,  # a bucket name, not a gs:// URI
        "ttl": _ttl(timeout_minutes or gcp.dataproc_job_timeout_minutes),
    }
    if gcp.dataproc_subnet:
        execution["subnetwork_uri"] = gcp.dataproc_subnet
    return {
        "pyspark_batch": {
            "main_python_file_uri": f"{code['prefix']}/spark_jobs/{job}.py",
            "python_file_uris": python_files(gcp, code["zip"]),
            "jar_file_uris": delta_jars(gcp),
            "args": [str(a) for a in args],
        },
        "runtime_config": {"version": rt.version, "properties": spark_properties(gcp)},
        "environment_config": {"execution_config": execution},
        "labels": dict(gcp.labels),
    }


def batch(gcp: GcpSettings, *, task_id: str, job: str, args: list[str], code: dict[str, str], interval_key: str,
          job_output: str | None = None, timeout_minutes: int | None = None, **operator_kwargs) -> OperatorSpec:
    """One Spark job as a Dataproc Serverless batch.

    Args:
        task_id: the Airflow task id (the batch id is derived from it, the interval, the run and the try).
        job: ``spark_jobs/<job>.py``.
        args: the job's CLI arguments, as the local target passes them (may be Jinja strings).
        code: the URIs returned by ``artifact.upload`` (``zip`` and ``prefix``).
        interval_key: the interval's key or a template rendering it.
        job_output: what the job writes (``gs://`` URI, may be templated); success needs it to exist,
            and the task returns it.
        timeout_minutes: the batch's TTL (default ``FLIGHTS_GCP_DATAPROC_JOB_TIMEOUT_MIN``).
    Returns:
        The spec of a ``ReattachingDataprocBatchOperator``.
    """
    minutes = int(timeout_minutes or gcp.dataproc_job_timeout_minutes)
    kwargs = {
        "task_id": task_id,
        "project_id": gcp.project,
        "region": gcp.region,
        "batch": batch_request(gcp, job=job, args=args, code=code, timeout_minutes=minutes),
        "interval_key": interval_key,
        "job_output": job_output,
        "deferrable": gcp.deferrable,
        "polling_interval_seconds": gcp.poll_s,
        "timeout_minutes": minutes,
    }
    kwargs.update(operator_kwargs)
    return OperatorSpec(BATCH_OPERATOR, kwargs)


# --- Dataproc on Compute Engine ------------------------------------------------------------------


def cluster_name(dag_id: str, interval_key: str, run_id: str) -> str:
    """``<dag>-<interval>-<digest>``: one cluster per DAG run, found again by name (≤ 50 valid characters)."""
    digest = hashlib.sha256(f"{dag_id}|{interval_key}|{run_id}".encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9]+", "-", f"{dag_id}-{interval_key}".lower()).strip("-")
    if not readable[:1].isalpha():
        readable = f"c-{readable}".rstrip("-")
    return f"{readable[: CLUSTER_NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"


def cluster_config(gcp: GcpSettings) -> dict:
    """The ``ClusterConfig`` (dict form) of a transient cluster: pinned image, machine types from settings."""
    rt: Runtime = runtime(gcp.dataproc_runtime)
    gce: dict = {"service_account": gcp.dataproc_service_account,
                 "service_account_scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
    if gcp.dataproc_subnet:
        gce["subnetwork_uri"] = gcp.dataproc_subnet
    return {
        "config_bucket": gcp.artifacts_bucket,
        "gce_cluster_config": gce,
        "master_config": {"num_instances": 1, "machine_type_uri": gcp.dataproc_master_machine_type},
        "worker_config": {"num_instances": gcp.dataproc_worker_count,
                          "machine_type_uri": gcp.dataproc_worker_machine_type},
        "software_config": {"image_version": rt.image_version},
        "lifecycle_config": {"idle_delete_ttl": {"seconds": CLUSTER_IDLE_DELETE_S}},
    }


def job_request(gcp: GcpSettings, *, job: str, args: list[str], code: dict[str, str],
                cluster: str = CLUSTER_NAME) -> dict:
    """The ``Job`` (dict form) running ``spark_jobs/<job>.py`` on the run's cluster; its id is set at run time."""
    scala = runtime(gcp.dataproc_runtime).image_scala
    return {
        "placement": {"cluster_name": cluster},
        "pyspark_job": {
            "main_python_file_uri": f"{code['prefix']}/spark_jobs/{job}.py",
            "python_file_uris": python_files(gcp, code["zip"], scala),
            "jar_file_uris": delta_jars(gcp, scala),
            "args": [str(a) for a in args],
            "properties": spark_properties(gcp),
        },
        "labels": dict(gcp.labels),
    }


def create_cluster(gcp: GcpSettings, interval_key: str, **operator_kwargs) -> OperatorSpec:
    """The run's cluster (a setup task); its name is set at run time from DAG, interval and run."""
    return OperatorSpec(CLUSTER_OPERATOR, {
        "task_id": CREATE_CLUSTER_TASK, "project_id": gcp.project, "region": gcp.region,
        "cluster_config": cluster_config(gcp), "labels": dict(gcp.labels), "interval_key": interval_key,
        "use_if_exists": True,  # a retry or a cleared setup task finds the run's cluster
        "delete_on_error": True, "deferrable": gcp.deferrable, "polling_interval_seconds": gcp.poll_s,
        **operator_kwargs})


def cluster_job(gcp: GcpSettings, task_id: str, job: str, args: list[str], code: dict[str, str], interval_key: str,
                job_output: str | None = None, **operator_kwargs) -> OperatorSpec:
    """One Spark job on the run's cluster: submitted and waited for by one task (``operators.py``)."""
    return OperatorSpec(JOB_OPERATOR, {
        "task_id": task_id, "project_id": gcp.project, "region": gcp.region,
        "job": job_request(gcp, job=job, args=args, code=code), "interval_key": interval_key,
        "job_output": job_output, "deferrable": gcp.deferrable, "polling_interval_seconds": gcp.poll_s,
        "timeout_minutes": gcp.dataproc_job_timeout_minutes, **operator_kwargs})


def delete_cluster(gcp: GcpSettings, **operator_kwargs) -> OperatorSpec:
    """The teardown: deletes the run's cluster once every job is done, whatever their outcome."""
    return OperatorSpec(DELETE_OPERATOR, {
        "task_id": DELETE_CLUSTER_TASK, "project_id": gcp.project, "region": gcp.region,
        "cluster_name": CLUSTER_NAME, "trigger_rule": "all_done", **operator_kwargs})


def cluster_jobs(gcp: GcpSettings, *, jobs: list[dict], code: dict[str, str], interval_key: str) -> list[OperatorSpec]:
    """Create cluster → one job task per Spark job, in order → delete (what the DAG builds, for the plan).

    Args:
        jobs: ``{"task_id", "job", "args"}`` (and optionally ``"job_output"``) per Spark job, in order.
    """
    return [create_cluster(gcp, interval_key),
            *[cluster_job(gcp, j["task_id"], j["job"], j["args"], code, interval_key, j.get("job_output"))
              for j in jobs],
            delete_cluster(gcp)]
