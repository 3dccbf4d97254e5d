"""The gcp explain plan: the DAGs' own steps, their rendered requests, and the cost arithmetic of the price table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from include import plan
from include.config import REPO_ROOT, settings
from include.jobs import DEFAULT_RELEASE_REASON, JOBS, RunRef, job_args, result_uri, training_set_uri
from include.targets.gcp import dataproc
from include.targets.gcp.settings import GcpSettings
from tests.dag_runs import PlanTI as _TI, render as _render

CODE = {"prefix": "gs://flights-artifacts-example/artifacts/code/abc123",
        "zip": "gs://flights-artifacts-example/artifacts/code/abc123/flights.zip",
        "sourcedir": "gs://flights-artifacts-example/artifacts/code/abc123/sourcedir.tar.gz", "sha256": "abc123"}
DAILY = ["ingest_bronze", "build_features", "score_flights"]  # the suite gates run inside the first two
# The DAG files parsed with these settings (tests/dags/test_same_graph.py uses the same ones).
GCP_ENV = {"FLIGHTS_TARGET": "gcp", "FLIGHTS_GCP_PROJECT": "flights-example", "FLIGHTS_GCP_REGION": "us-central1",
           "FLIGHTS_GCP_LAKE_BUCKET": "flights-lake-example",
           "FLIGHTS_GCP_DATAPROC_SERVICE_ACCOUNT": "flights-dataproc@flights-example.iam.gserviceaccount.com",
           "FLIGHTS_GCP_VERTEX_SERVICE_ACCOUNT": "flights-vertex@flights-example.iam.gserviceaccount.com"}


def _steps(gcp: GcpSettings | None = None, pricing: dict | None = None) -> list[plan.Step]:
    return plan.gcp_plan(gcp or GcpSettings.example(), pricing or plan.load_pricing("gcp"), code=CODE)


# --- the plan walks the DAGs' own steps -----------------------------------------------------------


@pytest.fixture(scope="module", params=["serverless", "cluster"])
def dags_and_plan(request):
    """The DAGs as Airflow parses them on gcp, and the plan of the same settings through ``step_backend``."""
    from airflow.dag_processing.dagbag import DagBag

    import include.targets.gcp as target

    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("FLIGHTS_GCP_") or k == "FLIGHTS_WAREHOUSE"]:
            mp.delenv(key)
        for key, value in {**GCP_ENV, "FLIGHTS_GCP_SPARK_MODE": request.param}.items():
            mp.setenv(key, value)
        settings.cache_clear()
        try:
            bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
            backend = target.step_backend(settings())
        finally:
            settings.cache_clear()
    assert bag.import_errors == {}, bag.import_errors
    steps = plan.gcp_plan(None, plan.load_pricing("gcp"), backend=backend)
    return request.param, bag.dags, steps


def _is_python_task(task) -> bool:
    """Runs in Airflow itself, launching nothing on the cloud: a Python task, or the trigger of a recomputing run."""
    return type(task).__name__ in ("_PythonDecoratedOperator", "TriggerDagRunOperator")


def test_every_cloud_step_of_both_dags_is_planned_in_dag_order(dags_and_plan):
    mode, dags, steps = dags_and_plan
    for run, dag_id in plan.DAGS.items():
        dag = dags[dag_id]
        planned = [s.task_id for s in steps if s.run == run]
        cloud = {t.task_id for t in dag.tasks if not _is_python_task(t)}
        loads = {t.task_id for t in dag.tasks if t.task_group and t.task_group.group_id == "load_warehouse"}
        registry = {"register_model", "promote_champion"} & {t.task_id for t in dag.tasks}
        expected = cloud | loads | registry  # BigQuery loads and the registry run as Python tasks
        assert cloud and expected <= set(planned), f"{dag_id} ({mode}): {sorted(expected - set(planned))} unplanned"
        assert set(planned) <= {t.task_id for t in dag.tasks}, f"the plan invents tasks of {dag_id}"
        for i, task_id in enumerate(planned):  # upstream tasks come first
            upstream = dag.get_task(task_id).get_flat_relative_ids(upstream=True)
            assert not upstream & set(planned[i + 1:]), f"{task_id} is planned before its upstream tasks"
    if mode == "cluster":
        assert {"dataproc_create_cluster", "dataproc_delete_cluster"} <= {s.task_id for s in steps}


def test_the_requests_are_the_dags_requests_rendered(dags_and_plan):
    """Each operator of the DAG, its templates rendered for the sample run, is the request the plan prints."""
    mode, dags, steps = dags_and_plan
    planned = {(s.run, s.task_id): s for s in steps}
    for run, dag_id in plan.DAGS.items():
        dag = dags[dag_id]
        ref = plan.sample_ref(run)
        ctx = {"ti": _TI(ref), "run_id": ref.run_id, "params": dag.params.dump(), "dag": dag}
        for task in dag.tasks:
            if _is_python_task(task) or task.task_id.startswith("dataproc_"):
                continue
            spec = planned[(run, task.task_id)].spec
            if task.task_id == "train_models":
                want = _render(task.custom_job, ctx)["job_spec"]["worker_pool_specs"]
                assert spec["custom_job"]["job_spec"]["worker_pool_specs"] == want
                continue
            request = _render(task.batch["pyspark_batch"] if mode == "serverless" else task.job["pyspark_job"], ctx)
            got = spec["batch"]["pyspark_batch"] if mode == "serverless" else spec["job"]["pyspark_job"]
            assert got == request, f"{dag_id}.{task.task_id}: the plan's request is not the DAG's"
            assert spec["job_output"] == _render(task.job_output, ctx)


def test_batches_run_the_artefacts_entry_points_with_the_sample_days_arguments():
    steps = {s.task_id: s for s in _steps()}
    gcp, day = GcpSettings.example(), RunRef.of(plan.DAY, plan.RUN_ID)
    lake, landing = gcp.lake_root, gcp.landing_root
    for task_id in DAILY + ["export_training_set"]:
        batch = steps[task_id].spec["batch"]["pyspark_batch"]
        assert batch["main_python_file_uri"] == f"{CODE['prefix']}/spark_jobs/{JOBS[task_id]}.py"
        assert batch["python_file_uris"][0] == CODE["zip"]
        assert steps[task_id].spec["batch_id"].endswith("-t1")  # the first try's batch id
    assert steps["ingest_bronze"].spec["batch"]["pyspark_batch"]["args"] == job_args(
        "ingest_bronze", lake=lake, landing=landing, ref=day, release="False",
        released_by=f"flights_daily run {plan.RUN_ID}", release_reason=DEFAULT_RELEASE_REASON)
    assert steps["build_features"].spec["batch"]["pyspark_batch"]["args"] == job_args(
        "build_features", lake=lake, landing="", ref=day)
    assert steps["build_features"].spec["job_output"] == result_uri(lake, "gold", day)  # its gate's summary
    window = RunRef.of(plan.WINDOW, plan.TRAIN_RUN_ID)
    assert steps["export_training_set"].spec["batch"]["pyspark_batch"]["args"] == job_args(
        "export_training_set", lake=lake, landing=landing, ref=window, validation_days=7, holdout_days=7)
    args = steps["train_models"].spec["custom_job"]["job_spec"]["worker_pool_specs"][0]["container_spec"]["args"]
    assert args[:2] == ["--data-dir", training_set_uri(lake, window) + "/data"]
    text = json.dumps([s.spec for s in steps.values()])
    assert "{{" not in text and "set-at-run-time" not in text  # concrete values only


def test_bigquery_loads_show_the_load_job_and_the_merge():
    steps = {s.task_id: s for s in _steps()}
    for task_id, table in (("load_flight_outcomes", "analytics_flight_outcomes"),
                           ("load_flight_delay_predictions", "analytics_flight_delay_predictions")):
        spec = steps[task_id].spec
        assert spec["load_job"]["sourceFormat"] == "PARQUET" and spec["load_job"]["source_uris"][0].endswith(
            "/20130301_20130301/*.parquet")
        assert spec["merge_job"]["query"].startswith(f"MERGE `flights-example.flights.{table}`")
        assert spec["merge_job"]["query_parameters"] == {"start": "2013-03-01", "end": "2013-03-01"}


# --- costs -------------------------------------------------------------------------------------


def test_costs_follow_the_price_table():
    pricing = plan.load_pricing("gcp")
    steps = {s.task_id: s for s in _steps(pricing=pricing)}
    assert steps["ingest_bronze"].cost == pytest.approx(12 * 8 / 60 * 0.06 + 1200 * 8 / 60 * 0.04 / 730)
    assert steps["train_models"].cost == pytest.approx((0.3376 + 0.644) * 20 / 60)
    assert steps["load_flight_outcomes"].cost == pytest.approx((10 + 40 + 10) / 1024 ** 2 * 6.25)  # 10 MiB floors
    for s in steps.values():
        assert (s.cost > 0) == (s.operator != "VertexModelRegistry"), f"{s.task_id} costs {s.cost}"
    spot = {s.task_id: s for s in _steps(GcpSettings.example(training_spot=True), pricing)}
    assert spot["train_models"].cost == pytest.approx((0.3376 + 0.644) * 20 / 60 * (1 - 0.6))
    short = json.loads(json.dumps(pricing))
    short["estimates"]["build_features"]["minutes"] = 0.2  # under the minimum: billed one minute
    assert {s.task_id: s for s in _steps(pricing=short)}["build_features"].cost == pytest.approx(
        12 / 60 * 0.06 + 1200 / 60 * 0.04 / 730)


def test_total_is_the_sum_of_the_steps():
    pricing = plan.load_pricing("gcp")
    steps = _steps(pricing=pricing)
    text = plan.render(steps, "h", pricing)
    for run in ("daily", "training"):
        total = sum(s.cost for s in steps if s.run == run)
        assert total > 0 and f"Estimated cost per {run} run: ${total:.4f}" in text


def test_cluster_mode_creates_and_deletes_the_cluster_and_bills_it_once():
    pricing = plan.load_pricing("gcp")
    steps = [s for s in _steps(GcpSettings.example(spark_mode="cluster"), pricing) if s.run == "daily"]
    ids = [s.task_id for s in steps]
    last = len(DAILY) + 1
    assert ids[:last + 1] == ["dataproc_create_cluster", *DAILY, "dataproc_delete_cluster"]
    name = dataproc.cluster_name("flights_daily", plan.DAY.key, plan.RUN_ID)
    assert steps[0].spec["cluster_name"] == steps[last].spec["cluster_name"] == name
    assert all(s.spec["job"]["placement"]["cluster_name"] == name and s.cost == 0 for s in steps[1:last])
    node = 0.194236 + 4 * 0.01 + 500 * 0.04 / 730  # n2-standard-4, Dataproc's premium, its 500 GB boot disk
    minutes = sum(pricing["estimates"][t]["minutes"] for t in DAILY) + 5
    assert [s.cost > 0 for s in steps[:last + 1]] == [True] + [False] * last
    assert steps[0].cost == pytest.approx(3 * node * minutes / 60)


def test_a_machine_without_a_price_names_what_to_add():
    with pytest.raises(ValueError, match="n2-highmem-64.*compute_engine"):
        _steps(GcpSettings.example(spark_mode="cluster", dataproc_worker_machine_type="n2-highmem-64"))
    with pytest.raises(ValueError, match="a3-highgpu-8g.*vertex_training"):
        _steps(GcpSettings.example(training_machine_type="a3-highgpu-8g"))


def test_price_table_is_dated_illustrative_and_regional(tmp_path):
    pricing = plan.load_pricing("gcp")
    assert pricing["as_of"] == "2026-11-29" and pricing["region"] == "us-central1"
    assert "illustrative" in pricing["note"].lower()
    data = json.loads(plan.PRICING_FILE.read_text())
    del data["gcp"]
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no price table for 'gcp'"):
        plan.load_pricing("gcp", bad)


def test_cli_without_gcp_settings_uses_placeholders():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLIGHTS_GCP_") and k != "FLIGHTS_WAREHOUSE"}
    out = subprocess.run([sys.executable, "-m", "include.plan", "--target", "gcp"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "placeholder settings (FLIGHTS_GCP_PROJECT not set)" in text
    assert "as of 2026-11-29" in text and "us-central1" in text
    for task in DAILY + ["load_flight_outcomes", "load_flight_delay_predictions", "export_training_set",
                         "train_models", "register_model", "promote_champion"]:
        assert f"- {task}: " in text
    assert text.count(": ReattachingDataprocBatchOperator") == 4 and "ReattachingVertexCustomJobOperator" in text
