"""The explain plan walks the same steps on every target: only what runs each step differs."""

from __future__ import annotations

from include import plan
from include.config import load_settings
from include.targets.aws.settings import AwsSettings
from include.targets.aws.steps import AwsSteps
from include.targets.gcp import GcpSteps
from include.targets.gcp.settings import GcpSettings
from include.targets.local import LocalSteps


def _code(scheme: str) -> dict[str, str]:
    root = f"{scheme}://flights-artifacts-example/artifacts/code/abc"
    return {"prefix": root, "zip": f"{root}/flights.zip", "sourcedir": f"{root}/sourcedir.tar.gz", "sha256": "abc"}


CLUSTER_TASKS = {"emr_create_cluster", "emr_terminate_cluster", "dataproc_create_cluster", "dataproc_delete_cluster"}


def _steps(backend) -> list[tuple[str, str, str]]:
    return [(c.run, c.kind, c.task_id) for c in plan.walk(backend) if c.task_id not in CLUSTER_TASKS]


def test_every_target_plans_the_same_steps_in_the_same_order():
    local = _steps(LocalSteps(load_settings()))
    assert [t for _, kind, t in local if kind == "spark"] == [*plan.SPARK_STEPS["daily"], *plan.SPARK_STEPS["training"]]
    assert {t for _, kind, t in local if kind == "load"} == {"load_flight_outcomes", "load_flight_delay_predictions"}
    s3, gs = _code("s3"), _code("gs")
    for backend in (AwsSteps(AwsSettings.example(deferrable=False), s3),
                    AwsSteps(AwsSettings.example(spark_mode="ec2", deferrable=False), s3),
                    GcpSteps(GcpSettings.example(), gs), GcpSteps(GcpSettings.example(spark_mode="cluster"), gs)):
        assert _steps(backend) == local, f"{type(backend).__name__} plans other steps"


def test_the_cluster_wraps_exactly_the_spark_jobs_of_each_run():
    calls = plan.walk(GcpSteps(GcpSettings.example(spark_mode="cluster"), _code("gs")))
    for run in plan.DAGS:
        kinds = [c.kind for c in calls if c.run == run]
        first, last = kinds.index("cluster_create"), kinds.index("cluster_delete")
        assert set(kinds[first + 1:last]) == {"spark"} and "spark" not in kinds[:first] + kinds[last + 1:]


def test_the_local_target_still_plans(capsys):
    assert plan.main(["--target", "local"]) == 0
    out = capsys.readouterr().out
    assert "Target local" in out and "Estimated cost per training run: $0.0000" in out
