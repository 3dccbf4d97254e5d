"""The model's features and label, shared by the gold job, the trainer and the scorer.

Every feature is known before departure: the schedule, the route, the plane, the weather
at the origin in the scheduled hour, and history computed only from days strictly before
the flight's day.
"""

from __future__ import annotations

from datetime import date

LABEL = "is_delayed"  # arrival delay >= 15 minutes; null for cancelled / diverted flights
DELAY_THRESHOLD_MINUTES = 15
HISTORY_DAYS = 28
# The data set's first day (the daily DAG's start_date): a day within HISTORY_DAYS of it has fewer
# days of history, and its gold rows say how many (``history_days_available``).
HISTORY_START = date(2013, 1, 1)

KEY_COLUMNS = ["flight_id", "flight_date", "carrier", "flight", "origin", "dest", "tailnum", "sched_dep_ts"]

CATEGORICAL_FEATURES = ["carrier", "origin", "dest"]

NUMERIC_FEATURES = [
    "sched_dep_hour",
    "sched_dep_minute",
    "sched_arr_hour",
    "day_of_week",
    "day_of_month",
    "month",
    "distance",
    "plane_age",
    "plane_seats",
    "plane_engines",
    "temp",
    "dewp",
    "humid",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
    "carrier_flights_28d",
    "carrier_delay_rate_28d",
    "route_flights_28d",
    "route_delay_rate_28d",
    "origin_delay_rate_1d",
]

FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES

# Features that take one value per day, or per origin and hour of a day: the calendar, the origin's weather
# and its delay rate the day before. A few days' sample holds only a few of their values, so its PSI against
# weeks of training data is high whatever happens (a week of March against January and February: month 7.1,
# pressure 4.0, dew point 3.1, origin_delay_rate_1d 1.9). Their drift is recorded, but by default it does not
# call for retraining (include.config.retraining_thresholds).
DAY_LEVEL_FEATURES = ["day_of_week", "day_of_month", "month", "temp", "dewp", "humid", "wind_speed", "wind_gust",
                      "precip", "pressure", "visib", "origin_delay_rate_1d"]
