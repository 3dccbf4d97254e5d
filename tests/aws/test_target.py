"""build(): the AWS target's seams, against a moto server."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from include.config import ConfigError, load_settings
from include.targets.aws import build


def test_lake_and_blocking_spark_runner_on_moto(aws, boto, buckets, tmp_path):
    app = boto("emr-serverless").create_application(name="t", releaseLabel="emr-7.12.0", type="SPARK")["applicationId"]
    aws = aws.__class__.example(endpoint_url=aws.endpoint_url, emr_application_id=app)
    target = build(replace(load_settings(), target="aws", warehouse="redshift"), aws=aws)
    assert target.name == "aws" and target.lake.root == "s3://flights-lake-example/lake"
    buckets.put_object(Bucket=aws.lake_bucket, Key="lake/_quality/x/r.json", Body=json.dumps({"success": True}))
    buckets.put_object(Bucket=aws.lake_bucket, Key="lake/exports/flight_outcomes/k/part-0.parquet", Body=b"PAR1")
    assert target.lake.exists("s3://flights-lake-example/lake/_quality/x/r.json")
    assert not target.lake.exists("s3://flights-lake-example/lake/_quality/x/missing.json")
    assert target.lake.read_json("s3://flights-lake-example/lake/_quality/x/r.json") == {"success": True}
    local = target.lake.local_dir("s3://flights-lake-example/lake/exports/flight_outcomes/k")
    assert (local / "part-0.parquet").read_bytes() == b"PAR1"
    target.spark.submit("bronze_landing", ["--lake", target.lake.root], name="flights_daily.ingest_bronze.k.try1")
    runs = boto("emr-serverless").list_job_runs(applicationId=app)["jobRuns"]
    assert [r["name"] for r in runs] == ["flights_daily.ingest_bronze.k.try1"] and runs[0]["state"] == "SUCCESS"
    with pytest.raises(ValueError, match="not an s3:// export folder"):  # Redshift COPYs from S3, not a local copy
        target.warehouse.load_interval("analytics.flight_outcomes", local, None, None)
    with pytest.raises(ConfigError, match="SageMaker training job"):
        target.trainer.train(None)
