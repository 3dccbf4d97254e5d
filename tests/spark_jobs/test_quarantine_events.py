"""Quarantine status changes as an append-only history (``quarantine.events``), on real Delta tables.

One day is delivered; a row is released; another release is appended without its
projection (a stop between the two writes); the day is rerun, delivered again without one
bad row, and delivered with it once more by the first run. Each step's events, quarantine
rows and event files are kept for the tests.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from pathlib import Path

import pytest

from include.lake import landing_file, table_uri
from include.source.contract import FLIGHTS_COLUMNS

pytestmark = pytest.mark.slow

DAY = date(2013, 1, 5)
PARAMS = {"carrier_codes": ["AA", "UA"], "airport_codes": ["EWR", "JFK", "ORD"], "max_quarantine_share": 1.0}
GOOD = [
    "2013,1,5,600,600,0,900,900,0,UA,100,N1,EWR,ORD,120,719,6,0,2013-01-05T11:00:00Z",
    "2013,1,5,NA,630,NA,NA,930,NA,AA,200,N2,JFK,ORD,NA,740,6,30,2013-01-05T11:00:00Z",
]
BAD = {  # three rows of unknown carriers: A is released, B is superseded and delivered again, C released by hand
    "A": "2013,1,5,700,700,NA,1000,955,NA,ZZ,300,N3,EWR,ORD,118,719,7,0,2013-01-05T12:00:00Z",
    "B": "2013,1,5,710,710,NA,1010,1005,NA,ZZ,301,N4,EWR,ORD,118,719,7,10,2013-01-05T12:00:00Z",
    "C": "2013,1,5,720,720,NA,1020,1015,NA,YY,302,N5,JFK,ORD,118,740,7,20,2013-01-05T12:00:00Z",
}
RELEASE = ("analyst", "carrier ZZ started service")
BY_HAND = ("analyst2", "carrier YY started service")


def _file(names: str) -> bytes:
    return ("\n".join([",".join(FLIGHTS_COLUMNS), *GOOD, *(BAD[n] for n in names)]) + "\n").encode()


def _rows(df) -> list[dict]:
    return sorted((r.asDict() for r in df.collect()), key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _files(uri: str) -> dict[str, str]:
    """SHA-256 of every data file of a Delta table's folder."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(uri).rglob("*.parquet")}


@pytest.fixture(scope="module")
def story(spark, tmp_path_factory):
    """The day's quarantine after each step, as (step, held count, events, quarantine rows, event files)."""
    from spark_jobs.bronze_landing import ingest_daily
    from spark_jobs.quarantine_store import append_events, release_held

    root = tmp_path_factory.mktemp("events")
    landing, lake = root / "landing", str(root / "lake")
    path = Path(landing_file(str(landing), "flights", DAY))
    path.parent.mkdir(parents=True)
    events_uri, q_uri = table_uri(lake, "quarantine.events"), table_uri(lake, "quarantine.flights")
    steps: list[dict] = []

    def record(step: str, held: int | None = None) -> None:
        steps.append({"step": step, "held": held,
                      "events": _rows(spark.read.format("delta").load(events_uri)),
                      "quarantine": _rows(spark.read.format("delta").load(q_uri).drop("quarantined_at")),
                      "files": _files(events_uri)})

    def deliver(step: str, names: str, run_id: str) -> None:
        path.write_bytes(_file(names))
        record(step, ingest_daily(spark, lake, str(landing), "flights", DAY, DAY, run_id, PARAMS)["quarantined"])

    deliver("delivered", "ABC", "r1")
    ids = {n: next(r["_row_id"] for r in steps[0]["quarantine"] if r["raw_line"] == line) for n, line in BAD.items()}
    record("released", release_held(spark, lake, "flights", DAY, DAY, *RELEASE, [ids["A"]], run_id="release-1"))
    # a stop between the two writes: the release of C is appended as an event, its status column is not set
    appended = append_events(spark, lake, "flights", DAY, DAY, lambda latest: latest.filter(
        latest["_row_id"] == ids["C"]).selectExpr("_row_id", "flight_date", "'released' AS status",
                                                  f"'{BY_HAND[0]}' AS changed_by", f"'{BY_HAND[1]}' AS reason",
                                                  "'by-hand' AS run_id"))
    record("stopped before the projection", appended)
    deliver("same run again", "ABC", "r1")  # nothing to decide: the releases stand, C's status is repaired
    deliver("without B", "AC", "r3")
    deliver("first run again", "ABC", "r1")  # B delivered again by the run that first held it
    return {"spark": spark, "lake": lake, "ids": ids, "steps": {s["step"]: s for s in steps}, "order": steps}


def _history(events: list[dict], row_id: str) -> list[tuple]:
    return [(e["status"], e["changed_by"], e["reason"], e["run_id"])
            for e in sorted((e for e in events if e["_row_id"] == row_id), key=lambda e: e["changed_at"])]


def test_each_row_has_the_exact_sequence_of_its_status_changes(story):
    events, ids = story["order"][-1]["events"], story["ids"]
    held = ("held", "bronze_landing", "broke a row-level expectation", "r1")
    assert _history(events, ids["A"]) == [held, ("released", *RELEASE, "release-1")]
    assert _history(events, ids["B"]) == [held, ("superseded", "bronze_landing", "no longer delivered", "r3"), held]
    assert _history(events, ids["C"]) == [held, ("released", *BY_HAND, "by-hand")]
    assert {e["dataset"] for e in events} == {"flights"} and {e["flight_date"] for e in events} == {DAY}
    first_b, again_b = [e["event_id"] for e in sorted(events, key=lambda e: e["changed_at"])
                        if e["_row_id"] == ids["B"] and e["status"] == "held"]
    assert first_b != again_b  # the same run holding B again after it was superseded is a new event
    # what each step returned: the day's held rows (the release: the rows it released; the stop: events appended)
    assert [(s["step"], s["held"]) for s in story["order"]] == [
        ("delivered", 3), ("released", 1), ("stopped before the projection", 1), ("same run again", 1),
        ("without B", 0), ("first run again", 1)]


def test_reruns_and_retried_commits_append_no_event_twice(story):
    from spark_jobs.quarantine_store import commit_events

    steps = story["steps"]
    count = {name: len(s["events"]) for name, s in steps.items()}
    assert count["delivered"] == 3 and count["released"] == 4 and count["stopped before the projection"] == 5
    assert count["same run again"] == 5  # the run again appends nothing: the releases stand
    assert count["without B"] == 6
    assert count["first run again"] == 7  # only B held again: A's and C's releases are not repeated
    events = steps["first run again"]["events"]
    assert len({e["event_id"] for e in events}) == len(events)
    spark, lake = story["spark"], story["lake"]
    # a commit retried after it landed: the very same events again
    again = spark.read.format("delta").load(table_uri(lake, "quarantine.events"))
    assert commit_events(spark, lake, "flights", DAY, DAY, again) == 0
    assert _rows(spark.read.format("delta").load(table_uri(lake, "quarantine.events"))) == events


def test_events_are_only_ever_appended(story):
    from delta.tables import DeltaTable

    spark, order = story["spark"], story["order"]
    for earlier, later in zip(order, order[1:]):
        assert all(e in later["events"] for e in earlier["events"]), later["step"]  # every field as it was
        assert earlier["files"].items() <= later["files"].items(), later["step"]  # the same files, byte for byte
    uri = table_uri(story["lake"], "quarantine.events")
    live = {Path(f.removeprefix("file:")).resolve() for f in spark.read.format("delta").load(uri).inputFiles()}
    assert {Path(f).resolve() for f in order[0]["files"]} <= live  # and still the table's current files
    log = [json.loads(line) for p in sorted(Path(uri, "_delta_log").glob("*.json")) for line in p.read_text()
           .splitlines()]
    assert not [a for a in log if "remove" in a]  # no commit ever took a file (an event) away
    commits = DeltaTable.forPath(spark, uri).history().orderBy("version").collect()
    assert [c["operation"] for c in commits] == ["WRITE"] + ["MERGE"] * (len(commits) - 1)  # created, then merged
    assert {(c["operationMetrics"].get("numTargetRowsUpdated"), c["operationMetrics"].get("numTargetRowsDeleted"))
            for c in commits[1:]} == {("0", "0")}


def test_the_status_columns_are_each_rows_latest_event(story):
    ids = story["ids"]
    statuses = {s["step"]: {n: {r["_row_id"]: r["status"] for r in s["quarantine"]}[ids[n]] for n in "ABC"}
                for s in story["order"]}
    assert statuses == {
        "delivered": {"A": "held", "B": "held", "C": "held"},
        "released": {"A": "released", "B": "held", "C": "held"},
        "stopped before the projection": {"A": "released", "B": "held", "C": "held"},
        "same run again": {"A": "released", "B": "held", "C": "released"},  # a release survives a rerun
        "without B": {"A": "released", "B": "superseded", "C": "released"},
        "first run again": {"A": "released", "B": "held", "C": "released"}}
    for step in story["order"]:
        if step["step"] == "stopped before the projection":
            continue
        latest = {}
        for e in sorted(step["events"], key=lambda e: e["changed_at"]):
            latest[e["_row_id"]] = (e["status"], e["changed_at"], e["changed_by"], e["reason"])
        projected = {r["_row_id"]: (r["status"], r["status_changed_at"], r["status_changed_by"], r["status_reason"])
                     for r in step["quarantine"]}
        assert projected == latest, step["step"]
    final = {r["_row_id"]: r for r in story["order"][-1]["quarantine"]}
    assert (final[ids["B"]]["run_id"], final[ids["B"]]["raw_line"]) == ("r1", BAD["B"])  # held again by r1


def test_a_stop_between_the_event_and_the_projection_is_repaired_by_the_next_run(story):
    steps, c = story["steps"], story["ids"]["C"]
    stopped, rerun = steps["stopped before the projection"], steps["same run again"]
    assert {r["_row_id"]: r["status"] for r in stopped["quarantine"]}[c] == "held"  # the event only
    assert len(rerun["events"]) == len(stopped["events"])  # the next run had nothing to append, and repaired
    row = next(r for r in rerun["quarantine"] if r["_row_id"] == c)
    assert (row["status"], row["status_changed_by"], row["status_reason"]) == ("released", *BY_HAND)


def test_a_quarantine_table_from_before_the_events_starts_its_history_from_the_known_statuses(spark, tmp_path):
    from spark_jobs.quarantine_store import release_held

    lake = str(tmp_path / "lake")
    ids = [hashlib.sha256(f"flights|{DAY}|{n}".encode()).hexdigest() for n in range(3)]
    when = [datetime(2013, 1, 6), datetime(2013, 1, 7), datetime(2013, 1, 8)]
    before = [(ids[0], DAY, "held", when[0], "bronze_landing", "broke a rule", "r0"),
              (ids[1], DAY, "released", when[1], "analyst", "fixed", "r0"),
              (ids[2], date(2013, 1, 9), "superseded", when[2], "bronze_landing", "no longer delivered", "r0")]
    (spark.createDataFrame(before, "_row_id string, flight_date date, status string, status_changed_at timestamp, "
                                   "status_changed_by string, status_reason string, run_id string")
     .write.format("delta").partitionBy("flight_date").save(table_uri(lake, "quarantine.flights")))
    assert release_held(spark, lake, "flights", DAY, DAY, "analyst", "fixed too", [ids[0]], run_id="rel") == 1
    events = spark.read.format("delta").load(table_uri(lake, "quarantine.events"))
    first = [(r["_row_id"], r["flight_date"], r["status"], r["changed_at"], r["changed_by"], r["reason"], r["run_id"])
             for r in events.filter("run_id = 'r0'").orderBy("changed_at").collect()]
    assert first == before  # every row of the table, other days too, as it was known
    assert _history(_rows(events), ids[0]) == [("held", "bronze_landing", "broke a rule", "r0"),
                                               ("released", "analyst", "fixed too", "rel")]
    assert release_held(spark, lake, "flights", DAY, date(2013, 1, 9), "analyst", "again", run_id="rel2") == 0
    assert spark.read.format("delta").load(table_uri(lake, "quarantine.events")).count() == 4  # recorded once
