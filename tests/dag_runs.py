"""Running the real DAGs with ``dag.test()`` on a cloud target, and what the tests seed in its lake.

Shared by the DAG tests of every cloud target (``tests/aws``, ``tests/gcp``): the emulated cloud
runs no Spark, so each test writes what a job would have written (gate summaries, exports) and
asserts the control plane.
"""

from __future__ import annotations

import io
import json
from datetime import date, datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UTC = timezone.utc


def run_id(day: date) -> str:
    """The run id ``dag.test`` gives with ``run_after`` = the logical date."""
    return f"manual__{day.isoformat()}T00:00:00+00:00"


def parquet(rows: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(rows), buf)
    return buf.getvalue()


def gate(lake_root: str, suite: str, table: str, ok: bool) -> bytes:
    """A gate job's JSON summary: passed, or failed on one expectation with its reason."""
    failed = [] if ok else [{"expectation": "expect_column_values_to_be_between", "kwargs": {"column": "distance"},
                             "reason": "distance_range", "observed": {"unexpected_count": 12}, "exception": None}]
    summary = {"suite": suite, "table": table, "success": ok, "evaluated": 20, "failed_count": len(failed),
               "failed": failed, "row_count": 900, "quarantined": 3, "docs_page": f"{lake_root}/_docs/{suite}.html",
               "warnings": []}
    return json.dumps({"success": ok, "suites": [summary]}).encode()


def seed_day(put, lake_root: str, landing: str, day: date, *, bronze_ok: bool = True, scored: bool = False) -> None:
    """What the landing delivery and each Spark job of ``day`` would write, through ``put(uri, body)``.

    The day's landing files, the bronze and gold gate summaries (bronze failing unless ``bronze_ok``),
    the outcomes export (two flights), and with ``scored`` the predictions gate and export (one flight,
    model version 1).
    """
    from include.intervals import Interval
    from include.jobs import RunRef, result_uri

    ref = RunRef.of(Interval(day, day), run_id(day))
    for ds in ("flights", "weather"):
        put(f"{landing}/{ds}/{ds}_{day:%Y-%m-%d}.csv", f"year,month,day\n{day.year},{day.month},{day.day}\n".encode())
    put(result_uri(lake_root, "bronze", ref), gate(lake_root, "bronze/flights", "bronze.flights", bronze_ok))
    put(result_uri(lake_root, "gold", ref), gate(lake_root, "gold/flight_features", "gold.flight_features", True))
    put(f"{lake_root}/exports/flight_outcomes/{ref.key}/part-0.parquet",
        parquet({"flight_id": [f"{ref.key}-UA-1", f"{ref.key}-B6-2"], "flight_date": [day, day],
                 "dep_delay": [3.0, -1.0], "arr_delay": [20.0, -4.0], "is_delayed": [1, 0],
                 "cancelled": [False, False]}))
    if scored:
        put(result_uri(lake_root, "predictions", ref),
            gate(lake_root, "predictions/flight_delay_risk", "predictions.flight_delay_risk", True))
        put(f"{lake_root}/exports/predictions/{ref.key}/part-0.parquet", parquet({
            "flight_id": [f"{ref.key}-UA-1"], "flight_date": [day], "carrier": ["UA"], "flight": [1],
            "origin": ["EWR"], "dest": ["ORD"], "sched_dep_ts": [datetime(day.year, day.month, day.day, 7)],
            "delay_probability": [0.4], "model_name": ["flights-delay-xgboost"], "model_version": ["1"],
            "run_id": [run_id(day)], "feature_build": ["0123456789abcdef"]}))


def dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[dag_id]


def run(dag_id: str, day: date, conf: dict | None = None):
    when = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return dag(dag_id).test(logical_date=when, run_after=when, run_conf=conf or {})


def tis(dr) -> dict:
    return {ti.task_id: ti for ti in dr.get_task_instances()}


def states(dr) -> dict[str, str]:
    return {t: str(ti.state) for t, ti in tis(dr).items()}


def train_small_model(folder: Path):
    """The trainer's real outputs on a small fixture whose label no linear model fits (XGBoost wins).

    Returns ``(training outputs, the training Parquet file)``.
    """
    import numpy as np

    from include.features import LABEL
    from include.training.train import train_and_evaluate
    from tests.include.test_training import _fixture

    data = folder / "data"
    data.mkdir(parents=True)
    frame = _fixture()
    rng = np.random.default_rng(1)
    frame[LABEL] = (rng.random(len(frame)) < 1 / (1 + np.exp(-3 * (frame["sched_dep_hour"].abs() - 0.7)))).astype(int)
    frame.to_parquet(data / "part-0.parquet")
    return train_and_evaluate(data, folder / "model", {"n_estimators": 40}), data / "part-0.parquet"


def render(value, ctx: dict):
    """``value`` (a string, or lists and dicts of them) with its Jinja templates rendered in ``ctx``."""
    import jinja2

    if isinstance(value, str):
        return jinja2.Environment().from_string(value).render(**ctx) if "{{" in value else value
    if isinstance(value, list):
        return [render(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: render(v, ctx) for k, v in value.items()}
    return value


class PlanTI:
    """What the DAGs' templates read at run time, as the explain plan renders them: the interval or window
    XCom of ``ref`` and the plan's champion (``include.plan.CHAMPION``)."""

    def __init__(self, ref):
        self.ref = ref

    def xcom_pull(self, task_ids: str, key: str | None = None):
        from include import plan

        if task_ids == "find_champion":
            return plan.CHAMPION
        return {"start": self.ref.start, "end": self.ref.end, "key": self.ref.key, "run_key": self.ref.run_key}
