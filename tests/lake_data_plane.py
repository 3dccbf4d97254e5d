"""The data-plane check every cloud lake gets: the real jobs write Delta through the cloud's connector.

A cloud's test (``tests/aws/test_s3a_data_plane.py``, ``tests/gcp/test_gcs_data_plane.py``,
``tests/azure/test_abfs_data_plane.py``) supplies an object store on its emulator (``key``/``list``/
``read``), the lake and landing URIs and a ``spark-defaults.conf`` with the cloud's Spark settings,
and may supply the function that submits a job (the local target's spark-submit by default); this
module lands one real day, runs ``ingest_bronze`` and ``build_features`` with spark-submit twice, runs
them once on a local lake, and offers the three checks: same rows as the local lake, no duplicate after
the rerun, the Delta log in the bucket. Tables are read back by replaying their Delta log with pyarrow, not with Spark.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import time
from datetime import date
from pathlib import Path
from urllib.parse import unquote

import pytest

from include.config import settings
from include.intervals import Interval
from include.jobs import JOBS, RunRef, job_args, result_uri
from include.lake import table_uri
from include.targets.local import LocalSparkRunner

DAY = Interval(date(2013, 1, 1), date(2013, 1, 1))  # the data set's first day: no history to build first
FIRST_RUN = "scheduled__2013-01-01T00:00:00+00:00"
RERUN = "manual__2013-01-03T08:00:00+00:00"
# the jobs that write the day's tables; each then runs its quality gate in the same session (first run only
# here: the rerun proves the tables' idempotence, and a gate writes only its summary and Data Docs)
TASKS = ("ingest_bronze", "build_features")
# table -> the column that identifies a row (None: compared by count)
TABLES = {"bronze.flights": "_row_id", "bronze.weather": "_row_id", "bronze.landing_files": "path",
          "quarantine.flights": "_row_id", "silver.flights": "flight_id", "silver.weather": None,
          "gold.flight_features": "flight_id"}


def connector_jars(env: str, default: Path, pattern: str, make_target: str) -> Path:
    """A connector's jar folder; skips (fails on CI) when ``make <make_target>`` has not fetched it."""
    folder = Path(os.environ.get(env, default))
    if not any(folder.glob(pattern)):
        message = f"No {pattern} in {folder}: run `make {make_target}` (or set {env})."
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):  # CI must not skip it silently
            pytest.fail(message)
        pytest.skip(message)
    return folder


class LocalObjects:
    """The object-store interface over a local lake folder."""

    def key(self, uri: str) -> str:
        return uri

    def list(self, uri: str) -> list[str]:
        return sorted(str(p) for p in Path(uri).rglob("*") if p.is_file())

    def read(self, key: str) -> bytes:
        return Path(key).read_bytes()


def delta_log(store, uri: str) -> list[str]:
    """The table's commit files, in version order."""
    return [k for k in store.list(uri) if "/_delta_log/" in k and k.endswith(".json") and k.rsplit("/", 1)[1][0] != "_"]


def delta_rows(store, uri: str) -> list[dict]:
    """The rows of the table's current version: its commits replayed, then its live Parquet files read."""
    import pyarrow.parquet as pq

    assert not any(k.endswith(".checkpoint.parquet") for k in store.list(uri)), "checkpoint replay not supported"
    live: dict[str, dict] = {}
    for commit in delta_log(store, uri):
        for line in store.read(commit).decode("utf-8").splitlines():
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = action["add"]
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    rows: list[dict] = []
    root = store.key(uri)
    for path, add in live.items():
        assert not add.get("deletionVector"), f"{uri}: deletion vectors are not read here"
        table = pq.read_table(io.BytesIO(store.read(f"{root}/{unquote(path)}")))
        rows += [{**row, **add["partitionValues"]} for row in table.to_pylist()]
    return rows


def summary(store, lake: str) -> dict[str, list]:
    """Per table: the sorted identifying values of its rows (or its row count)."""
    out = {}
    for table, column in TABLES.items():
        rows = delta_rows(store, table_uri(lake, table))
        out[table] = sorted(str(r[column]) for r in rows) if column else len(rows)
    return out


def run_day_twice(conf_dir: Path, store, lake: str, landing: str, label: str, submit=None) -> dict:
    """The day's jobs by spark-submit with ``conf_dir``'s spark-defaults.conf, first run then rerun.

    ``submit(job, args, *, name)`` runs one job to completion (default: the local target's
    ``LocalSparkRunner.submit``); a caller may pass another runner's. Returns the table summaries per run id,
    and under ``"gates"`` each suite's verdict from the summaries the first run's gates wrote to the store.
    """
    submit = submit or LocalSparkRunner(settings()).submit
    timings: dict[str, float] = {}
    summaries = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_CONF_DIR", str(conf_dir))
        for which, run_id in (("first", FIRST_RUN), ("rerun", RERUN)):
            ref = RunRef.of(DAY, run_id)
            for task in TASKS:
                began = time.monotonic()
                args = job_args(task, lake=lake, landing=landing, ref=ref, gate=which == "first")
                submit(JOBS[task], args, name=f"{label}.{task}.{DAY.key}")
                timings[f"{which}.{task}"] = time.monotonic() - began
            summaries[run_id] = summary(store, lake)
            if which == "first":
                summaries["gates"] = {s["suite"]: s["success"] for gate in ("bronze", "gold") for s in json.loads(
                    store.read(store.key(result_uri(lake, gate, ref))))["suites"]}
    print(f"spark-submit seconds: {json.dumps({k: round(v) for k, v in timings.items()})}")
    return summaries


_LOCAL_RUN: dict[str, object] = {}  # the local reference, computed once per test session


def local_lake_summary(lake: Path, local_landing: Path) -> dict[str, list]:
    """The same jobs, same day and arguments, on a local lake (in this process's Spark session).

    Every cloud's data-plane test compares with the same reference, so it is built once per session
    and copied into ``lake`` for the next caller (the landing files' manifest compares by file name).
    """
    import shutil

    if "summary" in _LOCAL_RUN:
        shutil.copytree(_LOCAL_RUN["lake"], lake)
        return _LOCAL_RUN["summary"]
    ref = RunRef.of(DAY, FIRST_RUN)
    for task in TASKS:  # only the tables are compared: the gates are left out
        args = job_args(task, lake=str(lake), landing=str(local_landing), ref=ref, gate=False)
        importlib.import_module(f"spark_jobs.{JOBS[task]}").main(args)
    _LOCAL_RUN.update(summary=summary(LocalObjects(), str(lake)), lake=Path(lake))
    return _LOCAL_RUN["summary"]


def check_same_rows_as_local(plane: dict, local: dict, where: str) -> None:
    """The cloud lake holds the rows the jobs write to a local lake (``plane``: what the fixture returns)."""
    on_cloud = plane["summaries"][FIRST_RUN]
    # the gates ran in the jobs against the store's tables and wrote their summaries there: every suite passed
    assert plane["summaries"]["gates"] == {"bronze/flights": True, "bronze/weather": True,
                                           "gold/flight_features": True}, plane["summaries"]["gates"]
    landed = sum(1 for _ in (plane["local_landing"] / "flights" / "flights_2013-01-01.csv").open()) - 1
    assert len(on_cloud["bronze.flights"]) == landed  # bronze keeps every delivered row, as received
    assert 0 < len(on_cloud["silver.flights"]) <= landed
    for table in TABLES:
        if table == "bronze.landing_files":  # the manifest names each file by its own URI
            assert [Path(p).name for p in on_cloud[table]] == sorted(Path(p).name for p in local[table])
            assert all(p.startswith(plane["landing"]) for p in on_cloud[table])
        else:
            assert on_cloud[table] == local[table], f"{table} differs between the {where} and the local lake"


def check_rerun_duplicates_nothing(plane: dict) -> None:
    first, rerun = plane["summaries"][FIRST_RUN], plane["summaries"][RERUN]
    assert rerun == first  # bronze replaced its partition, silver's MERGE matched every flight
    for table, column in TABLES.items():
        if column:
            assert len(set(rerun[table])) == len(rerun[table]), f"{table} holds a {column} twice"


def check_delta_log_in_bucket(plane: dict, bucket_uri: str) -> None:
    store, lake = plane["store"], plane["lake"]
    for table in TABLES:
        versions = [k.rsplit("/", 1)[1] for k in delta_log(store, table_uri(lake, table))]
        assert versions[:1] == ["00000000000000000000.json"], f"{table}: no first commit in {bucket_uri}"
        if table in ("bronze.flights", "silver.flights", "gold.flight_features"):  # rewritten by the rerun
            assert len(versions) >= 2, f"{table}: the rerun committed no new version"
    assert any(k.endswith(".parquet") for k in store.list(table_uri(lake, "silver.flights")))
