"""The real DAGs with ``FLIGHTS_AWS_SPARK_MODE=ec2``: Spark on a transient EMR cluster, on the moto server.

moto creates the cluster and records each step, but runs nothing: a thread stands in for
the cluster and ends each step it finds (COMPLETED, or FAILED for the job a test breaks),
and the S3 outputs the jobs would write are seeded as in ``test_dags_on_aws``. The tests
assert the control plane: one cluster per run, created before the first step and
terminated after the last whatever happened, every job a named step with the local
target's arguments, and a failed step failing its task and stopping the run.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from datetime import date

import pytest

from include.config import settings
from include.intervals import Interval
from include.jobs import DEFAULT_RELEASE_REASON, RunRef, job_args
from include.targets.aws.cluster import cluster_name
from tests.aws.conftest import ACCOUNT, REGION
from tests.aws.test_dags_on_aws import (ARTIFACTS, LAKE, LAKE_ROOT, LANDING, _patch_redshift, _run, _run_id,
                                        _seed_day, _states, _tis)

OK_DAY, FAILING_DAY = date(2013, 7, 1), date(2013, 7, 2)
EMR_TASKS = ["ingest_bronze", "build_features"]  # each runs its gate after its writes


@pytest.fixture(scope="module")
def env(moto_endpoint, airflow_db, tmp_path_factory):
    import boto3

    def client(service):
        return boto3.client(service, region_name=REGION, endpoint_url=moto_endpoint)

    s3 = client("s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in {LAKE, ARTIFACTS} - existing:
        s3.create_bucket(Bucket=bucket)
    role = f"arn:aws:iam::{ACCOUNT}:role/flights-"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "FLIGHTS_TARGET": "aws", "FLIGHTS_WAREHOUSE": "redshift", "FLIGHTS_HOME": str(tmp_path_factory.mktemp("aws-ec2-dags") / "home"),
            "FLIGHTS_ALERT_CHANNELS": "file", "FLIGHTS_AWS_REGION": REGION, "FLIGHTS_AWS_ACCOUNT_ID": ACCOUNT,
            "FLIGHTS_AWS_LAKE_BUCKET": LAKE, "FLIGHTS_AWS_ARTIFACTS_BUCKET": ARTIFACTS,
            "FLIGHTS_AWS_EMR_JOB_ROLE_ARN": role + "emr-job", "FLIGHTS_AWS_SAGEMAKER_ROLE_ARN": role + "sagemaker",
            "FLIGHTS_AWS_SPARK_MODE": "ec2", "FLIGHTS_AWS_EMR_APPLICATION_ID": "",
            # moto checks release labels against emr-X.Y.Z: run the 7.12 row; the pinned default is checked in
            # test_emr_cluster.
            "FLIGHTS_AWS_EMR_RELEASE": "emr-7.12.0",
            "FLIGHTS_AWS_REDSHIFT_WORKGROUP": "flights", "FLIGHTS_AWS_REDSHIFT_COPY_ROLE_ARN": role + "redshift-copy",
            "FLIGHTS_AWS_ENDPOINT_URL": moto_endpoint, "FLIGHTS_AWS_DEFERRABLE": "false", "FLIGHTS_AWS_POLL_S": "1",
            "FLIGHTS_AWS_MODEL_PACKAGE_GROUP": f"flights-ec2-{uuid.uuid4().hex[:8]}",
        }.items():
            mp.setenv(key, value)
        settings.cache_clear()
        _patch_redshift(mp, client("redshift-data"))
        from include.targets.aws import artifact

        artifact.upload(artifact.build_artifact(), f"s3://{ARTIFACTS}/artifacts", s3)
        yield {"s3": s3, "emr": client("emr")}
    settings.cache_clear()


@contextmanager
def emr_cluster_runs_steps(fail: str = ""):
    """Stand in for the cluster: end every pending or running step; the step of task ``fail`` fails."""
    from moto.emr.models import emr_backends

    stop = threading.Event()

    def work():
        while not stop.wait(0.2):
            for cluster in list(emr_backends[ACCOUNT][REGION].clusters.values()):
                for step in cluster.steps:
                    if step.state in ("PENDING", "RUNNING"):
                        step.state = "FAILED" if fail and f".{fail}." in step.name else "COMPLETED"

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _clusters(env, day: date) -> list[dict]:
    name = cluster_name("flights_daily", f"{day:%Y%m%d}_{day:%Y%m%d}", _run_id(day))
    return [c for c in env["emr"].list_clusters()["Clusters"] if c["Name"] == name]


def _steps(env, cluster_id: str) -> list[dict]:
    return list(reversed(env["emr"].list_steps(ClusterId=cluster_id)["Steps"]))  # oldest first


def test_a_day_runs_its_jobs_as_steps_of_one_cluster_that_is_terminated_after(env):
    _seed_day(env["s3"], OK_DAY)
    with emr_cluster_runs_steps():
        dr = _run("flights_daily", OK_DAY)
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert all(states[t] == "success" for t in ["emr_create_cluster", *EMR_TASKS, "emr_terminate_cluster",
                                                "load_flight_outcomes"])
    assert states["score_flights"] == "skipped"  # no champion in this module's registry

    clusters = _clusters(env, OK_DAY)
    assert len(clusters) == 1 and clusters[0]["Status"]["State"] == "TERMINATED"
    tis = _tis(dr)
    assert tis["emr_create_cluster"].end_date <= tis["ingest_bronze"].start_date
    assert tis["emr_terminate_cluster"].start_date >= tis["build_features"].end_date

    key, run_id = f"{OK_DAY:%Y%m%d}_{OK_DAY:%Y%m%d}", _run_id(OK_DAY)
    steps = _steps(env, clusters[0]["Id"])
    assert [s["Name"] for s in steps] == [f"flights_daily.{t}.{key}.try1" for t in EMR_TASKS]  # in order, named
    ref = RunRef.of(Interval(OK_DAY, OK_DAY), run_id)
    bronze_args = job_args("ingest_bronze", lake=LAKE_ROOT, landing=LANDING, ref=ref, release="False",
                           released_by=f"flights_daily run {run_id}", release_reason=DEFAULT_RELEASE_REASON)
    gold_args = job_args("build_features", lake=LAKE_ROOT, landing=LANDING, ref=ref)
    assert steps[0]["Config"]["Args"][-len(bronze_args):] == bronze_args  # the local target's arguments
    assert steps[1]["Config"]["Args"][-len(gold_args):] == gold_args
    assert steps[0]["Config"]["Args"][:3] == ["spark-submit", "--deploy-mode", "cluster"]


def test_a_failed_step_fails_its_task_stops_the_run_and_the_cluster_is_still_terminated(env):
    _seed_day(env["s3"], FAILING_DAY)
    with emr_cluster_runs_steps(fail="build_features"):
        dr = _run("flights_daily", FAILING_DAY)
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["build_features"] == "failed" and states["enforce_gold_gate"] == "upstream_failed"
    assert states["load_flight_outcomes"] == "upstream_failed"
    assert states["emr_terminate_cluster"] == "success"  # the teardown ran although the run failed

    clusters = _clusters(env, FAILING_DAY)
    assert len(clusters) == 1 and clusters[0]["Status"]["State"] == "TERMINATED"
    names = [s["Name"] for s in _steps(env, clusters[0]["Id"])]
    key = f"{FAILING_DAY:%Y%m%d}_{FAILING_DAY:%Y%m%d}"
    tries = _tis(dr)["build_features"].try_number
    assert tries > 1  # retried: every try ran the job again as a new step, none reattached to the failed one
    assert [n for n in names if ".build_features." in n] == [
        f"flights_daily.build_features.{key}.try{n}" for n in range(1, tries + 1)]
    assert not [n for n in names if ".score_flights." in n]  # nothing after the failed job
