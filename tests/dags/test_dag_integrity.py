"""Every DAG imports cleanly, quickly, without heavy modules, with owner, retries and approved tags."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from include.dag_defaults import APPROVED_TAGS

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ["pyspark", "pandas", "xgboost", "mlflow", "great_expectations", "sklearn", "duckdb", "deltalake"]
PARSE_BUDGET_S = 10.0  # generous: catches an order-of-magnitude slip, not noise

PROBE = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
t = time.monotonic()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.monotonic() - t
heavy = sorted(m for m in %r if m in sys.modules)
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dag_ids),
                  "seconds": elapsed, "heavy": heavy}))
""" % (HEAVY,)

# The retry policy as shipped (README: FLIGHTS_RETRIES default 3, FLIGHTS_RETRY_DELAY_S default 60).
# tests/conftest.py lowers both for speed, so the shipped values are read in a child process
# whose environment lacks the two variables.
RETRY_VARIABLES = ("FLIGHTS_RETRIES", "FLIGHTS_RETRY_DELAY_S")
SHIPPED_RETRIES, SHIPPED_RETRY_DELAY_S = 3, 60.0

RETRY_PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
policy = lambda t: [t.retries, t.retry_delay.total_seconds(), t.retry_exponential_backoff]
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "tasks": {d.dag_id: {t.task_id: policy(t) for t in d.tasks} for d in bag.dags.values()}}))
"""


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_dag_files_exist():
    assert {p.stem for p in DAG_FILES} == {"flights_daily", "flights_training", "flights_maintenance"}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_fast_without_heavy_imports(path):
    env = {**os.environ, "AIRFLOW_CONN_FLIGHTS_WAREHOUSE": "postgresql://u:p@127.0.0.1:1/db"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["dags"] == [path.stem]  # dag_id = file name
    assert result["heavy"] == [], f"{path.name} imports {result['heavy']} at parse time"
    assert result["seconds"] < PARSE_BUDGET_S


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


@pytest.mark.parametrize("dag_id", ["flights_daily", "flights_training", "flights_maintenance"])
def test_dag_conventions(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.doc_md and dag_id in dag.doc_md
    assert set(dag.tags) <= APPROVED_TAGS, f"unapproved tags: {set(dag.tags) - APPROVED_TAGS}"
    assert dag.start_date.year == 2013  # static start date
    for t in dag.tasks:
        assert t.owner == "flights-data-platform"
        assert t.retries == int(os.environ["FLIGHTS_RETRIES"]), f"{t.task_id} ignores FLIGHTS_RETRIES"
        assert t.retry_exponential_backoff, f"{t.task_id} must retry with backoff"
        assert t.execution_timeout is not None, f"{t.task_id} needs an execution timeout"
        assert t.on_failure_callback, f"{t.task_id} must alert on failure"


def test_every_task_gets_the_shipped_retry_policy():
    env = {k: v for k, v in os.environ.items() if k not in RETRY_VARIABLES}
    env["AIRFLOW_CONN_FLIGHTS_WAREHOUSE"] = "postgresql://u:p@127.0.0.1:1/db"
    out = subprocess.run([sys.executable, "-c", RETRY_PROBE, str(REPO / "dags")], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert set(result["tasks"]) == {p.stem for p in DAG_FILES} and all(result["tasks"].values())
    wrong = {f"{dag_id}.{task_id}": policy for dag_id, tasks in result["tasks"].items()
             for task_id, policy in tasks.items() if policy != [SHIPPED_RETRIES, SHIPPED_RETRY_DELAY_S, True]}
    assert wrong == {}, f"[retries, retry delay s, backoff] differ from the shipped {SHIPPED_RETRIES}, " \
                        f"{SHIPPED_RETRY_DELAY_S}, True: {wrong}"


SPARK_TASKS = {
    "flights_daily": {"ingest_bronze", "build_features", "score_flights"},  # the gates run inside the first two
    "flights_training": {"export_training_set"},
    "flights_maintenance": {"maintain_lake"},
}


@pytest.mark.parametrize("dag_id", sorted(SPARK_TASKS))
def test_every_spark_task_runs_in_the_spark_pool(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    in_pool = {t.task_id for t in dag.tasks if t.pool == "spark"}
    assert in_pool == SPARK_TASKS[dag_id]  # a Spark job outside the pool could overload the machine


def test_daily_dag_structure(dagbag):
    dag = dagbag.dags["flights_daily"]
    order = ["resolve_interval", "check_landing_files", "ingest_bronze", "enforce_bronze_gate",
             "build_features", "enforce_gold_gate", "find_champion", "score_flights",
             "enforce_predictions_gate", "load_flight_delay_predictions", "evaluate_realised_performance",
             "request_retraining"]
    assert set(dag.task_ids) == set(order) | {"load_flight_outcomes", "find_stale_dependants", "recompute_stale_days"}
    for upstream, downstream in zip(order, order[1:]):
        assert upstream in dag.get_task(downstream).upstream_task_ids, f"{upstream} -> {downstream}"
    # outcomes load even when scoring is skipped (no champion yet); predictions only after a passed gate
    assert dag.get_task("load_flight_outcomes").trigger_rule == "none_failed"
    assert dag.get_task("load_flight_delay_predictions").trigger_rule == "all_success"
    assert "enforce_predictions_gate" in dag.get_task("load_flight_outcomes").upstream_task_ids
    # realised performance after both loads, and only when the predictions loaded
    evaluate = dag.get_task("evaluate_realised_performance")
    assert {"load_flight_outcomes", "load_flight_delay_predictions"} <= evaluate.upstream_task_ids
    assert evaluate.trigger_rule == "all_success"
    # a retraining request is an event of the asset flights_training is scheduled on, and only of that one
    request = dag.get_task("request_retraining")
    assert [a.name for a in request.outlets] == ["flights_retraining_requests"]
    assert not any(t.outlets for t in dag.tasks if t.task_id != "request_retraining")
    assert request.max_active_tis_per_dag == 1  # runs of several days never both find no request and send two
    assert dag.catchup
    assert set(dag.params.keys()) >= {"start_date", "end_date"}


def test_stale_later_days_are_recomputed_by_a_range_run_of_the_same_dag(dagbag):
    from include.recompute import plan

    dag = dagbag.dags["flights_daily"]
    find, trigger = dag.get_task("find_stale_dependants"), dag.get_task("recompute_stale_days")
    assert {"build_features", "enforce_gold_gate"} <= find.upstream_task_ids  # only after the gold gate passed
    assert trigger.upstream_task_ids == {"find_stale_dependants"} and trigger.trigger_rule == "all_success"
    assert trigger.trigger_dag_id == "flights_daily" and trigger.logical_date is None
    # a retried trigger finds the run it started; it never waits (one active scheduled run: it would deadlock)
    assert trigger.skip_when_already_exists and not trigger.wait_for_completion

    found = plan({"2013-03-23": "stale: b", "2013-03-21": "stale: a"}, "manual__2013-03-20").xcom()

    class TI:
        def xcom_pull(self, task_ids):
            assert task_ids == "find_stale_dependants"
            return found

    conf = trigger.render_template(trigger.conf, {"ti": TI()})
    assert conf == {"start_date": "2013-03-21", "end_date": "2013-03-23"}
    assert trigger.render_template(trigger.trigger_run_id, {"ti": TI()}) == found["run_id"]
    params = copy.deepcopy(dag.params)
    params.update(conf)  # the triggered run's conf passes the DAG's own params
    assert params.validate()["start_date"] == "2013-03-21" and params.validate()["end_date"] == "2013-03-23"


def test_training_dag_structure(dagbag):
    dag = dagbag.dags["flights_training"]
    order = ["resolve_window", "export_training_set", "train_models", "register_model", "promote_champion"]
    assert set(dag.task_ids) == set(order)
    for upstream, downstream in zip(order, order[1:]):
        assert upstream in dag.get_task(downstream).upstream_task_ids
    assert {"train_start", "train_end", "n_estimators", "max_depth", "learning_rate", "device"} <= set(dag.params.keys())
    # weekly, and on each retraining request of flights_daily
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["flights_retraining_requests"]
    from airflow.sdk import CronTriggerTimetable

    weekly = dag.timetable.timetable  # as "@weekly" was: a run at each Sunday midnight, none for the past week
    assert isinstance(weekly, CronTriggerTimetable) and weekly.expression == "0 0 * * 0" and not dag.catchup


def test_maintenance_dag_structure_and_its_retention_floor(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["flights_maintenance"]
    assert set(dag.task_ids) == {"resolve_interval", "maintain_lake"}
    assert "resolve_interval" in dag.get_task("maintain_lake").upstream_task_ids
    assert not dag.catchup and dag.max_active_runs == 1
    assert _trigger(dag, {})["retain_hours"] == 168
    for bad in ({"retain_hours": 167}, {"retain_hours": 0}, {"quarantine_retention_days": 0}):
        with pytest.raises(ParamValidationError):
            _trigger(dag, bad)  # below 7 days of table history, or no quarantine retention at all


def test_plugin_registers_listener_and_link():
    sys.path.insert(0, str(REPO / "plugins"))
    try:
        import flights_ops
    finally:
        sys.path.remove(str(REPO / "plugins"))
    plugin = flights_ops.FlightsOpsPlugin
    assert any(isinstance(x, flights_ops.OpsListener) for x in plugin.listeners)
    assert [link.name for link in plugin.global_operator_extra_links] == ["MLflow run", "Data Docs"]


def _trigger(dag, conf: dict) -> dict:
    """The params of a run triggered with ``conf``, validated by Airflow's own param validation."""
    import copy

    params = copy.deepcopy(dag.params)
    params.update(conf)  # each value is resolved against its Param's schema
    return params.validate()


DATE_PARAMS = {"flights_daily": ("start_date", "end_date"), "flights_training": ("train_start", "train_end")}


@pytest.mark.parametrize("dag_id", sorted(DATE_PARAMS))
def test_date_params_accept_only_ascii_iso_dates(dagbag, dag_id):
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags[dag_id]
    first, last = DATE_PARAMS[dag_id]
    assert _trigger(dag, {first: "2013-01-01", last: "2013-01-31"})[first] == "2013-01-01"
    assert _trigger(dag, {})[first] is None  # no range: the run's data interval
    accepted = []
    for bad in ("２０１３-01-01", "2013-01-0١", "2013-01-01\n", "2013-01-01' OR 1=1 --", "20130101"):
        try:
            _trigger(dag, {first: bad, last: "2013-01-31"})
            accepted.append(bad)
        except ParamValidationError as exc:
            assert first in str(exc)
    assert accepted == []  # non-ASCII digits, a trailing newline, SQL or a compact date are not YYYY-MM-DD


def test_accept_dimension_change_takes_only_dimension_names(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["flights_daily"]
    assert _trigger(dag, {})["accept_dimension_change"] is None  # optional: the UI form may leave it empty
    assert _trigger(dag, {"accept_dimension_change": ""})["accept_dimension_change"] == ""
    assert _trigger(dag, {"accept_dimension_change": "airlines"})["accept_dimension_change"] == "airlines"
    assert _trigger(dag, {"accept_dimension_change": "planes,airports"})["accept_dimension_change"]
    for bad in ("carriers", "airlines,", "airlines --lake=/tmp", "airlines\n", " planes", "*"):
        with pytest.raises(ParamValidationError, match="accept_dimension_change"):
            _trigger(dag, {"accept_dimension_change": bad})


def test_release_reason_has_a_length_limit(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["flights_daily"]
    assert _trigger(dag, {})["release_reason"] is None  # optional: the UI form may leave it empty
    assert _trigger(dag, {"release_reason": "carrier XX added to the reference list"})["release_reason"]
    assert _trigger(dag, {"release_reason": "r" * 500})["release_reason"] == "r" * 500
    with pytest.raises(ParamValidationError, match="release_reason"):
        _trigger(dag, {"release_reason": "r" * 501})
