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
])
def test_invalid_settings_name_the_variable(change, message):
    with pytest.raises(ConfigError, match=message):
        load_aws_settings({**BASE, **change})


def test_ec2_mode_needs_no_application_and_unknown_region_asks_for_an_image():
    s = load_aws_settings({**BASE, "FLIGHTS_AWS_SPARK_MODE": "ec2", "FLIGHTS_AWS_EMR_APPLICATION_ID": "",
                           "FLIGHTS_AWS_REGION": "af-south-1"})
    with pytest.raises(ConfigError, match="FLIGHTS_AWS_TRAINING_IMAGE_URI"):
        _ = s.training_image
