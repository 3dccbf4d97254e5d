"""IAM policies: valid, least privilege, and every action one the code (or the service acting for it) calls."""

from __future__ import annotations

import json

import pytest

from include.targets.aws import iam
from include.targets.aws.settings import AwsSettings

# What calls each action. A new boto3 / provider call needs a line here and in a policy.
CALLS = {
    "include/targets/aws/operators.py + provider EmrServerlessStartJobOperator": {
        "emr-serverless:GetApplication", "emr-serverless:StartApplication", "emr-serverless:StartJobRun",
        "emr-serverless:GetJobRun", "emr-serverless:ListJobRuns", "emr-serverless:CancelJobRun",
        "emr-serverless:TagResource",  # StartJobRun with tags
        "iam:PassRole"},
    "include/targets/aws/cluster.py + provider EmrCreateJobFlow/AddSteps/TerminateJobFlow": {
        "elasticmapreduce:RunJobFlow", "elasticmapreduce:AddTags", "elasticmapreduce:ListClusters",
        "elasticmapreduce:DescribeCluster", "elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:ListSteps",
        "elasticmapreduce:DescribeStep", "elasticmapreduce:CancelSteps", "elasticmapreduce:TerminateJobFlows"},
    "include/targets/aws/operators.py + provider SageMakerTrainingOperator": {
        "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
        "sagemaker:AddTags"},
    "include/targets/aws/registry.py": {
        "sagemaker:CreateModelPackageGroup", "sagemaker:DescribeModelPackageGroup", "sagemaker:CreateModelPackage",
        "sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage", "sagemaker:ListModelPackages",
        "s3:PutObject", "s3:GetObject"},
    "include/targets/aws/artifact.py + __init__.S3Lake": {"s3:GetObject", "s3:PutObject", "s3:ListBucket"},
    "include/targets/aws/redshift.py (RedshiftDataOperator)": {
        "redshift-data:BatchExecuteStatement", "redshift-data:DescribeStatement", "redshift-data:CancelStatement",
        "redshift-serverless:GetCredentials"},
    "include/targets/aws/redshift.py RedshiftWarehouse (ops records and queries)": {
        "redshift-data:ExecuteStatement", "redshift-data:BatchExecuteStatement", "redshift-data:DescribeStatement",
        "redshift-data:CancelStatement", "redshift-data:GetStatementResult", "redshift-serverless:GetCredentials"},
    "include/targets/aws/operators.py job checks, registry.publish_bundle, SageMakerTrainer.collect": {
        "s3:ListBucket", "s3:GetObject", "s3:PutObject"},
    "include/alerts.py ChannelNotifier._send_sns": {"sns:Publish"},
    "Airflow SecretsManagerBackend": {"secretsmanager:GetSecretValue"},
    "spark_jobs/* on EMR (job role)": {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"},
    "Delta S3DynamoDBLogStore in the jobs, when FLIGHTS_AWS_DELTA_LOG_TABLE is set (job role)": {
        "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"},
    "SageMaker training job for sagemaker.py (execution role)": {
        "s3:GetObject", "s3:PutObject", "s3:ListBucket", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability", "ecr:GetAuthorizationToken", "logs:CreateLogGroup",
        "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams", "cloudwatch:PutMetricData"},
    "Redshift COPY in redshift.py (copy role)": {"s3:GetObject", "s3:ListBucket"},
}
# Actions AWS does not let a policy scope to a resource (documented in docs/running-on-aws.md).
RESOURCE_STAR_ALLOWED = {"elasticmapreduce:RunJobFlow", "elasticmapreduce:ListClusters", "sagemaker:ListModelPackages",
                         "redshift-data:DescribeStatement", "redshift-data:CancelStatement",
                         "redshift-data:GetStatementResult", "ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}


def _statements(doc):
    return doc["Statement"] if isinstance(doc["Statement"], list) else [doc["Statement"]]


def _as_list(value):
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("name", iam.POLICIES)
def test_policy_is_valid_and_least_privilege(name):
    raw = json.loads((iam.POLICY_DIR / f"{name}.json").read_text())
    assert raw["Version"] == "2012-10-17"
    called = set().union(*CALLS.values())
    for st in _statements(raw):
        actions = _as_list(st["Action"])
        assert st["Effect"] == "Allow" and "*" not in actions
        assert not [a for a in actions if a.endswith(":*")], f"wildcard action in {name}: {actions}"
        assert set(actions) <= called, f"{name} grants actions no code calls: {set(actions) - called}"
        if "*" in _as_list(st["Resource"]):
            assert set(actions) <= RESOURCE_STAR_ALLOWED, f"{name} {st['Sid']}: Resource * for {actions}"


def test_every_called_action_is_granted_somewhere():
    aws = AwsSettings.example(delta_log_table="flights_delta_log")
    granted = {a for name in iam.POLICIES for st in _statements(iam.render(name, aws))
               for a in _as_list(st["Action"])}
    assert set().union(*CALLS.values()) <= granted


def test_the_delta_log_table_is_granted_only_when_configured():
    def sids(aws):
        return {st["Sid"] for st in _statements(iam.render("emr-job-role", aws))}

    assert "IfSetDeltaCommitsThroughDynamoDB" not in sids(AwsSettings.example())
    aws = AwsSettings.example(delta_log_table="flights_delta_log")
    [st] = [st for st in _statements(iam.render("emr-job-role", aws)) if st["Sid"].startswith("IfSet")]
    assert st["Resource"] == "arn:aws:dynamodb:us-east-1:123456789012:table/flights_delta_log"


def test_rendering_fills_every_placeholder():
    aws = AwsSettings.example(lake_bucket="acme-lake")
    for name in iam.POLICIES:
        doc = iam.render(name, aws)
        text = json.dumps(doc)
        assert "${" not in text
    lake = json.dumps(iam.render("emr-job-role", aws))
    assert "arn:aws:s3:::acme-lake/*" in lake
    passed = [st for st in _statements(iam.render("airflow-role", aws)) if st["Sid"] == "PassOnlyTheProjectRoles"][0]
    assert aws.emr_job_role_arn in passed["Resource"] and aws.sagemaker_role_arn in passed["Resource"]


def test_unknown_placeholder_is_named(tmp_path):
    (tmp_path / "x.json").write_text('{"Version": "2012-10-17", "Statement": [{"Resource": "${NOPE}"}]}')
    with pytest.raises(KeyError, match="NOPE"):
        iam.render("x", AwsSettings.example(), tmp_path)
