"""The azure explain plan: the DAGs' own steps, their rendered requests, and the cost arithmetic of the price table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from include import plan
from include.config import REPO_ROOT, settings
from include.jobs import RunRef, job_args
from include.targets.azure.settings import AzureSettings
from include.targets.cloud.naming import short_job_name
from tests.dag_runs import PlanTI as _TI, render as _render

CODE = {"prefix": "abfss://artifacts@flightsexample.dfs.core.windows.net/artifacts/code/abc123",
        "zip": "abfss://artifacts@flightsexample.dfs.core.windows.net/artifacts/code/abc123/flights.zip",
        "sourcedir": "abfss://artifacts@flightsexample.dfs.core.windows.net/artifacts/code/abc123/sourcedir.tar.gz",
        "sha256": "abc123"}
DAILY = ["ingest_bronze", "build_features", "score_flights"]  # the suite gates run inside the first two
AZURE_ENV = {"FLIGHTS_TARGET": "azure", "FLIGHTS_AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
             "FLIGHTS_AZURE_RESOURCE_GROUP": "flights-rg", "FLIGHTS_AZURE_LOCATION": "eastus",
             "FLIGHTS_AZURE_STORAGE_ACCOUNT": "flightsexample", "FLIGHTS_AZURE_ML_WORKSPACE": "flights-ml",
             "FLIGHTS_AZURE_HDINSIGHT_CLUSTER": "flights-spark", "FLIGHTS_AZURE_SYNAPSE_WORKSPACE": "flights-synapse",
             "FLIGHTS_AZURE_SYNAPSE_SPARK_POOL": "flightspool"}

# operators that run in Airflow itself and launch nothing on Azure: Python tasks, the trigger of a recomputing run
IN_AIRFLOW = ("_PythonDecoratedOperator", "TriggerDagRunOperator")


def _steps(azure: AzureSettings | None = None, pricing: dict | None = None) -> list[plan.Step]:
    return plan.azure_plan(azure or AzureSettings.example(), pricing or plan.load_pricing("azure"), code=CODE)


@pytest.fixture(scope="module", params=["hdinsight", "synapse"])
def dags_and_plan(request):
    """The DAGs as Airflow parses them on azure, and the plan of the same settings through ``step_backend``."""
    from airflow.dag_processing.dagbag import DagBag

    import include.targets.azure as target

    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("FLIGHTS_AZURE_") or k == "FLIGHTS_WAREHOUSE"]:
            mp.delenv(key)
        for key, value in {**AZURE_ENV, "FLIGHTS_AZURE_SPARK_SERVICE": request.param}.items():
            mp.setenv(key, value)
        settings.cache_clear()
        try:
            bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
            backend = target.step_backend(settings())
        finally:
            settings.cache_clear()
    assert bag.import_errors == {}, bag.import_errors
    return request.param, bag.dags, plan.azure_plan(None, plan.load_pricing("azure"), backend=backend)


def test_every_cloud_step_of_both_dags_is_planned_in_dag_order(dags_and_plan):
    service, dags, steps = dags_and_plan
    for run, dag_id in plan.DAGS.items():
        dag = dags[dag_id]
        planned = [s.task_id for s in steps if s.run == run]
        cloud = {t.task_id for t in dag.tasks if type(t).__name__ not in IN_AIRFLOW}
        loads = {t.task_id for t in dag.tasks if t.task_group and t.task_group.group_id == "load_warehouse"}
        registry = {"register_model", "promote_champion"} & {t.task_id for t in dag.tasks}
        assert cloud and cloud | loads | registry <= set(planned), f"{dag_id} ({service}) has unplanned steps"
        assert set(planned) <= {t.task_id for t in dag.tasks}
        for i, task_id in enumerate(planned):
            upstream = dag.get_task(task_id).get_flat_relative_ids(upstream=True)
            assert not upstream & set(planned[i + 1:]), f"{task_id} is planned before its upstream tasks"


def test_the_requests_are_the_dags_requests_rendered(dags_and_plan):
    """Each Spark operator of the DAG, its templates rendered for the sample run, is the request the plan prints."""
    service, dags, steps = dags_and_plan
    planned = {(s.run, s.task_id): s for s in steps}
    for run, dag_id in plan.DAGS.items():
        dag = dags[dag_id]
        ref = plan.sample_ref(run)
        ctx = {"ti": _TI(ref), "run_id": ref.run_id, "params": dag.params.dump(), "dag": dag}
        for task in dag.tasks:
            if type(task).__name__ in IN_AIRFLOW or task.task_id == "train_models":
                continue
            spec = planned[(run, task.task_id)].spec
            name = short_job_name(dag_id, task.task_id, ref.key, ref.run_id, 1)
            if service == "synapse":
                assert spec["payload"] == {**_render(task.payload, ctx), "name": name}
            else:
                body = spec["body"]
                assert body["name"] == name and body["file"] == task.spark_params["file"]
                assert body["args"] == _render(task.spark_params["args"], ctx), f"{dag_id}.{task.task_id}"
                assert body["pyFiles"] == task.spark_params["py_files"] and body["jars"] == task.spark_params["jars"]
                assert body["conf"] == task.spark_params["conf"]
            assert spec["job_output"] == _render(task.job_output, ctx)


def test_livy_batches_run_the_artefacts_entry_points_with_the_sample_days_arguments():
    steps = {s.task_id: s for s in _steps()}
    azure, day = AzureSettings.example(), RunRef.of(plan.DAY, plan.RUN_ID)
    body = steps["build_features"].spec["body"]
    assert body["file"] == f"{CODE['prefix']}/spark_jobs/gold_flight_features.py"
    assert body["args"] == job_args("build_features", lake=azure.lake_root, landing=azure.landing_root, ref=day)
    assert body["pyFiles"][0] == CODE["zip"] and body["pyFiles"][1] == body["jars"][0]
    assert steps["build_features"].spec["headers"] == {"X-Requested-By": "airflow"}  # Livy's CSRF header


def test_the_training_request_is_the_sdks_own_serialisation():
    train = {s.task_id: s for s in _steps()}["train_models"]
    body = train.spec["body"]
    assert train.spec["PUT"].endswith("/workspaces/flights-ml/jobs/" + short_job_name(
        "flights_training", "train_models", plan.WINDOW.key, plan.TRAIN_RUN_ID, 1))
    props = body["properties"]
    assert props["jobType"] == "Command" and props["computeId"].endswith("gpu-cluster")
    assert props["limits"]["timeout"] == "PT1H"  # FLIGHTS_AZURE_TRAINING_MAX_RUNTIME_S, as ISO 8601


def test_costs_follow_the_price_table():
    pricing = plan.load_pricing("azure")
    steps = {s.task_id: s for s in _steps(pricing=pricing)}
    cluster_hour = 2 * 0.336 + 2 * 0.672  # two E4 v3 head nodes, two E8 v3 workers
    assert steps["ingest_bronze"].cost == pytest.approx(cluster_hour * 8 / 60)
    assert steps["train_models"].cost == pytest.approx(0.526 * 20 / 60)
    low = {s.task_id: s for s in _steps(AzureSettings.example(training_low_priority=True), pricing)}
    assert low["train_models"].cost == pytest.approx(0.526 * 20 / 60 * (1 - 0.8))
    synapse = {s.task_id: s for s in _steps(AzureSettings.example(spark_service="synapse",
                                                                  spark_runtime="synapse-3.5"), pricing)}
    assert synapse["build_features"].cost == pytest.approx(0.143 * 12 * 10 / 60)
    text = plan.render(list(steps.values()), "h", pricing)
    for run in ("daily", "training"):
        total = sum(s.cost for s in steps.values() if s.run == run)
        assert total > 0 and f"Estimated cost per {run} run: ${total:.4f}" in text


def test_a_vm_without_a_price_names_what_to_add():
    with pytest.raises(ValueError, match="Standard_ND96asr_v4.*azureml_training"):
        _steps(AzureSettings.example(training_vm_size="Standard_ND96asr_v4"))
    bad = json.loads(plan.PRICING_FILE.read_text())["azure"]
    bad["prices"]["hdinsight"]["cluster"]["worker"] = ["Standard_L8s_v3", 2]
    with pytest.raises(ValueError, match="Standard_L8s_v3.*hdinsight"):
        _steps(pricing=bad)


def test_cli_without_azure_settings_uses_placeholders():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLIGHTS_AZURE_") and k != "FLIGHTS_WAREHOUSE"}
    out = subprocess.run([sys.executable, "-m", "include.plan", "--target", "azure"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "placeholder settings (FLIGHTS_AZURE_SUBSCRIPTION_ID not set)" in text
    assert "warehouse postgres" in text and "as of 2026-11-29" in text and "eastus" in text
    for task in DAILY + ["load_flight_outcomes", "load_flight_delay_predictions", "export_training_set",
                         "train_models", "register_model", "promote_champion"]:
        assert f"- {task}: " in text
    assert text.count(": ReattachingLivyOperator") == 4 and "AzureMLCommandJobOperator" in text
