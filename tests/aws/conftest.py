"""A moto server on loopback for the AWS tests, with fake credentials set only here.

The server is moto's real HTTP server (``ThreadedMotoServer``): boto3 and the Amazon
provider's hooks talk to it over HTTP through ``endpoint_url``, exactly as to AWS.
"""

from __future__ import annotations

import json
import socket

import pytest

from include.targets.aws.settings import AwsSettings

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    mp = pytest.MonkeyPatch()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                       "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        mp.setenv(key, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # The provider's hooks read aws_default; point it at the emulator.
    mp.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(
        {"conn_type": "aws", "extra": {"endpoint_url": url, "region_name": REGION}}))
    try:
        yield url
    finally:
        server.stop()
        mp.undo()


@pytest.fixture()
def boto(moto_endpoint):
    import boto3

    def client(service: str):
        return boto3.client(service, region_name=REGION, endpoint_url=moto_endpoint)

    return client


@pytest.fixture()
def aws(moto_endpoint) -> AwsSettings:
    return AwsSettings.example(endpoint_url=moto_endpoint, account_id=ACCOUNT)


@pytest.fixture()
def buckets(aws, boto):
    """The lake and artifacts buckets of ``aws``, created once on the server."""
    s3 = boto("s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (aws.lake_bucket, aws.artifacts_bucket):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    return s3


def jobs_run_for_one_poll(mp: pytest.MonkeyPatch) -> None:
    """Make moto's SageMaker training jobs and Redshift Data statements run until their second describe.

    moto completes a training job at once (an operator returns before deferring) and keeps a Data
    API statement STARTED forever (a trigger never returns). With this, each is running when the
    operator checks it after submitting, and done at the trigger's first poll, as a short real job
    would be. Only moto's stored state changes: boto3, aiobotocore and the triggers are the real ones.
    """
    from moto.redshiftdata.models import RedshiftDataAPIServiceBackend
    from moto.sagemaker.models import SageMakerModelBackend

    describe_job, describe_statement = (SageMakerModelBackend.describe_training_job,
                                        RedshiftDataAPIServiceBackend.describe_statement)
    described: set[str] = set()

    def training_job(self, training_job_name):
        desc = describe_job(self, training_job_name)
        if training_job_name in described:
            return desc
        described.add(training_job_name)
        return {**desc, "TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"}

    def statement(self, statement_id):
        found = describe_statement(self, statement_id)
        if found.status == "STARTED" and statement_id in described:
            found.status = "FINISHED"
        described.add(statement_id)
        return found

    mp.setattr(SageMakerModelBackend, "describe_training_job", training_job)
    mp.setattr(RedshiftDataAPIServiceBackend, "describe_statement", statement)
