"""The least-privilege IAM policies of the AWS target, rendered from settings.

The templates live in ``infra/aws/iam/*.json`` with ``${NAME}`` placeholders (bucket
names, account, region, role ARNs); ``render`` fills them from ``AwsSettings`` so the
policies attached in an account are exactly the ones the tests check.

What is not configured is not granted: the EMR Serverless statements exist only with
``FLIGHTS_AWS_SPARK_MODE=serverless`` and an application, the EMR on EC2 ones (creating the
run's cluster, passing the EMR service role and the instance profile's role) only with
``ec2``, the warehouse statements only for the configured workgroup or cluster. Every
``iam:PassRole`` names the one service the role is passed to.

``emr-ec2-instance-role`` is the policy of the cluster nodes' instance profile in EC2 mode
(``FLIGHTS_AWS_EMR_INSTANCE_PROFILE``, default ``flights-emr-ec2``; EMR needs the profile and
its role to have the same name): the job role's S3 and DynamoDB grants, plus the upload of
the step and node logs to the cluster's ``LogUri``.
"""

from __future__ import annotations

import json
from pathlib import Path

from include.config import REPO_ROOT, ConfigError
from include.targets.aws.settings import AwsSettings
from include.targets.cloud import templates

POLICY_DIR = REPO_ROOT / "infra" / "aws" / "iam"
POLICIES = ("airflow-role", "emr-job-role", "emr-ec2-instance-role", "sagemaker-execution-role",
            "redshift-copy-role")


def render(name: str, aws: AwsSettings, directory: Path = POLICY_DIR) -> dict:
    """The policy ``name`` with every placeholder replaced; a KeyError names any unknown one.

    A statement whose ``Sid`` starts with ``IfSet`` is kept only when every placeholder it
    uses has a value (e.g. the DynamoDB log table, granted only when one is configured).
    The rules are the ones both clouds share (``include.targets.cloud.templates``).

    Raises:
        ConfigError: the Redshift Serverless workgroup is given by name: IAM knows a workgroup
            only by its ARN, which holds the workgroup's id, not its name.
    """
    text = (directory / f"{name}.json").read_text(encoding="utf-8")
    values = aws.placeholders()
    templates.require_known(text, values, source=f"{name}.json", filler="AwsSettings.placeholders()")
    if aws.redshift_workgroup and not aws.redshift_workgroup.startswith("arn:"):
        raise ConfigError(
            f"FLIGHTS_AWS_REDSHIFT_WORKGROUP={aws.redshift_workgroup!r}: the IAM policy can name a workgroup only by "
            "its ARN (arn:aws:redshift-serverless:<region>:<account>:workgroup/<id>); set the variable to the ARN "
            "that `aws redshift-serverless get-workgroup --workgroup-name NAME --query workgroup.workgroupArn` "
            "prints (the Redshift Data API takes the ARN in place of the name).")
    return templates.render(json.loads(text), values, entries="Statement", marker="Sid")


def main() -> None:
    """Print every rendered policy (``python -m include.targets.aws.iam``) for ``aws iam put-role-policy``."""
    from include.targets.aws.settings import load_aws_settings

    aws = load_aws_settings()
    for name in POLICIES:
        print(f"# {name}\n{json.dumps(render(name, aws), indent=2)}")


if __name__ == "__main__":
    main()
