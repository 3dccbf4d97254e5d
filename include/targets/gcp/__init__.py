"""The GCP target: Delta on GCS, Spark on Dataproc, GPU training on Vertex AI, its registry, BigQuery, Pub/Sub.

``step_backend(cfg)`` tells the one step factory (``include.steps``) which operator runs each
step (``GcpSteps``: deferrable Dataproc Serverless batches, or jobs on a per-run Dataproc
cluster, and a Vertex AI custom job); the BigQuery loads run as the step factory's Python
tasks (``BigQueryWarehouse.load_interval``: a load job and one MERGE per table). ``build(cfg)``
returns the six seams of ``include.targets.base`` for the Python tasks: reading the lake, the
Vertex AI Model Registry, the warehouse's ``ops`` records, collecting training outputs and
alerts. Nothing here needs Google credentials until a method is called.

Modules: ``settings`` (``FLIGHTS_GCP_*``), ``gcs`` (lake, code upload, Spark's GCS settings),
``runtimes`` (Dataproc runtime ↔ Spark ↔ Delta), ``dataproc`` + ``operators`` (Spark jobs),
``vertex`` + ``vertex_operators`` + ``vertex_entry`` (training), ``vertex_registry``,
``bigquery``, ``pubsub`` (the alert channel), ``plan`` (the explain plan's requests and costs).
"""

from __future__ import annotations

from include.config import Settings
from include.targets.base import Target
from include.targets.cloud.artifact import checkout_code_uris as code_uris
from include.targets.cloud.spec import OperatorSpec
from include.targets.gcp.settings import GcpSettings, load_gcp_settings


class GcpSteps:
    """``StepBackend`` of the gcp target (``include.targets.base.StepBackend``)."""

    def __init__(self, gcp: GcpSettings, code: dict[str, str]):
        self.gcp, self.code = gcp, code
        self.lake_root, self.landing_root = gcp.lake_root, gcp.landing_root
        self.pii_key_secret = gcp.pii_key_secret

    def spark_job(self, *, task_id: str, job: str, args: list[str], output: str | None,
                  interval_key: str) -> OperatorSpec:
        from datetime import timedelta

        from include.targets.gcp import dataproc

        timeout = timedelta(minutes=self.gcp.dataproc_job_timeout_minutes + 15)  # Dataproc's TTL ends the job first
        if self.gcp.spark_mode == "cluster":
            return dataproc.cluster_job(self.gcp, task_id, job, args, self.code, interval_key, job_output=output,
                                        execution_timeout=timeout)
        return dataproc.batch(self.gcp, task_id=task_id, job=job, args=args, code=self.code,
                              interval_key=interval_key, job_output=output, require_code=True,
                              execution_timeout=timeout)

    def cluster(self, interval_key: str) -> tuple[OperatorSpec, OperatorSpec] | None:
        if self.gcp.spark_mode != "cluster":
            return None
        from include.targets.gcp import dataproc

        return dataproc.create_cluster(self.gcp, interval_key), dataproc.delete_cluster(self.gcp)

    def load_job(self, **_) -> None:
        return None  # BigQueryWarehouse.load_interval (or DuckDB/PostgreSQL) in the step factory's Python task

    def training_job(self, *, task_id: str, dataset_uri: str, interval_key: str,
                     params: dict[str, str]) -> OperatorSpec:
        from datetime import timedelta

        from include.targets.gcp import vertex

        return vertex.custom_job(self.gcp, task_id=task_id, interval_key=interval_key, dataset_uri=dataset_uri,
                                 sourcedir_uri=self.code["sourcedir"], params=params,
                                 execution_timeout=timedelta(seconds=self.gcp.training_max_runtime_s + 3600 + 900))


def step_backend(cfg: Settings, gcp: GcpSettings | None = None) -> GcpSteps:
    """What runs each step on GCP, from settings only."""
    gcp = gcp or load_gcp_settings()
    return GcpSteps(gcp, code_uris(gcp.artifacts_root))


def build(cfg: Settings, gcp: GcpSettings | None = None, *, warehouse=None) -> Target:
    from include.notify import ChannelNotifier
    from include.targets.gcp.bigquery import BigQueryWarehouse
    from include.targets.gcp.gcs import GcsLake
    from include.targets.gcp.vertex import VertexTrainer
    from include.targets.gcp.vertex_registry import VertexModelRegistry
    from include.warehouse import make_warehouse

    gcp = gcp or load_gcp_settings()
    lake = GcsLake(gcp, cfg.home / "cache" / "gcs")
    if warehouse is None:
        warehouse = BigQueryWarehouse(gcp) if cfg.warehouse == "bigquery" else make_warehouse(cfg, lake)
    return Target(
        name="gcp",
        lake=lake,
        spark=DataprocSparkRunner(gcp),
        trainer=VertexTrainer(gcp, cfg.home / "cache" / "training"),
        registry=VertexModelRegistry(gcp, cfg.home / "models"),
        warehouse=warehouse,
        notifier=ChannelNotifier(cfg),
    )


class DataprocSparkRunner:
    """The ``SparkRunner`` seam on GCP: every Spark job runs as a DAG task (a Dataproc batch or cluster job)."""

    def __init__(self, gcp: GcpSettings):
        self.gcp = gcp

    def submit(self, job: str, args: list[str], *, name: str) -> None:
        from include.config import ConfigError

        raise ConfigError(f"On the gcp target Spark job {job} runs as its DAG task's Dataproc batch "
                          "(include.targets.gcp.dataproc), not inside a Python task.")
