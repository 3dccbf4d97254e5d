"""The real DAGs with ``FLIGHTS_TARGET=gcp``, run by ``dag.test()``.

The lake and the artifacts bucket are on the Cloud Storage emulator; Dataproc, Vertex AI jobs
and the Vertex AI Model Registry are answered at the client boundary by ``tests.gcp.fakes``
(every request validated with the client library's own message types, answers are real
messages); Pub/Sub alerts go through the real client to a gRPC server on loopback. The
warehouse is DuckDB here (``FLIGHTS_WAREHOUSE`` is chosen on its own; the BigQuery loads are
tested on the BigQuery emulator in ``test_bigquery.py``), reading the exports from GCS.

No Spark runs on a fake Dataproc and no model trains on a fake Vertex AI: each test seeds in
GCS exactly what the job would write (gate summaries, exports, the training set, a model folder
trained for real on a small fixture) and asserts the control plane: which batches and jobs were
submitted, in which order, under which deterministic ids, with which rendered arguments; that a
failed gate stops the run and alerts over Pub/Sub; that a retry reattaches to the batch of its
first try; that a kill cancels; and that promotion moves the registry's ``champion`` alias.
"""

from __future__ import annotations

import json
from datetime import date, timezone
from pathlib import Path

import pytest

from include.config import settings
from include.intervals import Interval
from include.jobs import JOBS, RunRef, job_args, result_uri, training_set_uri
from include.targets.cloud.naming import short_job_name
from tests.dag_runs import dag as _dag, run as _run, run_id as _run_id
from tests.dag_runs import seed_day as _seed, states as _states, tis as _tis, train_small_model
from tests.gcp.fakes import FakeDataproc, FakeJobService, FakeModelService, pubsub_server

REPO = Path(__file__).resolve().parents[2]
UTC = timezone.utc
PROJECT, REGION = "flights-example", "us-central1"
LAKE, ARTIFACTS = "flights-gcpdag-lake", "flights-gcpdag-artifacts"
LAKE_ROOT, LANDING = f"gs://{LAKE}/lake", f"gs://{LAKE}/landing"
TOPIC = f"projects/{PROJECT}/topics/flights-alerts"
DAY1, DAY2, BAD_DAY, RETRY_DAY, TRAIN_DAY = (date(2013, 7, 3), date(2013, 7, 11), date(2013, 7, 12),
                                             date(2013, 7, 13), date(2013, 7, 10))
WINDOW = Interval(date(2013, 6, 1), date(2013, 7, 2))
SPARK_TASKS = ["ingest_bronze", "build_features"]  # each runs its gate after its writes


def _key(day: date) -> str:
    return f"{day:%Y%m%d}_{day:%Y%m%d}"


def _batch_id(task_id: str, day: date, try_number: int = 1, dag_id: str = "flights_daily", key: str = "") -> str:
    return short_job_name(dag_id, task_id, key or _key(day), _run_id(day), try_number, lower=True)


def _put(client, uri: str, body: bytes) -> None:
    bucket, _, key = uri[len("gs://"):].partition("/")
    client.bucket(bucket).blob(key).upload_from_string(body)


def _seed_day(client, day: date, *, bronze_ok: bool = True, scored: bool = False) -> None:
    """What the landing delivery and each Dataproc batch of the day would write."""
    _seed(lambda uri, body: _put(client, uri, body), LAKE_ROOT, LANDING, day, bronze_ok=bronze_ok, scored=scored)


def _wh(sql: str):
    from include.targets import get_target

    return get_target().warehouse.query(sql)[1]


@pytest.fixture(scope="module")
def env(gcs_endpoint, airflow_db, tmp_path_factory):
    """FLIGHTS_TARGET=gcp: buckets on the emulator, the Google APIs answered at the client boundary."""
    from airflow.providers.google.cloud.hooks.dataproc import DataprocHook
    from airflow.providers.google.cloud.hooks.gcs import GCSHook
    from airflow.providers.google.cloud.hooks.pubsub import PubSubHook
    from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from include.targets.gcp.vertex_registry import VertexModelRegistry

    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    for bucket in (LAKE, ARTIFACTS):
        if client.lookup_bucket(bucket) is None:
            client.create_bucket(bucket)
    dataproc, jobs, models = FakeDataproc(), FakeJobService(), FakeModelService()
    dataproc.outcome = ("SUCCEEDED", "")  # a batch the worker reads while it runs ends as succeeded
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "FLIGHTS_TARGET": "gcp", "FLIGHTS_WAREHOUSE": "duckdb",
            "FLIGHTS_HOME": str(tmp_path_factory.mktemp("gcp-dags") / "home"),
            "FLIGHTS_ALERT_CHANNELS": "file,pubsub", "FLIGHTS_GCP_PUBSUB_TOPIC": TOPIC,
            "FLIGHTS_GCP_PROJECT": PROJECT, "FLIGHTS_GCP_REGION": REGION, "FLIGHTS_GCP_LAKE_BUCKET": LAKE,
            "FLIGHTS_GCP_ARTIFACTS_BUCKET": ARTIFACTS,
            "FLIGHTS_GCP_DATAPROC_SERVICE_ACCOUNT": f"flights-dataproc@{PROJECT}.iam.gserviceaccount.com",
            "FLIGHTS_GCP_VERTEX_SERVICE_ACCOUNT": f"flights-vertex@{PROJECT}.iam.gserviceaccount.com",
            # Waits run in the worker here (the deferred paths are tested per operator).
            "FLIGHTS_GCP_DEFERRABLE": "false", "FLIGHTS_GCP_POLL_S": "1",
        }.items():
            mp.setenv(key, value)
        with pubsub_server(mp, PROJECT) as alerts:
            mp.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"project": PROJECT, "is_anonymous": True}}))
            mp.setattr(DataprocHook, "get_batch_client", lambda self, region=None: dataproc)
            mp.setattr(DataprocHook, "get_job_client", lambda self, region=None: dataproc)
            mp.setattr(CustomJobHook, "get_job_service_client", lambda self, region=None: jobs)
            mp.setattr(GCSHook, "get_conn", lambda self: client)
            mp.setattr(PubSubHook, "get_credentials", lambda self: AnonymousCredentials())
            mp.setattr(VertexModelRegistry, "client", property(lambda self: models))
            settings.cache_clear()
            yield {"gcs": client, "dataproc": dataproc, "jobs": jobs, "models": models, "alerts": alerts}
    settings.cache_clear()


@pytest.fixture(scope="module")
def uploaded(env):
    """This checkout's code and the runtime's Delta jars in the artifacts bucket, as the upload command leaves them."""
    from include.targets.gcp import artifact, code_uris
    from include.targets.gcp.gcs import GcsStore
    from include.targets.gcp.settings import load_gcp_settings

    gcp = load_gcp_settings()
    uris = artifact.upload(gcp, GcsStore(env["gcs"]))
    assert uris["zip"] == code_uris(gcp.artifacts_root)["zip"]  # what the DAGs were parsed with
    assert artifact.upload(gcp, GcsStore(env["gcs"]))["written"] == "0"  # idempotent
    return uris


@pytest.fixture(scope="module")
def first_day(env, uploaded):
    _seed_day(env["gcs"], DAY1)
    return _run("flights_daily", DAY1)


def uploaded_prefix(env) -> str:
    from include.targets.gcp import code_uris

    return code_uris(f"gs://{ARTIFACTS}/artifacts")["prefix"]


def test_a_day_runs_its_spark_jobs_as_dataproc_batches_in_order_with_the_local_arguments(env, first_day):
    dr = first_day
    states = _states(dr)
    assert str(dr.state) == "success", states
    ok = SPARK_TASKS + ["enforce_bronze_gate", "enforce_gold_gate", "load_flight_outcomes"]
    assert {t: states[t] for t in ok} == dict.fromkeys(ok, "success")
    skipped = ("find_champion", "score_flights", "enforce_predictions_gate", "load_flight_delay_predictions")
    assert {t: states[t] for t in skipped} == dict.fromkeys(skipped, "skipped")  # no champion yet

    batches = env["dataproc"].batches
    ids = {t: _batch_id(t, DAY1) for t in SPARK_TASKS}
    assert set(ids.values()) <= set(batches)  # deterministic ids: dag, task, interval, run, try
    tis = _tis(dr)
    assert sorted(SPARK_TASKS, key=lambda t: tis[t].start_date) == SPARK_TASKS  # submitted in the DAG's order
    ref = RunRef.of(Interval(DAY1, DAY1), _run_id(DAY1))
    for task_id, batch_id in ids.items():
        spark = batches[batch_id].pyspark_batch
        extra = {"release": "False", "released_by": f"flights_daily run {ref.run_id}",
                 "release_reason": "released by the release_quarantined param"} if task_id == "ingest_bronze" else {}
        assert list(spark.args) == job_args(task_id, lake=LAKE_ROOT, landing=LANDING if extra else "", ref=ref,
                                            **extra), task_id
        assert spark.main_python_file_uri == f"{uploaded_prefix(env)}/spark_jobs/{JOBS[task_id]}.py"
        assert batches[batch_id].labels["airflow_try"] == "1"
    assert tis["ingest_bronze"].xcom_pull(task_ids="ingest_bronze") == result_uri(LAKE_ROOT, "bronze", ref)
    # The outcomes export, read from GCS, replaced the day in the warehouse.
    assert _wh(f"SELECT count(*) FROM analytics.flight_outcomes WHERE flight_date = DATE '{DAY1}'") == [(2,)]


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """The model folder as the Vertex job writes it: the trainer's real outputs on a small fixture."""
    out, data = train_small_model(tmp_path_factory.mktemp("gcp-train"))
    return {"dir": out.output_dir, "data": data.read_bytes(), "metrics": out.metrics}


@pytest.fixture(scope="module")
def training(env, uploaded, trained_model, first_day):
    from include.targets.gcp.settings import load_gcp_settings

    run_id = _run_id(TRAIN_DAY)
    dataset = training_set_uri(LAKE_ROOT, RunRef.of(WINDOW, run_id))
    _put(env["gcs"], f"{dataset}/data/part-0.parquet", trained_model["data"])
    _put(env["gcs"], f"{dataset}/manifest.json", b"{}")
    name = short_job_name("flights_training", "train_models", WINDOW.key, run_id, 1)
    model_dir = f"{load_gcp_settings().training_output_uri}{name}/model"
    for path in sorted(p for p in trained_model["dir"].rglob("*") if p.is_file()):
        _put(env["gcs"], f"{model_dir}/{path.relative_to(trained_model['dir']).as_posix()}", path.read_bytes())
    dr = _run("flights_training", TRAIN_DAY, {"train_start": str(WINDOW.start), "train_end": str(WINDOW.end),
                                              "validation_days": 3, "holdout_days": 7})
    return dr, name, dataset, model_dir


def test_training_exports_on_dataproc_trains_on_vertex_and_promotes_in_the_registry(env, training, trained_model):
    dr, name, dataset, model_dir = training
    assert str(dr.state) == "success", _states(dr)
    export = env["dataproc"].batches[_batch_id("export_training_set", TRAIN_DAY, dag_id="flights_training",
                                               key=WINDOW.key)]
    assert list(export.pyspark_batch.args) == job_args("export_training_set", lake=LAKE_ROOT, landing="",
                                                       ref=RunRef.of(WINDOW, dr.run_id), validation_days=3,
                                                       holdout_days=7)
    tis = _tis(dr)
    assert tis["export_training_set"].xcom_pull(task_ids="export_training_set") == dataset  # what training reads
    [job] = [j for j in env["jobs"].jobs.values() if j.display_name == name]  # one job, named for run and try
    spec = job.job_spec.worker_pool_specs[0]
    assert spec.machine_spec.machine_type == "g2-standard-8" and spec.machine_spec.accelerator_type.name == "NVIDIA_L4"
    args = list(spec.container_spec.args)
    assert f"{dataset}/data" in args and "400" in args  # the data folder (the entry reads it through /gcs/), params
    assert tis["train_models"].xcom_pull(task_ids="train_models")["model_dir"] == model_dir
    promoted = tis["promote_champion"].xcom_pull(task_ids="promote_champion")
    assert promoted["promoted"] is True and promoted["version"] == "1", promoted
    from include.targets import get_target

    champion = get_target().registry.champion()
    assert champion.version == "1"
    assert champion.metrics["auc"] == pytest.approx(trained_model["metrics"]["xgboost"]["auc"])
    assert _wh("SELECT promoted, challenger_version FROM ops.model_decisions") == [(True, "1")]


def test_with_a_champion_the_day_is_scored_from_the_bundle_in_the_registry(env, training):
    _seed_day(env["gcs"], DAY2, scored=True)
    dr = _run("flights_daily", DAY2)
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert states["score_flights"] == states["enforce_predictions_gate"] == "success"
    _, _, _, model_dir = training
    args = list(env["dataproc"].batches[_batch_id("score_flights", DAY2)].pyspark_batch.args)
    assert args[args.index("--model-dir") + 1] == f"{model_dir}/bundle"
    assert args[args.index("--model-version") + 1] == "1"
    assert _wh(f"SELECT flight_id, model_version FROM analytics.flight_delay_predictions "
               f"WHERE flight_date = DATE '{DAY2}'") == [(f"{_key(DAY2)}-UA-1", "1")]


def test_a_failed_gate_stops_the_run_before_the_next_job_and_alerts_over_pubsub(env, first_day):
    _seed_day(env["gcs"], BAD_DAY, bronze_ok=False)
    env["alerts"].clear()
    dr = _run("flights_daily", BAD_DAY)
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["ingest_bronze"] == "success" and states["enforce_bronze_gate"] == "failed"
    assert all(states[t] == "upstream_failed" for t in ("build_features", "enforce_gold_gate", "score_flights",
                                                         "load_flight_outcomes"))
    assert _tis(dr)["enforce_bronze_gate"].try_number == 1  # a failed gate is not retried
    mine = [b for b in env["dataproc"].batches if f"-{BAD_DAY:%Y%m%d}-" in b]
    assert sorted(mine) == [_batch_id("ingest_bronze", BAD_DAY)]
    messages = [m for r in env["alerts"] for m in r.messages if m.attributes.get("kind") == "quality_gate_failed"]
    assert messages and messages[0].attributes["task_id"] == "enforce_bronze_gate"
    assert "expect_column_values_to_be_between on 'distance' [distance_range]" in messages[0].data.decode()
    assert messages[0].attributes["interval"] == str(BAD_DAY)


def test_a_retry_reattaches_to_the_batch_of_its_first_try_and_kill_cancels(env, first_day):
    from airflow.providers.google.cloud.hooks.dataproc import DataprocHook

    _seed_day(env["gcs"], RETRY_DAY, scored=True)  # a champion exists by now when the whole module runs
    original, lost = DataprocHook.wait_for_batch, []

    def lose_the_worker_while_the_first_batch_runs(self, *args, **kwargs):
        if not lost:
            lost.append(kwargs.get("batch_id"))  # the batch was created; the worker dies while waiting for it
            raise RuntimeError("worker lost while the batch ran")
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DataprocHook, "wait_for_batch", lose_the_worker_while_the_first_batch_runs)
        dr = _run("flights_daily", RETRY_DAY)
    assert str(dr.state) == "success", _states(dr)
    ingest = [b for b in env["dataproc"].batches if b.startswith("ingest-bronze-") and f"-{RETRY_DAY:%Y%m%d}-" in b]
    assert ingest == [_batch_id("ingest_bronze", RETRY_DAY)] == lost  # try 2 created nothing: it reattached
    assert _tis(dr)["ingest_bronze"].try_number == 2

    # Killing the task while its batch runs cancels the batch.
    batch_id = _batch_id("build_features", RETRY_DAY)
    env["dataproc"].set_batch(batch_id, "RUNNING")
    outcome, env["dataproc"].outcome = env["dataproc"].outcome, None  # it keeps running until cancelled
    try:
        op = _dag("flights_daily").get_task("build_features")
        op.batch_id = batch_id
        op.on_kill()
    finally:
        env["dataproc"].outcome = outcome
    assert env["dataproc"].batches[batch_id].operation in env["dataproc"].cancelled
    assert env["dataproc"].batches[batch_id].state.name == "CANCELLING"


def test_missing_code_fails_at_once_naming_the_upload_command(env, uploaded):
    from airflow.sdk.exceptions import AirflowFailException

    from include.targets.gcp.operators import require_code

    with pytest.raises(AirflowFailException, match="python -m include.targets.gcp.artifact"):
        require_code([f"gs://{ARTIFACTS}/artifacts/code/0000/spark_jobs/x.py"],
                     lambda uri: any(True for _ in env["gcs"].list_blobs(ARTIFACTS, prefix=uri.split("/", 3)[3])))


def test_make_rollback_moves_the_champion_back_in_the_vertex_registry_records_and_alerts(env, training, capsys):
    from include.targets import get_target
    from include.training.rollback import main as rollback_main

    registry = get_target().registry
    assert rollback_main(["--reason", "nothing to go back to"]) == 2  # v1 was the first champion: refused
    assert "no previous champion is recorded" in capsys.readouterr().err
    # v2 is registered from the same training outputs and promoted, as a later training run would.
    trained = _tis(training[0])["train_models"].xcom_pull(task_ids="train_models")
    v2 = registry.register(get_target().trainer.collect(trained), {"training_window": str(WINDOW),
                                                                   "airflow_run_id": "manual__later"})
    registry.set_champion(v2, "a later challenger")
    env["alerts"].clear()
    assert rollback_main(["--reason", "v2 over-predicts at EWR", "--by", "oncall"]) == 0
    assert registry.champion().version == "1"
    assert ("1", True) in _wh("SELECT challenger_version, promoted FROM ops.model_decisions "
                              "WHERE reason LIKE '%over-predicts%'")
    [alert] = [m for r in env["alerts"] for m in r.messages if m.attributes.get("kind") == "model_rollback"]
    assert "rolled back by oncall: v2 over-predicts at EWR" in alert.data.decode()
