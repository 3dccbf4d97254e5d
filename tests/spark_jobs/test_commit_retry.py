"""Concurrent Delta commits: the loser of a conflict is replanned and committed again."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from spark_jobs.session import delta_conflicts, with_commit_retry

pytestmark = pytest.mark.slow


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if time.time() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.1)


def test_a_merge_that_loses_a_conflict_is_retried_and_lands_once(spark, tmp_path):
    from delta.tables import DeltaTable

    uri = str(tmp_path / "table")
    day = F.lit("2013-01-01").cast("date")
    spark.range(0, 10, 1, 1).withColumn("flight_date", day).withColumn("v", F.lit(0)).write.format("delta") \
        .partitionBy("flight_date").save(uri)
    reading, go = tmp_path / "reading", tmp_path / "go"

    @F.udf("long")
    def held_open(x):  # keeps the MERGE's transaction open until the other writer has committed
        reading.touch()
        _wait_for(go)
        return x

    attempts, errors = [], []

    def merge():
        attempts.append(len(attempts) + 1)
        source = spark.range(0, 10, 1, 1).withColumn("id", held_open("id")).withColumn("flight_date", day) \
            .withColumn("v", F.lit(1))
        DeltaTable.forPath(spark, uri).alias("t").merge(source.alias("s"), "t.id = s.id") \
            .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()

    def merge_with_retry():
        try:
            with_commit_retry(merge, uri, attempts=3)
        except Exception as exc:  # surfaced to the test thread below
            errors.append(exc)

    worker = threading.Thread(target=merge_with_retry)
    worker.start()
    _wait_for(reading)
    # a concurrent writer removes the file the MERGE read: its first commit must conflict
    DeltaTable.forPath(spark, uri).delete("id = 3")
    go.touch()
    worker.join(timeout=300)

    assert not errors, errors
    assert attempts == [1, 2]  # the first commit lost the conflict, the replanned one landed
    rows = {r["id"]: r["v"] for r in spark.read.format("delta").load(uri).collect()}
    assert rows == {i: 1 for i in range(10)}  # the retried MERGE saw the delete and re-inserted id 3, once

    # without the retry, the same interleaving surfaces the conflict
    assert isinstance(_conflict(spark, uri, tmp_path), delta_conflicts())


def _conflict(spark, uri: str, tmp_path: Path):
    from delta.tables import DeltaTable

    reading, go = tmp_path / "reading2", tmp_path / "go2"
    day = F.lit("2013-01-01").cast("date")

    @F.udf("long")
    def held_open(x):
        reading.touch()
        _wait_for(go)
        return x

    caught = []

    def merge():
        source = spark.range(0, 10, 1, 1).withColumn("id", held_open("id")).withColumn("flight_date", day) \
            .withColumn("v", F.lit(2))
        try:
            DeltaTable.forPath(spark, uri).alias("t").merge(source.alias("s"), "t.id = s.id") \
                .whenMatchedUpdateAll().execute()
        except Exception as exc:
            caught.append(exc)

    worker = threading.Thread(target=merge)
    worker.start()
    _wait_for(reading)
    DeltaTable.forPath(spark, uri).delete("id = 4")
    go.touch()
    worker.join(timeout=300)
    assert caught, "the unretried MERGE should have lost the conflict"
    return caught[0]
