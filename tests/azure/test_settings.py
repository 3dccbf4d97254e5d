"""FLIGHTS_AZURE_* settings: what a real deployment sets, and a clear message for each mistake."""

from __future__ import annotations

import pytest

from include.config import ConfigError
from include.targets.azure.settings import load_azure_settings

BASE = {"FLIGHTS_AZURE_SUBSCRIPTION_ID": "12345678-1234-1234-1234-123456789abc",
        "FLIGHTS_AZURE_RESOURCE_GROUP": "acme-flights", "FLIGHTS_AZURE_LOCATION": "westeurope",
        "FLIGHTS_AZURE_STORAGE_ACCOUNT": "acmeflights", "FLIGHTS_AZURE_ML_WORKSPACE": "acme-ml",
        "FLIGHTS_AZURE_HDINSIGHT_CLUSTER": "acme-spark"}


def test_a_real_deployment_resolves_the_lake_the_workspace_and_the_runtime():
    azure = load_azure_settings(BASE)
    assert azure.lake_root == "abfss://lake@acmeflights.dfs.core.windows.net/lake"
    assert azure.landing_root == "abfss://lake@acmeflights.dfs.core.windows.net/landing"
    assert azure.artifacts_root == "abfss://artifacts@acmeflights.dfs.core.windows.net/artifacts"
    assert azure.account_url == "https://acmeflights.blob.core.windows.net"
    assert azure.workspace_scope.endswith("/resourceGroups/acme-flights/providers/"
                                          "Microsoft.MachineLearningServices/workspaces/acme-ml")
    assert (azure.spark_service, azure.spark_runtime) == ("hdinsight", "livy-spark-3.5")  # Livy before Spark 3.5
    synapse = load_azure_settings({**BASE, "FLIGHTS_AZURE_SPARK_SERVICE": "synapse",
                                   "FLIGHTS_AZURE_SYNAPSE_WORKSPACE": "acme-syn",
                                   "FLIGHTS_AZURE_SYNAPSE_SPARK_POOL": "flights"})
    assert synapse.spark_runtime == "synapse-3.5"


def test_every_missing_variable_is_named_at_once():
    with pytest.raises(ConfigError, match="FLIGHTS_AZURE_RESOURCE_GROUP, FLIGHTS_AZURE_LOCATION.*running-on-azure"):
        load_azure_settings({"FLIGHTS_AZURE_SUBSCRIPTION_ID": BASE["FLIGHTS_AZURE_SUBSCRIPTION_ID"]})
    with pytest.raises(ConfigError, match="FLIGHTS_AZURE_SYNAPSE_WORKSPACE, FLIGHTS_AZURE_SYNAPSE_SPARK_POOL"):
        load_azure_settings({**BASE, "FLIGHTS_AZURE_SPARK_SERVICE": "synapse"})


@pytest.mark.parametrize("name, value, message", [
    ("FLIGHTS_AZURE_SUBSCRIPTION_ID", "acme", "not a subscription id"),
    ("FLIGHTS_AZURE_STORAGE_ACCOUNT", "https://acme.blob.core.windows.net", "not a storage account name"),
    ("FLIGHTS_AZURE_LAKE_CONTAINER", "Lake_1", "not a container"),
    ("FLIGHTS_AZURE_STORAGE_SCHEME", "wasbs", "use abfss"),
    ("FLIGHTS_AZURE_SPARK_SERVICE", "databricks", "hdinsight or synapse"),
    ("FLIGHTS_AZURE_SPARK_RUNTIME", "synapse-3.5", "is a synapse runtime"),
    ("FLIGHTS_AZURE_SPARK_RUNTIME", "hdinsight-9", "runtimes.py"),
    ("FLIGHTS_AZURE_SPARK_RUNTIME", "hdinsight-5.1", "Spark 3.3, Delta 2.3.0.*not the line the jobs are tested on"),
    ("FLIGHTS_AZURE_TRAINING_VM_SIZE", "NC4as_T4_v3", "not a VM size"),
    ("FLIGHTS_AZURE_MANAGED_IDENTITY_CLIENT_ID", "flights-airflow", "not a client id"),
    ("FLIGHTS_AZURE_ML_DATASTORE", "flights-artifacts", "not a datastore name"),
    ("FLIGHTS_AZURE_TRAINING_MAX_RUNTIME_S", "10", "below 60"),
    ("FLIGHTS_AZURE_DEFERRABLE", "maybe", "not a boolean"),
])
def test_a_wrong_value_is_named_with_the_fix(name, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_azure_settings({**BASE, name: value})
    assert name in str(err.value)  # the message names the variable to fix


def test_the_key_vault_secret_names_in_the_docs_are_the_backends():
    from airflow.providers.microsoft.azure.secrets.key_vault import AzureKeyVaultBackend

    from include.config import REPO_ROOT

    doc = (REPO_ROOT / "docs" / "running-on-azure.md").read_text()
    for conn_id in ("azure_hdinsight_livy", "flights_warehouse"):
        name = AzureKeyVaultBackend.build_path("airflow-connections", conn_id)
        assert f"--name {name} " in doc or f"`{name}`" in doc, name
