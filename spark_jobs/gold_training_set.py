"""Export a training window of gold features, labelled and split by time, as Parquet.

Rows without a label (cancelled or diverted flights) are left out. The split column is
``train`` / ``validation`` / ``holdout`` by flight date (the last days are the holdout).
The trainer, local or managed, reads this folder. A window with a day whose gold is missing, or
was built from silver that has changed since (a replayed or corrected day in its history), is
refused with the days named: a model is never trained on features that no longer match the lake.

    spark-submit spark_jobs/gold_training_set.py --lake LAKE --start 2013-01-01 \
        --end 2013-02-28 --validation-days 7 --holdout-days 7 --output URI --run-id RUN_ID
"""

from __future__ import annotations


from pyspark.sql import functions as F

from include.features import FEATURES, KEY_COLUMNS, LABEL
from include.lake import PARTITION_COLUMN, table_uri
from include.training.split import time_split
from spark_jobs.history import day_ranges, stale_gold
from spark_jobs.session import JobInputError, get_spark, interval_args, run_job, write_json


def main(argv: list[str] | None = None) -> None:
    p = interval_args(__doc__)
    p.add_argument("--validation-days", type=int, default=7)
    p.add_argument("--holdout-days", type=int, default=7)
    p.add_argument("--output", required=True)
    a = p.parse_args(argv)
    split = time_split(a.start, a.end, a.validation_days, a.holdout_days)
    spark = get_spark(f"gold_training_set_{a.start}_{a.end}")
    stale = stale_gold(spark, a.lake, a.start, a.end)
    if stale:
        reasons = "; ".join(f"{d}: {why}" for d, why in sorted(stale.items()))
        raise JobInputError(
            f"The training window {a.start}..{a.end} has {len(stale)} day(s) whose gold features are missing or "
            f"stale ({day_ranges(list(stale))}): {reasons}. Run flights_daily for those days (or clear their "
            "build_features tasks), then train again.")
    gold = spark.read.format("delta").load(table_uri(a.lake, "gold.flight_features"))
    rows = gold.filter(
        (F.col(PARTITION_COLUMN) >= F.lit(a.start)) & (F.col(PARTITION_COLUMN) <= F.lit(a.end))
        & F.col(LABEL).isNotNull()
    )
    labelled = rows.withColumn(
        "split",
        F.when(F.col(PARTITION_COLUMN) >= F.lit(split.holdout[0]), "holdout")
        .when(F.col(PARTITION_COLUMN) >= F.lit(split.validation[0]), "validation")
        .otherwise("train"),
    ).select(*KEY_COLUMNS, *[c for c in FEATURES if c not in KEY_COLUMNS], LABEL, "split")
    labelled.repartition(2).write.mode("overwrite").parquet(a.output + "/data")
    counts = {r["split"]: r["count"] for r in spark.read.parquet(a.output + "/data").groupBy("split").count().collect()}
    manifest = {"start": str(a.start), "end": str(a.end), "counts": counts,
                "split": {k: [str(d) for d in v] for k, v in vars(split).items()}}
    write_json(spark, a.output + "/manifest.json", manifest)
    print(f"training set {a.start}..{a.end}: {counts}")


if __name__ == "__main__":
    run_job(main)
