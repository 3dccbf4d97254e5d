"""Lay a landing zone about SCALE times larger than nycflights13, built from its real rows.

Every real flight is delivered as itself and SCALE-1 more times as a synthetic flight: same
carrier, route, schedule, timings and delays, with a new flight number and a new tail number.
Weather, airlines and airports are delivered unchanged; the planes snapshot gains one row per
synthetic tail, a copy of its source plane's row. ``--scale 1`` lays exactly the files
``include.source.landing`` lays.

Synthetic keys never meet real ones nor each other:

- flight numbers: copy ``k`` of a flight numbered ``f`` is numbered ``k * 10000 + p_k(f)``,
  ``p_k`` a seeded permutation of 0..9999 (real numbers are below 10000), so the flight key
  (carrier, flight, origin, day, scheduled departure) stays unique;
- tail numbers: ``N`` and five characters with a letter second and a digit third, a shape no
  real tail has, numbered through a seeded bijection over all (copy, real tail) pairs.

The same seed gives the same files. Files are written one day at a time and their rows
streamed: memory holds the interval's real rows, never the scaled ones. The scale and seed
are recorded in ``_scale.json`` at the landing root, and a landing zone laid at another scale
is refused unless ``--overwrite`` is given, so days of different scales are not mixed by
accident.

    python -m include.source.scale --scale 30 --seed 13 --start 2013-01-01 --end 2013-03-07
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import random
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from include.config import settings
from include.intervals import Interval, parse_date
from include.lake import LANDING_SUFFIXES, dimension_file, landing_file
from include.source.contract import NULL_TOKEN
from include.source.landing import (FIRST_DAY, LAST_DAY, _write_csv, data_files,
                                    land_dimensions, land_weather)

log = logging.getLogger(__name__)

DEFAULT_SEED = 13
MANIFEST = "_scale.json"
FLIGHT_BLOCK = 10_000  # every real flight number is below it; copy k owns [k * FLIGHT_BLOCK, (k + 1) * FLIGHT_BLOCK)

# Synthetic tails: N, then one of 0-9A-Z, a letter, a digit, and two of 0-9A-Z.
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
TAIL_ALPHABETS = (ALNUM, LETTERS, DIGITS, ALNUM, ALNUM)
TAIL_SPACE = math.prod(len(a) for a in TAIL_ALPHABETS)
SYNTHETIC_TAIL = re.compile(r"N[0-9A-Z][A-Z][0-9][0-9A-Z]{2}")


class ScaleMismatch(ValueError):
    """The landing zone already holds files laid at another scale or seed."""


def _affine(rng: random.Random, modulus: int) -> tuple[int, int]:
    """A seeded bijection x -> (a * x + b) % modulus, as its (a, b)."""
    while True:
        a = rng.randrange(1, modulus)
        if math.gcd(a, modulus) == 1:
            return a, rng.randrange(modulus)


class Scaler:
    """The synthetic flight and tail numbers of every copy, for one scale and seed.

    Args:
        scale: how many deliveries of each real flight (1 = the real data only).
        seed: fixes every synthetic number.
        tails: every real tail number (flights and planes); their order fixes each tail's index.
    """

    def __init__(self, scale: int, seed: int, tails: tuple[str, ...]) -> None:
        if scale < 1:
            raise ValueError(f"scale must be an integer >= 1, not {scale}.")
        if scale > self.max_scale(len(tails)):
            raise ValueError(f"scale {scale} needs more synthetic tail numbers than the {TAIL_SPACE} of their "
                             f"shape; the largest scale is {self.max_scale(len(tails))}.")
        clash = sorted(t for t in tails if SYNTHETIC_TAIL.fullmatch(t))
        if clash:
            raise ValueError(f"real tail numbers {clash[:5]} have the synthetic shape; the copies could collide.")
        self.scale, self.seed, self.tails = scale, seed, tuple(tails)
        self._rank = {t: i for i, t in enumerate(self.tails)}
        rng = random.Random(f"nycflights13-scale/{seed}")
        self._tail_map = _affine(rng, TAIL_SPACE)
        self._flight_maps = [(1, 0)] + [_affine(rng, FLIGHT_BLOCK) for _ in range(scale - 1)]

    @staticmethod
    def max_scale(n_tails: int) -> int:
        return TAIL_SPACE // max(n_tails, 1) + 1

    def flight(self, copy: int, flight: str) -> str:
        """Flight number of copy ``copy`` (1..scale-1) of real flight ``flight``."""
        f = int(flight)
        if not 0 <= f < FLIGHT_BLOCK:
            raise ValueError(f"real flight number {flight} is outside 0..{FLIGHT_BLOCK - 1}; copies could collide.")
        a, b = self._flight_maps[copy]
        return str(copy * FLIGHT_BLOCK + (a * f + b) % FLIGHT_BLOCK)

    def tail(self, copy: int, tail: str) -> str:
        """Tail number of copy ``copy`` (1..scale-1) of real tail ``tail``; a missing tail stays missing."""
        if tail == NULL_TOKEN or tail == "":
            return tail
        a, b = self._tail_map
        n = (a * ((copy - 1) * len(self.tails) + self._rank[tail]) + b) % TAIL_SPACE
        chars = []
        for alphabet in reversed(TAIL_ALPHABETS):
            n, i = divmod(n, len(alphabet))
            chars.append(alphabet[i])
        return "N" + "".join(reversed(chars))


def _flights_by_day(wanted: set[date]) -> tuple[list[str], dict[date, list[list[str]]], set[str]]:
    """Header, the wanted days' real rows, and every tail number of the year, in one pass."""
    with zipfile.ZipFile(io.BytesIO((data_files() / "flights.csv.zip").read_bytes())) as z:
        with z.open("flights.csv") as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
            header = next(reader)
            iy, im, idd, it = (header.index(c) for c in ("year", "month", "day", "tailnum"))
            by_day: dict[date, list[list[str]]] = defaultdict(list)
            tails: set[str] = set()
            for row in reader:
                tails.add(row[it])
                d = date(int(row[iy]), int(row[im]), int(row[idd]))
                if d in wanted:
                    by_day[d].append(row)
    return header, by_day, tails


def scaled_rows(rows: list[list[str]], header: list[str], scaler: Scaler) -> Iterator[list[str]]:
    """Each real row followed by its scale-1 copies (new flight and tail numbers, all else kept)."""
    i_flight, i_tail = header.index("flight"), header.index("tailnum")
    for row in rows:
        yield row
        for k in range(1, scaler.scale):
            copy = list(row)
            copy[i_flight] = scaler.flight(k, row[i_flight])
            copy[i_tail] = scaler.tail(k, row[i_tail])
            yield copy


def _write_planes(target: Path, source: bytes, scaler: Scaler) -> None:
    """The real planes snapshot, then one copy of each plane per synthetic copy, under its new tail."""
    lines = source.decode("utf-8").splitlines()
    reader = csv.reader(lines)
    header = next(reader)
    i_tail = header.index("tailnum")
    planes = list(reader)
    tmp = target.with_suffix(".csv.partial")
    with tmp.open("wb") as f:
        f.write(source if source.endswith(b"\n") else source + b"\n")
    with tmp.open("a", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        for k in range(1, scaler.scale):
            w.writerows([*row[:i_tail], scaler.tail(k, row[i_tail]), *row[i_tail + 1:]] for row in planes)
    tmp.replace(target)


def _recorded(root: Path) -> tuple[int, int | None] | None:
    """(scale, seed) the landing zone was laid at; None when it holds nothing yet."""
    manifest = root / MANIFEST
    if manifest.exists():
        m = json.loads(manifest.read_text(encoding="utf-8"))
        return int(m["scale"]), m.get("seed")
    landed = any(p.name.endswith(LANDING_SUFFIXES)
                 for p in Path(landing_file(str(root), "flights", FIRST_DAY)).parent.glob("flights_*"))
    return (1, None) if landed or Path(dimension_file(str(root), "planes")).exists() else None


def land_scaled(interval: Interval, landing_root: Path, scale: int, seed: int = DEFAULT_SEED,
                overwrite: bool = False) -> dict[str, int]:
    """Write the interval's daily extracts at ``scale`` and the dimension snapshots; files already delivered are kept.

    As for ``include.source.landing.land``, a day counts as delivered when its extract is there as
    ``.csv`` or as ``.csv.gz``.

    Args:
        interval: the days to lay, inside 2013.
        landing_root: the landing zone's folder.
        scale: deliveries of each real flight (1 = exactly ``include.source.landing.land``).
        seed: fixes the synthetic flight and tail numbers.
        overwrite: replace files already landed, also when they were laid at another scale or seed.

    Returns:
        The number of files written per dataset.

    Raises:
        ScaleMismatch: the landing zone holds files of another scale or seed and ``overwrite`` is false.
    """
    if interval.start < FIRST_DAY or interval.end > LAST_DAY:
        raise ValueError(f"nycflights13 covers {FIRST_DAY}..{LAST_DAY}; {interval} is outside it.")
    if scale < 1:
        raise ValueError(f"scale must be an integer >= 1, not {scale}.")
    root = Path(landing_root)
    want = (scale, seed if scale > 1 else None)
    recorded = _recorded(root)
    if recorded not in (None, want):
        if not overwrite:
            was = f"scale {recorded[0]}" + (f", seed {recorded[1]}" if recorded[1] is not None else "")
            asked = f"scale {scale}" + (f", seed {seed}" if scale > 1 else "")
            raise ScaleMismatch(
                f"{root} holds files laid at {was}; asked for {asked}. Pass --overwrite "
                "(make land ... OVERWRITE=1) to replace the interval's files and the dimensions, or lay them "
                "into another landing folder (--landing, or another FLIGHTS_HOME).")
        log.warning("Replacing the files of %s at scale %s; days outside it keep scale %s.", interval, scale,
                    recorded[0])
    root.mkdir(parents=True, exist_ok=True)
    if scale > 1:
        (root / MANIFEST).write_text(json.dumps({"scale": scale, "seed": seed}) + "\n", encoding="utf-8")
    else:
        (root / MANIFEST).unlink(missing_ok=True)

    data = data_files()
    days = sorted(interval.days())
    written = {"flights": 0, "weather": 0, "dimensions": 0}
    todo = {ds: [d for d in days if overwrite or not any(Path(landing_file(str(root), ds, d, s)).exists()
                                                         for s in LANDING_SUFFIXES)]
            for ds in ("flights", "weather")}
    planes_target = Path(dimension_file(str(root), "planes"))
    need_tails = scale > 1 and (todo["flights"] or overwrite or not planes_target.exists())
    scaler = None
    if todo["flights"] or need_tails:
        header, by_day, tails = _flights_by_day(set(todo["flights"]))
        planes = (data / "planes.csv").read_bytes()
        tails |= {row[0] for row in csv.reader(planes.decode("utf-8").splitlines()[1:])}
        tails.discard(NULL_TOKEN)
        scaler = Scaler(scale, seed, tuple(sorted(tails)))
        for d in todo["flights"]:
            rows = by_day.pop(d, [])
            _write_csv(Path(landing_file(str(root), "flights", d)), header, scaled_rows(rows, header, scaler))
            written["flights"] += 1
    written["weather"] = land_weather(root, todo["weather"])
    planes = (lambda target, source: _write_planes(target, source, scaler)) if scale > 1 else None
    written["dimensions"] = land_dimensions(root, overwrite, planes)
    log.info("Landed %s into %s at scale %s (seed %s): %s", interval, root, scale, seed, written)
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, required=True, help="deliveries of each real flight (1 = the real data)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"fixes the synthetic numbers (default {DEFAULT_SEED})")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--landing", default=None, help="landing root (default: $FLIGHTS_HOME/landing)")
    p.add_argument("--overwrite", action="store_true", help="replace files already landed, whatever their scale")
    a = p.parse_args(argv)
    interval = Interval(parse_date(a.start, "start"), parse_date(a.end, "end"))
    root = Path(a.landing) if a.landing else settings().landing_root
    try:
        written = land_scaled(interval, root, a.scale, a.seed, overwrite=a.overwrite)
    except ScaleMismatch as exc:
        raise SystemExit(str(exc)) from None
    print(f"landed {interval} at scale {a.scale} (seed {a.seed}) into {root}: {written}")


if __name__ == "__main__":
    main()
