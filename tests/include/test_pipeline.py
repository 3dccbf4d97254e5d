"""The landing check of flights_daily, against a landing zone on disk."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include import pipeline
from include.intervals import Interval
from include.lake import landing_file

DAYS = Interval(date(2013, 1, 4), date(2013, 1, 5))


@pytest.fixture
def landing(tmp_path, monkeypatch):
    lake = SimpleNamespace(landing_root=str(tmp_path), exists=lambda uri: Path(uri).exists())
    monkeypatch.setattr(pipeline, "get_target", lambda: SimpleNamespace(lake=lake))
    return tmp_path


def _deliver(root: Path, dataset: str, day: date, suffix: str) -> None:
    path = Path(landing_file(str(root), dataset, day, suffix))
    path.parent.mkdir(parents=True, exist_ok=True)
    content = b"year,month,day\n2013,1,4\n"
    path.write_bytes(gzip.compress(content) if suffix == ".csv.gz" else content)


def test_a_day_delivered_as_csv_gz_is_complete(landing):
    for ds in ("flights", "weather"):
        _deliver(landing, ds, DAYS.start, ".csv")
        _deliver(landing, ds, DAYS.end, ".csv.gz")
    assert pipeline.check_landing(DAYS) == {"files": 4}  # two datasets, two days


def test_a_missing_day_names_the_plain_file_it_expects(landing):
    _deliver(landing, "flights", DAYS.start, ".csv.gz")
    with pytest.raises(AirflowFailException, match=r"3 landing file\(s\) missing .* first expected at .*"
                                                   r"weather_2013-01-04\.csv \(or \.csv\.gz\)"):
        pipeline.check_landing(DAYS)
