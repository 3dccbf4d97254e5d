"""The least-privilege IAM policies of the AWS target, rendered from settings.

The templates live in ``infra/aws/iam/*.json`` with ``${NAME}`` placeholders (bucket
names, account, region, role ARNs); ``render`` fills them from ``AwsSettings`` so the
policies attached in an account are exactly the ones the tests check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from include.config import REPO_ROOT
from include.targets.aws.settings import AwsSettings

POLICY_DIR = REPO_ROOT / "infra" / "aws" / "iam"
POLICIES = ("airflow-role", "emr-job-role", "sagemaker-execution-role", "redshift-copy-role")
_PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


def render(name: str, aws: AwsSettings, directory: Path = POLICY_DIR) -> dict:
    """The policy ``name`` with every placeholder replaced; a KeyError names any unknown one.

    A statement whose ``Sid`` starts with ``IfSet`` is kept only when every placeholder it
    uses has a value (e.g. the DynamoDB log table, granted only when one is configured).
    """
    text = (directory / f"{name}.json").read_text(encoding="utf-8")
    values = aws.placeholders()
    unknown = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if unknown:
        raise KeyError(f"{name}.json uses placeholder(s) {unknown} that AwsSettings.placeholders() does not fill.")
    doc = json.loads(text)
    kept = []
    for statement in doc["Statement"]:
        raw = json.dumps(statement)
        if statement.get("Sid", "").startswith("IfSet") and not all(values[n] for n in _PLACEHOLDER.findall(raw)):
            continue
        kept.append(json.loads(_PLACEHOLDER.sub(lambda m: values[m.group(1)], raw)))
    return {**doc, "Statement": kept}


def main() -> None:
    """Print every rendered policy (``python -m include.targets.aws.iam``) for ``aws iam put-role-policy``."""
    from include.targets.aws.settings import load_aws_settings

    aws = load_aws_settings()
    for name in POLICIES:
        print(f"# {name}\n{json.dumps(render(name, aws), indent=2)}")


if __name__ == "__main__":
    main()
