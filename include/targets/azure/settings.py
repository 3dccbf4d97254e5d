"""Settings of the Azure target, read from ``FLIGHTS_AZURE_*`` environment variables.

This module is the only reader of those variables (``include/config.py`` reads the rest).
Every value is validated when the settings are built, so a typo fails at once with a message
naming the variable and the fix. ``AzureSettings.example()`` gives placeholder settings for the
explain plan and the tests.

Where things live: the lake is the ``lake`` file system (container) of one storage account with
a hierarchical namespace (ADLS Gen2), reached as ``abfss://<container>@<account>.dfs.<suffix>/``;
code, jars and training outputs go to the ``artifacts`` container of the same account. Spark runs
on an HDInsight Spark cluster through its Livy endpoint (``spark_service=hdinsight``) or on a
Synapse Spark pool (``synapse``); training runs as an Azure ML command job in one workspace.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace

from include.config import ConfigError
from include.targets.cloud.settings import boolean, get, integer, pii_key_secret, require

SPARK_SERVICES = ("hdinsight", "synapse")
SCHEMES = ("abfss",)  # the ABFS driver; wasb is gone from Hadoop 3.5 and has no managed identity
# The rows on the Spark line the jobs are tested on (runtimes.compatible_with_jobs): HDInsight 5.1's Spark 3.3
# cannot run them, so the Livy path defaults to a Livy endpoint in front of Spark 3.5.
DEFAULT_SPARK_RUNTIME = {"hdinsight": "livy-spark-3.5", "synapse": "synapse-3.5"}
DOC = "docs/running-on-azure.md"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}(?<!\.)$")
_LOCATION = re.compile(r"^[a-z]+[a-z0-9]*$")
_STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,62}$")  # workspace, cluster, pool, compute names
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_DATASTORE = re.compile(r"^[A-Za-z0-9_]{1,255}$")
_VM_SIZE = re.compile(r"^Standard_[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class AzureSettings:
    subscription_id: str
    resource_group: str
    location: str
    storage_account: str
    ml_workspace: str
    lake_container: str = "lake"
    artifacts_container: str = "artifacts"
    lake_prefix: str = "lake"
    artifacts_prefix: str = "artifacts"
    storage_scheme: str = "abfss"
    storage_suffix: str = "core.windows.net"
    blob_endpoint: str = ""             # only for an emulator (Azurite): http://127.0.0.1:10000/devstoreaccount1
    spark_service: str = "hdinsight"
    spark_runtime: str = DEFAULT_SPARK_RUNTIME["hdinsight"]
    livy_conn_id: str = "azure_hdinsight_livy"
    hdinsight_cluster: str = ""
    synapse_workspace: str = ""
    synapse_spark_pool: str = ""
    synapse_conn_id: str = "azure_synapse_default"
    spark_driver_memory: str = "4g"
    spark_executor_memory: str = "4g"
    spark_executor_cores: int = 2
    spark_num_executors: int = 2
    spark_job_timeout_minutes: int = 120
    training_compute: str = "gpu-cluster"
    training_vm_size: str = "Standard_NC4as_T4_v3"
    training_instance_count: int = 1
    training_low_priority: bool = False
    training_environment_image: str = ""
    training_max_runtime_s: int = 3600
    model_name: str = "flights-delay-xgboost"
    ml_datastore: str = "flights_artifacts"  # identity-based ADLS Gen2 datastore over the artifacts container
    managed_identity_client_id: str = ""
    # Key Vault secret the ingest job reads the PII key from; "#client_id=<guid>" after it picks the
    # cluster's user-assigned identity (flights-spark) when the nodes have several
    pii_key_secret_uri: str = ""
    deferrable: bool = True
    poll_s: int = 30
    tags: dict = field(default_factory=lambda: {"project": "flights-lakehouse"})

    # --- derived locations ---------------------------------------------------------------
    @property
    def _host(self) -> str:
        endpoint = "dfs" if self.storage_scheme == "abfss" else "blob"
        return f"{self.storage_account}.{endpoint}.{self.storage_suffix}"

    def container_uri(self, container: str) -> str:
        return f"{self.storage_scheme}://{container}@{self._host}"

    @property
    def lake_root(self) -> str:
        return f"{self.container_uri(self.lake_container)}/{self.lake_prefix.strip('/')}"

    @property
    def landing_root(self) -> str:
        return f"{self.container_uri(self.lake_container)}/landing"

    @property
    def artifacts_root(self) -> str:
        return f"{self.container_uri(self.artifacts_container)}/{self.artifacts_prefix.strip('/')}"

    @property
    def account_url(self) -> str:
        """The Blob service endpoint the Python side (azure-storage-blob) talks to."""
        return self.blob_endpoint or f"https://{self.storage_account}.blob.{self.storage_suffix}"

    @property
    def training_output_uri(self) -> str:
        return f"{self.artifacts_root}/training/"

    @property
    def workspace_scope(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{self.ml_workspace}")

    @property
    def storage_scope(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Storage/storageAccounts/{self.storage_account}")

    def placeholders(self) -> dict[str, str]:
        """Values substituted into the role templates under infra/azure/."""
        return {
            "SUBSCRIPTION_ID": self.subscription_id, "RESOURCE_GROUP": self.resource_group,
            "LOCATION": self.location, "STORAGE_ACCOUNT": self.storage_account,
            "LAKE_CONTAINER": self.lake_container, "ARTIFACTS_CONTAINER": self.artifacts_container,
            "ML_WORKSPACE": self.ml_workspace, "HDINSIGHT_CLUSTER": self.hdinsight_cluster,
            "SYNAPSE_WORKSPACE": self.synapse_workspace, "SYNAPSE_SPARK_POOL": self.synapse_spark_pool,
            "TRAINING_COMPUTE": self.training_compute, "ML_DATASTORE": self.ml_datastore,
        }

    @classmethod
    def example(cls, **overrides) -> "AzureSettings":
        """Placeholder settings (subscription of zeros, account flightsexample) for the explain plan and tests."""
        base = cls(
            subscription_id="00000000-0000-0000-0000-000000000000", resource_group="flights-rg",
            location="eastus", storage_account="flightsexample", ml_workspace="flights-ml",
            hdinsight_cluster="flights-spark", synapse_workspace="flights-synapse", synapse_spark_pool="flightspool",
        )
        return replace(base, **overrides)


def load_azure_settings(env=None) -> AzureSettings:
    """Build and validate the Azure settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    require(env, ("FLIGHTS_AZURE_SUBSCRIPTION_ID", "FLIGHTS_AZURE_RESOURCE_GROUP", "FLIGHTS_AZURE_LOCATION",
                  "FLIGHTS_AZURE_STORAGE_ACCOUNT", "FLIGHTS_AZURE_ML_WORKSPACE"), "azure", DOC)
    subscription = get(env, "FLIGHTS_AZURE_SUBSCRIPTION_ID")
    if not _GUID.match(subscription):
        raise ConfigError(f"FLIGHTS_AZURE_SUBSCRIPTION_ID={subscription!r} is not a subscription id (a GUID); "
                          "`az account show --query id` prints it.")
    group, location = get(env, "FLIGHTS_AZURE_RESOURCE_GROUP"), get(env, "FLIGHTS_AZURE_LOCATION").lower()
    if not _RESOURCE_GROUP.match(group):
        raise ConfigError(f"FLIGHTS_AZURE_RESOURCE_GROUP={group!r} is not a resource group name.")
    if not _LOCATION.match(location):
        raise ConfigError(f"FLIGHTS_AZURE_LOCATION={location!r} is not a region name; use e.g. eastus or westeurope.")
    account = get(env, "FLIGHTS_AZURE_STORAGE_ACCOUNT")
    if not _STORAGE_ACCOUNT.match(account):
        raise ConfigError(f"FLIGHTS_AZURE_STORAGE_ACCOUNT={account!r} is not a storage account name "
                          "(3-24 lower-case letters and digits, no URL).")
    containers = {n: get(env, n, d) for n, d in (("FLIGHTS_AZURE_LAKE_CONTAINER", "lake"),
                                                 ("FLIGHTS_AZURE_ARTIFACTS_CONTAINER", "artifacts"))}
    for name, value in containers.items():
        if not _CONTAINER.match(value):
            raise ConfigError(f"{name}={value!r} is not a container (file system) name "
                              "(3-63 lower-case letters, digits and single hyphens).")
    scheme = get(env, "FLIGHTS_AZURE_STORAGE_SCHEME", "abfss").lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"FLIGHTS_AZURE_STORAGE_SCHEME={scheme!r} is not supported; use abfss: the ABFS driver "
                          "serves accounts with and without a hierarchical namespace, with the managed identity "
                          "(the wasb driver has none, and Hadoop 3.5 removed it).")
    blob_endpoint = get(env, "FLIGHTS_AZURE_BLOB_ENDPOINT").rstrip("/")
    service = get(env, "FLIGHTS_AZURE_SPARK_SERVICE", "hdinsight").lower()
    if service not in SPARK_SERVICES:
        raise ConfigError(f"FLIGHTS_AZURE_SPARK_SERVICE={service!r} is not supported; "
                          f"use {' or '.join(SPARK_SERVICES)}.")
    if service == "hdinsight":
        require(env, ("FLIGHTS_AZURE_HDINSIGHT_CLUSTER",), "azure", DOC)
    else:
        require(env, ("FLIGHTS_AZURE_SYNAPSE_WORKSPACE", "FLIGHTS_AZURE_SYNAPSE_SPARK_POOL"), "azure", DOC)
    names = {n: get(env, n, d) for n, d in (
        ("FLIGHTS_AZURE_ML_WORKSPACE", ""), ("FLIGHTS_AZURE_HDINSIGHT_CLUSTER", ""),
        ("FLIGHTS_AZURE_SYNAPSE_WORKSPACE", ""), ("FLIGHTS_AZURE_SYNAPSE_SPARK_POOL", ""),
        ("FLIGHTS_AZURE_TRAINING_COMPUTE", "gpu-cluster"))}
    for name, value in names.items():
        if value and not _NAME.match(value):
            raise ConfigError(f"{name}={value!r} is not a resource name (2-63 letters, digits, - and _).")
    conns = {n: get(env, n, d) for n, d in (("FLIGHTS_AZURE_LIVY_CONN_ID", "azure_hdinsight_livy"),
                                            ("FLIGHTS_AZURE_SYNAPSE_CONN_ID", "azure_synapse_default"))}
    for name, value in conns.items():
        if not _CONN_ID.match(value):
            raise ConfigError(f"{name}={value!r} is not an Airflow connection id.")
    runtime_name = get(env, "FLIGHTS_AZURE_SPARK_RUNTIME", DEFAULT_SPARK_RUNTIME[service])
    from include.targets.azure.runtimes import compatible_with_jobs, runtime

    try:
        row = runtime(runtime_name)
    except ValueError as exc:
        raise ConfigError(f"FLIGHTS_AZURE_SPARK_RUNTIME: {exc}") from None
    if not compatible_with_jobs(runtime_name):
        raise ConfigError(f"FLIGHTS_AZURE_SPARK_RUNTIME={runtime_name} (Spark {row.spark}, Delta {row.delta}) is not "
                          f"the line the jobs are tested on: {row.note} Use "
                          f"{' or '.join(sorted(set(DEFAULT_SPARK_RUNTIME.values())))} (Spark 3.5, Delta 3.2).")
    if row.service != service:
        raise ConfigError(f"FLIGHTS_AZURE_SPARK_RUNTIME={runtime_name} is a {row.service} runtime, but "
                          f"FLIGHTS_AZURE_SPARK_SERVICE={service}; pick a {service} row of "
                          "include/targets/azure/runtimes.py.")
    vm_size = get(env, "FLIGHTS_AZURE_TRAINING_VM_SIZE", "Standard_NC4as_T4_v3")
    if not _VM_SIZE.match(vm_size):
        raise ConfigError(f"FLIGHTS_AZURE_TRAINING_VM_SIZE={vm_size!r} is not a VM size (e.g. Standard_NC4as_T4_v3).")
    datastore = get(env, "FLIGHTS_AZURE_ML_DATASTORE", "flights_artifacts")
    if not _DATASTORE.match(datastore):
        raise ConfigError(f"FLIGHTS_AZURE_ML_DATASTORE={datastore!r} is not a datastore name (letters, digits, _).")
    identity = get(env, "FLIGHTS_AZURE_MANAGED_IDENTITY_CLIENT_ID")
    if identity and not _GUID.match(identity):
        raise ConfigError(f"FLIGHTS_AZURE_MANAGED_IDENTITY_CLIENT_ID={identity!r} is not a client id (a GUID).")
    return AzureSettings(
        subscription_id=subscription, resource_group=group, location=location, storage_account=account,
        ml_workspace=names["FLIGHTS_AZURE_ML_WORKSPACE"],
        lake_container=containers["FLIGHTS_AZURE_LAKE_CONTAINER"],
        artifacts_container=containers["FLIGHTS_AZURE_ARTIFACTS_CONTAINER"],
        lake_prefix=get(env, "FLIGHTS_AZURE_LAKE_PREFIX", "lake"),
        artifacts_prefix=get(env, "FLIGHTS_AZURE_ARTIFACTS_PREFIX", "artifacts"),
        storage_scheme=scheme, storage_suffix=get(env, "FLIGHTS_AZURE_STORAGE_SUFFIX", "core.windows.net"),
        blob_endpoint=blob_endpoint,
        spark_service=service, spark_runtime=runtime_name,
        livy_conn_id=conns["FLIGHTS_AZURE_LIVY_CONN_ID"],
        hdinsight_cluster=names["FLIGHTS_AZURE_HDINSIGHT_CLUSTER"],
        synapse_workspace=names["FLIGHTS_AZURE_SYNAPSE_WORKSPACE"],
        synapse_spark_pool=names["FLIGHTS_AZURE_SYNAPSE_SPARK_POOL"],
        synapse_conn_id=conns["FLIGHTS_AZURE_SYNAPSE_CONN_ID"],
        spark_driver_memory=get(env, "FLIGHTS_AZURE_SPARK_DRIVER_MEMORY", "4g"),
        spark_executor_memory=get(env, "FLIGHTS_AZURE_SPARK_EXECUTOR_MEMORY", "4g"),
        spark_executor_cores=integer(env, "FLIGHTS_AZURE_SPARK_EXECUTOR_CORES", 2),
        spark_num_executors=integer(env, "FLIGHTS_AZURE_SPARK_NUM_EXECUTORS", 2),
        spark_job_timeout_minutes=integer(env, "FLIGHTS_AZURE_SPARK_JOB_TIMEOUT_MIN", 120, 5),
        training_compute=names["FLIGHTS_AZURE_TRAINING_COMPUTE"],
        training_vm_size=vm_size,
        training_instance_count=integer(env, "FLIGHTS_AZURE_TRAINING_INSTANCE_COUNT", 1),
        training_low_priority=boolean(env, "FLIGHTS_AZURE_TRAINING_LOW_PRIORITY", False),
        training_environment_image=get(env, "FLIGHTS_AZURE_TRAINING_ENVIRONMENT_IMAGE"),
        training_max_runtime_s=integer(env, "FLIGHTS_AZURE_TRAINING_MAX_RUNTIME_S", 3600, 60),
        model_name=get(env, "FLIGHTS_AZURE_MODEL_NAME", "flights-delay-xgboost"),
        ml_datastore=datastore,
        managed_identity_client_id=identity,
        pii_key_secret_uri=pii_key_secret(env, "FLIGHTS_AZURE_PII_KEY_SECRET_URI", "include.targets.azure.pii_key",
                                          "a Key Vault secret URL (https://<vault>.vault.azure.net/secrets/<name>"
                                          "[/<version>][#client_id=<flights-spark client id>])"),
        deferrable=boolean(env, "FLIGHTS_AZURE_DEFERRABLE", True),
        poll_s=integer(env, "FLIGHTS_AZURE_POLL_S", 30),
    )
