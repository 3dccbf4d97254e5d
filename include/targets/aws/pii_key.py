"""Reading a secret from AWS Secrets Manager inside a Spark job on EMR (the PII key).

The job reads it with its own role (the EMR job role, or the instance profile's role in EC2
mode), which ``infra/aws/iam`` grants ``secretsmanager:GetSecretValue`` on that one secret
when ``FLIGHTS_AWS_PII_KEY_SECRET_ARN`` is set. boto3 is part of every EMR release; the
region comes from the ARN, retries use the SDK's standard mode (throttling and 5xx).
"""

from __future__ import annotations


def read_secret(arn: str) -> bytes:
    """The value of the secret ``arn``: its ``SecretString`` as UTF-8, or its ``SecretBinary``."""
    import boto3
    from botocore.config import Config

    region = arn.split(":")[3]
    client = boto3.client("secretsmanager", region_name=region,
                          config=Config(retries={"mode": "standard", "max_attempts": 5}))
    answer = client.get_secret_value(SecretId=arn)
    if answer.get("SecretString") is not None:
        return answer["SecretString"].encode("utf-8")
    return bytes(answer["SecretBinary"])
