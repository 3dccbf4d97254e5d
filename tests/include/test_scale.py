"""The scaled landing zone: real rows copied with new flight and tail numbers, accepted by the contract."""

import csv
import json
import re
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from include.intervals import Interval
from include.lake import dimension_file, landing_file
from include.source import scale as scale_mod
from include.source.contract import DIMENSION_COLUMNS, FLIGHTS_COLUMNS, NULL_TOKEN, WEATHER_COLUMNS
from include.source.landing import land
from include.source.scale import FLIGHT_BLOCK, SYNTHETIC_TAIL, Scaler, ScaleMismatch, land_scaled

DAYS = Interval(date(2013, 1, 30), date(2013, 1, 31))
SCALE = 3
KEY = ["carrier", "flight", "origin", "year", "month", "day", "sched_dep_time"]  # bronze's duplicate_flight_key


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def normal(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("normal")
    land(DAYS, root)
    return root


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scaled")
    land_scaled(DAYS, root, SCALE, seed=13)
    return root


@pytest.fixture(scope="module")
def real_tails() -> set[str]:
    _, _, tails = scale_mod._flights_by_day(set())
    return tails


def test_scale_one_lays_exactly_the_normal_landing_zone(normal, tmp_path):
    assert land_scaled(DAYS, tmp_path, 1) == {"flights": 2, "weather": 2, "dimensions": 3}
    assert _files(tmp_path) == _files(normal)  # same files, same bytes, no manifest


def test_the_same_seed_lays_the_same_files_and_another_seed_other_numbers(scaled, tmp_path):
    land_scaled(DAYS, tmp_path / "again", SCALE, seed=13)
    assert _files(tmp_path / "again") == _files(scaled)
    land_scaled(DAYS, tmp_path / "other", SCALE, seed=14)
    path = landing_file(str(tmp_path / "other"), "flights", DAYS.start)
    a, b = _rows(path), _rows(landing_file(str(scaled), "flights", DAYS.start))
    assert len(a) == len(b) and a[::SCALE] == b[::SCALE]  # the real rows are the same ...
    assert [r["flight"] for r in a[1::SCALE]] != [r["flight"] for r in b[1::SCALE]]  # ... the copies' numbers not
    assert [r["tailnum"] for r in a[1::SCALE]] != [r["tailnum"] for r in b[1::SCALE]]


def test_each_real_flight_is_delivered_scale_times_with_its_timings(scaled, normal):
    for d in DAYS.days():
        real = _rows(landing_file(str(normal), "flights", d))
        rows = _rows(landing_file(str(scaled), "flights", d))
        assert len(rows) == SCALE * len(real)  # the real flight, then its SCALE-1 copies
        assert rows[::SCALE] == real
        kept = [c for c in FLIGHTS_COLUMNS if c not in ("flight", "tailnum")]
        for i, r in enumerate(rows):
            assert [r[c] for c in kept] == [real[i // SCALE][c] for c in kept]  # schedule, timings, delays kept


def test_weather_airlines_and_airports_are_unchanged(scaled, normal):
    for d in DAYS.days():
        assert Path(landing_file(str(scaled), "weather", d)).read_bytes() == \
            Path(landing_file(str(normal), "weather", d)).read_bytes()
    for name in ("airlines", "airports"):
        assert Path(dimension_file(str(scaled), name)).read_bytes() == \
            Path(dimension_file(str(normal), name)).read_bytes()


def test_synthetic_keys_collide_with_no_real_key_nor_each_other(scaled, real_tails):
    tail_of: dict[tuple[str, int], str] = {}
    for d in DAYS.days():
        rows = _rows(landing_file(str(scaled), "flights", d))
        keys = Counter(tuple(r[c] for c in KEY) for r in rows)
        assert max(keys.values()) == 1  # no flight key repeats, real or synthetic
        for i, r in enumerate(rows):
            copy, source = i % SCALE, rows[i - i % SCALE]
            if copy == 0:
                assert int(r["flight"]) < FLIGHT_BLOCK and r["tailnum"] in real_tails
                continue
            assert int(r["flight"]) // FLIGHT_BLOCK == copy  # copy k's numbers are its own block
            if source["tailnum"] == NULL_TOKEN:
                assert r["tailnum"] == NULL_TOKEN  # a flight without a tail stays without one
                continue
            assert SYNTHETIC_TAIL.fullmatch(r["tailnum"]) and r["tailnum"] not in real_tails
            # one real tail and copy number always give the same synthetic tail, on every day
            assert tail_of.setdefault((source["tailnum"], copy), r["tailnum"]) == r["tailnum"]
    assert len(set(tail_of.values())) == len(tail_of)  # two (tail, copy) pairs never share a synthetic tail


def test_every_tail_number_of_a_large_scale_is_distinct_and_new(real_tails):
    scaler = Scaler(40, 13, tuple(sorted(real_tails - {NULL_TOKEN})))
    made = [scaler.tail(k, t) for k in range(1, 40) for t in scaler.tails]
    assert len(set(made)) == len(made) == 39 * len(scaler.tails)
    assert not set(made) & real_tails
    flights = [scaler.flight(k, str(f)) for k in range(1, 40) for f in range(1, FLIGHT_BLOCK)]
    assert len(set(flights)) == len(flights) and min(int(f) for f in flights) >= FLIGHT_BLOCK


def test_planes_grow_with_the_new_tails(scaled, normal):
    real = {r["tailnum"]: r for r in _rows(dimension_file(str(normal), "planes"))}
    planes = _rows(dimension_file(str(scaled), "planes"))
    by_tail = {r["tailnum"]: r for r in planes}
    assert len(planes) == len(by_tail) == SCALE * len(real)  # each plane and one copy per synthetic copy
    seen = 0
    for d in DAYS.days():
        rows = _rows(landing_file(str(scaled), "flights", d))
        for i, r in enumerate(rows):
            source = rows[i - i % SCALE]["tailnum"]
            if i % SCALE and source in real:
                plane = by_tail[r["tailnum"]]  # the copy's tail has its plane row ...
                assert {**plane, "tailnum": source} == real[source]  # ... a copy of its source plane's
                seen += 1
    assert seen > 0


def test_the_scaled_files_keep_the_contract_and_pass_ingestion(scaled):
    from include.source.delivery import inspect_file
    from spark_jobs.bronze_landing import classify

    for name, columns in DIMENSION_COLUMNS.items():
        with open(dimension_file(str(scaled), name), newline="", encoding="utf-8") as f:
            assert next(csv.reader(f)) == columns
    for ds, columns in (("flights", FLIGHTS_COLUMNS), ("weather", WEATHER_COLUMNS)):
        for d in DAYS.days():
            path = landing_file(str(scaled), ds, d)
            stats = inspect_file(path, [Path(path).read_bytes()])
            assert stats["header"].split(",") == columns
            assert classify(ds, stats, {}) == ("accepted", [])  # what the bronze job decides per file


def _row_reasons(rows: list[dict], day: date, params: dict) -> Counter:
    """The bronze suite's row-level expectations applied to landed rows, as the bronze job applies them."""
    from include.quality.rows import resolve

    suite = json.loads((Path(__file__).parents[2] / "expectations" / "bronze" / "flights.json").read_text())
    out: Counter = Counter()
    seen: set[tuple] = set()
    for r in rows:
        row = {k: (None if v == NULL_TOKEN else v) for k, v in r.items()}
        row["_row_date"] = f"{int(row['year']):04d}-{int(row['month']):02d}-{int(row['day']):02d}"
        row["_file_date"] = day.isoformat()
        for exp in suite["expectations"]:
            meta = exp.get("meta") or {}
            if meta.get("level") != "row":
                continue
            kw, t = resolve(exp["kwargs"], params), exp["type"]
            v = row.get(kw.get("column"))
            if t == "expect_column_values_to_not_be_null":
                bad = v is None
            elif t == "expect_column_values_to_match_regex":
                bad = v is not None and not re.search(kw["regex"], v)
            elif t == "expect_column_values_to_be_in_set":
                bad = v is not None and v not in kw["value_set"]
            elif t == "expect_column_values_to_be_between":
                try:
                    bad = v is not None and not kw["min_value"] <= float(v) <= kw["max_value"]
                except ValueError:
                    bad = True
            elif t == "expect_column_pair_values_to_be_equal":
                bad = row[kw["column_A"]] != row[kw["column_B"]]
            elif t == "expect_compound_columns_to_be_unique":
                key = tuple(row[c] for c in kw["column_list"])
                bad, _ = key in seen, seen.add(key)
            else:
                raise AssertionError(f"{t} has no row check here; add one")
            if bad:
                out[meta["reason"]] += 1
    return out


def test_the_bronze_row_rules_quarantine_no_more_than_the_real_rows_do(scaled, normal):
    from spark_jobs.quality_gate import TERRITORY_AIRPORTS

    params = {
        "carrier_codes": [r["carrier"] for r in _rows(dimension_file(str(scaled), "airlines"))],
        "airport_codes": [r["faa"] for r in _rows(dimension_file(str(scaled), "airports"))] + TERRITORY_AIRPORTS,
    }
    for d in DAYS.days():
        real = _row_reasons(_rows(landing_file(str(normal), "flights", d)), d, params)
        got = _row_reasons(_rows(landing_file(str(scaled), "flights", d)), d, params)
        assert got == Counter({k: SCALE * n for k, n in real.items()})  # each copy breaks what its source breaks
        assert "duplicate_flight_key" not in got


def test_flight_rows_are_streamed_to_the_file(tmp_path, monkeypatch):
    kinds, write = [], scale_mod._write_csv

    def spy(path, header, rows):
        kinds.append((Path(path).parent.name, type(rows)))
        return write(path, header, rows)

    monkeypatch.setattr(scale_mod, "_write_csv", spy)
    land_scaled(Interval(DAYS.start, DAYS.start), tmp_path, 5)
    flights = [k for ds, k in kinds if ds == "flights"]
    assert flights and not any(issubclass(k, (list, tuple)) for k in flights)  # never the day's copies in a list


def test_a_landing_zone_of_another_scale_is_refused_unless_overwritten(tmp_path, normal, capsys):
    day = Interval(DAYS.start, DAYS.start)
    land(day, tmp_path)
    with pytest.raises(ScaleMismatch, match="scale 1"):
        land_scaled(day, tmp_path, 2)  # the real files would be kept and mixed with scaled ones
    scale_mod.main(["--scale", "2", "--seed", "7", "--start", str(day.start), "--end", str(day.end),
                    "--landing", str(tmp_path), "--overwrite"])
    assert "at scale 2 (seed 7)" in capsys.readouterr().out
    assert json.loads((tmp_path / "_scale.json").read_text()) == {"scale": 2, "seed": 7}
    n_real = len(_rows(landing_file(str(normal), "flights", day.start)))
    assert len(_rows(landing_file(str(tmp_path), "flights", day.start))) == 2 * n_real
    with pytest.raises(ScaleMismatch, match="seed 7"):
        land_scaled(day, tmp_path, 2, seed=8)
    with pytest.raises(SystemExit, match="scale 2"):
        scale_mod.main(["--scale", "1", "--start", str(day.start), "--end", str(day.end), "--landing", str(tmp_path)])
    assert land_scaled(day, tmp_path, 2, seed=7) == {"flights": 0, "weather": 0, "dimensions": 0}  # same: kept
