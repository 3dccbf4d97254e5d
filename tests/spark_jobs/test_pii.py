"""Personal data: a column classified ``pii`` never reaches a table, a document or an alert as delivered."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date
from pathlib import Path

import pytest

from include.lake import landing_file, table_uri
from include.source.contract import FLIGHTS_COLUMNS

DAY = date(2013, 1, 5)
KEY = "".join(chr(ord("a") + i % 26) for i in range(36))  # the test's own 36-byte key, as a connection holds it
PARAMS = {"carrier_codes": ["AA", "UA"], "airport_codes": ["EWR", "JFK", "ORD"], "max_quarantine_share": 0.0}
# tail numbers standing in for personal identifiers; each row is kept or quarantined differently
SECRETS = ("N7PRIV1", "N8PRIV2", "N9PRIV3", "N6PRIV4")
ROWS = [
    f"2013,1,5,600,600,0,900,900,0,UA,100,{SECRETS[0]},EWR,ORD,120,719,6,0,2013-01-05T11:00:00Z",  # kept
    f"2013,1,5,700,700,NA,1000,955,NA,\"ZZ\",300,\"{SECRETS[1]}\",EWR,ORD,118,719,7,0,2013-01-05T12:00:00Z",  # carrier
    f"2013,1,5,800,800,0,1100,1100,0,AA,400,{SECRETS[2]},JFK,ORD,120,740,99,0,2013-01-05T13:00:00Z",  # hour range
    f"2013,1,5,900,900,\"unterminated,{SECRETS[3]},JFK",  # does not parse: its fields cannot be located
]
CONTENT = ("\n".join([",".join(FLIGHTS_COLUMNS), *ROWS]) + "\n").encode()


def _hmac(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


@pytest.mark.slow
def test_the_spark_hmac_is_rfc_2104_hmac_sha256(spark):
    from pyspark.sql import functions as F

    from include.source.pii import hmac_column

    values = ["N12345", "", "ünïcode ✈", "x" * 200, None]
    long_key = ("z" * 100).encode()  # longer than a SHA-256 block: hashed first, as RFC 2104 says
    df = spark.createDataFrame([(v,) for v in values], "v string")
    got = df.select(hmac_column(F.col("v"), KEY.encode()).alias("h"),
                    hmac_column(F.col("v"), long_key).alias("l")).collect()
    for value, row in zip(values, got):
        if value is None:
            assert row["h"] is None and row["l"] is None
        else:
            assert row["h"] == _hmac(value)
            assert row["l"] == hmac.new(long_key, value.encode(), hashlib.sha256).hexdigest()


def test_the_classification_comes_from_the_contract_and_the_deployment(monkeypatch):
    from include.source import pii

    monkeypatch.setattr(pii, "PII", {"flights": ("tailnum",)})
    monkeypatch.setenv("FLIGHTS_PII_COLUMNS", "planes.tailnum, flights.origin")
    assert pii.pii_columns("flights") == ("origin", "tailnum")
    assert pii.pii_columns("planes") == ("tailnum",)
    assert pii.pii_columns("weather") == ()
    monkeypatch.setenv("FLIGHTS_PII_COLUMNS", "tailnum")
    with pytest.raises(pii.PiiConfigError, match="<dataset>.<column>"):
        pii.pii_columns("flights")


def _deliver(tmp_path: Path) -> tuple[str, str]:
    landing, lake = tmp_path / "landing", str(tmp_path / "lake")
    path = Path(landing_file(str(landing), "flights", DAY))
    path.parent.mkdir(parents=True)
    path.write_bytes(CONTENT)
    return str(landing), lake


@pytest.mark.slow
def test_without_a_key_personal_columns_are_not_ingested(spark, tmp_path, monkeypatch):
    from spark_jobs.bronze_landing import ingest_daily
    from spark_jobs.session import JobInputError

    monkeypatch.setenv("FLIGHTS_PII_COLUMNS", "flights.tailnum")
    monkeypatch.setenv("FLIGHTS_PII_KEY", "short")
    landing, lake = _deliver(tmp_path)
    with pytest.raises(JobInputError, match=r"personal column\(s\) \['tailnum'\].*only 5 bytes.*flights_pii"):
        ingest_daily(spark, lake, landing, "flights", DAY, DAY, "r", PARAMS)
    assert not (Path(lake) / "bronze" / "flights").exists()  # nothing was written unhashed


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory):
    """The day ingested with ``tailnum`` classified personal, and the bronze gate run over it (it fails)."""
    from include.quality.suites import describe_failures
    from spark_jobs.bronze_landing import ingest_daily
    from spark_jobs.quality_gate import run_checks

    mp = pytest.MonkeyPatch()
    mp.setenv("FLIGHTS_PII_COLUMNS", "flights.tailnum")
    mp.setenv("FLIGHTS_PII_KEY", KEY)
    try:
        landing, lake = _deliver(tmp_path_factory.mktemp("pii"))
        for name, column, values in (("airlines", "carrier", PARAMS["carrier_codes"]),
                                     ("airports", "faa", PARAMS["airport_codes"])):  # the gate's reference lists
            spark.createDataFrame([(v,) for v in values], f"{column} string").write.format("delta").save(
                table_uri(lake, f"bronze.{name}"))
        out = ingest_daily(spark, lake, landing, "flights", DAY, DAY, "r", PARAMS)
        gate = run_checks(spark, lake, ["bronze/flights=bronze.flights"], DAY, DAY, "r", max_quarantine_share=0.0)
    finally:
        mp.undo()
    alert = "\n".join(describe_failures(s) for s in gate["suites"])
    return lake, out, gate, alert


@pytest.mark.slow
def test_bronze_holds_the_keyed_hash_and_joins_still_work(spark, ingested):
    lake, out, _, _ = ingested
    assert out["rows"] == len(ROWS)  # every delivered row is in bronze, the unparsable one included
    bronze = spark.read.format("delta").load(table_uri(lake, "bronze.flights"))
    tails = {r["tailnum"] for r in bronze.collect() if r["_corrupt_record"] is None}
    assert tails == {_hmac(s) for s in SECRETS[:3]}


@pytest.mark.slow
def test_the_quarantine_keeps_the_line_with_its_personal_fields_hashed(spark, ingested):
    lake = ingested[0]
    rows = {r["raw_line"]: r for r in spark.read.format("delta").load(table_uri(lake, "quarantine.flights")).collect()}
    assert ROWS[1].replace(SECRETS[1], _hmac(SECRETS[1])) in rows  # everything else exactly as delivered
    assert ROWS[2].replace(SECRETS[2], _hmac(SECRETS[2])) in rows
    withheld = [line for line in rows if line.startswith("[withheld")]
    assert withheld == [f"[withheld: the line did not parse, so its personal fields cannot be located; "
                        f"line hmac {_hmac(ROWS[3])}]"]


@pytest.mark.slow
def test_no_raw_value_reaches_any_table_document_or_alert(spark, ingested):
    lake, _, gate, alert = ingested
    assert not gate["success"]  # the gate failed on the quarantined rows: its documents and alert exist
    assert "quarantined rows by reason" in alert
    found = []
    for table in ("bronze.flights", "quarantine.flights", "bronze.landing_files"):
        df = spark.read.format("delta").load(table_uri(lake, table))
        for row in df.collect():
            text = repr(row.asDict(recursive=True))
            found += [(table, s) for s in SECRETS if s in text]
    files = [p for p in Path(lake).rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in files)  # Data Docs were built
    for path in files:  # parquet, the Delta logs' column statistics, Data Docs, validation results
        data = path.read_bytes()
        found += [(str(path.relative_to(lake)), s) for s in SECRETS if s.encode() in data]
    found += [("alert", s) for s in SECRETS if s in alert]
    assert not found, found


def test_the_local_target_hands_the_key_from_the_connection_to_the_job_environment_only(monkeypatch, tmp_path):
    from include.config import load_settings
    from include.targets import local

    held = "".join(chr(ord("A") + i % 26) for i in range(40))  # what the connection holds
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHTS_PII", f'{{"conn_type": "generic", "password": "{held}"}}')
    monkeypatch.delenv("FLIGHTS_PII_KEY", raising=False)
    monkeypatch.setenv("FLIGHTS_JARS_DIR", str(tmp_path))
    (tmp_path / "delta-spark_2.13-4.0.0.jar").write_bytes(b"")
    seen = []
    monkeypatch.setattr(local.subprocess, "Popen", lambda cmd, env, **kw: seen.append((cmd, env)))
    runner = local.LocalSparkRunner(load_settings())

    runner.launch("bronze_landing", ["--lake", "/l"], name="n")  # nothing classified: no key is fetched
    assert "FLIGHTS_PII_KEY" not in seen[-1][1]
    monkeypatch.setenv("FLIGHTS_PII_COLUMNS", "flights.tailnum")
    runner.launch("bronze_landing", ["--lake", "/l"], name="n")
    cmd, env = seen[-1]
    assert env["FLIGHTS_PII_KEY"] == held and not any(held in part for part in cmd)
    runner.launch("gold_flight_features", ["--lake", "/l"], name="n")  # a job that never sees raw columns
    assert "FLIGHTS_PII_KEY" not in seen[-1][1]


@pytest.mark.slow
def test_a_personal_key_of_a_dimension_is_hashed_alike_so_flights_still_join_their_planes(spark, ingested, tmp_path,
                                                                                          monkeypatch):
    from spark_jobs.bronze_dimensions import ingest_dimensions
    from tests.spark_jobs.test_bronze_dimensions import PLANES, deliver

    monkeypatch.setenv("FLIGHTS_PII_COLUMNS", "flights.tailnum,planes.tailnum")
    monkeypatch.setenv("FLIGHTS_PII_KEY", KEY)
    planes = [*PLANES, PLANES[1].replace("N101", SECRETS[0], 1)]  # the plane that flew the kept flight
    landing, lake = deliver(tmp_path / "landing", planes=("\n".join(planes) + "\n").encode()), str(tmp_path / "lake")
    ingest_dimensions(spark, lake, landing, "r")

    hashed = spark.read.format("delta").load(table_uri(lake, "bronze.planes"))
    assert {r["tailnum"] for r in hashed.collect()} == {_hmac(t) for t in ("N101", "N102", "N103", "N104", "N105",
                                                                          SECRETS[0])}
    flights = spark.read.format("delta").load(table_uri(ingested[0], "bronze.flights"))
    assert flights.join(hashed, "tailnum").count() == 1  # the kept flight finds its plane by the hash
    found = [(str(p), s) for p in Path(lake).rglob("*") if p.is_file() for s in (SECRETS[0], "N101")
             if s.encode() in p.read_bytes()]
    assert not found, found
