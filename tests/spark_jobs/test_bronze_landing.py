"""Reading landing files into bronze, and releasing held quarantine rows, on real Delta tables."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import itertools
import lzma
import zipfile
from datetime import date
from pathlib import Path

import pytest

from include.lake import landing_file, table_uri
from include.source.contract import FLIGHTS_COLUMNS

DAY = date(2013, 1, 5)
ROW_IDS = [hashlib.sha256(f"flights|{DAY}|{n}".encode()).hexdigest() for n in range(3)]
PARAMS = {"carrier_codes": ["AA", "UA"], "airport_codes": ["EWR", "JFK", "ORD"], "max_quarantine_share": 1.0}
# a tiny day as the source writes it: a missing value (NA), a quoted value, and one row from an unknown carrier
ROWS = [
    "2013,1,5,600,600,0,900,900,0,UA,100,N1,EWR,ORD,120,719,6,0,2013-01-05T11:00:00Z",
    "2013,1,5,NA,630,NA,NA,930,NA,AA,200,N2,JFK,ORD,NA,740,6,30,\"2013-01-05T11:00:00Z\"",
    "2013,1,5,700,700,NA,1000,955,NA,\"ZZ\",300,N3,EWR,ORD,118,719,7,0,2013-01-05T12:00:00Z",
]
PLAIN = ("\n".join([",".join(FLIGHTS_COLUMNS), *ROWS]) + "\n").encode()
EXPORTED = ("\ufeff" + ",".join(f'"{c}"' for c in FLIGHTS_COLUMNS) + "\r\n" + "\r\n".join(ROWS) + "\r\n").encode()


def _zip(content: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("flights.csv", content)
    return out.getvalue()


def _ingest(spark, tmp_path: Path, name: str, content: bytes, suffix: str = ".csv") -> list[dict]:
    """Deliver ``content`` as the flights file of DAY and ingest it; the bronze rows without load metadata."""
    from spark_jobs.bronze_landing import ingest_daily

    landing, lake = tmp_path / name / "landing", str(tmp_path / name / "lake")
    path = Path(landing_file(str(landing), "flights", DAY).removesuffix(".csv") + suffix)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    out = ingest_daily(spark, lake, str(landing), "flights", DAY, DAY, "r", PARAMS)
    assert out["files"] == 1 and out["rows"] == len(ROWS), out  # every delivered row is in bronze
    rows = spark.read.format("delta").load(table_uri(lake, "bronze.flights")).drop("_ingested_at", "_source_file")
    return sorted((r.asDict(recursive=True) for r in rows.collect()), key=lambda r: r["_row_id"])


@pytest.fixture(scope="module")
def plain_rows(spark, tmp_path_factory):
    return _ingest(spark, tmp_path_factory.mktemp("plain"), "plain", PLAIN)


def test_a_spreadsheet_header_with_byte_order_mark_and_quoted_names_is_the_plain_header():
    from include.source.delivery import inspect_file
    from spark_jobs.bronze_landing import classify

    assert classify("flights", inspect_file("flights_2013-01-05.csv", [EXPORTED]), {}) == ("accepted", [])


@pytest.mark.slow
def test_an_exported_file_gives_the_bronze_rows_of_the_plain_file(spark, tmp_path, plain_rows):
    rows = _ingest(spark, tmp_path, "exported", EXPORTED)
    assert [r["carrier"] for r in plain_rows] and {r["time_hour"] for r in plain_rows} == {
        "2013-01-05T11:00:00Z", "2013-01-05T12:00:00Z"}  # the quoted value read without its quotes
    assert [{k: v for k, v in r.items() if k != "_source_sha256"} for r in rows] == [
        {k: v for k, v in r.items() if k != "_source_sha256"} for r in plain_rows]  # same rows, same row ids


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
    from spark_jobs.quarantine_store import release_held
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


@pytest.mark.parametrize("compress, kind", [
    (lambda b: gzip.compress(b), "gzip"), (lambda b: bz2.compress(b), "bzip2"), (lambda b: lzma.compress(b), "xz"),
    (lambda b: b"\x28\xb5\x2f\xfd" + b, "zstd"), (lambda b: _zip(b), "zip")])
def test_a_compressed_file_named_csv_is_rejected_as_compressed_not_as_bad_text(compress, kind):
    from include.source.delivery import inspect_file
    from spark_jobs.bronze_landing import classify

    status, issues = classify("flights", inspect_file("landing/flights/flights_2013-01-05.csv", [compress(PLAIN)]), {})
    assert (status, issues) == ("rejected", [
        f"flights_2013-01-05.csv is {kind}-compressed; deliver it as .csv.gz or uncompressed"])


def test_a_csv_gz_is_read_as_its_content_and_hashes_as_the_plain_file():
    from include.source.delivery import inspect_file
    from spark_jobs.bronze_landing import classify

    plain = inspect_file("flights_2013-01-05.csv", [PLAIN])
    packed = gzip.compress(PLAIN)
    gz = inspect_file("flights_2013-01-05.csv.gz", [packed[:7], packed[7:]])
    assert classify("flights", gz, {}) == ("accepted", [])
    assert (gz["sha256"], gz["data_lines"], gz["bytes"]) == (plain["sha256"], len(ROWS), len(packed))
    assert classify("flights", gz, {plain["sha256"]: "flights_2013-01-05.csv"})[0] == "duplicate"  # same extract
    status, issues = classify("flights", inspect_file("flights_2013-01-05.csv.gz", [PLAIN]), {})
    assert status == "rejected" and "is named .gz but is not gzip-compressed" in issues[0]
    status, issues = classify("flights", inspect_file("flights_2013-01-05.csv.gz", [packed[:-12]]), {})
    assert status == "rejected" and "corrupt or truncated" in issues[0]


@pytest.mark.slow
def test_a_day_delivered_as_csv_gz_gives_the_bronze_rows_of_the_plain_file(spark, tmp_path, plain_rows):
    assert _ingest(spark, tmp_path, "gzip", gzip.compress(PLAIN), ".csv.gz") == plain_rows  # same content hash too


def test_inspection_streams_a_file_in_bounded_memory():
    import tracemalloc

    from include.source.delivery import inspect_file

    line, n = ROWS[0].encode() + b"\n", 96 * 16384
    chunks = (line * 16384 for _ in range(n // 16384))  # 1.3 MiB per chunk, 128 MiB in all, made as read
    tracemalloc.start()
    try:
        stats = inspect_file("flights_2013-01-05.csv", itertools.chain([PLAIN], chunks), block_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stats["data_lines"] == len(ROWS) + n and stats["utf8"]
    assert peak < 32 << 20, f"{peak:,} bytes held at once"  # a few chunks, never the whole file


@pytest.mark.slow
def test_a_cloud_uri_is_streamed_through_hadoop_a_chunk_at_a_time(spark, tmp_path):
    from spark_jobs.session import hadoop_chunks

    for size in (3 * 1024 + 512, 2 * 1024, 0):
        path = tmp_path / f"f{size}.csv"
        path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
        chunks = list(hadoop_chunks(spark, path.as_uri(), chunk_bytes=1024))  # Hadoop's file system, as for s3a
        assert b"".join(chunks) == path.read_bytes() and all(len(c) <= 1024 for c in chunks)
        assert len(chunks) == -(-size // 1024)


@pytest.mark.slow
def test_the_ingest_never_holds_a_whole_file_in_memory(spark, tmp_path, plain_rows, monkeypatch):
    def whole_files(*args, **kwargs):
        raise AssertionError("binaryFiles holds each file in memory whole and cannot pass 2 GiB")

    monkeypatch.setattr(spark.sparkContext, "binaryFiles", whole_files)
    assert _ingest(spark, tmp_path, "streamed", PLAIN) == plain_rows


@pytest.mark.slow
@pytest.mark.parametrize("how", ["setting", "flag"])
def test_a_file_over_the_size_limit_fails_the_run_at_once_without_retry(spark, tmp_path, monkeypatch, capsys, how):
    from spark_jobs import bronze_landing
    from spark_jobs.session import PERMANENT_EXIT, run_job

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    for ds in ("flights", "weather"):
        path = Path(landing_file(str(landing), ds, DAY))
        path.parent.mkdir(parents=True)
        path.write_bytes(PLAIN if ds == "flights" else PLAIN[:len(PLAIN) // 2])
    limit = ["--max-file-bytes", str(len(PLAIN) - 1)] if how == "flag" else []
    monkeypatch.setenv("FLIGHTS_MAX_LANDING_FILE_BYTES", str(len(PLAIN) - 1 if how == "setting" else 10))
    with pytest.raises(SystemExit) as exc:
        run_job(bronze_landing.main, ["--lake", str(lake), "--landing", str(landing), "--start", str(DAY),
                                      "--end", str(DAY), "--run-id", "r", *limit])
    assert exc.value.code == PERMANENT_EXIT  # the task fails without retries
    err = capsys.readouterr().err
    assert "PERMANENT FAILURE LandingFileTooLarge: 1 flights landing file(s) over the" in err, err
    assert f"{len(PLAIN) - 1:,}-byte limit" in err and f"flights_{DAY}.csv at {len(PLAIN):,} bytes" in err
    assert not lake.exists()  # refused before anything was read or written


def test_a_size_limit_that_is_not_a_number_fails_without_retry(monkeypatch, capsys):
    from spark_jobs import bronze_landing
    from spark_jobs.session import PERMANENT_EXIT, run_job

    monkeypatch.setattr(bronze_landing, "get_spark", lambda name: pytest.fail("Spark started"))
    monkeypatch.setenv("FLIGHTS_MAX_LANDING_FILE_BYTES", "2GB")
    with pytest.raises(SystemExit) as exc:
        run_job(bronze_landing.main, ["--lake", "/l", "--landing", "/x", "--start", str(DAY), "--end", str(DAY),
                                      "--run-id", "r"])
    assert exc.value.code == PERMANENT_EXIT and "FLIGHTS_MAX_LANDING_FILE_BYTES='2GB'" in capsys.readouterr().err


@pytest.mark.parametrize("job", ["bronze_landing", "gold_flight_features", "quality_gate"])
@pytest.mark.parametrize("gate", [["--check", "bronze/flights=bronze.flights"], ["--result", "/l/_quality/x.json"],
                                  ["--check", "bronze/flights", "--result", "/l/_quality/x.json"]])
def test_a_gate_without_its_result_uri_or_suite_fails_before_spark_starts(monkeypatch, capsys, job, gate):
    """Each job that runs a gate after its writes refuses half a gate at once, not after committing its tables."""
    import importlib

    from spark_jobs.session import PERMANENT_EXIT, run_job

    module = importlib.import_module(f"spark_jobs.{job}")
    monkeypatch.setattr(module, "get_spark", lambda name: pytest.fail("Spark started"))
    if job == "quality_gate" and len(gate) == 2:  # its own CLI requires both: argparse refuses (exit 2)
        with pytest.raises(SystemExit) as exc:
            run_job(module.main, ["--lake", "/l", "--start", str(DAY), "--end", str(DAY), "--run-id", "r", *gate])
        assert exc.value.code == 2
        return
    landing = ["--landing", "/x"] if job == "bronze_landing" else []
    with pytest.raises(SystemExit) as exc:
        run_job(module.main, ["--lake", "/l", *landing, "--start", str(DAY), "--end", str(DAY), "--run-id", "r",
                              *gate])
    err = capsys.readouterr().err
    assert exc.value.code == PERMANENT_EXIT, err
    assert "PERMANENT FAILURE JobInputError: " in err and ("go together" in err or "expected SUITE=TABLE" in err), err


@pytest.mark.slow
def test_the_quarantine_keeps_each_line_exactly_as_delivered(spark, tmp_path, plain_rows):
    from datetime import datetime

    held = next(r for r in plain_rows if r["_reasons"])
    assert held["_reasons"] == ["unknown_carrier"] and "_raw_line" not in held  # bronze keeps the parsed fields only
    lake = str(tmp_path / "kept" / "lake")
    before = [(held["_row_id"], "flights", DAY, held["_reasons"], "{}", "f.csv", "r0", datetime(2013, 1, 6), "held",
               datetime(2013, 1, 6), "bronze_landing", "broke a row-level expectation")]
    (spark.createDataFrame(before, "_row_id string, dataset string, flight_date date, reasons array<string>, "
                                   "raw_record string, source_file string, run_id string, quarantined_at timestamp, "
                                   "status string, status_changed_at timestamp, status_changed_by string, "
                                   "status_reason string")
     .write.format("delta").partitionBy("flight_date").save(table_uri(lake, "quarantine.flights")))  # no raw_line yet
    _ingest(spark, tmp_path, "kept", EXPORTED)
    q = spark.read.format("delta").load(table_uri(lake, "quarantine.flights")).collect()
    # the line with its quotes and NA tokens, filled in for a row held before the column existed
    assert [(r["_row_id"], r["status"], r["raw_line"]) for r in q] == [(held["_row_id"], "held", ROWS[2])]
