"""Validate one interval of lake tables against their Great Expectations suites.

Runs GX's Spark execution engine on the interval's rows (nothing is collected to the
driver) and writes a JSON summary per suite to ``--result``; the calling task decides
whether the gate passes. Exit code 0 means "validated", not "passed".

    spark-submit spark_jobs/quality_gate.py --lake LAKE --check bronze/flights=bronze.flights \
        --check bronze/weather=bronze.weather --start 2013-01-01 --end 2013-01-31 \
        --run-id RUN_ID --result URI
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import functions as F

from include.lake import PARTITION_COLUMN, table_uri
from include.quality.suites import build_suite, load_suite_dict, summarise
from spark_jobs.session import delta_exists, get_spark, interval_args, write_json


def validate(df, suite_dict: dict):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    asset = context.data_sources.add_spark("lake").add_dataframe_asset(suite_dict["name"])
    batch = asset.add_batch_definition_whole_dataframe("interval").get_batch(batch_parameters={"dataframe": df})
    return batch.validate(build_suite(suite_dict), result_format="SUMMARY")


def check(spark, lake: str, suite: str, table: str, start, end) -> dict:
    uri = table_uri(lake, table)
    if not delta_exists(spark, uri):
        return {"suite": suite, "success": False, "evaluated": 0, "failed_count": 1, "row_count": 0,
                "failed": [{"expectation": "table_exists", "kwargs": {"table": table}, "observed": "missing"}]}
    df = spark.read.format("delta").load(uri).filter(
        (F.col(PARTITION_COLUMN) >= F.lit(start)) & (F.col(PARTITION_COLUMN) <= F.lit(end))
    ).cache()
    rows = df.count()
    summary = summarise(validate(df, load_suite_dict(suite)), suite, rows)
    df.unpersist()
    return summary


def main(argv: list[str] | None = None) -> None:
    p = interval_args(__doc__)
    p.add_argument("--check", action="append", required=True, metavar="SUITE=TABLE",
                   help="suite name and lake table, e.g. bronze/flights=bronze.flights (repeatable)")
    p.add_argument("--result", required=True, help="where to write the JSON summaries")
    a = p.parse_args(argv)
    spark = get_spark(f"quality_gate_{a.start}_{a.end}")
    summaries = []
    for item in a.check:
        suite, _, table = item.partition("=")
        summary = check(spark, a.lake, suite, table, a.start, a.end)
        summary.update(table=table, interval=f"{a.start}..{a.end}", run_id=a.run_id)
        summaries.append(summary)
        print(f"{suite}: success={summary['success']} evaluated={summary['evaluated']} "
              f"failed={summary['failed_count']}")
    write_json(spark, a.result, {"success": all(s["success"] for s in summaries), "suites": summaries})
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
