"""The Azure target: Delta on ADLS Gen2, Spark on HDInsight through Livy (or a Synapse Spark pool),
GPU training on Azure ML, its model registry, and Azure Database for PostgreSQL as the warehouse.

``step_backend(cfg)`` tells the one step factory (``include.steps``) which operator runs each
step (``AzureSteps``: deferrable Livy batches on HDInsight or Synapse Spark batches, and an Azure
ML command job); the warehouse loads run as the step factory's Python tasks (the PostgreSQL
loader by default, reading the exports through the lake; ``FLIGHTS_WAREHOUSE`` picks another).
``build(cfg)`` returns the six seams of ``include.targets.base`` for the Python tasks: reading
the lake, the Azure ML model registry, the warehouse, collecting training outputs and alerts
(the same channels as every target). Nothing here needs Azure credentials until a method is called.

Modules: ``settings`` (``FLIGHTS_AZURE_*``), ``adls`` (lake, uploads, Spark's storage settings),
``artifact`` (code and Delta jar upload), ``runtimes`` (HDInsight / Synapse runtime ↔ Spark ↔
Delta), ``livy`` + ``livy_operators`` (Spark jobs), ``azureml`` + ``azureml_operators`` +
``azureml_entry`` (training), ``azureml_registry``, ``iam`` (the identities' roles).
"""

from __future__ import annotations

from include.config import Settings
from include.targets.azure.settings import AzureSettings, load_azure_settings
from include.targets.base import Target
from include.targets.cloud.artifact import checkout_code_uris as code_uris
from include.targets.cloud.spec import OperatorSpec


class AzureSteps:
    """``StepBackend`` of the azure target (``include.targets.base.StepBackend``)."""

    def __init__(self, azure: AzureSettings, code: dict[str, str]):
        self.azure, self.code = azure, code
        self.lake_root, self.landing_root = azure.lake_root, azure.landing_root
        self.pii_key_secret = azure.pii_key_secret_uri

    def spark_job(self, *, task_id: str, job: str, args: list[str], output: str | None,
                  interval_key: str) -> OperatorSpec:
        from datetime import timedelta

        from include.targets.azure import livy

        timeout = timedelta(minutes=self.azure.spark_job_timeout_minutes + 15)
        return livy.batch(self.azure, task_id=task_id, job=job, args=args, code=self.code,
                          interval_key=interval_key, job_output=output, require_code=True,
                          execution_timeout=timeout)

    def cluster(self, interval_key: str) -> None:
        return None  # HDInsight clusters and Synapse pools are long-lived (Synapse pools auto-pause)

    def load_job(self, **_) -> None:
        return None  # the PostgreSQL (or chosen) warehouse's load_interval, in the step factory's Python task

    def training_job(self, *, task_id: str, dataset_uri: str, interval_key: str,
                     params: dict[str, str]) -> OperatorSpec:
        from datetime import timedelta

        from include.targets.azure import azureml

        queueing = 3600 if self.azure.training_low_priority else 900  # the deferred wait's allowance
        return azureml.training_job(self.azure, task_id=task_id, dataset_uri=dataset_uri, interval_key=interval_key,
                                    params=params, code=self.code,
                                    execution_timeout=timedelta(seconds=self.azure.training_max_runtime_s
                                                                + queueing + 900))


def step_backend(cfg: Settings, azure: AzureSettings | None = None) -> AzureSteps:
    """What runs each step on Azure, from settings only."""
    azure = azure or load_azure_settings()
    return AzureSteps(azure, code_uris(azure.artifacts_root))


def build(cfg: Settings, azure: AzureSettings | None = None, *, warehouse=None) -> Target:
    from include.notify import ChannelNotifier
    from include.targets.azure.adls import AdlsLake, BlobStore, blob_service_client
    from include.targets.azure.azureml import AzureMLTrainer
    from include.targets.azure.azureml_registry import AzureMLModelRegistry
    from include.warehouse import make_warehouse

    azure = azure or load_azure_settings()
    lake = AdlsLake(azure, cfg.home / "cache" / "adls")
    return Target(
        name="azure",
        lake=lake,
        spark=LivySparkRunner(azure),
        trainer=AzureMLTrainer(azure, cfg.home / "cache" / "training"),
        registry=AzureMLModelRegistry(azure, cfg.home / "models",
                                      store=lambda: BlobStore(blob_service_client(azure))),
        warehouse=warehouse if warehouse is not None else make_warehouse(cfg, lake),
        notifier=ChannelNotifier(cfg),
    )


class LivySparkRunner:
    """The ``SparkRunner`` seam on Azure: every Spark job runs as a DAG task (a Livy or Synapse batch)."""

    def __init__(self, azure: AzureSettings):
        self.azure = azure

    def submit(self, job: str, args: list[str], *, name: str) -> None:
        from include.config import ConfigError

        raise ConfigError(f"On the azure target Spark job {job} runs as its DAG task's Livy batch "
                          "(include.targets.azure.livy), not inside a Python task.")
