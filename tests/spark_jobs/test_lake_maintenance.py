"""The retention policy on real Delta tables: VACUUM keeps 7 days of history, decided quarantine rows expire."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from include.lake import table_uri

NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


def test_a_retention_below_seven_days_is_refused_before_anything_runs():
    from spark_jobs import lake_maintenance
    from spark_jobs.session import JobInputError

    with pytest.raises(JobInputError, match="below 168"):
        lake_maintenance.check_retention(24, 365)
    with pytest.raises(SystemExit) as exc:  # the job exits as a permanent failure, without starting Spark
        lake_maintenance.run_job(lake_maintenance.main, ["--lake", "/nowhere", "--start", "2013-01-01", "--end",
                                                         "2013-01-01", "--run-id", "r", "--retain-hours", "0"])
    assert exc.value.code == 3


@pytest.mark.slow
def test_vacuum_keeps_every_version_of_the_retention_and_deletes_what_only_older_ones_need(spark, tmp_path):
    from spark_jobs.lake_maintenance import maintain, vacuum_all

    lake = str(tmp_path / "lake")
    uri = table_uri(lake, "silver.airlines")
    spark.createDataFrame([("AA", "American")], "carrier string, name string").write.format("delta").save(uri)
    spark.createDataFrame([("UA", "United")], "carrier string, name string").write.format("delta").mode(
        "overwrite").save(uri)

    out = maintain(spark, lake, NOW)  # 7 days: version 0 was replaced seconds ago, so it stays
    assert out["vacuumed_files"] == {"silver.airlines": 0}
    assert [r["carrier"] for r in spark.read.format("delta").option("versionAsOf", 0).load(uri).collect()] == ["AA"]

    only_v0 = set(spark.read.format("delta").option("versionAsOf", 0).load(uri).inputFiles())
    only_v0 -= set(spark.read.format("delta").load(uri).inputFiles())
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:  # what a VACUUM past the retention does to the files only version 0 needed
        assert vacuum_all(spark, lake, 0)["silver.airlines"] >= len(only_v0) > 0
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
    assert [r["carrier"] for r in spark.read.format("delta").load(uri).collect()] == ["UA"]
    with pytest.raises(Exception, match="(?i)file|exist|not found"):
        spark.read.format("delta").option("versionAsOf", 0).load(uri).collect()


@pytest.mark.slow
def test_decided_quarantine_rows_expire_with_their_events_and_held_rows_wait(spark, tmp_path):
    from spark_jobs.lake_maintenance import maintain

    lake = str(tmp_path / "lake")
    old, recent = NOW - timedelta(days=400), NOW - timedelta(days=30)
    rows = [("released-old", "released", old, old), ("superseded-old", "superseded", old, old),
            ("released-recent", "released", recent, old), ("held-old", "held", old, old)]
    spark.createDataFrame([(r, "flights", date(2013, 1, 5), s, changed, at) for r, s, changed, at in rows],
                          "_row_id string, dataset string, flight_date date, status string, "
                          "status_changed_at timestamp, quarantined_at timestamp").write.format("delta").save(
        table_uri(lake, "quarantine.flights"))
    spark.createDataFrame([(r, "flights", s) for r, *_ in rows for s in ("held", "released")],
                          "_row_id string, dataset string, status string").write.format("delta").save(
        table_uri(lake, "quarantine.events"))

    out = maintain(spark, lake, NOW)

    assert out["quarantine"] == {"flights": {"deleted": 2, "held_past_retention": 1}}
    kept = {r["_row_id"] for r in spark.read.format("delta").load(table_uri(lake, "quarantine.flights")).collect()}
    assert kept == {"released-recent", "held-old"}
    events = {r["_row_id"] for r in spark.read.format("delta").load(table_uri(lake, "quarantine.events")).collect()}
    assert events == kept
