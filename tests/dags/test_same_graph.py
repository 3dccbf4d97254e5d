"""Every target builds the same task graph: ids, edges, task groups, trigger rules and pools.

The DAG files are parsed once per target, with that target's example settings (no cloud
call happens at parse time). Per-run clusters (EMR on EC2, a Dataproc cluster) add their
setup and teardown tasks around the Spark jobs and nothing else.
"""

from __future__ import annotations

import pytest

from include.config import settings
from include.targets import _MODULES

REPO_DAGS = "dags"

# Placeholder settings of each cloud target: enough to build its operators, never used to call it.
ENV = {
    "local": {},
    "aws": {"FLIGHTS_AWS_REGION": "us-east-1", "FLIGHTS_AWS_ACCOUNT_ID": "123456789012",
            "FLIGHTS_AWS_LAKE_BUCKET": "flights-lake-example", "FLIGHTS_AWS_EMR_APPLICATION_ID": "00example",
            "FLIGHTS_AWS_EMR_JOB_ROLE_ARN": "arn:aws:iam::123456789012:role/flights-emr-job",
            "FLIGHTS_AWS_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/flights-sagemaker-execution",
            "FLIGHTS_AWS_REDSHIFT_WORKGROUP": "flights",
            "FLIGHTS_AWS_REDSHIFT_COPY_ROLE_ARN": "arn:aws:iam::123456789012:role/flights-redshift-copy"},
    "gcp": {"FLIGHTS_GCP_PROJECT": "flights-example", "FLIGHTS_GCP_REGION": "us-central1",
            "FLIGHTS_GCP_LAKE_BUCKET": "flights-lake-example",
            "FLIGHTS_GCP_DATAPROC_SERVICE_ACCOUNT": "flights-dataproc@flights-example.iam.gserviceaccount.com",
            "FLIGHTS_GCP_VERTEX_SERVICE_ACCOUNT": "flights-vertex@flights-example.iam.gserviceaccount.com"},
    "azure": {"FLIGHTS_AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
              "FLIGHTS_AZURE_RESOURCE_GROUP": "flights-rg", "FLIGHTS_AZURE_LOCATION": "eastus",
              "FLIGHTS_AZURE_STORAGE_ACCOUNT": "flightsexample", "FLIGHTS_AZURE_ML_WORKSPACE": "flights-ml",
              "FLIGHTS_AZURE_HDINSIGHT_CLUSTER": "flights-spark"},
}
CLUSTER_MODES = {"aws": {"FLIGHTS_AWS_SPARK_MODE": "ec2"}, "gcp": {"FLIGHTS_GCP_SPARK_MODE": "cluster"}}
# Other ways a target runs its Spark jobs without a per-run cluster: the same graph exactly.
OTHER_SPARK_SERVICES = {"azure": {"FLIGHTS_AZURE_SPARK_SERVICE": "synapse", "FLIGHTS_AZURE_SYNAPSE_WORKSPACE":
                                  "flights-synapse", "FLIGHTS_AZURE_SYNAPSE_SPARK_POOL": "flightspool"}}


def _graph(monkeypatch, target: str, extra: dict | None = None, drop_setup_teardown: bool = False) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("FLIGHTS_TARGET", target)
    monkeypatch.delenv("FLIGHTS_WAREHOUSE", raising=False)  # each target's default warehouse
    for key, value in {**ENV[target], **(extra or {})}.items():
        monkeypatch.setenv(key, value)
    settings.cache_clear()
    try:
        bag = DagBag(dag_folder=REPO_DAGS)
    finally:
        settings.cache_clear()
    assert bag.import_errors == {}, bag.import_errors
    out = {}
    for dag_id, dag in sorted(bag.dags.items()):
        skip = {t.task_id for t in dag.tasks if drop_setup_teardown and (t.is_setup or t.is_teardown)}
        out[dag_id] = {
            t.task_id: {"upstream": sorted(t.upstream_task_ids - skip),
                        "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule), "pool": t.pool,
                        "group": t.task_group.group_id if t.task_group else None,
                        "setup": t.is_setup, "teardown": t.is_teardown}
            for t in dag.tasks if t.task_id not in skip}
    return out


@pytest.fixture(scope="module")
def local_graph():
    with pytest.MonkeyPatch.context() as mp:
        return _graph(mp, "local")


def test_every_configured_target_has_a_package():
    from include.config import TARGETS

    assert set(TARGETS) == set(_MODULES) == set(ENV)


@pytest.mark.parametrize("target", sorted(set(_MODULES) - {"local"}))
def test_each_target_builds_the_local_graph(monkeypatch, local_graph, target):
    graph = _graph(monkeypatch, target)
    for dag_id in local_graph:
        assert graph[dag_id] == local_graph[dag_id], f"{target} builds another {dag_id} graph"


@pytest.mark.parametrize("target", sorted(CLUSTER_MODES))
def test_a_per_run_cluster_only_adds_its_setup_and_teardown(monkeypatch, local_graph, target):
    full = _graph(monkeypatch, target, CLUSTER_MODES[target])
    added = {t for t, v in full["flights_daily"].items() if t not in local_graph["flights_daily"]}
    assert added and all(full["flights_daily"][t]["setup"] or full["flights_daily"][t]["teardown"] for t in added)
    assert _graph(monkeypatch, target, CLUSTER_MODES[target], drop_setup_teardown=True) == local_graph


def test_the_graph_is_built_by_the_one_step_factory(local_graph):
    daily = local_graph["flights_daily"]
    assert daily["find_champion"]["group"] == "scoring"
    assert "ingest_bronze" in daily["enforce_bronze_gate"]["upstream"]
    assert "build_features" in daily["enforce_gold_gate"]["upstream"]
    assert daily["load_flight_outcomes"]["trigger_rule"] == "none_failed"
    # each suite gate is computed by the job that wrote its tables: no Spark job of its own
    assert {t for t, v in daily.items() if v["pool"] == "spark"} == {"ingest_bronze", "build_features", "score_flights"}


@pytest.mark.parametrize("target", sorted(OTHER_SPARK_SERVICES))
def test_another_spark_service_builds_the_same_graph(monkeypatch, local_graph, target):
    assert _graph(monkeypatch, target, OTHER_SPARK_SERVICES[target]) == local_graph
