"""FLIGHTS_AWS_* settings: validated at once, with messages naming the variable and the fix."""

from __future__ import annotations

import pytest

from include.config import ConfigError
from include.targets.aws.settings import load_aws_settings

BASE = {"FLIGHTS_AWS_REGION": "eu-west-1", "FLIGHTS_AWS_ACCOUNT_ID": "123456789012",
        "FLIGHTS_AWS_LAKE_BUCKET": "my-lake", "FLIGHTS_AWS_EMR_APPLICATION_ID": "00abc",
        "FLIGHTS_AWS_EMR_JOB_ROLE_ARN": "arn:aws:iam::123456789012:role/emr-job",
        "FLIGHTS_AWS_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/sm"}


def test_defaults_and_derived_locations():
    s = load_aws_settings(BASE)
    assert s.artifacts_bucket == "my-lake" and s.lake_root == "s3://my-lake/lake"
    assert s.spark_mode == "serverless" and s.emr_release == "emr-spark-8.0.0"
    assert s.training_instance_type == "ml.g5.xlarge" and s.training_instance_count == 1
    assert s.training_image == "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    assert s.training_max_wait_s == 2 * s.training_max_runtime_s


@pytest.mark.parametrize("change, message", [
    ({"FLIGHTS_AWS_REGION": ""}, "FLIGHTS_AWS_REGION"),
    ({"FLIGHTS_AWS_ACCOUNT_ID": "12345"}, "12-digit"),
    ({"FLIGHTS_AWS_LAKE_BUCKET": "s3://my-lake"}, "FLIGHTS_AWS_LAKE_BUCKET"),
    ({"FLIGHTS_AWS_EMR_APPLICATION_ID": ""}, "FLIGHTS_AWS_EMR_APPLICATION_ID"),
    ({"FLIGHTS_AWS_SPARK_MODE": "glue"}, "FLIGHTS_AWS_SPARK_MODE"),
    ({"FLIGHTS_AWS_EMR_RELEASE": "emr-6.1.0"}, "releases.py"),
    ({"FLIGHTS_AWS_SAGEMAKER_ROLE_ARN": "sm-role"}, "FLIGHTS_AWS_SAGEMAKER_ROLE_ARN"),
    ({"FLIGHTS_AWS_TRAINING_SPOT": "true", "FLIGHTS_AWS_TRAINING_MAX_WAIT_S": "60"}, "MAX_WAIT_S"),
    ({"FLIGHTS_AWS_TRAINING_INSTANCE_COUNT": "two"}, "FLIGHTS_AWS_TRAINING_INSTANCE_COUNT"),
    ({"FLIGHTS_AWS_REDSHIFT_WORKGROUP": "w", "FLIGHTS_AWS_REDSHIFT_CLUSTER_ID": "c"}, "not both"),
    ({"FLIGHTS_AWS_RETRY_MODE": "legacy"}, "FLIGHTS_AWS_RETRY_MODE='legacy' .* standard .* adaptive"),
    ({"FLIGHTS_AWS_MAX_ATTEMPTS": "0"}, "FLIGHTS_AWS_MAX_ATTEMPTS=0 is below 1"),
    ({"FLIGHTS_AWS_MAX_ATTEMPTS": "many"}, "FLIGHTS_AWS_MAX_ATTEMPTS"),
    ({"FLIGHTS_AWS_MAX_ATTEMPTS": "50"}, "FLIGHTS_AWS_MAX_ATTEMPTS=50 is above 20"),
])
def test_invalid_settings_name_the_variable(change, message):
    with pytest.raises(ConfigError, match=message):
        load_aws_settings({**BASE, **change})


def test_ec2_mode_needs_no_application_and_unknown_region_asks_for_an_image():
    s = load_aws_settings({**BASE, "FLIGHTS_AWS_SPARK_MODE": "ec2", "FLIGHTS_AWS_EMR_APPLICATION_ID": "",
                           "FLIGHTS_AWS_REGION": "af-south-1"})
    with pytest.raises(ConfigError, match="FLIGHTS_AWS_TRAINING_IMAGE_URI"):
        _ = s.training_image


def test_retries_default_to_standard_mode_with_eight_attempts_and_reach_every_client():
    s = load_aws_settings(BASE)
    assert (s.retry_mode, s.max_attempts) == ("standard", 8)
    # total_max_attempts counts the first call; botocore's max_attempts key would mean 9 calls
    assert s.botocore_config == {"retries": {"mode": "standard", "total_max_attempts": 8},
                                 "connect_timeout": 10, "read_timeout": 60}
    config = s.client_kwargs()["config"]
    assert config.retries == {"mode": "standard", "total_max_attempts": 8}
    assert (config.connect_timeout, config.read_timeout) == (10, 60)
    import boto3

    client = boto3.client("s3", aws_access_key_id="x", aws_secret_access_key="x", **s.client_kwargs())
    assert client.meta.config.retries["total_max_attempts"] == 8 and client.meta.config.retries["mode"] == "standard"


def test_retry_mode_and_attempts_are_read_from_the_environment():
    s = load_aws_settings({**BASE, "FLIGHTS_AWS_RETRY_MODE": "Adaptive", "FLIGHTS_AWS_MAX_ATTEMPTS": "1"})
    assert (s.retry_mode, s.max_attempts) == ("adaptive", 1)
    assert s.botocore_config["retries"] == {"mode": "adaptive", "total_max_attempts": 1}  # 1 = no retry
    from include.targets.aws.settings import retry_settings

    assert retry_settings({"FLIGHTS_AWS_MAX_ATTEMPTS": "3"}) == ("standard", 3)  # no other AWS setting needed


def test_every_operator_spec_carries_the_retry_config():
    from dataclasses import replace

    from include.targets.aws import emr, redshift, sagemaker

    aws = replace(load_aws_settings(BASE), max_attempts=5)
    code = {"prefix": "s3://my-lake/artifacts/code/abc", "zip": "s3://my-lake/artifacts/code/abc/code.zip",
            "sourcedir": "s3://my-lake/artifacts/code/abc/sourcedir.tar.gz"}
    specs = [
        emr.serverless_job(aws, task_id="t", job="bronze_flights", args=[], code=code, interval_key="k"),
        *emr.ec2_jobs(aws, jobs=[{"task_id": "t", "job": "bronze_flights", "args": []}], code=code, interval_key="k"),
        sagemaker.training_job(aws, task_id="train", interval_key="k", dataset_uri="s3://my-lake/lake/x",
                               sourcedir_uri=code["sourcedir"], params={"n_estimators": 10}),
        redshift.load_job(replace(aws, redshift_workgroup="w",
                                  redshift_copy_role_arn="arn:aws:iam::123456789012:role/copy"),
                          task_id="load", table="analytics.flight_outcomes", s3_prefix="s3://my-lake/lake/e/k/",
                          start="2013-06-03", end="2013-06-03"),
    ]
    assert {s.class_name: s.kwargs["botocore_config"]["retries"]["total_max_attempts"] for s in specs} == {
        "ReattachingEmrServerlessStartJobOperator": 5, "ReattachingEmrCreateJobFlowOperator": 5,
        "ReattachingEmrStepOperator": 5, "EmrTerminateJobFlowOperator": 5,
        "ReattachingSageMakerTrainingOperator": 5, "RedshiftIntervalLoadOperator": 5}
