"""The real DAGs with ``FLIGHTS_TARGET=aws``, run by ``dag.test()`` against the moto server.

moto runs neither Spark nor training: EMR Serverless job runs and SageMaker training jobs
complete at once. So each test seeds in S3 exactly what the job would write (gate
summaries, exports, the training set, a model artefact trained for real on a small
fixture) and asserts the control plane: which jobs were submitted, in which order, under
which deterministic names, with which rendered arguments; that a failed gate stops the
run and alerts over SNS; that a retry reattaches to the job of its first try; and that
killing a task cancels its job. Redshift Data statements stay STARTED forever on moto:
their final status is patched to FINISHED, and the rendered load SQL is then run on the
real PostgreSQL server with the COPY replaced by rows.

Most tests wait inside the worker (``FLIGHTS_AWS_DEFERRABLE=false``); the deferred tests run
both DAGs with the default deferred waits, where ``dag.test()`` runs each trigger in-process
against the moto server (through aiobotocore) and resumes the task with its event.

The module runs in its own FLIGHTS_HOME, buckets and model package group; the Airflow
metadata database is the session's, with logical dates no other test uses.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from datetime import date, timezone
from pathlib import Path

import pytest

from include.config import settings
from include.intervals import Interval
from include.jobs import DEFAULT_RELEASE_REASON, JOBS, RunRef, job_args, result_uri, training_set_uri
from include.targets.cloud.naming import training_job_name
from tests.dag_runs import dag as _dag, gate as _gate, parquet as _parquet, run as _run, run_id as _run_id
from tests.dag_runs import states as _states, tis as _tis, train_small_model
from tests.aws.conftest import ACCOUNT, REGION

REPO = Path(__file__).resolve().parents[2]
UTC = timezone.utc
LAKE, ARTIFACTS = "flights-dagtest-lake", "flights-dagtest-artifacts"
LAKE_ROOT, LANDING = f"s3://{LAKE}/lake", f"s3://{LAKE}/landing"
DAY1, DAY2, BAD_DAY, RETRY_DAY = date(2013, 6, 3), date(2013, 6, 11), date(2013, 6, 12), date(2013, 6, 13)
TRAIN_DAY, DEFERRED_DAY, DEFERRED_TRAIN_DAY = date(2013, 6, 10), date(2013, 6, 14), date(2013, 6, 15)
WINDOW = Interval(date(2013, 5, 1), date(2013, 6, 2))
EMR_TASKS = ["ingest_bronze", "build_features"]  # each runs its gate after its writes


def _put(s3, uri: str, body: bytes) -> None:
    bucket, _, key = uri[len("s3://"):].partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def _seed_day(s3, day: date, *, bronze_ok: bool = True, scored: bool = False) -> None:
    """What the landing delivery and each EMR job of the day would write."""
    ref = RunRef.of(Interval(day, day), _run_id(day))
    for ds in ("flights", "weather"):
        _put(s3, f"{LANDING}/{ds}/{ds}_{day:%Y-%m-%d}.csv", b"year,month,day\n2013,6,3\n")
    _put(s3, result_uri(LAKE_ROOT, "bronze", ref), _gate(LAKE_ROOT, "bronze/flights", "bronze.flights", bronze_ok))
    _put(s3, result_uri(LAKE_ROOT, "gold", ref),
         _gate(LAKE_ROOT, "gold/flight_features", "gold.flight_features", True))
    _put(s3, f"{LAKE_ROOT}/exports/flight_outcomes/{ref.key}/part-0.parquet",
         _parquet({"flight_id": [f"{ref.key}-UA-1"], "flight_date": [day], "dep_delay": [3.0], "arr_delay": [20.0],
                   "is_delayed": [1], "cancelled": [False]}))
    if scored:
        _put(s3, result_uri(LAKE_ROOT, "predictions", ref),
             _gate(LAKE_ROOT, "predictions/flight_delay_risk", "predictions.flight_delay_risk", True))
        _put(s3, f"{LAKE_ROOT}/exports/predictions/{ref.key}/part-0.parquet", _parquet({"flight_id": ["x"]}))


@pytest.fixture(scope="module")
def env(moto_endpoint, airflow_db, tmp_path_factory):
    """FLIGHTS_TARGET=aws on the moto server: buckets, code, EMR application, SNS topic → SQS queue."""
    import boto3

    def client(service):
        return boto3.client(service, region_name=REGION, endpoint_url=moto_endpoint)

    s3 = client("s3")
    for bucket in (LAKE, ARTIFACTS):
        s3.create_bucket(Bucket=bucket)
    emr = client("emr-serverless")
    app = emr.create_application(name="flights-dags", releaseLabel="emr-7.12.0", type="SPARK")["applicationId"]
    topic = client("sns").create_topic(Name="flights-dag-alerts")["TopicArn"]
    sqs = client("sqs")
    queue = sqs.create_queue(QueueName="flights-dag-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    role = f"arn:aws:iam::{ACCOUNT}:role/flights-"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "FLIGHTS_TARGET": "aws", "FLIGHTS_WAREHOUSE": "redshift",
            "FLIGHTS_HOME": str(tmp_path_factory.mktemp("aws-dags") / "home"),
            "FLIGHTS_ALERT_CHANNELS": "file,sns", "FLIGHTS_SNS_TOPIC_ARN": topic,
            "FLIGHTS_AWS_REGION": REGION, "FLIGHTS_AWS_ACCOUNT_ID": ACCOUNT, "FLIGHTS_AWS_LAKE_BUCKET": LAKE,
            "FLIGHTS_AWS_ARTIFACTS_BUCKET": ARTIFACTS, "FLIGHTS_AWS_EMR_JOB_ROLE_ARN": role + "emr-job",
            "FLIGHTS_AWS_SAGEMAKER_ROLE_ARN": role + "sagemaker-execution", "FLIGHTS_AWS_EMR_APPLICATION_ID": app,
            "FLIGHTS_AWS_REDSHIFT_WORKGROUP": "flights", "FLIGHTS_AWS_REDSHIFT_COPY_ROLE_ARN": role + "redshift-copy",
            "FLIGHTS_AWS_ENDPOINT_URL": moto_endpoint,
            # Waits run in the worker here; the deferred tests switch to the default deferred waits.
            "FLIGHTS_AWS_DEFERRABLE": "false", "FLIGHTS_AWS_POLL_S": "1",
            "FLIGHTS_AWS_MODEL_PACKAGE_GROUP": f"flights-dags-{uuid.uuid4().hex[:8]}",
        }.items():
            mp.setenv(key, value)
        settings.cache_clear()
        _patch_redshift(mp, client("redshift-data"))
        yield {"s3": s3, "emr": emr, "app": app, "sqs": sqs, "queue": queue, "client": client, "mp": mp}
    settings.cache_clear()


LOAD_REQUESTS: list[dict] = []
UNPATCHED: dict = {}


def _patch_redshift(mp, data_api) -> None:
    """Statements reach moto for real; their final status is FINISHED (moto keeps them STARTED forever)."""
    from airflow.providers.amazon.aws.hooks.redshift_data import QueryExecutionOutput, RedshiftDataHook

    from include.targets.aws.redshift import RedshiftWarehouse

    def status(self, statement_id):
        return {**self.client.describe_statement(Id=statement_id), "Status": "FINISHED", "HasResultSet": False}

    def execute_query(self, *, sql, **kwargs):
        # moto has no BatchExecuteStatement: the batch is recorded and sent as one statement for an id.
        LOAD_REQUESTS.append({"sql": list(sql), **kwargs})
        sid = data_api.execute_statement(Sql=";\n".join(sql), Database=kwargs["database"],
                                         WorkgroupName=kwargs["workgroup_name"])["Id"]
        return QueryExecutionOutput(statement_id=sid, session_id=None)

    UNPATCHED["check_query_is_finished"] = RedshiftDataHook.check_query_is_finished
    mp.setattr(RedshiftWarehouse, "status", status)
    mp.setattr(RedshiftDataHook, "execute_query", execute_query)
    mp.setattr(RedshiftDataHook, "check_query_is_finished", lambda self, statement_id: True)


def _jobs(env, key: str) -> dict[str, dict]:
    """EMR Serverless job runs of an interval, by name, with their request."""
    runs = env["emr"].list_job_runs(applicationId=env["app"])["jobRuns"]
    return {r["name"]: env["emr"].get_job_run(applicationId=env["app"], jobRunId=r["id"])["jobRun"]
            for r in runs if f".{key}.try" in r["name"]}


def _statements() -> list:
    from moto.redshiftdata.models import redshiftdata_backends

    return list(redshiftdata_backends[ACCOUNT][REGION].statements.values())


def _alerts(env) -> list[dict]:
    out = []
    while True:
        msgs = env["sqs"].receive_message(QueueUrl=env["queue"], MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            out.append(json.loads(m["Body"]))
            env["sqs"].delete_message(QueueUrl=env["queue"], ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture(scope="module")
def uploaded(env):
    from include.targets.aws import artifact, code_uris

    uris = artifact.upload(artifact.build_artifact(), f"s3://{ARTIFACTS}/artifacts", env["s3"])
    assert uris["zip"] == code_uris(f"s3://{ARTIFACTS}/artifacts")["zip"]  # what the DAGs were parsed with
    return uris


@pytest.fixture(scope="module")
def first_day(env, uploaded):
    _seed_day(env["s3"], DAY1)
    LOAD_REQUESTS.clear()
    dr = _run("flights_daily", DAY1)
    return dr, list(LOAD_REQUESTS)


def test_a_day_runs_its_spark_jobs_on_emr_serverless_in_order_with_the_local_arguments(env, uploaded, first_day):
    dr, _ = first_day
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert {t: states[t] for t in EMR_TASKS + ["enforce_bronze_gate", "enforce_gold_gate", "load_flight_outcomes"]} \
        == dict.fromkeys(EMR_TASKS + ["enforce_bronze_gate", "enforce_gold_gate", "load_flight_outcomes"], "success")
    # No champion yet: scoring is skipped, outcomes still load.
    assert {t: states[t] for t in ("find_champion", "score_flights", "enforce_predictions_gate",
                                   "load_flight_delay_predictions")} == dict.fromkeys(
        ("find_champion", "score_flights", "enforce_predictions_gate", "load_flight_delay_predictions"), "skipped")

    key, run_id = "20130603_20130603", _run_id(DAY1)
    jobs = _jobs(env, key)
    names = [f"flights_daily.{t}.{key}.try1" for t in EMR_TASKS]
    assert sorted(jobs) == sorted(names)  # deterministic names: dag, task, interval, try
    tis = _tis(dr)
    started = sorted(EMR_TASKS, key=lambda t: tis[t].start_date)
    assert started == EMR_TASKS  # submitted in the DAG's order
    ref = RunRef.of(Interval(DAY1, DAY1), run_id)
    expected = {
        "ingest_bronze": job_args("ingest_bronze", lake=LAKE_ROOT, landing=LANDING, ref=ref, release="False",
                                  released_by=f"flights_daily run {run_id}", release_reason=DEFAULT_RELEASE_REASON),
        "build_features": job_args("build_features", lake=LAKE_ROOT, landing=LANDING, ref=ref),
    }
    for task_id, args in expected.items():
        run = jobs[f"flights_daily.{task_id}.{key}.try1"]
        driver = run["jobDriver"]["sparkSubmit"]
        assert driver["entryPointArguments"] == args, task_id  # the local target's arguments, rendered
        assert driver["entryPoint"] == f"{uploaded['prefix']}/spark_jobs/{JOBS[task_id]}.py"
        assert f"--py-files {uploaded['zip']}," in driver["sparkSubmitParameters"]
        assert run["tags"]["airflow_run_id"] == run_id and run["tags"]["airflow_try"] == "1"
    args = expected["ingest_bronze"]
    run_key = "manual__2013-06-03T00_00_00_00_00"
    assert args[args.index("--result") + 1] == f"{LAKE_ROOT}/_quality/bronze/{key}/{run_key}.json"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--check"] == [
        "bronze/flights=bronze.flights", "bronze/weather=bronze.weather"]  # the bronze gate, in the same job
    # The gate task returns the summary the local gate returns (Data Docs link included).
    assert tis["enforce_bronze_gate"].xcom_pull(task_ids="enforce_bronze_gate")["docs"] == {
        "bronze/flights": f"{LAKE_ROOT}/_docs/bronze/flights.html"}


def test_gate_results_are_recorded_through_the_redshift_data_api(env, first_day):
    gates = [s for s in _statements() if s.query_string.startswith("INSERT INTO ops.quality_gates")]
    mine = [{p["name"]: p["value"] for p in s.query_parameters} for s in gates]
    mine = [m for m in mine if m.get("run_id") == _run_id(DAY1)]
    assert {m["suite"] for m in mine} == {"bronze/flights", "gold/flight_features"}
    assert all(m["success"] == "true" and m["interval_start"] == "2013-06-03" for m in mine)


def test_the_outcomes_load_is_one_data_api_batch_replacing_the_interval(env, first_day, postgres_url):
    _, requests = first_day
    [load] = requests  # predictions were not scored: one table to load
    prefix = f"{LAKE_ROOT}/exports/flight_outcomes/20130603_20130603/"
    from include.targets.aws.redshift import load_statements

    assert load["sql"] == load_statements("analytics.flight_outcomes", prefix,
                                          f"arn:aws:iam::{ACCOUNT}:role/flights-redshift-copy", DAY1, DAY1,
                                          explicit_transaction=False)
    assert load["workgroup_name"] == "flights" and load["database"] == "dev"
    # The rendered batch, run on PostgreSQL in one transaction with the COPY replaced by rows, replaces the day.
    import psycopg2

    from include.targets.aws.redshift import redshift_ddl
    from include.warehouse import LOADS

    conn = psycopg2.connect(postgres_url)
    try:
        with conn, conn.cursor() as cur:
            for stmt in redshift_ddl():  # the Redshift DDL is valid SQL for both
                cur.execute(stmt)
            cur.execute("DELETE FROM analytics.flight_outcomes")
            cur.execute("INSERT INTO analytics.flight_outcomes (flight_id, flight_date) VALUES "
                        "('old-1', '2013-06-03'), ('old-2', '2013-06-04')")
        cols = LOADS["analytics.flight_outcomes"]
        with conn, conn.cursor() as cur:  # one transaction, as a Data API batch
            for stmt in load["sql"]:
                if stmt.startswith("COPY "):
                    cur.execute(f"INSERT INTO stage_flight_outcomes ({', '.join(cols)}) VALUES "
                                "('new-1', '2013-06-03', 1, 20, 1, false), ('new-x', '2013-06-05', 1, 20, 1, false)")
                else:
                    cur.execute(stmt)
        with conn.cursor() as cur:
            cur.execute("SELECT flight_id FROM analytics.flight_outcomes ORDER BY 1")
            assert cur.fetchall() == [("new-1",), ("old-2",)]  # the day replaced, other days untouched
    finally:
        conn.close()


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """A model.tar.gz as the SageMaker job writes it: the trainer's real outputs on a small fixture."""
    out, data = train_small_model(tmp_path_factory.mktemp("aws-train"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path in sorted(p for p in out.output_dir.rglob("*") if p.is_file()):
            tf.add(path, arcname=path.relative_to(out.output_dir).as_posix())
    return {"tar": buf.getvalue(), "data": data.read_bytes(), "metrics": out.metrics}


def _seed_training(env, trained_model, day: date) -> tuple[str, str]:
    """What the export job and the SageMaker job of the training run on ``day`` would write."""
    run_id = _run_id(day)
    dataset = training_set_uri(LAKE_ROOT, RunRef.of(WINDOW, run_id))
    _put(env["s3"], f"{dataset}/data/part-0.parquet", trained_model["data"])
    _put(env["s3"], f"{dataset}/manifest.json", b"{}")
    job = training_job_name("flights_training", "train_models", WINDOW.key, run_id, 1)
    _put(env["s3"], f"s3://{ARTIFACTS}/artifacts/training/{job}/output/model.tar.gz", trained_model["tar"])
    return job, dataset


def _train(day: date):
    return _run("flights_training", day, {"train_start": str(WINDOW.start), "train_end": str(WINDOW.end),
                                          "validation_days": 3, "holdout_days": 7})


@pytest.fixture(scope="module")
def training(env, uploaded, trained_model, first_day):
    job, dataset = _seed_training(env, trained_model, TRAIN_DAY)
    return _train(TRAIN_DAY), job, dataset


def test_training_exports_on_emr_trains_on_sagemaker_and_promotes_in_the_registry(env, training, trained_model):
    dr, job, dataset = training
    assert str(dr.state) == "success", _states(dr)
    runs = _jobs(env, WINDOW.key)
    [export] = [r for n, r in runs.items() if n.startswith("flights_training.export_training_set.")]
    assert export["name"] == f"flights_training.export_training_set.{WINDOW.key}.try1"
    args = export["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    assert args == job_args("export_training_set", lake=LAKE_ROOT, landing="", ref=RunRef.of(WINDOW, dr.run_id),
                            validation_days=3, holdout_days=7)
    tis = _tis(dr)
    assert tis["export_training_set"].xcom_pull(task_ids="export_training_set") == dataset  # what train_models reads
    desc = env["client"]("sagemaker").describe_training_job(TrainingJobName=job)
    assert desc["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == dataset + "/data/"
    assert desc["HyperParameters"]["n_estimators"] == "400" and desc["HyperParameters"]["device"] == "auto"
    assert desc["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    promoted = tis["promote_champion"].xcom_pull(task_ids="promote_champion")
    assert promoted["promoted"] is True and promoted["version"] == "1", promoted
    from include.targets import get_target

    champion = get_target().registry.champion()
    assert champion.version == "1"
    assert champion.metrics["auc"] == pytest.approx(trained_model["metrics"]["xgboost"]["auc"])
    decisions = [s for s in _statements() if s.query_string.startswith("INSERT INTO ops.model_decisions")]
    assert any({p["name"]: p["value"] for p in s.query_parameters}.get("promoted") == "true" for s in decisions)


def test_with_a_champion_the_day_is_scored_from_the_bundle_published_on_s3(env, training):
    _seed_day(env["s3"], DAY2, scored=True)
    LOAD_REQUESTS.clear()
    dr = _run("flights_daily", DAY2)
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert states["score_flights"] == states["enforce_predictions_gate"] == "success"
    key = "20130611_20130611"
    bundle = f"s3://{ARTIFACTS}/artifacts/models/{os.environ['FLIGHTS_AWS_MODEL_PACKAGE_GROUP']}/1/bundle"
    score = _jobs(env, key)[f"flights_daily.score_flights.{key}.try1"]
    args = score["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    assert args[args.index("--model-dir") + 1] == bundle and args[args.index("--model-version") + 1] == "1"
    listed = env["s3"].list_objects_v2(Bucket=ARTIFACTS, Prefix=bundle.split("/", 3)[3] + "/")["Contents"]
    assert {o["Key"].rsplit("/", 1)[1] for o in listed} >= {"model.json", "feature_spec.json"}
    assert _tis(dr)["enforce_predictions_gate"].xcom_pull(task_ids="enforce_predictions_gate") == {
        "scored": True, "model_version": "1", "drift": {}}  # the seeded job result counts no drift
    assert sorted(r["sql"][2].split()[2] for r in LOAD_REQUESTS) == [
        "analytics.flight_delay_predictions", "analytics.flight_outcomes"]


def test_a_failed_gate_stops_the_run_before_the_next_job_and_alerts_over_sns(env, first_day):
    _seed_day(env["s3"], BAD_DAY, bronze_ok=False)
    _alerts(env)  # drop earlier messages
    dr = _run("flights_daily", BAD_DAY)
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["ingest_bronze"] == "success" and states["enforce_bronze_gate"] == "failed"
    assert all(states[t] == "upstream_failed" for t in ("build_features", "enforce_gold_gate", "score_flights",
                                                         "load_flight_outcomes"))
    assert _tis(dr)["enforce_bronze_gate"].try_number == 1  # a failed gate is not retried
    key = "20130612_20130612"
    assert sorted(_jobs(env, key)) == [f"flights_daily.ingest_bronze.{key}.try1"]  # nothing after the gate
    alerts = [a for a in _alerts(env) if "enforce_bronze_gate" in a["Subject"]]
    assert alerts and alerts[0]["Subject"] == "[flights] Quality gate failed in flights_daily.enforce_bronze_gate"
    assert "expect_column_values_to_be_between on 'distance' [distance_range]" in alerts[0]["Message"]
    assert "Interval: 2013-06-12" in alerts[0]["Message"]


def test_a_retry_reattaches_to_the_job_of_its_first_try_and_kill_cancels(env, first_day):
    from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook

    _seed_day(env["s3"], RETRY_DAY, scored=True)  # a champion exists by now when the whole module runs
    original = EmrServerlessHook.get_waiter
    lost = []

    def lose_the_worker_while_the_first_job_runs(self, name, *args, **kwargs):
        if name == "serverless_job_completed" and not lost:
            lost.append(name)  # the job was submitted; the worker dies while waiting for it
            raise RuntimeError("worker lost while the job ran")
        return original(self, name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EmrServerlessHook, "get_waiter", lose_the_worker_while_the_first_job_runs)
        dr = _run("flights_daily", RETRY_DAY)
    assert str(dr.state) == "success", _states(dr)
    key = "20130613_20130613"
    jobs = _jobs(env, key)
    ingest = [n for n in jobs if ".ingest_bronze." in n]
    assert ingest == [f"flights_daily.ingest_bronze.{key}.try1"]  # try 2 submitted nothing
    ti = _tis(dr)["ingest_bronze"]
    assert ti.try_number == 2 and lost  # the first try failed after submitting; the second reattached

    # Killing the task while its job runs cancels the job run.
    from moto.emrserverless.models import emrserverless_backends

    job_id = jobs[f"flights_daily.build_features.{key}.try1"]["jobRunId"]
    backend = emrserverless_backends[ACCOUNT][REGION]
    next(j for j in backend.job_runs[env["app"]] if j.id == job_id).state = "RUNNING"
    op = _dag("flights_daily").get_task("build_features")
    op.job_id = job_id
    op.on_kill()
    assert env["emr"].get_job_run(applicationId=env["app"], jobRunId=job_id)["jobRun"]["state"] == "CANCELLED"


def test_missing_code_fails_at_once_naming_the_upload_command(env, uploaded):
    from airflow.sdk.exceptions import AirflowFailException

    op = _dag("flights_daily").get_task("ingest_bronze")
    op.job_driver = {"sparkSubmit": {**op.job_driver["sparkSubmit"],
                                     "entryPoint": f"s3://{ARTIFACTS}/artifacts/code/0000/spark_jobs/x.py"}}
    with pytest.raises(AirflowFailException, match="python -m include.targets.aws.artifact"):
        op._check_code()


def test_deferred_steps_need_aiobotocore_and_a_failed_wait_says_so(env, uploaded):
    import importlib.util
    from dataclasses import replace

    from include.config import ConfigError
    from include.targets.aws import code_uris
    from include.targets.aws.operators import JobStateError
    from include.targets.aws.settings import load_aws_settings
    from include.targets.aws.steps import AwsSteps

    aws = replace(load_aws_settings(), deferrable=True)
    find_spec = importlib.util.find_spec
    with pytest.MonkeyPatch.context() as mp:  # as where aiobotocore is not installed
        mp.setattr("importlib.util.find_spec", lambda name, *a: None if name == "aiobotocore" else find_spec(name, *a))
        with pytest.raises(ConfigError, match=r"apache-airflow-providers-amazon\[aiobotocore\]"):
            AwsSteps(aws, code_uris(aws.artifacts_root))
    AwsSteps(aws, code_uris(aws.artifacts_root))  # the lock installs it
    op = _dag("flights_daily").get_task("ingest_bronze")
    op.job_id = "00job"
    with pytest.raises(JobStateError, match="was not cancelled; the retry reattaches"):
        op.execute_complete({}, {"status": "failure", "message": "No module named 'aiobotocore'"})


def test_the_cloud_steps_are_deferrable_by_default(env, uploaded):
    from dataclasses import replace

    from include.targets.aws import code_uris
    from include.targets.aws.settings import load_aws_settings
    from include.steps import Steps
    from include.targets.aws.steps import AwsSteps

    aws = replace(load_aws_settings(), deferrable=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("importlib.util.find_spec", lambda name, *a: object())  # as where aiobotocore is installed
        steps = Steps(AwsSteps(aws, code_uris(aws.artifacts_root)))
    from airflow.sdk import DAG

    with DAG("probe", schedule=None):
        from airflow.sdk import task

        window = task(lambda: {}, task_id="resolve_window")()
        dataset = steps.spark("export_training_set", window)
        steps.train("train_models", dataset, window)
    ops = {t.task_id: t for t in window.operator.dag.tasks}
    assert ops["export_training_set"].deferrable and ops["export_training_set"].cancel_on_kill
    assert ops["train_models"].deferrable and ops["export_training_set"].pool == "spark"


@pytest.fixture()
def deferred(env):
    """The default deferred waits; yields the triggers ``dag.test()`` ran, as (task, trigger class, event)."""
    import airflow.sdk.definitions.dag as dag_module
    from airflow.providers.amazon.aws.hooks.redshift_data import RedshiftDataHook

    from tests.aws.conftest import jobs_run_for_one_poll

    ran: list[tuple[str, str, dict]] = []
    run_inline = dag_module._run_inline_trigger

    def recorded(trigger, ti):  # records, then runs the trigger as dag.test does
        event = run_inline(trigger, ti)
        ran.append((ti.task_id, type(trigger).__name__, event.payload if event else None))
        return event

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTS_AWS_DEFERRABLE", "true")
        settings.cache_clear()
        jobs_run_for_one_poll(mp)  # training jobs and load statements are running when first checked
        mp.setattr(RedshiftDataHook, "check_query_is_finished", UNPATCHED["check_query_is_finished"])
        mp.setattr(dag_module, "_run_inline_trigger", recorded)
        yield ran
    settings.cache_clear()


def _deferred_tasks(ran) -> dict[str, tuple[str, dict]]:
    by_task = {}
    for task_id, trigger, event in ran:
        assert task_id not in by_task, f"{task_id} deferred twice"
        by_task[task_id] = (trigger, event)
    return by_task


def test_a_day_with_deferred_waits_defers_every_cloud_task_and_resumes_it(env, uploaded, first_day, deferred):
    _seed_day(env["s3"], DEFERRED_DAY, scored=True)
    dr = _run("flights_daily", DEFERRED_DAY)
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert _dag("flights_daily").get_task("ingest_bronze").deferrable  # parsed with the default
    cloud = [t for t in EMR_TASKS + ["score_flights", "load_flight_outcomes", "load_flight_delay_predictions"]
             if states[t] == "success"]  # scoring runs once a champion exists (when the module runs in order)
    assert set(EMR_TASKS + ["load_flight_outcomes"]) <= set(cloud)
    by_task = _deferred_tasks(deferred)
    assert set(by_task) == set(cloud)  # every cloud task deferred once, nothing else did
    key = "20130614_20130614"
    jobs = _jobs(env, key)
    for task_id in set(cloud) & set(EMR_TASKS + ["score_flights"]):
        trigger, event = by_task[task_id]
        assert trigger == "EmrServerlessStartJobTrigger" and event["status"] == "success", task_id
        assert event["job_details"]["job_id"] == jobs[f"flights_daily.{task_id}.{key}.try1"]["jobRunId"]
    for task_id in set(cloud) - set(EMR_TASKS + ["score_flights"]):
        trigger, event = by_task[task_id]
        assert trigger == "RedshiftDataTrigger" and event["status"] == "success", task_id
    # Resumed: each task finished through execute_complete with the trigger's event, on its first try.
    tis = _tis(dr)
    assert all(tis[t].try_number == 1 for t in cloud)
    assert tis["ingest_bronze"].xcom_pull(task_ids="ingest_bronze") == result_uri(
        LAKE_ROOT, "bronze", RunRef.of(Interval(DEFERRED_DAY, DEFERRED_DAY), _run_id(DEFERRED_DAY)))


def test_training_with_deferred_waits_defers_export_and_training_and_resumes(env, trained_model, training, deferred):
    job, dataset = _seed_training(env, trained_model, DEFERRED_TRAIN_DAY)
    dr = _train(DEFERRED_TRAIN_DAY)
    assert str(dr.state) == "success", _states(dr)
    by_task = _deferred_tasks(deferred)
    assert {t: trigger for t, (trigger, _) in by_task.items()} == {
        "export_training_set": "EmrServerlessStartJobTrigger", "train_models": "StoppingSageMakerTrigger"}
    assert by_task["train_models"][1] == {"status": "success", "job_name": job}
    tis = _tis(dr)
    assert tis["export_training_set"].xcom_pull(task_ids="export_training_set") == dataset
    trained = tis["train_models"].xcom_pull(task_ids="train_models")["Training"]
    assert trained["TrainingJobName"] == job and trained["TrainingJobStatus"] == "Completed"
    assert tis["register_model"].state == "success"
