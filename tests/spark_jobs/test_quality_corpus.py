"""A corpus of bad deliveries made from real rows, each with its expected outcome.

Each case lands files for one day, runs the real bronze job and the real bronze gate
(in this process, on the session's Spark), and asserts on bronze, the quarantine, the
file manifest, the gate's failure text, the alert and the Data Docs page.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import shutil
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from include.config import settings
from include.intervals import Interval
from include.lake import landing_file, table_uri
from include.quality.gate import QualityGateFailed, run_gate
from include.quality.rows import MALFORMED
from include.source.landing import land
from include.targets.base import Target

pytestmark = pytest.mark.slow

DAY = date(2013, 1, 10)
INTERVAL = Interval(DAY, DAY)
CHECKS = {"bronze/flights": "bronze.flights", "bronze/weather": "bronze.weather"}


class InProcessSpark:
    """Runs a job's ``main`` in this process on the active session (same code as spark-submit)."""

    def submit(self, job, args, *, name):
        importlib.import_module(f"spark_jobs.{job}").main(args)


class Lake:
    def __init__(self, root: Path, landing: Path):
        self.root, self.landing_root = str(root), str(landing)

    def exists(self, uri):
        return Path(uri).exists()

    def read_json(self, uri):
        return json.loads(Path(uri).read_text())

    def local_dir(self, uri):
        return Path(uri)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Real landed files for the trailing days and the case day, laid once."""
    root = tmp_path_factory.mktemp("source")
    land(Interval(date(2013, 1, 1), DAY), root)
    return root


@pytest.fixture
def case(spark, source, tmp_path):
    """A fresh lake, warehouse and landing zone holding the real files of DAY."""
    from include.alerts import ChannelNotifier
    from include.warehouse.duckdb import DuckDBWarehouse

    landing = tmp_path / "landing"
    shutil.copytree(source / "dimensions", landing / "dimensions")
    for ds in ("flights", "weather"):
        (landing / ds).mkdir(parents=True)
        shutil.copy(landing_file(str(source), ds, DAY), landing / ds)
    target = Target("local", Lake(tmp_path / "lake", landing), InProcessSpark(), None, None,
                    DuckDBWarehouse(tmp_path / "wh.duckdb"), ChannelNotifier(settings()))
    return target


def flights_path(target) -> Path:
    return Path(landing_file(target.lake.landing_root, "flights", DAY))


def read_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open(encoding="utf-8")))


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def ingest(target, start=DAY, end=DAY, extra=()):
    InProcessSpark().submit("bronze_landing", ["--lake", target.lake.root, "--landing", target.lake.landing_root,
                                               "--start", str(start), "--end", str(end), "--run-id", "corpus",
                                               *extra], name="ingest")


def gate(target, interval=INTERVAL):
    return run_gate(target, CHECKS, interval, "corpus", "flights_daily", "bronze")


def table(spark, target, name):
    return spark.read.format("delta").load(table_uri(target.lake.root, name))


def rows_of_day(spark, target, name) -> int:
    from spark_jobs.session import delta_exists

    uri = table_uri(target.lake.root, name)
    return spark.read.format("delta").load(uri).filter(F.col("flight_date") == DAY).count() \
        if delta_exists(spark, uri) else 0


def held(spark, target, dataset="flights"):
    q = table(spark, target, f"quarantine.{dataset}").filter("status = 'held'")
    return {r["_row_id"]: r for r in q.collect()}


def blocked(target, *expected: str) -> str:
    """The gate blocks the day: its message, the alert and the Data Docs pages say why."""
    with pytest.raises(QualityGateFailed) as exc:
        gate(target)
    message = str(exc.value)
    for text in expected:
        assert text in message, message
    alert = alert_for(message, exc.value.summaries)
    assert alert["kind"] == "quality_gate_failed" and all(t in alert["reason"] for t in expected)
    for summary in exc.value.summaries:
        for page in (summary.get("docs_page"), summary.get("volume_docs_page")):
            if page:
                assert Path(page).read_text().lstrip().startswith("<!DOCTYPE html>"), page
    gates = target.warehouse.query("SELECT success, failed FROM ops.quality_gates WHERE suite = 'bronze/flights'")[1]
    assert gates[-1][0] is False and gates[-1][1] >= 1  # the history of the gate is queryable
    return message


def alert_for(exc_message: str, summaries) -> dict:
    """The alert the failure notifier sends for this gate failure (file channel)."""
    from include.alerts import FailureAlert

    class TI:
        dag_id, task_id, run_id, try_number, log_url = "flights_daily", "enforce_bronze_gate", "corpus", 1, "http://log"

        def xcom_pull(self, task_ids):
            return INTERVAL.to_dict()

    FailureAlert().notify({"ti": TI(), "exception": QualityGateFailed(exc_message, summaries)})
    return json.loads(settings().alerts_file.read_text().splitlines()[-1])


# --- a good delivery --------------------------------------------------------------------------


def test_good_file_quarantines_nothing_and_passes(spark, case):
    ingest(case)
    out = gate(case)
    n = len(read_rows(flights_path(case))) - 1
    assert out["suites"]["bronze/flights"] == n and out["quarantined"]["bronze/flights"] == 0
    assert table(spark, case, "bronze.flights").count() == n


# --- batch level: the day is blocked, nothing is kept, the raw file stays ----------------------


@pytest.mark.parametrize("name, mutate, expected", [
    ("missing column", lambda rows: [r[:14] + r[15:] for r in rows], ["missing column(s) ['air_time']"]),
    ("renamed column", lambda rows: [["departure_delay" if c == "dep_delay" else c for c in rows[0]]] + rows[1:],
     ["missing column(s) ['dep_delay']", "renamed to ['departure_delay']"]),
    ("header only", lambda rows: rows[:1], ["header only"]),
])
def test_file_level_problems_block_the_day(spark, case, name, mutate, expected):
    path = flights_path(case)
    write_rows(path, mutate(read_rows(path)))
    ingest(case)
    message = blocked(case, "file_accepted", *expected)
    assert path.exists()  # the raw file stays in the landing zone
    manifest = table(spark, case, "bronze.landing_files").filter("dataset = 'flights'").collect()
    assert [r["status"] for r in manifest] == ["rejected"]
    assert rows_of_day(spark, case, "bronze.flights") == 0  # nothing of the rejected file is kept
    alert = alert_for(message, [])
    assert alert["kind"] == "quality_gate_failed" and expected[0] in alert["reason"]
    assert alert["dag_id"] == "flights_daily" and str(DAY) in alert["interval"]


def test_empty_file_blocks(case):
    flights_path(case).write_bytes(b"")
    ingest(case)
    blocked(case, "empty file")


def test_non_utf8_file_blocks(case):
    path = flights_path(case)
    path.write_bytes(path.read_bytes().replace(b"EWR", "ÉWR".encode("latin-1"), 3))
    ingest(case)
    blocked(case, "not valid UTF-8")


def test_quarantined_share_above_threshold_blocks(spark, case):
    path = flights_path(case)
    rows = read_rows(path)
    ci = rows[0].index("carrier")
    for r in rows[1:len(rows) // 10]:
        r[ci] = "ZZ"  # about 10 % of rows from an unknown carrier
    write_rows(path, rows)
    ingest(case)
    message = blocked(case, "quarantined_share_above_threshold", "unknown_carrier")
    assert "Data Docs:" in message


def land_history(case, source) -> None:
    """Nine days of history before DAY, ingested, so the trailing band applies to DAY."""
    for d in range(1, 10):
        for ds in ("flights", "weather"):
            shutil.copy(landing_file(str(source), ds, date(2013, 1, d)), Path(case.lake.landing_root) / ds)
    ingest(case, date(2013, 1, 1), DAY)


def test_row_count_far_below_or_above_the_trailing_band_blocks(spark, case, source):
    land_history(case, source)  # once for both sides: the history ingest is the expensive part
    path = flights_path(case)
    rows = read_rows(path)
    write_rows(path, rows[:101])  # 100 rows where ~900 are usual
    ingest(case)
    message = blocked(case, "row_count_below_trailing_band")
    assert "row_count_above_trailing_band" not in message

    fi = rows[0].index("flight")
    extra = [[*r[:fi], str(int(r[fi]) + 10000 * k), *r[fi + 1:]] for k in (1, 2) for r in rows[1:]]
    write_rows(path, rows + extra)  # the day redelivered at three times its volume, every row a distinct flight
    ingest(case)
    assert rows_of_day(spark, case, "bronze.flights") == 3 * (len(rows) - 1)  # the rerun replaced the partition
    assert held(spark, case) == {}  # no duplicate, no bad row: only the volume is wrong
    message = blocked(case, "row_count_above_trailing_band")
    assert "row_count_below_trailing_band" not in message and "quarantined_share" not in message


# --- row level: bad rows are held with their reasons, good rows go on ---------------------------


def test_bad_rows_are_quarantined_with_reasons_and_the_rest_pass(spark, case):
    from spark_jobs.gold_flight_features import build_silver as build
    from spark_jobs.quality_gate import kept_rows

    path = flights_path(case)
    rows = read_rows(path)
    h = {c: i for i, c in enumerate(rows[0])}
    bad = {
        "not_a_number:distance": ("distance", "far"),
        "missing_value:carrier": ("carrier", ""),
        "out_of_range:hour": ("hour", "27"),
        "out_of_range:minute": ("minute", "75"),
        "unknown_carrier": ("carrier", "ZZ"),
        "outside_file_day": ("day", "11"),
        "out_of_range:distance": ("distance", "99999"),
    }
    for i, (col, value) in enumerate(bad.values(), start=1):
        rows[i][h[col]] = value
    duplicate = list(rows[20])
    duplicate[h["dep_time"]] = "1234"  # same flight key, delivered twice with different values
    # the last record of the file is a complete, good flight whose transfer stopped one character
    # into `distance`: hour, minute and time_hour are lost, the flight key is all there
    last = rows.pop(next(i for i in range(len(rows) - 1, 30, -1) if "NA" not in rows[i]))
    fields = last[:h["distance"]] + [last[h["distance"]][0]]
    rows += [duplicate, last]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows[:-1])
    path.write_text(text.getvalue() + ",".join(fields), encoding="utf-8")
    ingest(case)
    out = gate(case)  # 9 of ~930 rows held: under the 5 % threshold, the day passes

    q = held(spark, case)
    reasons = sorted(r for row in q.values() for r in row["reasons"])
    for reason in bad:
        assert reason in reasons, reason
    assert "duplicate_flight_key" in reasons
    # the truncated line itself: found by its exact content, held as malformed (too few fields)
    as_read = dict(zip(rows[0], fields))  # every field the cut left, as the string it was delivered as
    truncated = [row for row in q.values() if json.loads(row["raw_record"]) == as_read]
    assert len(truncated) == 1, "the truncated last line is held, once"
    assert truncated[0]["reasons"][0] == MALFORMED, truncated[0]["reasons"]
    assert truncated[0]["raw_line"] == ",".join(fields)  # the line exactly as it arrived
    delivered_lines = set(path.read_text(encoding="utf-8").splitlines())
    assert all(row["raw_line"] in delivered_lines for row in q.values())
    assert {"missing_value:hour", "missing_value:minute", "missing_value:time_hour"} <= set(truncated[0]["reasons"])
    assert [row for row in q.values() if MALFORMED in row["reasons"]] == truncated  # and no other line is malformed
    assert all(row["raw_record"] and row["source_file"].endswith(".csv") and row["run_id"] == "corpus"
               for row in q.values())
    delivered = len(rows) - 1
    assert table(spark, case, "bronze.flights").count() == delivered  # bronze keeps every row as received
    assert out["suites"]["bronze/flights"] == delivered - len(q)  # the kept rows were validated
    assert out["quarantined"]["bronze/flights"] == len(q)

    # nothing of the truncated line goes on: not among the rows the gate keeps, not in silver
    bronze = table(spark, case, "bronze.flights").filter(F.col("flight_date") == DAY)
    it = F.col("_row_id") == truncated[0]["_row_id"]
    assert bronze.filter(it).count() == 1  # kept in bronze as received, flagged:
    assert bronze.filter(it & (F.size("_reasons") == 0)).count() == 0  # not among the rows GX validates
    assert kept_rows(spark, case.lake.root, "flights", bronze, DAY, DAY).filter(it).count() == 0
    build(spark, case.lake.root, DAY, DAY)
    silver = table(spark, case, "silver.flights").filter(F.col("flight_date") == DAY)
    assert silver.count() > 0  # the good rows reached silver
    same_flight = ((F.col("carrier") == last[h["carrier"]]) & (F.col("flight") == int(last[h["flight"]]))
                   & (F.col("origin") == last[h["origin"]])
                   & (F.col("sched_dep_time") == int(last[h["sched_dep_time"]])))
    assert silver.filter(same_flight).count() == 0


def test_added_column_is_accepted_with_a_warning_and_kept(spark, case):
    path = flights_path(case)
    rows = read_rows(path)
    write_rows(path, [rows[0] + ["gate"]] + [r + ["B12"] for r in rows[1:]])
    ingest(case)
    gate(case)
    assert "gate" in table(spark, case, "bronze.flights").columns
    manifest = table(spark, case, "bronze.landing_files").filter("dataset = 'flights'").first()
    assert manifest["status"] == "accepted" and "added column(s) ['gate']" in manifest["issues"][0]
    warnings = case.warehouse.query("SELECT warnings FROM ops.quality_gates WHERE suite = 'bronze/flights'")[1]
    assert "gate" in warnings[0][0]


def test_same_file_delivered_twice_counts_once(spark, case):
    path = flights_path(case)
    shutil.copy(path, path.with_name(f"flights_{DAY}.redelivered.csv"))
    ingest(case)
    gate(case)
    statuses = sorted(r["status"] for r in table(spark, case, "bronze.landing_files")
                      .filter("dataset = 'flights'").collect())
    assert statuses == ["accepted", "duplicate"]
    assert table(spark, case, "bronze.flights").count() == len(read_rows(path)) - 1


# --- replay and release ---------------------------------------------------------------------------


def test_corrected_file_replays_to_the_state_of_good_data(spark, case):
    path = flights_path(case)
    good = path.read_bytes()
    rows = read_rows(path)
    rows[1][rows[0].index("carrier")] = "ZZ"
    write_rows(path, rows)
    ingest(case)
    gate(case)
    assert len(held(spark, case)) == 1
    path.write_bytes(good)  # the source re-lands a corrected file; the run is cleared
    ingest(case)
    gate(case)
    assert held(spark, case) == {}
    q = table(spark, case, "quarantine.flights").collect()
    assert [r["status"] for r in q] == ["superseded"]  # history kept: it was held, then replaced
    assert table(spark, case, "bronze.flights").count() == len(rows) - 1
    assert table(spark, case, "bronze.flights").filter(F.size("_reasons") > 0).count() == 0


def test_released_rows_reach_silver_and_stay_released_on_rerun(spark, case):
    from spark_jobs.gold_flight_features import build_silver as build

    path = flights_path(case)
    rows = read_rows(path)
    rows[1][rows[0].index("dest")] = "XYZ"  # a new destination, missing from the reference table
    write_rows(path, rows)
    ingest(case)
    gate(case)
    build(spark, case.lake.root, DAY, DAY)
    silver = lambda: table(spark, case, "silver.flights").filter("dest = 'XYZ'").count()  # noqa: E731
    assert silver() == 0  # held rows stay out of silver
    InProcessSpark().submit("quarantine_release", ["--lake", case.lake.root, "--dataset", "flights",
                                                   "--start", str(DAY), "--end", str(DAY), "--run-id", "r",
                                                   "--by", "analyst", "--reason", "XYZ opened this year"], name="r")
    ingest(case)  # a rerun of the day re-evaluates the rules but keeps the release
    gate(case)
    build(spark, case.lake.root, DAY, DAY)
    assert silver() == 1
    row = table(spark, case, "quarantine.flights").first()
    assert (row["status"], row["status_changed_by"], row["status_reason"]) == (
        "released", "analyst", "XYZ opened this year")
