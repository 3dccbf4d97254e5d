"""Score the interval's gold features with a model bundle into the predictions table.

The bundle (XGBoost model + feature spec) is read once on the driver and broadcast;
executors score their partitions with ``mapInPandas``. Every row records the model
name and version, and the *feature build* of its day (``gold.feature_days``: which silver,
history window included, its features came from). The interval's partitions are replaced,
and the same rows are exported as Parquet for the warehouse load.

    spark-submit spark_jobs/predictions_flight_delay_risk.py --lake LAKE --start 2013-03-01 \
        --end 2013-03-07 --model-dir DIR --model-name NAME --model-version 3 --run-id RUN_ID
"""

from __future__ import annotations

import json

from pyspark.sql import functions as F
from pyspark.sql import types as T

from include.features import FEATURES
from include.lake import PARTITION_COLUMN, export_uri, table_uri
from include.training.bundle import MODEL_FILE, SPEC_FILE
from spark_jobs.history import feature_builds
from spark_jobs.quality_gate import gate_engine, run_checks
from spark_jobs.session import get_spark, interval_args, read_text, replace_partitions, run_job, write_json

PREDICTION_COLUMNS = ["flight_id", PARTITION_COLUMN, "carrier", "flight", "origin", "dest", "sched_dep_ts"]


def score(df, model_bytes: bytes, spec: dict, spark):
    """Add ``delay_probability`` to ``df`` (which must carry the model's features)."""
    model_b = spark.sparkContext.broadcast(model_bytes)
    spec_b = spark.sparkContext.broadcast(spec)
    out_schema = T.StructType([*[df.schema[c] for c in PREDICTION_COLUMNS],
                               T.StructField("delay_probability", T.DoubleType(), False)])

    def predict(batches):
        from include.training.bundle import bundle_from_bytes

        bundle = bundle_from_bytes(model_b.value, spec_b.value)
        for pdf in batches:
            out = pdf[PREDICTION_COLUMNS].copy()
            out["delay_probability"] = bundle.predict(pdf).astype("float64") if len(pdf) else []
            yield out

    return df.select(*dict.fromkeys(PREDICTION_COLUMNS + FEATURES)).mapInPandas(predict, out_schema)


def feature_drift(gold, predictions, spec: dict) -> dict | None:
    """PSI of each feature and of the score against the version's training reference (``include.drift``).

    None for a bundle trained before references were kept: its drift is not measured.
    """
    from include.drift import SCORE, compare, spark_counts

    references = spec.get("reference")
    if not references:
        print("the champion's bundle has no training reference: drift not measured")
        return None
    counts = spark_counts(gold, {c: r for c, r in references.items() if c != SCORE})
    counts.update(spark_counts(predictions, {SCORE: references[SCORE]}))
    return compare(references, counts)


def main(argv: list[str] | None = None) -> None:
    p = interval_args(__doc__)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--model-name", required=True)
    p.add_argument("--model-version", required=True)
    p.add_argument("--result", required=True, help="where to write the predictions gate's JSON summary")
    a = p.parse_args(argv)
    gate_engine(0)  # a bad gate setting is refused before anything is scored or written
    spark = get_spark(f"predictions_{a.start}_{a.end}")
    builds = feature_builds(spark, a.lake, a.start, a.end)  # refused before anything is read or scored without them
    model_bytes = spark.sparkContext.binaryFiles(f"{a.model_dir.rstrip('/')}/{MODEL_FILE}").collect()[0][1]
    spec = json.loads(read_text(spark, f"{a.model_dir.rstrip('/')}/{SPEC_FILE}"))
    gold = spark.read.format("delta").load(table_uri(a.lake, "gold.flight_features")).filter(
        (F.col(PARTITION_COLUMN) >= F.lit(a.start)) & (F.col(PARTITION_COLUMN) <= F.lit(a.end))
    )
    build_of_day = F.create_map(*[x for day, build in sorted(builds.items()) for x in (F.lit(day), F.lit(build))])
    preds = (
        score(gold, model_bytes, spec, spark)
        .withColumn("model_name", F.lit(a.model_name))
        .withColumn("model_version", F.lit(str(a.model_version)))
        .withColumn("run_id", F.lit(a.run_id))
        .withColumn("feature_build", build_of_day[F.col(PARTITION_COLUMN)])
    )
    uri = table_uri(a.lake, "predictions.flight_delay_risk")
    replace_partitions(preds, uri, a.start, a.end)
    written = spark.read.format("delta").load(uri).filter(
        (F.col(PARTITION_COLUMN) >= F.lit(a.start)) & (F.col(PARTITION_COLUMN) <= F.lit(a.end))
    )
    gate = run_checks(spark, a.lake, ["predictions/flight_delay_risk=predictions.flight_delay_risk"], a.start, a.end,
                      a.run_id)
    gate["drift"] = feature_drift(gold, written, spec)
    write_json(spark, a.result, gate)
    if gate["success"]:  # the warehouse hand-off exists only for predictions that passed their gate
        written.coalesce(1).write.mode("overwrite").parquet(
            export_uri(a.lake, "predictions", f"{a.start:%Y%m%d}_{a.end:%Y%m%d}"))
    print(f"predictions.flight_delay_risk: {written.count()} rows for {a.start}..{a.end} "
          f"with {a.model_name} v{a.model_version}; gate success={gate['success']}")


if __name__ == "__main__":
    run_job(main)
