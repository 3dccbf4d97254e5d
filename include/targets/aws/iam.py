"""The least-privilege IAM policies of the AWS target, rendered from settings.

The templates live in ``infra/aws/iam/*.json`` with ``${NAME}`` placeholders (bucket
names, account, region, role ARNs); ``render`` fills them from ``AwsSettings`` so the
policies attached in an account are exactly the ones the tests check.
"""

from __future__ import annotations

import json
from pathlib import Path

from include.config import REPO_ROOT
from include.targets.aws.settings import AwsSettings
from include.targets.cloud import templates

POLICY_DIR = REPO_ROOT / "infra" / "aws" / "iam"
POLICIES = ("airflow-role", "emr-job-role", "sagemaker-execution-role", "redshift-copy-role")


def render(name: str, aws: AwsSettings, directory: Path = POLICY_DIR) -> dict:
    """The policy ``name`` with every placeholder replaced; a KeyError names any unknown one.

    A statement whose ``Sid`` starts with ``IfSet`` is kept only when every placeholder it
    uses has a value (e.g. the DynamoDB log table, granted only when one is configured).
    The rules are the ones both clouds share (``include.targets.cloud.templates``).
    """
    text = (directory / f"{name}.json").read_text(encoding="utf-8")
    values = aws.placeholders()
    templates.require_known(text, values, source=f"{name}.json", filler="AwsSettings.placeholders()")
    return templates.render(json.loads(text), values, entries="Statement", marker="Sid")


def main() -> None:
    """Print every rendered policy (``python -m include.targets.aws.iam``) for ``aws iam put-role-policy``."""
    from include.targets.aws.settings import load_aws_settings

    aws = load_aws_settings()
    for name in POLICIES:
        print(f"# {name}\n{json.dumps(render(name, aws), indent=2)}")


if __name__ == "__main__":
    main()
