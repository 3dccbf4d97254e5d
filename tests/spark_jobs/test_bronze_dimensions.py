"""Dimension snapshots: checked against their contract and gated before they replace bronze, on real Delta tables.

One lake serves the module: the ``lake`` fixture loads good snapshots into it; each test
delivers its own landing zone and compares the lake before and after. The last test
changes the current snapshots (an accepted change, then a restore).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from include.lake import dimension_file, table_uri
from include.source.contract import DIMENSION_COLUMNS

PLANES = [
    "tailnum,year,type,manufacturer,model,engines,seats,speed,engine",
    "N101,2004,Fixed wing multi engine,EMBRAER,EMB-145XR,2,55,NA,Turbo-fan",
    "N102,1998,Fixed wing multi engine,BOEING,737-824,2,149,NA,Turbo-fan",
    "N103,NA,Fixed wing multi engine,AIRBUS,A320-232,2,200,NA,Turbo-fan",
    "N104,2011,Fixed wing single engine,CESSNA,172N,1,4,105,Reciprocating",
    "N105,2002,Fixed wing multi engine,\"MCDONNELL DOUGLAS, CORP\",MD-88,2,142,NA,Turbo-jet",
]
AIRLINES = ["carrier,name", "9E,Endeavor Air Inc.", "AA,American Airlines Inc.", "B6,JetBlue Airways",
            "DL,Delta Air Lines Inc.", "EV,ExpressJet Airlines Inc.", "MQ,Envoy Air", "UA,United Air Lines Inc.",
            "WN,Southwest Airlines Co."]
AIRPORTS = [
    "faa,name,lat,lon,alt,tz,dst,tzone",
    "EWR,Newark Liberty Intl,40.6925,-74.168667,18,-5,A,America/New_York",
    "JFK,John F Kennedy Intl,40.639751,-73.778925,13,-5,A,America/New_York",
    "LGA,La Guardia,40.777245,-73.872608,22,-5,A,America/New_York",
    "ORD,Chicago Ohare Intl,41.978603,-87.904842,668,-6,A,America/Chicago",
    "HNL,Honolulu Intl,21.318681,-157.922428,13,-10,N,Pacific/Honolulu",
]


def csv_bytes(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def exported(lines: list[str]) -> bytes:
    """As a spreadsheet exports it: byte-order mark, quoted header names, CRLF line ends."""
    header = ",".join(f'"{c}"' for c in lines[0].split(","))
    return ("\ufeff" + "\r\n".join([header, *lines[1:]]) + "\r\n").encode()


GOOD = {"planes": csv_bytes(PLANES), "airlines": csv_bytes(AIRLINES), "airports": exported(AIRPORTS)}
TRUNCATED_AIRLINES = csv_bytes(AIRLINES[:3])  # 2 of the 8 carriers left


def deliver(root: Path, **files: bytes) -> str:
    """A landing zone holding the good snapshots, with ``files`` (dimension -> bytes) in their place."""
    for name in DIMENSION_COLUMNS:
        path = Path(dimension_file(str(root), name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files.get(name, GOOD[name]))
    return str(root)


def versions(spark, lake: str) -> dict[str, int]:
    from spark_jobs.bronze_dimensions import table_version

    return {name: table_version(spark, table_uri(lake, f"bronze.{name}")) for name in DIMENSION_COLUMNS}


def keys(spark, lake: str, name: str, version: int | None = None) -> list[str]:
    from spark_jobs.bronze_dimensions import KEYS

    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return sorted(r[0] for r in reader.load(table_uri(lake, f"bronze.{name}")).select(KEYS[name]).collect())


def recorded(spark, lake: str, run_id: str) -> dict[str, dict]:
    rows = spark.read.format("delta").load(table_uri(lake, "bronze.dimension_snapshots")).where(
        f"run_id = '{run_id}'").collect()
    assert len({r["dimension"] for r in rows}) == len(rows), rows  # one record per dimension and run
    return {r["dimension"]: r.asDict() for r in rows}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """A lake holding the good snapshots: (lake, the statuses of their first load)."""
    from spark_jobs.bronze_dimensions import ingest_dimensions

    root = tmp_path_factory.mktemp("dimensions")
    lake = str(root / "lake")
    statuses = ingest_dimensions(spark, lake, deliver(root / "landing"), "first", max_key_loss=0.01,
                                 accept_changes=set())
    return lake, statuses


@pytest.mark.parametrize(("name", "content", "issue"), [
    ("airports", exported(AIRPORTS), None),
    ("planes", gzip.compress(csv_bytes(PLANES)), "planes.csv is gzip-compressed"),
    ("airlines", "carrier,name\nAF,Société Air France\n".encode("latin-1"), "airlines.csv is not valid UTF-8"),
    ("airlines", b"carrier,name\n", "airlines.csv has a header only"),
    ("airlines", b"", "airlines.csv is empty"),
    ("airlines", csv_bytes(["carrier,carrier_name", "AA,American Airlines Inc."]),
     "airlines.csv lacks column(s) ['name'] (renamed to ['carrier_name']?)"),
])
def test_the_file_contract_of_a_snapshot(name, content, issue):
    from include.source.delivery import inspect_file
    from spark_jobs.bronze_dimensions import file_issues

    issues = file_issues(name, inspect_file(f"/landing/dimensions/{name}.csv", [content]))
    if issue is None:
        assert issues == []
    else:
        assert len(issues) == 1 and issue in issues[0], issues


def test_the_dimension_suites_are_great_expectations_suites_that_check_each_key():
    from include.quality.suites import build_suite, load_suite_dict
    from spark_jobs.bronze_dimensions import KEYS

    for name, key in KEYS.items():
        suite = load_suite_dict(f"bronze/{name}")
        assert len(build_suite(suite).expectations) == len(suite["expectations"])  # Great Expectations takes them
        on_key = {e["type"] for e in suite["expectations"] if e["kwargs"].get("column") == key}
        assert {"expect_column_values_to_not_be_null", "expect_column_values_to_be_unique"} <= on_key, name


def test_the_gate_settings_are_read_from_the_environment_and_refused_when_invalid(monkeypatch):
    from include.config import ConfigError
    from spark_jobs.bronze_dimensions import accepted_dimension_changes, max_dimension_key_loss

    monkeypatch.delenv("FLIGHTS_DIMENSION_MAX_KEY_LOSS", raising=False)
    monkeypatch.delenv("FLIGHTS_ACCEPT_DIMENSION_CHANGE", raising=False)
    assert max_dimension_key_loss() == 0.01 and accepted_dimension_changes() == frozenset()
    monkeypatch.setenv("FLIGHTS_DIMENSION_MAX_KEY_LOSS", "0.05")
    monkeypatch.setenv("FLIGHTS_ACCEPT_DIMENSION_CHANGE", " Airlines, planes ")
    assert max_dimension_key_loss() == 0.05 and accepted_dimension_changes() == {"airlines", "planes"}
    for value in ("5%", "1.5", "-0.1", "nan"):
        monkeypatch.setenv("FLIGHTS_DIMENSION_MAX_KEY_LOSS", value)
        with pytest.raises(ConfigError, match="FLIGHTS_DIMENSION_MAX_KEY_LOSS"):
            max_dimension_key_loss()
    assert accepted_dimension_changes("airports") == {"airlines", "planes", "airports"}  # the run's param adds
    monkeypatch.setenv("FLIGHTS_ACCEPT_DIMENSION_CHANGE", "carriers")
    with pytest.raises(ConfigError, match=r"unknown dimension\(s\) \['carriers'\]"):
        accepted_dimension_changes()
    monkeypatch.delenv("FLIGHTS_ACCEPT_DIMENSION_CHANGE")
    assert accepted_dimension_changes("") == frozenset()
    with pytest.raises(ConfigError, match=r"--accept-dimension-change='planes,\*'.*unknown dimension\(s\) \['\*'\]"):
        accepted_dimension_changes("planes,*")


@pytest.mark.slow
def test_good_snapshots_are_written_and_recorded_and_the_same_files_again_write_nothing(spark, lake, tmp_path):
    from delta.tables import DeltaTable

    from spark_jobs.bronze_dimensions import ingest_dimensions

    lake, statuses = lake
    assert statuses == {"planes": "accepted", "airlines": "accepted", "airports": "accepted"}
    first = recorded(spark, lake, "first")
    for name, content in GOOD.items():
        assert first[name]["sha256"] == hashlib.sha256(content).hexdigest()
        assert first[name]["status"] == "accepted" and first[name]["table_version"] is not None
        assert first[name]["path"].endswith(f"/landing/dimensions/{name}.csv") and first[name]["checked_at"]
    assert (first["planes"]["rows"], first["planes"]["keys"], first["airlines"]["keys"]) == (5, 5, 8)
    # a spreadsheet export (byte-order mark, quoted header, CRLF) reads as the plain file
    airports = spark.read.format("delta").load(table_uri(lake, "bronze.airports"))
    assert sorted(r["faa"] for r in airports.collect()) == ["EWR", "HNL", "JFK", "LGA", "ORD"]
    assert {"faa", "lat", "tzone", "_source_sha256", "_run_id"} <= set(airports.columns)
    assert airports.where("faa = 'HNL'").first()["tzone"] == "Pacific/Honolulu"

    DeltaTable.forPath(spark, table_uri(lake, "bronze.planes")).vacuum(168.0)  # commits versions, same rows
    before = versions(spark, lake)
    assert ingest_dimensions(spark, lake, deliver(tmp_path / "landing"), "again", max_key_loss=0.01,
                             accept_changes=set()) == {name: "unchanged" for name in DIMENSION_COLUMNS}
    assert versions(spark, lake) == before  # no new Delta version
    again = recorded(spark, lake, "again")
    assert {r["status"] for r in again.values()} == {"unchanged"}
    assert all(r["table_version"] is None and r["sha256"] == first[n]["sha256"] for n, r in again.items())


@pytest.mark.slow
def test_a_truncated_snapshot_is_refused_naming_the_keys_that_would_disappear_and_nothing_is_written(
        spark, lake, tmp_path):
    from spark_jobs.bronze_dimensions import DimensionSnapshotRejected, ingest_dimensions
    from spark_jobs.session import JobInputError

    lake, _ = lake
    before = versions(spark, lake)
    planes_before = keys(spark, lake, "planes")
    added_plane = "N107,2010,Fixed wing multi engine,BOEING,737-800,2,160,NA,Turbo-fan"
    landing = deliver(tmp_path / "landing", airlines=TRUNCATED_AIRLINES, planes=csv_bytes([*PLANES, added_plane]))
    with pytest.raises(DimensionSnapshotRejected) as refused:
        ingest_dimensions(spark, lake, landing, "truncated", max_key_loss=0.01, accept_changes=set())
    message = str(refused.value)
    assert isinstance(refused.value, JobInputError)  # permanent: the task is not retried
    assert ("airlines.csv has 2 carriers; the current snapshot has 8 and 6 of them would disappear: "
            "B6, DL, EV, MQ, UA, WN (more than the 1% allowed by FLIGHTS_DIMENSION_MAX_KEY_LOSS)") in message
    assert f"{dimension_file(landing, 'airlines')}:" in message
    assert "Fix the file(s) and deliver them again, then clear the task." in message
    assert "set FLIGHTS_ACCEPT_DIMENSION_CHANGE=airlines for one run" in message
    # nothing written: the good planes snapshot waits with the refused one
    assert versions(spark, lake) == before
    assert keys(spark, lake, "airlines") == sorted(line.split(",")[0] for line in AIRLINES[1:])
    assert keys(spark, lake, "planes") == planes_before and "N107" not in planes_before
    log = recorded(spark, lake, "truncated")
    assert {n: r["status"] for n, r in log.items()} == {"airlines": "rejected", "planes": "skipped",
                                                        "airports": "unchanged"}
    assert all(r["table_version"] is None for r in log.values())
    assert log["airlines"]["rows"] == 2 and "6 of them would disappear" in log["airlines"]["issues"][0]


@pytest.mark.slow
def test_a_renamed_column_or_a_missing_snapshot_is_refused_naming_it(spark, lake, tmp_path):
    from spark_jobs.bronze_dimensions import DimensionSnapshotRejected, ingest_dimensions

    lake, _ = lake
    before = versions(spark, lake)
    renamed = csv_bytes(["carrier,carrier_name", *AIRLINES[1:]])
    landing = deliver(tmp_path / "landing", airlines=renamed)
    Path(dimension_file(landing, "airports")).unlink()
    with pytest.raises(DimensionSnapshotRejected, match=r"airlines\.csv lacks column\(s\) \['name'\] \(renamed to "
                                                        r"\['carrier_name'\]\?\)") as refused:
        ingest_dimensions(spark, lake, landing, "renamed", max_key_loss=0.01, accept_changes=set())
    assert f"airports.csv is missing: deliver the airports snapshot at {dimension_file(landing, 'airports')}" in str(
        refused.value)
    assert "FLIGHTS_ACCEPT_DIMENSION_CHANGE" not in str(refused.value)  # a broken contract is not accepted by it
    assert versions(spark, lake) == before
    log = recorded(spark, lake, "renamed")
    assert (log["airlines"]["status"], log["airports"]["status"], log["planes"]["status"]) == (
        "rejected", "rejected", "unchanged")
    assert log["airlines"]["sha256"] == hashlib.sha256(renamed).hexdigest() and log["airlines"]["rows"] is None
    assert log["airports"]["sha256"] is None


@pytest.mark.slow
def test_a_duplicate_or_missing_key_or_a_value_out_of_range_is_refused(spark, lake, tmp_path):
    from spark_jobs.bronze_dimensions import DimensionSnapshotRejected, ingest_dimensions

    lake, _ = lake
    before = versions(spark, lake)
    landing = deliver(tmp_path / "landing", planes=csv_bytes([*PLANES, PLANES[1].replace("2004", "2005")]),
                      airports=csv_bytes([*AIRPORTS, "NA,Nowhere,40.1,-74.1,10,-5,A,America/New_York",
                                          "XNP,North of the Pole,95.5,-74.1,10,-5,A,America/New_York"]))
    with pytest.raises(DimensionSnapshotRejected) as refused:
        ingest_dimensions(spark, lake, landing, "bad-keys", max_key_loss=0.01, accept_changes=set())
    message = str(refused.value)
    assert "2 dimension snapshot(s) refused" in message
    assert ("planes.csv: 1 tailnum value(s) on more than one row break duplicate_key:tailnum "
            "(e.g. tailnum N101)") in message
    assert "airports.csv: 1 row(s) break missing_key:faa" in message
    assert "airports.csv: 1 row(s) break out_of_range:lat (e.g. faa XNP)" in message
    assert versions(spark, lake) == before
    log = recorded(spark, lake, "bad-keys")
    assert (log["planes"]["status"], log["airports"]["status"], log["airlines"]["status"]) == (
        "rejected", "rejected", "unchanged")
    assert (log["planes"]["rows"], log["planes"]["keys"]) == (6, 5)


@pytest.mark.slow
def test_an_accepted_change_is_written_and_the_previous_version_stays_readable_and_restorable(
        spark, lake, tmp_path, monkeypatch):
    from spark_jobs.bronze_dimensions import ingest_dimensions, main, restore_dimension
    from spark_jobs.session import JobInputError

    lake, _ = lake
    before = versions(spark, lake)
    good_airlines = keys(spark, lake, "airlines")
    # N101 retired and N106 added: one key of five lost is within a 20% bound
    planes = csv_bytes([*PLANES[:1], *PLANES[2:], "N106,2012,Fixed wing multi engine,AIRBUS,A321-231,2,379,NA,"
                                                  "Turbo-fan"])
    landing = deliver(tmp_path / "landing", airlines=TRUNCATED_AIRLINES, planes=planes)
    monkeypatch.setenv("FLIGHTS_ACCEPT_DIMENSION_CHANGE", "airlines")
    monkeypatch.setenv("FLIGHTS_DIMENSION_MAX_KEY_LOSS", "0.2")
    assert ingest_dimensions(spark, lake, landing, "accepted") == {
        "planes": "accepted", "airlines": "accepted", "airports": "unchanged"}
    after = versions(spark, lake)
    assert after == {**before, "planes": before["planes"] + 1, "airlines": before["airlines"] + 1}
    assert keys(spark, lake, "airlines") == ["9E", "AA"]
    assert keys(spark, lake, "planes") == ["N102", "N103", "N104", "N105", "N106"]
    log = recorded(spark, lake, "accepted")
    assert log["airlines"]["table_version"] == after["airlines"]
    assert log["airlines"]["issues"][0].endswith("accepted by FLIGHTS_ACCEPT_DIMENSION_CHANGE")

    # the previous version stays readable, and is made current again
    assert keys(spark, lake, "airlines", version=before["airlines"]) == good_airlines
    with pytest.raises(JobInputError, match="is not an earlier one"):
        main(["--lake", lake, "--restore", "airlines", "--version", str(after["airlines"])])
    restored = restore_dimension(spark, lake, "airlines", before["airlines"], run_id="restore-airlines")
    assert restored == after["airlines"] + 1 == versions(spark, lake)["airlines"]
    assert keys(spark, lake, "airlines") == good_airlines
    log = recorded(spark, lake, "restore-airlines")["airlines"]
    assert (log["status"], log["table_version"], log["rows"], log["keys"]) == ("restored", restored, 8, 8)
    assert log["sha256"] == hashlib.sha256(GOOD["airlines"]).hexdigest()  # the snapshot that version held

    # the restored content is the good file's: delivering it again writes nothing
    monkeypatch.delenv("FLIGHTS_ACCEPT_DIMENSION_CHANGE")
    landing = deliver(tmp_path / "again", planes=planes)
    assert ingest_dimensions(spark, lake, landing, "after-restore") == {name: "unchanged" for name in DIMENSION_COLUMNS}
    assert versions(spark, lake)["airlines"] == restored
