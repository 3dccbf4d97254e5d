from datetime import date, datetime, timezone

import pytest

from include.intervals import Interval, IntervalError, resolve_interval

UTC = timezone.utc


def test_scheduled_run_covers_its_data_interval_end_exclusive():
    i = resolve_interval({}, datetime(2013, 1, 5, tzinfo=UTC), datetime(2013, 1, 6, tzinfo=UTC))
    assert (i.start, i.end) == (date(2013, 1, 5), date(2013, 1, 5))  # one day, not two


def test_manual_run_with_zero_length_interval_covers_its_day():
    i = resolve_interval({}, datetime(2013, 1, 5, tzinfo=UTC), datetime(2013, 1, 5, tzinfo=UTC))
    assert i.num_days == 1 and i.start == date(2013, 1, 5)


def test_params_override_the_data_interval():
    i = resolve_interval({"start_date": "2013-01-01", "end_date": "2013-01-31"},
                         datetime(2013, 3, 1, tzinfo=UTC), datetime(2013, 3, 2, tzinfo=UTC))
    assert i.num_days == 31 and i.key == "20130101_20130131"


def test_run_without_logical_date_or_params_is_refused_with_instructions():
    with pytest.raises(IntervalError, match="start_date"):
        resolve_interval({}, None, None)


@pytest.mark.parametrize("params, message", [
    ({"start_date": "2013-01-01"}, "both"),
    ({"start_date": "2013-02-01", "end_date": "2013-01-01"}, "before"),
    ({"start_date": "2013-13-01", "end_date": "2013-12-31"}, "YYYY-MM-DD"),
    ({"start_date": "2013-01-01", "end_date": "2014-06-01"}, "split it"),
])
def test_invalid_params_name_the_problem(params, message):
    with pytest.raises(IntervalError, match=message):
        resolve_interval(params, None, None)


def test_interval_round_trips_through_xcom_dict():
    i = Interval(date(2013, 1, 1), date(2013, 1, 3))
    assert Interval.from_dict(i.to_dict()) == i
    assert [d.day for d in i.days()] == [1, 2, 3]
