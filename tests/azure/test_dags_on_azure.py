"""The real DAGs with ``FLIGHTS_TARGET=azure``, run by ``dag.test()``.

The lake and the artifacts container are on Azurite (the real azure-storage-blob client); every
Spark step is a batch on the local Livy server of ``tests/azure/livy_server.py`` (real HTTP on
loopback, through the Livy provider's hook, Livy's CSRF header and its 400s); Azure ML jobs and
the model registry are answered at the client boundary by ``tests.azure.azureml_fakes`` (every
job and model validated and serialised by the SDK); the warehouse is PostgreSQL, the azure
target's default, reading the exports from the lake; alerts go to the file channel.

No Spark runs behind the Livy server here, and no model trains in the fake Azure ML: the server
"runs" each batch by checking that its entry point, Python files and jars are objects in the
artifacts container and succeeding, and each test seeds what the job would write (gate summaries,
exports, a model trained for real on a small fixture). ``test_livy.py`` runs real Spark behind the
same server, ``test_abfs_data_plane.py`` the real jobs on the emulated storage.
"""

from __future__ import annotations

import json
from datetime import date

import pytest

from include.config import settings
from include.intervals import Interval
from include.jobs import JOBS, RunRef, job_args, result_uri, training_set_uri
from include.targets.cloud.naming import short_job_name
from tests.dag_runs import dag as _dag, run as _run, run_id as _run_id
from tests.dag_runs import seed_day as _seed, states as _states, tis as _tis, train_small_model

ACCOUNT = "devstoreaccount1"
LAKE_ROOT = f"abfss://lake@{ACCOUNT}.dfs.core.windows.net/lake"
LANDING = f"abfss://lake@{ACCOUNT}.dfs.core.windows.net/landing"
ARTIFACTS_ROOT = f"abfss://artifacts@{ACCOUNT}.dfs.core.windows.net/artifacts"
DAY1, DAY2, BAD_DAY, RETRY_DAY, TRAIN_DAY = (date(2013, 8, 3), date(2013, 8, 11), date(2013, 8, 12),
                                             date(2013, 8, 13), date(2013, 8, 10))
WINDOW = Interval(date(2013, 7, 1), date(2013, 8, 2))
SPARK_TASKS = ["ingest_bronze", "build_features"]  # each runs its gate after its writes


def _key(day: date) -> str:
    return f"{day:%Y%m%d}_{day:%Y%m%d}"


def _name(task_id: str, day: date, try_number: int = 1, dag_id: str = "flights_daily", key: str = "") -> str:
    return short_job_name(dag_id, task_id, key or _key(day), _run_id(day), try_number)


def _put(client, uri: str, body: bytes) -> None:
    from include.targets.azure.adls import split_azure_uri

    parts = split_azure_uri(uri)
    client.get_blob_client(parts.container, parts.path).upload_blob(body, overwrite=True)


def _seed_day(client, day: date, *, bronze_ok: bool = True, scored: bool = False) -> None:
    """What the landing delivery and each Livy batch of the day would write."""
    _seed(lambda uri, body: _put(client, uri, body), LAKE_ROOT, LANDING, day, bronze_ok=bronze_ok, scored=scored)


def _wh(sql: str):
    from include.targets import get_target

    return get_target().warehouse.query(sql)[1]


@pytest.fixture(scope="module")
def warehouse_url(postgres_url):
    """A database of its own on the session's PostgreSQL server."""
    import psycopg2

    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS azure_dags")
        cur.execute("CREATE DATABASE azure_dags")
    conn.close()
    return postgres_url.rsplit("/", 1)[0] + "/azure_dags"


@pytest.fixture(scope="module")
def env(azurite, airflow_db, warehouse_url, tmp_path_factory):
    """FLIGHTS_TARGET=azure: containers on Azurite, Livy on loopback, Azure ML at the client boundary."""
    import azure.ai.ml

    from tests.azure.azureml_fakes import FakeMLClient
    from tests.azure.conftest import ensure_containers
    from tests.azure.livy_server import LivyServer

    client = ensure_containers(azurite, "lake", "artifacts")
    home = tmp_path_factory.mktemp("azure-dags")
    fetched = home / "cluster-storage"

    def resolve(uri: str) -> str:
        """The cluster reads its code from the storage account: download it, failing when it is not there."""
        from include.targets.azure.adls import split_azure_uri

        parts = split_azure_uri(uri)
        dest = fetched / parts.container / parts.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(client.get_blob_client(parts.container, parts.path).download_blob().readall())
        return str(dest)

    ml = FakeMLClient(home / "datastores")
    with LivyServer(spark_submit="/bin/true", resolve=resolve) as livy, pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "FLIGHTS_TARGET": "azure", "FLIGHTS_HOME": str(home / "home"), "FLIGHTS_ALERT_CHANNELS": "file",
            "FLIGHTS_AZURE_SUBSCRIPTION_ID": ml.subscription_id, "FLIGHTS_AZURE_RESOURCE_GROUP": "flights-rg",
            "FLIGHTS_AZURE_LOCATION": "eastus", "FLIGHTS_AZURE_STORAGE_ACCOUNT": ACCOUNT,
            "FLIGHTS_AZURE_BLOB_ENDPOINT": azurite.blob_endpoint, "FLIGHTS_AZURE_ML_WORKSPACE": "flights-ml",
            "FLIGHTS_AZURE_HDINSIGHT_CLUSTER": "flights-spark",
            # Waits run in the worker here (the deferred paths are tested per operator).
            "FLIGHTS_AZURE_DEFERRABLE": "false", "FLIGHTS_AZURE_POLL_S": "1",
            "AIRFLOW_CONN_AZURE_HDINSIGHT_LIVY": json.dumps({"conn_type": "livy", "host": "127.0.0.1",
                                                             "port": livy.port, "schema": "http"}),
            "AIRFLOW_CONN_FLIGHTS_WAREHOUSE": warehouse_url,
        }.items():
            mp.setenv(key, value)
        mp.delenv("FLIGHTS_WAREHOUSE", raising=False)  # the azure default: PostgreSQL
        mp.setattr(azure.ai.ml, "MLClient", ml.connect)
        settings.cache_clear()
        yield {"blobs": client, "livy": livy, "ml": ml}
    settings.cache_clear()


@pytest.fixture(scope="module")
def uploaded(env, tmp_path_factory):
    """This checkout's code and the runtime's Delta jar names in the artifacts container, as the upload leaves them.

    No Spark runs behind the Livy server here, so the jars are placeholders under their real names."""
    from include.targets.azure import artifact, code_uris
    from include.targets.azure.adls import BlobStore
    from include.targets.azure.runtimes import runtime
    from include.targets.azure.settings import load_azure_settings

    azure = load_azure_settings()
    folder = tmp_path_factory.mktemp("jars")
    jars = []
    for name in runtime(azure.spark_runtime).delta_jar_names():
        (folder / name).write_bytes(b"PK placeholder")
        jars.append(folder / name)
    uris = artifact.upload(azure, BlobStore(env["blobs"]), jars)
    assert uris["zip"] == code_uris(azure.artifacts_root)["zip"]  # what the DAGs were parsed with
    assert artifact.upload(azure, BlobStore(env["blobs"]), jars)["written"] == "0"  # idempotent
    return uris


@pytest.fixture(scope="module")
def first_day(env, uploaded):
    assert settings().warehouse == "postgres"
    _seed_day(env["blobs"], DAY1)
    return _run("flights_daily", DAY1)


def _posted(env, name: str) -> dict:
    [body] = [b for b in env["livy"].posted if b.get("name") == name]
    return body


def test_a_day_runs_its_spark_jobs_as_livy_batches_in_order_with_the_local_arguments(env, uploaded, first_day):
    dr = first_day
    states = _states(dr)
    assert str(dr.state) == "success", states
    ok = SPARK_TASKS + ["enforce_bronze_gate", "enforce_gold_gate", "load_flight_outcomes"]
    assert {t: states[t] for t in ok} == dict.fromkeys(ok, "success")
    skipped = ("find_champion", "score_flights", "enforce_predictions_gate", "load_flight_delay_predictions")
    assert {t: states[t] for t in skipped} == dict.fromkeys(skipped, "skipped")  # no champion yet

    tis = _tis(dr)
    assert sorted(SPARK_TASKS, key=lambda t: tis[t].start_date) == SPARK_TASKS  # submitted in the DAG's order
    ref = RunRef.of(Interval(DAY1, DAY1), _run_id(DAY1))
    for task_id in SPARK_TASKS:
        body = _posted(env, _name(task_id, DAY1))  # deterministic name: dag, task, interval, run, try
        extra = {"release": "False", "released_by": f"flights_daily run {ref.run_id}",
                 "release_reason": "released by the release_quarantined param"} if task_id == "ingest_bronze" else {}
        assert body["args"] == job_args(task_id, lake=LAKE_ROOT, landing=LANDING if extra else "", ref=ref,
                                        **extra), task_id
        assert body["file"] == f"{uploaded['prefix']}/spark_jobs/{JOBS[task_id]}.py"
        assert body["pyFiles"][0] == uploaded["zip"] and body["jars"][0].startswith(f"{ARTIFACTS_ROOT}/jars/")
        assert body["conf"]["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert tis["ingest_bronze"].xcom_pull(task_ids="ingest_bronze") == result_uri(LAKE_ROOT, "bronze", ref)
    # The outcomes export, read from the lake, replaced the day in the PostgreSQL warehouse.
    assert _wh(f"SELECT count(*) FROM analytics.flight_outcomes WHERE flight_date = DATE '{DAY1}'") == [(2,)]


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """What the Azure ML job's entry point leaves in its model output: the trainer's real outputs on a fixture."""
    out, data = train_small_model(tmp_path_factory.mktemp("azure-train"))
    return {"dir": out.output_dir, "data": data.read_bytes(), "metrics": out.metrics}


@pytest.fixture(scope="module")
def training(env, uploaded, trained_model, first_day):
    import shutil

    run_id = _run_id(TRAIN_DAY)
    dataset = training_set_uri(LAKE_ROOT, RunRef.of(WINDOW, run_id))
    _put(env["blobs"], f"{dataset}/data/part-0.parquet", trained_model["data"])
    _put(env["blobs"], f"{dataset}/manifest.json", b"{}")

    def program(name, outputs):  # the job's command, as far as its outputs go
        shutil.copytree(trained_model["dir"], outputs["model"], dirs_exist_ok=True)

    env["ml"].jobs.program = program
    dr = _run("flights_training", TRAIN_DAY, {"train_start": str(WINDOW.start), "train_end": str(WINDOW.end),
                                              "validation_days": 3, "holdout_days": 7})
    return dr, dataset


def test_training_exports_through_livy_trains_on_azure_ml_and_promotes_in_the_registry(env, training, trained_model):
    dr, dataset = training
    assert str(dr.state) == "success", _states(dr)
    export = _posted(env, _name("export_training_set", TRAIN_DAY, dag_id="flights_training", key=WINDOW.key))
    assert export["args"] == job_args("export_training_set", lake=LAKE_ROOT, landing="",
                                      ref=RunRef.of(WINDOW, dr.run_id), validation_days=3, holdout_days=7)
    tis = _tis(dr)
    assert tis["export_training_set"].xcom_pull(task_ids="export_training_set") == dataset  # what training reads
    name = short_job_name("flights_training", "train_models", WINDOW.key, dr.run_id, 1)
    assert env["ml"].jobs.created == [name]  # one job, named for run and try
    props = env["ml"].jobs.stored[name]["properties"]
    assert props["computeId"].endswith("gpu-cluster") and props["status"] == "Completed"
    assert dataset in json.dumps(props["inputs"]) and "400" in json.dumps(props["inputs"])  # data, params
    promoted = tis["promote_champion"].xcom_pull(task_ids="promote_champion")
    assert promoted["promoted"] is True and promoted["version"] == "1", promoted
    from include.targets import get_target

    champion = get_target().registry.champion()
    assert champion.version == "1"
    assert champion.metrics["auc"] == pytest.approx(trained_model["metrics"]["xgboost"]["auc"])
    assert _wh("SELECT promoted, challenger_version FROM ops.model_decisions") == [(True, "1")]


def test_with_a_champion_the_day_is_scored_from_the_bundle_published_to_the_lake(env, training):
    _seed_day(env["blobs"], DAY2, scored=True)
    dr = _run("flights_daily", DAY2)
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert states["score_flights"] == states["enforce_predictions_gate"] == "success"
    args = _posted(env, _name("score_flights", DAY2))["args"]
    bundle = args[args.index("--model-dir") + 1]
    assert bundle.startswith(f"{LAKE_ROOT}/models/") and args[args.index("--model-version") + 1] == "1"
    from include.targets.azure.adls import split_azure_uri

    parts = split_azure_uri(f"{bundle}/model.json")
    assert env["blobs"].get_blob_client(parts.container, parts.path).exists()  # what the Spark job reads
    assert _wh(f"SELECT flight_id, model_version FROM analytics.flight_delay_predictions "
               f"WHERE flight_date = DATE '{DAY2}'") == [(f"{_key(DAY2)}-UA-1", "1")]


def test_a_failed_gate_stops_the_run_before_the_next_job_and_alerts(env, first_day):
    _seed_day(env["blobs"], BAD_DAY, bronze_ok=False)
    dr = _run("flights_daily", BAD_DAY)
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["ingest_bronze"] == "success" and states["enforce_bronze_gate"] == "failed"
    assert all(states[t] == "upstream_failed" for t in ("build_features", "enforce_gold_gate", "score_flights",
                                                         "load_flight_outcomes"))
    assert _tis(dr)["enforce_bronze_gate"].try_number == 1  # a failed gate is not retried
    mine = sorted(b["name"] for b in env["livy"].posted if f"-{BAD_DAY:%Y%m%d}-" in b["name"])
    assert mine == [_name("ingest_bronze", BAD_DAY)]
    alerts = settings().alerts_file.read_text()
    assert "expect_column_values_to_be_between on 'distance' [distance_range]" in alerts and str(BAD_DAY) in alerts


def test_a_retry_reattaches_to_the_batch_of_its_first_try_and_kill_deletes(env, first_day):
    from include.targets.azure.livy_operators import ReattachingLivyOperator

    _seed_day(env["blobs"], RETRY_DAY, scored=True)
    original, lost = ReattachingLivyOperator._wait, []

    def lose_the_worker_while_the_first_batch_runs(self, context):
        if not lost:
            lost.append(self.batch_name)  # the batch was submitted; the worker dies while waiting for it
            raise RuntimeError("worker lost while the batch ran")
        return original(self, context)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ReattachingLivyOperator, "_wait", lose_the_worker_while_the_first_batch_runs)
        dr = _run("flights_daily", RETRY_DAY)
    assert str(dr.state) == "success", _states(dr)
    mine = [b["name"] for b in env["livy"].posted if f"-{RETRY_DAY:%Y%m%d}-" in b["name"]]
    assert [n for n in mine if n.startswith("ingest-bronze")] == lost == [_name("ingest_bronze", RETRY_DAY)]
    assert _tis(dr)["ingest_bronze"].try_number == 2  # try 2 submitted nothing: it found try 1's batch

    # Killing the task while its batch runs deletes the batch.
    batch = env["livy"].create({"file": f"{uploaded_zip(env)}", "name": _name("build_features", RETRY_DAY, 9)})
    op = _dag("flights_daily").get_task("build_features")
    op._batch_id = batch.id
    op.on_kill()
    assert batch.id in env["livy"].deleted and batch.id not in env["livy"].batches


def uploaded_zip(env) -> str:
    from include.targets.azure import code_uris

    return code_uris(ARTIFACTS_ROOT)["zip"]


def test_make_rollback_moves_the_champion_back_in_the_azure_ml_registry_and_records_it(env, training, capsys):
    from include.targets import get_target
    from include.training.rollback import main as rollback_main

    registry = get_target().registry
    assert rollback_main(["--reason", "nothing to go back to"]) == 2  # v1 was the first champion: refused
    assert "no previous champion is recorded" in capsys.readouterr().err
    trained = _tis(training[0])["train_models"].xcom_pull(task_ids="train_models")
    v2 = registry.register(get_target().trainer.collect(trained), {"training_window": str(WINDOW),
                                                                   "airflow_run_id": "manual__later"})
    registry.set_champion(v2, "a later challenger")
    assert rollback_main(["--reason", "v2 over-predicts at EWR", "--by", "oncall"]) == 0
    assert registry.champion().version == "1"
    assert ("1", True) in _wh("SELECT challenger_version, promoted FROM ops.model_decisions "
                              "WHERE reason LIKE '%over-predicts%'")
    assert "rolled back by oncall: v2 over-predicts at EWR" in settings().alerts_file.read_text()
