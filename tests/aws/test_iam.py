"""IAM policies: valid, least privilege, and every action one the code (or the service acting for it) calls."""

from __future__ import annotations

import json
import re

import pytest

from include.config import ConfigError
from include.targets.aws import iam
from include.targets.aws.settings import AwsSettings

# What calls each action. A new boto3 / provider call needs a line here and in a policy.
CALLS = {
    "include/targets/aws/operators.py + provider EmrServerlessStartJobOperator (passes the job role)": {
        "emr-serverless:GetApplication", "emr-serverless:StartApplication", "emr-serverless:StartJobRun",
        "emr-serverless:GetJobRun", "emr-serverless:ListJobRuns", "emr-serverless:CancelJobRun",
        "emr-serverless:TagResource",  # StartJobRun with tags
        "iam:PassRole"},
    "include/targets/aws/cluster.py + provider EmrCreateJobFlow/AddSteps/TerminateJobFlow": {
        "elasticmapreduce:RunJobFlow", "elasticmapreduce:AddTags", "elasticmapreduce:ListClusters",
        "elasticmapreduce:DescribeCluster", "elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:ListSteps",
        "elasticmapreduce:DescribeStep", "elasticmapreduce:CancelSteps", "elasticmapreduce:TerminateJobFlows",
        "iam:PassRole"},  # RunJobFlow passes the service role and the instance profile's role
    "include/targets/aws/operators.py + provider SageMakerTrainingOperator": {
        "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
        "sagemaker:AddTags", "iam:PassRole"},  # CreateTrainingJob passes the execution role
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
    "spark_jobs/* on EMR (job role; in EC2 mode the instance profile's role)": {
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"},
    "EMR on EC2 nodes uploading step and node logs to the cluster's LogUri (instance profile's role)": {"s3:PutObject"},
    "include/targets/aws/pii_key.py in the ingest job, when FLIGHTS_AWS_PII_KEY_SECRET_ARN is set (job role)": {
        "secretsmanager:GetSecretValue"},
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
    granted = {a for aws in (_aws(delta_log_table="flights_delta_log"), _ec2(delta_log_table="flights_delta_log"))
               for name in iam.POLICIES for st in _statements(iam.render(name, aws)) for a in _as_list(st["Action"])}
    assert set().union(*CALLS.values()) <= granted


def test_the_delta_log_table_is_granted_only_when_configured():
    def sids(aws):
        return {st["Sid"] for st in _statements(iam.render("emr-job-role", aws))}

    assert "IfSetDeltaCommitsThroughDynamoDB" not in sids(_aws())
    aws = _aws(delta_log_table="flights_delta_log")
    [st] = [st for st in _statements(iam.render("emr-job-role", aws)) if st["Sid"].startswith("IfSet")]
    assert st["Resource"] == "arn:aws:dynamodb:us-east-1:123456789012:table/flights_delta_log"


PII_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:flights/pii-AbCdEf"


@pytest.mark.parametrize("policy, settings", [("emr-job-role", "serverless"), ("emr-ec2-instance-role", "ec2")])
def test_the_job_reads_the_pii_key_secret_and_no_other(policy, settings):
    build = _aws if settings == "serverless" else _ec2
    doc = iam.render(policy, build(pii_key_secret_arn=PII_ARN))
    assert allowed(doc, "secretsmanager:GetSecretValue", PII_ARN)
    for other in (PII_ARN.replace("flights/pii", "flights/other"), PII_ARN + "x",
                  "arn:aws:secretsmanager:us-east-1:123456789012:secret:airflow/connections/flights_warehouse-AbCdEf"):
        assert not allowed(doc, "secretsmanager:GetSecretValue", other), other
    for action in ("secretsmanager:PutSecretValue", "secretsmanager:DeleteSecret", "secretsmanager:ListSecrets"):
        assert not allowed(doc, action, PII_ARN), action
    unset = iam.render(policy, build())
    assert not allowed(unset, "secretsmanager:GetSecretValue", PII_ARN)
    assert not any(st["Sid"] == "IfSetReadThePiiKey" for st in _statements(unset))


def test_rendering_fills_every_placeholder():
    aws = _aws(lake_bucket="acme-lake")
    for name in iam.POLICIES:
        doc = iam.render(name, aws)
        text = json.dumps(doc)
        assert "${" not in text.replace("${aws:userid}", "")  # IAM's own policy variable stays
    lake = json.dumps(iam.render("emr-job-role", aws))
    assert "arn:aws:s3:::acme-lake/lake/*" in lake and "arn:aws:s3:::acme-lake/landing/*" in lake
    passed = {r for st in _statements(iam.render("airflow-role", aws)) if "iam:PassRole" in _as_list(st["Action"])
              for r in _as_list(st["Resource"])}
    assert aws.emr_job_role_arn in passed and aws.sagemaker_role_arn in passed


def test_unknown_placeholder_is_named(tmp_path):
    (tmp_path / "x.json").write_text('{"Version": "2012-10-17", "Statement": [{"Resource": "${NOPE}"}]}')
    with pytest.raises(KeyError, match="NOPE"):
        iam.render("x", AwsSettings.example(), tmp_path)


# --- evaluating the rendered policies ------------------------------------------------------------
# A small IAM evaluator, enough for these policies: actions and resources with * and ? wildcards,
# explicit Deny over Allow, and the condition operators they use. A condition key absent from the
# request fails its condition (as in IAM, without ...IfExists). ${aws:...} policy variables in
# condition values are filled from the request's context.

ACCOUNT, REGION = "123456789012", "us-east-1"
WORKGROUP_ARN = f"arn:aws:redshift-serverless:{REGION}:{ACCOUNT}:workgroup/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
OTHER_WORKGROUP_ARN = f"arn:aws:redshift-serverless:{REGION}:{ACCOUNT}:workgroup/99999999-4b5a-6978-8a9b-0c1d2e3f4a5b"
USERID = "AROAEXAMPLEAIRFLOW:worker-1"


def _glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _policy_variables(value: str, context: dict) -> str:
    return re.sub(r"\$\{(aws:[A-Za-z]+)\}", lambda m: context.get(m.group(1), "\0unset"), value)


_OPERATORS = {
    "StringEquals": lambda want, got: want == got,
    "StringLike": lambda want, got: _glob(want, got),
    "ArnEquals": lambda want, got: want == got,
    "ArnLike": lambda want, got: _glob(want, got),
}


def _conditions_hold(condition: dict, context: dict) -> bool:
    for operator, keys in condition.items():
        assert operator in _OPERATORS, f"the evaluator does not know condition operator {operator}"
        for key, wanted in keys.items():
            if key not in context:
                return False
            got = context[key]
            if not any(_OPERATORS[operator](_policy_variables(w, context), got) for w in _as_list(wanted)):
                return False
    return True


def _matches(st: dict, action: str, resource: str, context: dict) -> bool:
    assert "NotAction" not in st and "NotResource" not in st and "NotPrincipal" not in st
    return (any(_glob(a, action, ignore_case=True) for a in _as_list(st["Action"]))
            and any(_glob(r, resource) for r in _as_list(st["Resource"]))
            and _conditions_hold(st.get("Condition", {}), context))


def allowed(doc: dict, action: str, resource: str = "*", **context) -> bool:
    """Whether the identity policy ``doc`` allows ``action`` on ``resource`` with the condition ``context``."""
    hits = [st for st in _statements(doc) if _matches(st, action, resource, context)]
    return any(st["Effect"] == "Allow" for st in hits) and not any(st["Effect"] == "Deny" for st in hits)


def test_the_evaluator_itself():
    doc = {"Statement": [
        {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b/lake/*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/lake/secret*"},
        {"Effect": "Allow", "Action": "x:Y", "Resource": "*",
         "Condition": {"StringEquals": {"x:owner": "${aws:userid}"}}}]}
    assert allowed(doc, "s3:GetObject", "arn:aws:s3:::b/lake/t/part-0.parquet")
    assert not allowed(doc, "s3:GetObject", "arn:aws:s3:::b/lake/secret.txt")  # explicit deny wins
    assert not allowed(doc, "s3:GetObject", "arn:aws:s3:::b/landing/x.csv")
    assert not allowed(doc, "s3:PutObject", "arn:aws:s3:::b/lake/t/part-0.parquet")
    assert allowed(doc, "x:Y", "anything", **{"x:owner": "u1", "aws:userid": "u1"})
    assert not allowed(doc, "x:Y", "anything", **{"x:owner": "u2", "aws:userid": "u1"})
    assert not allowed(doc, "x:Y", "anything", **{"aws:userid": "u1"})  # an absent key fails the condition


def _aws(**overrides) -> AwsSettings:
    """The example settings, with the workgroup given by its ARN (the only name IAM knows it by)."""
    return AwsSettings.example(**{"redshift_workgroup": WORKGROUP_ARN, **overrides})


def _ec2(**overrides) -> AwsSettings:
    return _aws(spark_mode="ec2", emr_application_id="", **overrides)


def _rendered(aws: AwsSettings) -> dict[str, dict]:
    return {name: iam.render(name, aws) for name in iam.POLICIES}


def _s3(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"


def _role(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


APP = f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/00example0app0id"
CLUSTER = f"arn:aws:elasticmapreduce:{REGION}:{ACCOUNT}:cluster/j-2AXXXXXXGAPLF"
TAGGED = {"aws:ResourceTag/project": "flights-lakehouse"}
CREATE_TAGS = {"aws:RequestTag/project": "flights-lakehouse", "aws:RequestedRegion": REGION}


def _training_job_arn(name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}"


def _project_training_job_names() -> list[str]:
    """The names the training operator gives, for every training task the DAGs declare."""
    from include.targets.cloud.naming import training_job_name

    dags = "\n".join(p.read_text(encoding="utf-8") for p in (iam.REPO_ROOT / "dags").glob("*.py"))
    task_ids = set(re.findall(r"steps\.train\(\s*[\"']([a-z0-9_]+)[\"']", dags))
    assert task_ids, "no steps.train(...) call found in dags/: the training job names are no longer checked"
    return [training_job_name(dag, task, key, run, n)
            for task in sorted(task_ids) for dag in ("flights_training", "a_longer_dag_name_for_backfills")
            for key in ("20130101_20130228", "20130301_20131231")
            for run in ("scheduled__2013-03-01T00:00:00+00:00", "manual__2024-06-01T12:00:00.123456+00:00")
            for n in (1, 2, 12)]


# --- 1. the EMR on EC2 roles: a dedicated instance profile, granted only in EC2 mode -------------


def test_ec2_mode_uses_a_dedicated_instance_profile_by_default():
    from include.targets.aws.emr import cluster_config
    from include.targets.aws.settings import load_aws_settings

    env = {"FLIGHTS_AWS_REGION": REGION, "FLIGHTS_AWS_ACCOUNT_ID": ACCOUNT, "FLIGHTS_AWS_LAKE_BUCKET": "my-lake",
           "FLIGHTS_AWS_SPARK_MODE": "ec2", "FLIGHTS_AWS_EMR_JOB_ROLE_ARN": _role("emr-job"),
           "FLIGHTS_AWS_SAGEMAKER_ROLE_ARN": _role("sm")}
    for aws in (AwsSettings.example(), load_aws_settings(env)):
        assert aws.emr_instance_profile == "flights-emr-ec2"  # never EMR_EC2_DefaultRole (s3:* on every bucket)
        assert cluster_config(aws, "c")["JobFlowRole"] == "flights-emr-ec2"
    assert "emr-ec2-instance-role" in iam.POLICIES


def test_the_airflow_role_passes_only_the_project_roles_each_to_its_service():
    serverless, ec2 = _rendered(_aws())["airflow-role"], _rendered(_ec2())["airflow-role"]
    aws = _aws()
    # The calls the code makes.
    assert allowed(serverless, "iam:PassRole", aws.emr_job_role_arn, **{"iam:PassedToService": "emr-serverless.amazonaws.com"})
    assert allowed(serverless, "iam:PassRole", aws.sagemaker_role_arn, **{"iam:PassedToService": "sagemaker.amazonaws.com"})
    assert allowed(ec2, "iam:PassRole", aws.sagemaker_role_arn, **{"iam:PassedToService": "sagemaker.amazonaws.com"})
    assert allowed(ec2, "iam:PassRole", _role("EMR_DefaultRole"), **{"iam:PassedToService": "elasticmapreduce.amazonaws.com"})
    assert allowed(ec2, "iam:PassRole", _role("flights-emr-ec2"), **{"iam:PassedToService": "ec2.amazonaws.com"})
    # What must be refused.
    for doc in (serverless, ec2):
        for service in ("ec2.amazonaws.com", "elasticmapreduce.amazonaws.com", "emr-serverless.amazonaws.com",
                        "sagemaker.amazonaws.com", "lambda.amazonaws.com"):
            ctx = {"iam:PassedToService": service}
            assert not allowed(doc, "iam:PassRole", _role("EMR_EC2_DefaultRole"), **ctx)
            assert not allowed(doc, "iam:PassRole", _role("Admin"), **ctx)
            assert not allowed(doc, "iam:PassRole", f"arn:aws:iam::999999999999:role/flights-emr-job", **ctx)
        assert not allowed(doc, "iam:PassRole", aws.emr_job_role_arn)  # no service named: refused
        assert not allowed(doc, "iam:PassRole", aws.sagemaker_role_arn, **{"iam:PassedToService": "lambda.amazonaws.com"})
        assert not allowed(doc, "iam:PassRole", aws.sagemaker_role_arn, **{"iam:PassedToService": "ec2.amazonaws.com"})
    assert not allowed(serverless, "iam:PassRole", aws.emr_job_role_arn, **{"iam:PassedToService": "ec2.amazonaws.com"})
    assert not allowed(ec2, "iam:PassRole", _role("flights-emr-ec2"), **{"iam:PassedToService": "lambda.amazonaws.com"})
    assert not allowed(ec2, "iam:PassRole", _role("EMR_DefaultRole"), **{"iam:PassedToService": "ec2.amazonaws.com"})
    # Every PassRole grant names the service the role goes to.
    for name, doc in {**_rendered(_aws()), **{f"ec2 {k}": v for k, v in _rendered(_ec2()).items()}}.items():
        for st in _statements(doc):
            if any(_glob(a, "iam:PassRole", ignore_case=True) for a in _as_list(st["Action"])):
                keys = {k for op in st.get("Condition", {}).values() for k in op}
                assert "iam:PassedToService" in keys, f"{name} {st['Sid']}: iam:PassRole without iam:PassedToService"


def test_ec2_actions_are_granted_only_in_ec2_mode():
    serverless, ec2 = _rendered(_aws())["airflow-role"], _rendered(_ec2())["airflow-role"]
    aws = _aws()
    pass_ec2 = [(aws.emr_instance_profile, "ec2.amazonaws.com"), ("EMR_DefaultRole", "elasticmapreduce.amazonaws.com")]
    # EC2 mode: what the cluster operators call.
    assert allowed(ec2, "elasticmapreduce:RunJobFlow", "*", **CREATE_TAGS)
    assert allowed(ec2, "elasticmapreduce:ListClusters", "*", **{"aws:RequestedRegion": REGION})
    for action in ("AddTags", "DescribeCluster", "AddJobFlowSteps", "ListSteps", "DescribeStep", "CancelSteps",
                   "TerminateJobFlows"):
        assert allowed(ec2, f"elasticmapreduce:{action}", CLUSTER, **TAGGED), action
        assert not allowed(ec2, f"elasticmapreduce:{action}", CLUSTER, **{"aws:ResourceTag/project": "other"})
    assert not allowed(ec2, "elasticmapreduce:RunJobFlow", "*", **{**CREATE_TAGS, "aws:RequestTag/project": "x"})
    for role, service in pass_ec2:
        assert allowed(ec2, "iam:PassRole", _role(role), **{"iam:PassedToService": service})
    # Serverless mode: none of it.
    for action in ("RunJobFlow", "ListClusters"):
        assert not allowed(serverless, f"elasticmapreduce:{action}", "*", **CREATE_TAGS)
    for action in ("AddTags", "DescribeCluster", "AddJobFlowSteps", "ListSteps", "DescribeStep", "CancelSteps",
                   "TerminateJobFlows"):
        assert not allowed(serverless, f"elasticmapreduce:{action}", CLUSTER, **TAGGED), action
    for role, service in pass_ec2:
        assert not allowed(serverless, "iam:PassRole", _role(role), **{"iam:PassedToService": service})
    assert not [st for st in _statements(serverless) if any(a.startswith("elasticmapreduce:")
                                                            for a in _as_list(st["Action"]))]
    # And EC2 mode has no EMR Serverless grant (no application configured).
    assert not allowed(ec2, "emr-serverless:StartJobRun", APP)
    assert not allowed(ec2, "iam:PassRole", aws.emr_job_role_arn, **{"iam:PassedToService": "emr-serverless.amazonaws.com"})


def test_the_instance_profile_role_runs_the_jobs_and_nothing_more():
    aws = _ec2(artifacts_bucket="flights-artifacts-example")
    role = _rendered(aws)["emr-ec2-instance-role"]
    logs = _s3(aws.artifacts_bucket, "artifacts/logs/emr/j-2AXXXXXXGAPLF/node/i-0/applications/spark/stderr.gz")
    assert allowed(role, "s3:PutObject", logs)
    assert allowed(role, "s3:GetObject", _s3(aws.artifacts_bucket, "artifacts/code/abc123/flights_code.zip"))
    assert not allowed(role, "s3:PutObject", _s3(aws.artifacts_bucket, "artifacts/code/abc123/flights_code.zip"))
    assert not allowed(role, "s3:GetObject", _s3("someone-elses-bucket", "x"))
    assert not allowed(role, "s3:DeleteObject", _s3(aws.lake_bucket, "landing/flights/flights_2013-01-01.csv"))
    for st in _statements(role):
        assert not [a for a in _as_list(st["Action"]) if "*" in a], st  # no s3:*, no wildcard action at all


# --- 2. unset identifiers leave the statement out, never "*" ---------------------------------------


@pytest.mark.parametrize("aws", [
    _ec2(),  # no EMR Serverless application
    _aws(redshift_workgroup="", redshift_cluster_id=""),  # no warehouse
    _ec2(redshift_workgroup="", redshift_cluster_id=""),
], ids=["no-application", "no-warehouse", "neither"])
def test_unset_identifiers_leave_their_statement_out(aws):
    rendered = _rendered(aws)
    for name, doc in rendered.items():
        for st in _statements(doc):
            for r in _as_list(st["Resource"]):
                assert not re.search(r"/applications/\*|:cluster:\*$|workgroup/\*$", r), f"{name} {st['Sid']}: {r}"
            if "*" in _as_list(st["Resource"]):
                assert set(_as_list(st["Action"])) <= RESOURCE_STAR_ALLOWED, f"{name} {st['Sid']}"
    airflow = rendered["airflow-role"]
    any_app = f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/00someoneelses"
    if not aws.emr_application_id or aws.spark_mode != "serverless":
        assert not allowed(airflow, "emr-serverless:StartJobRun", any_app)
        assert not allowed(airflow, "emr-serverless:StartJobRun", f"{any_app}/jobruns/00run")
    if not (aws.redshift_workgroup or aws.redshift_cluster_id):
        for target in (OTHER_WORKGROUP_ARN, f"arn:aws:redshift:{REGION}:{ACCOUNT}:cluster:prod"):
            assert not allowed(airflow, "redshift-data:ExecuteStatement", target)
            assert not allowed(airflow, "redshift-data:BatchExecuteStatement", target)
        assert not allowed(airflow, "redshift-serverless:GetCredentials", OTHER_WORKGROUP_ARN)
        assert not allowed(airflow, "redshift-data:GetStatementResult", "*", **{
            "redshift-data:statement-owner-iam-userid": USERID, "aws:userid": USERID, "aws:RequestedRegion": REGION})


def test_a_workgroup_named_by_name_only_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="FLIGHTS_AWS_REDSHIFT_WORKGROUP.*ARN"):
        iam.render("airflow-role", AwsSettings.example(redshift_workgroup="flights"))


# --- 3. Redshift, SageMaker and ECR scoped to the project's own resources ----------------------


def test_redshift_is_scoped_to_the_configured_warehouse_and_the_callers_statements():
    serverless = _rendered(_aws())["airflow-role"]
    for action in ("ExecuteStatement", "BatchExecuteStatement"):
        assert allowed(serverless, f"redshift-data:{action}", WORKGROUP_ARN)
        assert not allowed(serverless, f"redshift-data:{action}", OTHER_WORKGROUP_ARN)
        assert not allowed(serverless, f"redshift-data:{action}", f"arn:aws:redshift:{REGION}:{ACCOUNT}:cluster:prod")
    assert allowed(serverless, "redshift-serverless:GetCredentials", WORKGROUP_ARN)
    assert not allowed(serverless, "redshift-serverless:GetCredentials", OTHER_WORKGROUP_ARN)
    provisioned = _rendered(_aws(redshift_workgroup="", redshift_cluster_id="flights-dw"))["airflow-role"]
    cluster = f"arn:aws:redshift:{REGION}:{ACCOUNT}:cluster:flights-dw"
    assert allowed(provisioned, "redshift-data:ExecuteStatement", cluster)
    assert not allowed(provisioned, "redshift-data:ExecuteStatement", f"arn:aws:redshift:{REGION}:{ACCOUNT}:cluster:prod")
    assert not allowed(provisioned, "redshift-data:ExecuteStatement", OTHER_WORKGROUP_ARN)
    assert not allowed(provisioned, "redshift-serverless:GetCredentials", OTHER_WORKGROUP_ARN)
    for doc in (serverless, provisioned):
        for action in ("DescribeStatement", "CancelStatement", "GetStatementResult"):
            own = {"redshift-data:statement-owner-iam-userid": USERID, "aws:userid": USERID,
                   "aws:RequestedRegion": REGION}
            assert allowed(doc, f"redshift-data:{action}", "*", **own)
            assert not allowed(doc, f"redshift-data:{action}", "*",
                               **{**own, "redshift-data:statement-owner-iam-userid": "AROAOTHER:someone"})
            assert not allowed(doc, f"redshift-data:{action}", "*", **{"aws:userid": USERID, "aws:RequestedRegion": REGION})


def test_training_jobs_are_scoped_to_the_project_names():
    airflow = _rendered(_aws())["airflow-role"]
    for name in _project_training_job_names():
        for action in ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob", "AddTags"):
            assert allowed(airflow, f"sagemaker:{action}", _training_job_arn(name)), (action, name)
    for name in ("someone-elses-job", "train-model-x", "xtrain-models-1", "train_models-1"):
        for action in ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob"):
            assert not allowed(airflow, f"sagemaker:{action}", _training_job_arn(name)), (action, name)
    assert not allowed(airflow, "sagemaker:CreateTrainingJob",
                       f"arn:aws:sagemaker:{REGION}:999999999999:training-job/train-models-x")


def test_the_training_image_is_pulled_only_from_its_own_account():
    role = _rendered(_aws())["sagemaker-execution-role"]
    xgboost = f"arn:aws:ecr:{REGION}:683313688378:repository/sagemaker-xgboost"  # XGBOOST_IMAGE_ACCOUNTS[us-east-1]
    for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"):
        assert allowed(role, action, xgboost)
        assert not allowed(role, action, f"arn:aws:ecr:{REGION}:999999999999:repository/sagemaker-xgboost")
        assert not allowed(role, action, f"arn:aws:ecr:{REGION}:683313688378:repository/another-image")
    assert allowed(role, "ecr:GetAuthorizationToken", "*")
    custom = _rendered(_aws(training_image_uri="210987654321.dkr.ecr.eu-west-1.amazonaws.com/flights/xgb:2.1"))
    role = custom["sagemaker-execution-role"]
    assert allowed(role, "ecr:BatchGetImage", "arn:aws:ecr:eu-west-1:210987654321:repository/flights/xgb")
    assert not allowed(role, "ecr:BatchGetImage", xgboost)
    assert not allowed(role, "ecr:BatchGetImage", "arn:aws:ecr:eu-west-1:999999999999:repository/flights/xgb")


# --- 4. the landing zone is read-only to the jobs -------------------------------------------------


def _written_by_the_jobs(aws: AwsSettings) -> list[str]:
    """An object key under every place the Spark jobs write (include.lake and include.jobs)."""
    from include import lake
    from include.jobs import RunRef, result_uri, safe_run_key, training_set_uri

    run_id = "scheduled__2013-01-01T00:00:00+00:00"
    ref = RunRef("2013-01-01", "2013-01-01", "20130101_20130101", run_id, safe_run_key(run_id))
    root = aws.lake_root
    uris = [lake.table_uri(root, t) + "/flight_date=2013-01-01/part-0.snappy.parquet" for t in lake.TABLES]
    uris += [lake.table_uri(root, t) + "/_delta_log/00000000000000000001.json" for t in lake.TABLES]
    uris += [lake.export_uri(root, "flight_outcomes", ref.key) + "/part-0.parquet",
             lake.export_uri(root, "predictions", ref.key) + "/part-0.parquet",
             training_set_uri(root, ref) + "/data/part-0.parquet", training_set_uri(root, ref) + "/manifest.json",
             result_uri(root, "bronze", ref), result_uri(root, "predictions", ref),
             lake.join(root, "_docs", "validations", "bronze.flights", "run.html")]
    prefix = f"s3://{aws.lake_bucket}/"
    assert all(u.startswith(prefix) for u in uris)
    return [u[len(prefix):] for u in uris]


@pytest.mark.parametrize("policy, aws", [("emr-job-role", _aws()), ("emr-ec2-instance-role", _ec2()),
                                         ("emr-job-role", _aws(lake_prefix="warehouse/lake"))],
                         ids=["serverless", "ec2-instance-profile", "other-lake-prefix"])
def test_the_jobs_cannot_change_the_landing_zone(policy, aws):
    role = _rendered(aws)[policy]
    bucket = aws.lake_bucket
    for key in ("landing/flights/flights_2013-01-01.csv", "landing/dimensions/planes.csv", "landing/x"):
        assert allowed(role, "s3:GetObject", _s3(bucket, key)), key  # the ingest job reads it
        assert not allowed(role, "s3:DeleteObject", _s3(bucket, key)), key
        assert not allowed(role, "s3:PutObject", _s3(bucket, key)), key
    for key in ("other/x", "lake", "lakehouse/x", "x"):
        assert not allowed(role, "s3:DeleteObject", _s3(bucket, key)), key
        assert not allowed(role, "s3:PutObject", _s3(bucket, key)), key
    for key in _written_by_the_jobs(aws):
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert allowed(role, action, _s3(bucket, key)), (action, key)
    assert allowed(role, "s3:ListBucket", _s3(bucket))
    # The scoring job reads the champion's bundle, published to the artifacts bucket.
    bundle = f"{aws.artifacts_prefix}/models/{aws.model_package_group}/3/bundle/model.json"
    assert allowed(role, "s3:GetObject", _s3(aws.artifacts_bucket, bundle))
    assert not allowed(role, "s3:PutObject", _s3(aws.artifacts_bucket, bundle))
