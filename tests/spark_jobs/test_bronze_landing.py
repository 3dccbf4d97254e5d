"""Releasing held quarantine rows by row id, on a real Delta table."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest

from include.lake import table_uri

DAY = date(2013, 1, 5)
ROW_IDS = [hashlib.sha256(f"flights|{DAY}|{n}".encode()).hexdigest() for n in range(3)]


def _statuses(spark, lake) -> dict[str, str]:
    rows = spark.read.format("delta").load(table_uri(lake, "quarantine.flights")).collect()
    return {r["_row_id"]: r["status"] for r in rows}


@pytest.fixture
def lake(spark, tmp_path):
    """A lake whose ``quarantine.flights`` holds three held rows of DAY."""
    from datetime import datetime

    root = str(tmp_path / "lake")
    rows = [(r, DAY, "held", datetime(2013, 1, 6), "bronze_landing", "broke a rule") for r in ROW_IDS]
    (spark.createDataFrame(rows, "_row_id string, flight_date date, status string, status_changed_at timestamp, "
                                 "status_changed_by string, status_reason string")
     .write.format("delta").partitionBy("flight_date").save(table_uri(root, "quarantine.flights")))
    return root


@pytest.mark.slow
def test_release_by_row_id_refuses_an_injection_and_releases_exactly_the_ids_given(spark, lake):
    from spark_jobs.bronze_landing import release_held
    from spark_jobs.session import JobInputError

    for injection in ("x') OR ('1'='1", "x' OR '1'='1"):  # the first one would release every row of the table
        with pytest.raises(JobInputError, match="is not a row id"):
            release_held(spark, lake, "flights", DAY, DAY, "analyst", "fixed", [ROW_IDS[0], injection])
        assert set(_statuses(spark, lake).values()) == {"held"}  # nothing released by a refused filter
    assert release_held(spark, lake, "flights", DAY, DAY, "analyst", "fixed", ROW_IDS[:2]) == 2
    assert _statuses(spark, lake) == {ROW_IDS[0]: "released", ROW_IDS[1]: "released", ROW_IDS[2]: "held"}


def test_the_release_job_refuses_a_row_id_before_starting_spark(monkeypatch, capsys):
    from spark_jobs import quarantine_release

    started = []
    monkeypatch.setattr(quarantine_release, "get_spark", lambda name: started.append(name))
    monkeypatch.setattr(quarantine_release, "release_held", lambda *a, **k: started.append(a) or 0)
    with pytest.raises(SystemExit) as exc:
        quarantine_release.main(["--lake", "/lake", "--start", str(DAY), "--end", str(DAY), "--run-id", "r",
                                 "--dataset", "flights", "--by", "a", "--reason", "r", "--row-id", "x' OR '1'='1"])
    assert exc.value.code == 2 and "64 lowercase hex" in capsys.readouterr().err
    assert started == []  # no Spark session, no release
