"""The jobs on the Azure Spark line (Spark 3.5 with Delta 3.2) write what they write on Spark 4 with Delta 4.

A Synapse Spark 3.5 pool runs ``spark_jobs/`` on Spark 3.5 with the Delta jars of its runtime row
(``include/targets/azure/runtimes.py``). Here one day runs the way such a batch runs it: the
spark3 environment's ``spark-submit`` (``make spark3-env``: the pins of
``scripts/spark3-requirements.txt``), the row's two Delta jars on ``--jars``, the code zip and the
delta-spark jar (Delta's Python) on ``--py-files``, and neither the repository nor the suites
folder on the path. The same jobs with the same arguments run on Spark 4 in this process, on
another lake, from the same landing files. The landed flights carry a few bad rows, so the
quarantine, the row rules and the gates' counts are compared too.

Compared: every table's rows (all columns but load times), the gate summaries, and the scores
of one small model. To pay for one JVM start only, the one spark-submit runs the jobs' entry
points in turn (as ``python spark_jobs/<job>.py`` would, ``__main__`` included) in one session,
and runs ``build_features`` twice so that silver's MERGE runs on Delta 3.2 as well. It runs while
the Spark 4 jobs run here, so the test takes about as long as the slower of the two.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import os
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest

from include.config import REPO_ROOT
from include.intervals import Interval
from include.jobs import JOBS, RunRef, job_args
from include.lake import landing_file, quality_result_uri
from include.source.landing import land
from include.targets.azure.runtimes import JOBS_SPARK3_DELTA, JOBS_SPARK3_LINE, runtime
from tests.lake_data_plane import LocalObjects, delta_rows

pytestmark = pytest.mark.slow

DAY = Interval(date(2013, 1, 1), date(2013, 1, 1))  # the data set's first day: no history to build first
RUN = "scheduled__2013-01-01T00:00:00+00:00"
REF = RunRef.of(DAY, RUN)
RUNTIME = runtime("synapse-3.5")
MODEL = {"model_name": "spark3-line", "model_version": "1"}
# the tasks in DAG order; the Spark 3 application runs build_features a second time (the rerun MERGEs)
TASKS = ("ingest_bronze", "build_features", "score_flights")
GATES = {"ingest_bronze": "bronze", "build_features": "gold", "score_flights": "predictions"}  # each job's gate
LOAD_TIMES = {"_ingested_at", "checked_at", "quarantined_at", "status_changed_at", "built_at", "changed_at"}  # when, not what
# What a Synapse batch sets besides its jars and Python files (include/targets/azure/livy.py).
SESSION_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "static",
}

# The one application's main file: each job's entry point in turn, failing as the job fails.
DRIVER = '''\
import json, runpy, sys

import delta, pyspark

print(f"ENGINE pyspark {pyspark.__version__} delta-python {delta.__file__}", flush=True)
for script, args in json.loads(open(sys.argv[1], encoding="utf-8").read()):
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    print(f"JOB DONE {script}", flush=True)
'''


@pytest.fixture(scope="module")
def spark3_venv() -> Path:
    """The Spark 3.5 environment; skips (fails on CI) when ``make spark3-env`` has not built it."""
    venv = Path(os.environ.get("FLIGHTS_SPARK3_VENV", REPO_ROOT / ".cache" / "spark3"))
    needed = [venv / "bin" / "spark-submit", *(venv / "jars" / n for n in RUNTIME.delta_jar_names())]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        message = f"No Spark 3.5 environment: {', '.join(missing)} missing. Run `make spark3-env` (or set " \
                  "FLIGHTS_SPARK3_VENV)."
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):  # CI must not skip it silently
            pytest.fail(message)
        pytest.skip(message)
    return venv


def args(task: str, lake: Path, landing: Path, model_dir: Path) -> list[str]:
    return job_args(task, lake=str(lake), landing=str(landing), ref=REF, model_dir=str(model_dir), **MODEL)


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    """The day's real files; four flights broken, one delivered twice, the last line cut short."""
    root = tmp_path_factory.mktemp("spark3-landing")
    land(DAY, root)
    path = Path(landing_file(str(root), "flights", DAY.start))
    rows = list(csv.reader(path.open(encoding="utf-8")))
    h = {c: i for i, c in enumerate(rows[0])}
    for i, (column, value) in enumerate([("distance", "far"), ("carrier", "ZZ"), ("hour", "27"),
                                         ("dep_delay", "1e3x")], start=1):
        rows[i][h[column]] = value
    repeat = list(rows[20])
    repeat[h["dep_time"]] = "1234"
    cut = rows.pop()
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([*rows, repeat])
    path.write_text(text.getvalue() + ",".join(cut[:h["distance"]] + [cut[h["distance"]][:1]]), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def model_dir(landing, tmp_path_factory) -> Path:
    """A five-tree scoring bundle, trained on the landed flights' own columns (the others left missing)."""
    import pandas as pd
    import xgboost as xgb

    from include.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
    from include.training.bundle import categories_of, feature_spec, prepare_frame, save_bundle

    day = pd.read_csv(landing_file(str(landing), "flights", DAY.start), dtype=str)
    own = {"hour": "sched_dep_hour", "minute": "sched_dep_minute", "month": "month", "day": "day_of_month",
           "distance": "distance"}
    train = pd.DataFrame({new: pd.to_numeric(day[old], errors="coerce") for old, new in own.items()})
    train = train.reindex(columns=NUMERIC_FEATURES).assign(**{c: day[c] for c in CATEGORICAL_FEATURES})
    arr_delay = pd.to_numeric(day["arr_delay"], errors="coerce")
    known = arr_delay.notna()
    spec = feature_spec(categories_of(train))
    matrix = xgb.DMatrix(prepare_frame(train[known], spec), label=(arr_delay[known] >= 15).astype(int),
                         enable_categorical=True)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0,
                         "max_cat_to_onehot": 1, "tree_method": "hist"}, matrix, num_boost_round=5)
    return save_bundle(tmp_path_factory.mktemp("model") / "bundle", booster, spec)


@pytest.fixture(scope="module")
def spark3_batch(spark3_venv, landing, model_dir, tmp_path_factory):
    """The day in one spark-submit of the Spark 3.5 environment, set up as a Synapse batch; started, not awaited."""
    from include.targets.cloud.artifact import ZIP_NAME, build_artifact
    from include.targets.local import kill_group

    venv = spark3_venv
    root = tmp_path_factory.mktemp("spark3")
    lake, code = root / "lake", root / "code"
    artifact = build_artifact()
    (code / "spark_jobs").mkdir(parents=True)
    (code / ZIP_NAME).write_bytes(artifact.zip_bytes)
    for job, body in artifact.scripts.items():
        (code / "spark_jobs" / f"{job}.py").write_bytes(body)
    tasks = [*TASKS[:2], "build_features", *TASKS[2:]]
    plan = [[str(code / "spark_jobs" / f"{JOBS[t]}.py"), args(t, lake, landing, model_dir)] for t in tasks]
    (root / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    (root / "driver.py").write_text(DRIVER, encoding="utf-8")

    jars = [str(venv / "jars" / n) for n in RUNTIME.delta_jar_names()]
    conf = [item for k, v in {**SESSION_CONF, "spark.ui.enabled": "false",
                              "spark.driver.extraJavaOptions": "-Dlog4j2.level=warn"}.items()
            for item in ("--conf", f"{k}={v}")]
    cmd = [str(venv / "bin" / "spark-submit"), "--master", "local[2]", "--driver-memory", "2g",
           "--jars", ",".join(jars), "--py-files", f"{code / ZIP_NAME},{jars[0]}", *conf,
           str(root / "driver.py"), str(root / "plan.json")]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SPARK_HOME", "PYSPARK_SUBMIT_ARGS", "FLIGHTS_JARS_DIR", "FLIGHTS_SUITES_DIR")
           and not k.startswith("PYSPARK_GATEWAY")}
    env.update(PYSPARK_PYTHON=str(venv / "bin" / "python"), PYSPARK_DRIVER_PYTHON=str(venv / "bin" / "python"),
               SPARK_LOCAL_IP="127.0.0.1", GX_ANALYTICS_ENABLED="false")
    log = root / "spark-submit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield {"proc": proc, "began": time.monotonic(), "lake": lake, "log": log, "jobs": len(tasks), "jars": jars}
    finally:
        if proc.poll() is None:
            kill_group(proc)


@pytest.fixture(scope="module")
def spark4(spark3_batch, spark, landing, model_dir, tmp_path_factory) -> dict:
    """The day on Spark 4 in this process (the jobs' ``main``), while the Spark 3.5 batch runs."""
    lake = tmp_path_factory.mktemp("spark4") / "lake"
    began = time.monotonic()
    for task in TASKS:
        importlib.import_module(f"spark_jobs.{JOBS[task]}").main(args(task, lake, landing, model_dir))
    print(f"Spark {spark.version} jobs in process: {time.monotonic() - began:.0f}s")
    return {"lake": lake}


@pytest.fixture(scope="module")
def spark3(spark3_batch, spark4) -> dict:
    """The Spark 3.5 batch, finished."""
    proc = spark3_batch["proc"]
    rc = proc.wait(timeout=900)
    print(f"Spark 3.5 spark-submit of {spark3_batch['jobs']} jobs: {time.monotonic() - spark3_batch['began']:.0f}s")
    log = spark3_batch["log"].read_text(errors="replace")
    assert rc == 0, f"spark-submit exited {rc}:\n" + "\n".join(log.splitlines()[-60:])
    assert log.count("JOB DONE") == spark3_batch["jobs"], log[-5000:]
    return {**spark3_batch, "log": log}


def engine(lake: Path, table: str) -> str:
    """``engineInfo`` of the table's first commit: the Spark and Delta that created it."""
    first = lake / table / "_delta_log" / "00000000000000000000.json"
    return next(json.loads(line)["commitInfo"]["engineInfo"] for line in first.read_text().splitlines()
                if "commitInfo" in line)


def tables(lake: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(lake)) for p in lake.rglob("_delta_log"))


def rows(lake: Path, table: str) -> list[str]:
    """The table's current rows, load times left out, each as canonical JSON, sorted."""
    def value(v):
        return "NaN" if isinstance(v, float) and math.isnan(v) else v

    return sorted(json.dumps({k: value(v) for k, v in row.items() if k not in LOAD_TIMES}, sort_keys=True,
                             default=str) for row in delta_rows(LocalObjects(), str(lake / table)))


def gate_summary(lake: Path, task: str) -> dict:
    """The gate's JSON summary with the lake's own root (in Data Docs links) made neutral."""
    text = Path(quality_result_uri(str(lake), GATES[task], DAY.key, RUN)).read_text(encoding="utf-8")
    return json.loads(text.replace(str(lake), "LAKE"))


def test_the_batch_ran_on_spark_3_5_with_delta_3_2_and_deltas_python_from_the_jar(spark3, spark4):
    assert f"ENGINE pyspark {JOBS_SPARK3_LINE}." in spark3["log"]
    assert f"delta-python {spark3['jars'][0]}" in spark3["log"]  # the jar on --py-files, as on the pool
    for table in ("bronze/flights", "silver/flights", "gold/flight_features", "predictions/flight_delay_risk"):
        assert engine(spark3["lake"], table).startswith(f"Apache-Spark/{JOBS_SPARK3_LINE}."), table
        assert engine(spark3["lake"], table).endswith(f"Delta-Lake/{JOBS_SPARK3_DELTA}"), table
        assert engine(spark4["lake"], table).startswith("Apache-Spark/4."), table  # the reference is Spark 4


def test_every_table_holds_the_same_rows_on_both_lines(spark3, spark4):
    names = tables(spark4["lake"])
    assert tables(spark3["lake"]) == names
    assert {"quarantine/flights", "predictions/flight_delay_risk"} <= set(names)
    held = rows(spark3["lake"], "quarantine/flights")
    assert len(held) == 6  # four broken flights, the repeat and the cut line: the row rules ran on Spark 3.5
    scores = {json.loads(r)["delay_probability"] for r in rows(spark3["lake"], "predictions/flight_delay_risk")}
    assert len(scores) > 5  # the model tells flights apart, so equal scores say the same features reached it
    for table in names:
        on_3, on_4 = rows(spark3["lake"], table), rows(spark4["lake"], table)
        assert len(on_3) == len(on_4), f"{table}: {len(on_3)} rows on Spark 3.5, {len(on_4)} on Spark 4"
        differ = sorted(set(on_3) ^ set(on_4))
        assert on_3 == on_4, f"{table} differs between the lines; first differing row: {differ[:1]}"


def test_the_gates_reach_the_same_verdicts_and_counts(spark3, spark4):
    for task in GATES:
        on_3, on_4 = gate_summary(spark3["lake"], task), gate_summary(spark4["lake"], task)
        assert on_3["success"] is True, f"{task}: {on_3}"  # the day passes its gates with six rows held
        assert on_3 == on_4, f"{task}: the gate summaries differ between Spark 3.5 and Spark 4"
