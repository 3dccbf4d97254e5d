"""Settings of the AWS target, read from ``FLIGHTS_AWS_*`` environment variables.

This module is the only reader of those variables (``include/config.py`` reads the rest).
Every value is validated when the settings are built, so a typo fails at once with a
message naming the variable and the fix, not an hour later inside a cloud job.
``AwsSettings.example()`` gives placeholder settings for the explain plan and the tests.

Retries of AWS calls are configured here and nowhere else: ``AwsSettings.botocore_config`` (retry
mode, attempts, timeouts from ``FLIGHTS_AWS_RETRY_MODE`` / ``FLIGHTS_AWS_MAX_ATTEMPTS``) goes to every
boto3 client the project creates (``client_kwargs``) and to every Amazon provider operator, trigger
and hook the AWS target builds (``botocore_config=`` / ``config=``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace

from include.config import ConfigError
from include.targets.cloud.settings import boolean as _bool, get as _get, integer as _int, pii_key_secret, require
from include.targets.aws.releases import DEFAULT_EMR_RELEASE, runtime

# Accounts hosting the SageMaker XGBoost framework images ("sagemaker-xgboost" repository), from the
# SageMaker Python SDK's image_uri_config/xgboost.json. Other regions: set FLIGHTS_AWS_TRAINING_IMAGE_URI.
XGBOOST_IMAGE_ACCOUNTS = {
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-central-1": "492215442770",
    "ap-northeast-1": "354813040037",
    "ap-southeast-2": "783357654285",
}

SPARK_MODES = ("serverless", "ec2")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ARN = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:[^\s']+$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
RETRY_MODES = ("standard", "adaptive")
MAX_ATTEMPTS_LIMIT = 20  # with standard backoff (at most 20 s a wait), 20 attempts already span minutes
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 10, 60


def botocore_config(retry_mode: str = "standard", max_attempts: int = 8) -> dict:
    """Keyword arguments of ``botocore.config.Config`` for every AWS client of the project.

    A plain dict, not a ``Config``: the provider's operators take it as ``botocore_config`` and hand it
    to their triggers, which serialise it. ``total_max_attempts`` counts the first call (as
    ``AWS_MAX_ATTEMPTS`` does); botocore's ``max_attempts`` key would count retries only.
    """
    return {"retries": {"mode": retry_mode, "total_max_attempts": max_attempts},
            "connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S}


@dataclass(frozen=True)
class AwsSettings:
    region: str
    account_id: str
    lake_bucket: str
    artifacts_bucket: str
    emr_job_role_arn: str
    sagemaker_role_arn: str
    lake_prefix: str = "lake"
    artifacts_prefix: str = "artifacts"
    spark_mode: str = "serverless"
    emr_application_id: str = ""
    emr_release: str = DEFAULT_EMR_RELEASE
    emr_job_timeout_minutes: int = 120
    emr_primary_instance_type: str = "m6i.xlarge"
    emr_core_instance_type: str = "m6i.2xlarge"
    emr_core_instance_count: int = 2
    emr_subnet_id: str = ""
    emr_service_role: str = "EMR_DefaultRole"
    emr_instance_profile: str = "flights-emr-ec2"
    xgboost_framework_version: str = "1.7-1"
    training_image_uri: str = ""
    training_instance_type: str = "ml.g5.xlarge"
    training_instance_count: int = 1
    training_volume_gb: int = 30
    training_max_runtime_s: int = 3600
    training_spot: bool = False
    training_max_wait_s: int = 7200
    model_package_group: str = "flights-delay-xgboost"
    redshift_workgroup: str = ""
    redshift_cluster_id: str = ""
    redshift_database: str = "dev"
    redshift_db_user: str = ""
    redshift_secret_arn: str = ""
    redshift_copy_role_arn: str = ""
    endpoint_url: str = ""
    delta_log_table: str = ""
    pii_key_secret_arn: str = ""  # Secrets Manager secret the ingest job reads the PII key from
    deferrable: bool = True
    poll_s: int = 30
    retry_mode: str = "standard"
    max_attempts: int = 8
    tags: dict = field(default_factory=lambda: {"project": "flights-lakehouse"})

    # --- derived locations ---------------------------------------------------------------
    @property
    def lake_root(self) -> str:
        return f"s3://{self.lake_bucket}/{self.lake_prefix.strip('/')}"

    @property
    def landing_root(self) -> str:
        return f"s3://{self.lake_bucket}/landing"

    @property
    def artifacts_root(self) -> str:
        return f"s3://{self.artifacts_bucket}/{self.artifacts_prefix.strip('/')}"

    @property
    def emr_logs_uri(self) -> str:
        return f"{self.artifacts_root}/logs/emr/"

    @property
    def training_output_uri(self) -> str:
        return f"{self.artifacts_root}/training/"

    @property
    def checkpoint_uri(self) -> str:
        return f"{self.artifacts_root}/checkpoints/"

    @property
    def training_image(self) -> str:
        """The XGBoost framework image of this region (or the one set explicitly)."""
        if self.training_image_uri:
            return self.training_image_uri
        account = XGBOOST_IMAGE_ACCOUNTS.get(self.region)
        if account is None:
            raise ConfigError(
                f"No SageMaker XGBoost image account is known for region {self.region}; set "
                "FLIGHTS_AWS_TRAINING_IMAGE_URI (sagemaker.image_uris.retrieve('xgboost', region, version) prints it)."
            )
        suffix = "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"
        return f"{account}.dkr.ecr.{self.region}.{suffix}/sagemaker-xgboost:{self.xgboost_framework_version}"

    @property
    def warehouse_kwargs(self) -> dict:
        """Connection arguments of the Redshift Data API (serverless workgroup or provisioned cluster)."""
        out = {"database": self.redshift_database}
        if self.redshift_workgroup:
            out["workgroup_name"] = self.redshift_workgroup
        else:
            out["cluster_identifier"] = self.redshift_cluster_id
            if self.redshift_db_user:
                out["db_user"] = self.redshift_db_user
        if self.redshift_secret_arn:
            out["secret_arn"] = self.redshift_secret_arn
        return out

    def placeholders(self) -> dict[str, str]:
        """Values substituted into the IAM policy templates under infra/aws/iam/.

        An identifier that is not configured, or a grant the Spark mode does not use, is the empty
        string, never ``*``: the ``IfSet`` statements using it are then left out of the policy.
        """
        ec2 = self.spark_mode == "ec2"
        serverless = self.spark_mode == "serverless" and bool(self.emr_application_id)
        workgroup = self.redshift_workgroup if self.redshift_workgroup.startswith("arn:") else ""
        return {
            "REGION": self.region, "ACCOUNT_ID": self.account_id, "LAKE_BUCKET": self.lake_bucket,
            "LAKE_PREFIX": self.lake_prefix.strip("/"), "ARTIFACTS_PREFIX": self.artifacts_prefix.strip("/"),
            "ARTIFACTS_BUCKET": self.artifacts_bucket,
            "EMR_APPLICATION_ID": self.emr_application_id if serverless else "",
            "EMR_JOB_ROLE_ARN": self.emr_job_role_arn, "SAGEMAKER_ROLE_ARN": self.sagemaker_role_arn,
            "EMR_SERVERLESS_JOB_ROLE_ARN": self.emr_job_role_arn if serverless else "",
            "EMR_EC2_REGION": self.region if ec2 else "",
            "EMR_SERVICE_ROLE_ARN": self._role_arn(self.emr_service_role) if ec2 else "",
            # EMR needs the instance profile and its role to share one name.
            "EMR_INSTANCE_ROLE_ARN": self._role_arn(self.emr_instance_profile) if ec2 else "",
            "MODEL_PACKAGE_GROUP": self.model_package_group,
            "REDSHIFT_WORKGROUP": self.redshift_workgroup,
            "REDSHIFT_WORKGROUP_ARN": workgroup,
            "REDSHIFT_CLUSTER_ID": self.redshift_cluster_id,
            "WAREHOUSE_REGION": self.region if (self.redshift_workgroup or self.redshift_cluster_id) else "",
            "REDSHIFT_COPY_ROLE_ARN": self.redshift_copy_role_arn or self.emr_job_role_arn,
            "TRAINING_IMAGE_REPOSITORY_ARN": self._training_repository_arn(),
            "DELTA_LOG_TABLE": self.delta_log_table,
            "PII_KEY_SECRET_ARN": self.pii_key_secret_arn,
        }

    def _role_arn(self, name_or_arn: str) -> str:
        name = name_or_arn.split(":instance-profile/")[-1].split("/")[-1]
        return name_or_arn if ":role/" in name_or_arn else f"arn:aws:iam::{self.account_id}:role/{name}"

    def _training_repository_arn(self) -> str:
        """The ECR repository of the training image (``""`` when it is not an ECR image or none is known)."""
        try:
            image = self.training_image
        except ConfigError:
            return ""
        m = re.fullmatch(r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)(?:[:@].*)?", image)
        if not m:
            return ""
        partition = "aws-cn" if m.group(2).startswith("cn-") else "aws"
        return f"arn:{partition}:ecr:{m.group(2)}:{m.group(1)}:repository/{m.group(3)}"

    @property
    def botocore_config(self) -> dict:
        """The retry mode, attempts and timeouts of every AWS call (a new dict each time; see ``botocore_config``)."""
        return botocore_config(self.retry_mode, self.max_attempts)

    def client_kwargs(self) -> dict:
        """Keyword arguments for ``boto3.client``: region, retries and timeouts, and an emulator endpoint when set."""
        from botocore.config import Config

        kw = {"region_name": self.region, "config": Config(**self.botocore_config)}
        if self.endpoint_url:
            kw["endpoint_url"] = self.endpoint_url
        return kw

    @classmethod
    def example(cls, **overrides) -> "AwsSettings":
        """Placeholder settings (account 123456789012) for the explain plan and tests."""
        base = cls(
            region="us-east-1", account_id="123456789012", lake_bucket="flights-lake-example",
            artifacts_bucket="flights-artifacts-example",
            emr_job_role_arn="arn:aws:iam::123456789012:role/flights-emr-job",
            sagemaker_role_arn="arn:aws:iam::123456789012:role/flights-sagemaker-execution",
            emr_application_id="00example0app0id", redshift_workgroup="flights",
            redshift_copy_role_arn="arn:aws:iam::123456789012:role/flights-redshift-copy",
        )
        return replace(base, **overrides)


def retry_settings(env=None) -> tuple[str, int]:
    """``FLIGHTS_AWS_RETRY_MODE`` and ``FLIGHTS_AWS_MAX_ATTEMPTS``, validated (default: standard, 8 attempts).

    Read apart from the other settings too, for AWS clients that work without them (the ``sns``
    alert channel, which any target may use).
    """
    env = os.environ if env is None else env
    mode = _get(env, "FLIGHTS_AWS_RETRY_MODE", "standard").lower()
    if mode not in RETRY_MODES:
        raise ConfigError(f"FLIGHTS_AWS_RETRY_MODE={mode!r} is not a retry mode; use standard (exponential backoff) "
                          "or adaptive (also slows this client down while AWS throttles it).")
    attempts = _int(env, "FLIGHTS_AWS_MAX_ATTEMPTS", 8, 1)
    if attempts > MAX_ATTEMPTS_LIMIT:
        raise ConfigError(f"FLIGHTS_AWS_MAX_ATTEMPTS={attempts} is above {MAX_ATTEMPTS_LIMIT}; it counts every call "
                          "of one request (1 = no retry), and more attempts only hide an outage for longer.")
    return mode, attempts


def load_aws_settings(env=None) -> AwsSettings:
    """Build and validate the AWS settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    require(env, ("FLIGHTS_AWS_REGION", "FLIGHTS_AWS_ACCOUNT_ID", "FLIGHTS_AWS_LAKE_BUCKET",
                  "FLIGHTS_AWS_EMR_JOB_ROLE_ARN", "FLIGHTS_AWS_SAGEMAKER_ROLE_ARN"), "aws", "docs/running-on-aws.md")
    region = _get(env, "FLIGHTS_AWS_REGION")
    if not _REGION.match(region):
        raise ConfigError(f"FLIGHTS_AWS_REGION={region!r} is not a region name; use e.g. us-east-1.")
    account = _get(env, "FLIGHTS_AWS_ACCOUNT_ID")
    if not re.fullmatch(r"\d{12}", account):
        raise ConfigError(f"FLIGHTS_AWS_ACCOUNT_ID={account!r} must be the 12-digit account number.")
    lake = _get(env, "FLIGHTS_AWS_LAKE_BUCKET")
    artifacts = _get(env, "FLIGHTS_AWS_ARTIFACTS_BUCKET", lake)
    for name, bucket in (("FLIGHTS_AWS_LAKE_BUCKET", lake), ("FLIGHTS_AWS_ARTIFACTS_BUCKET", artifacts)):
        if not _BUCKET.match(bucket):
            raise ConfigError(f"{name}={bucket!r} is not an S3 bucket name (no s3:// prefix, lower case, 3-63 chars).")
    arns = {n: _get(env, n) for n in ("FLIGHTS_AWS_EMR_JOB_ROLE_ARN", "FLIGHTS_AWS_SAGEMAKER_ROLE_ARN",
                                      "FLIGHTS_AWS_REDSHIFT_SECRET_ARN", "FLIGHTS_AWS_REDSHIFT_COPY_ROLE_ARN")}
    for name, arn in arns.items():
        if arn and not _ARN.match(arn):
            raise ConfigError(f"{name}={arn!r} is not an ARN; use the full arn:aws:... form.")
    mode = _get(env, "FLIGHTS_AWS_SPARK_MODE", "serverless").lower()
    if mode not in SPARK_MODES:
        raise ConfigError(f"FLIGHTS_AWS_SPARK_MODE={mode!r} is not supported; use {' or '.join(SPARK_MODES)}.")
    app_id = _get(env, "FLIGHTS_AWS_EMR_APPLICATION_ID")
    if mode == "serverless" and not app_id:
        raise ConfigError("FLIGHTS_AWS_SPARK_MODE=serverless needs FLIGHTS_AWS_EMR_APPLICATION_ID (the id printed by "
                          "`aws emr-serverless create-application`), or set FLIGHTS_AWS_SPARK_MODE=ec2.")
    release = _get(env, "FLIGHTS_AWS_EMR_RELEASE", DEFAULT_EMR_RELEASE)
    try:
        runtime(release)
    except ValueError as exc:
        raise ConfigError(f"FLIGHTS_AWS_EMR_RELEASE: {exc}") from None
    workgroup, cluster = _get(env, "FLIGHTS_AWS_REDSHIFT_WORKGROUP"), _get(env, "FLIGHTS_AWS_REDSHIFT_CLUSTER_ID")
    if workgroup and cluster:
        raise ConfigError("Set FLIGHTS_AWS_REDSHIFT_WORKGROUP (Redshift Serverless) or FLIGHTS_AWS_REDSHIFT_CLUSTER_ID "
                          "(provisioned), not both.")
    spot = _bool(env, "FLIGHTS_AWS_TRAINING_SPOT", False)
    max_runtime = _int(env, "FLIGHTS_AWS_TRAINING_MAX_RUNTIME_S", 3600, 60)
    max_wait = _int(env, "FLIGHTS_AWS_TRAINING_MAX_WAIT_S", 2 * max_runtime, 60)
    if spot and max_wait < max_runtime:
        raise ConfigError(f"FLIGHTS_AWS_TRAINING_MAX_WAIT_S={max_wait} must be ≥ FLIGHTS_AWS_TRAINING_MAX_RUNTIME_S="
                          f"{max_runtime} for managed spot training (SageMaker rejects it otherwise).")
    instance_type = _get(env, "FLIGHTS_AWS_TRAINING_INSTANCE_TYPE", "ml.g5.xlarge")
    if not instance_type.startswith("ml."):
        raise ConfigError(f"FLIGHTS_AWS_TRAINING_INSTANCE_TYPE={instance_type!r} must be a SageMaker type (ml.*).")
    retry_mode, max_attempts = retry_settings(env)
    log_table = _get(env, "FLIGHTS_AWS_DELTA_LOG_TABLE")
    if log_table and not re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", log_table):
        raise ConfigError(f"FLIGHTS_AWS_DELTA_LOG_TABLE={log_table!r} is not a DynamoDB table name (3-255 of "
                          "letters, digits, _ . -).")
    return AwsSettings(
        region=region, account_id=account, lake_bucket=lake, artifacts_bucket=artifacts,
        emr_job_role_arn=arns["FLIGHTS_AWS_EMR_JOB_ROLE_ARN"],
        sagemaker_role_arn=arns["FLIGHTS_AWS_SAGEMAKER_ROLE_ARN"],
        lake_prefix=_get(env, "FLIGHTS_AWS_LAKE_PREFIX", "lake"),
        artifacts_prefix=_get(env, "FLIGHTS_AWS_ARTIFACTS_PREFIX", "artifacts"),
        spark_mode=mode, emr_application_id=app_id, emr_release=release,
        emr_job_timeout_minutes=_int(env, "FLIGHTS_AWS_EMR_JOB_TIMEOUT_MIN", 120, 5),
        emr_primary_instance_type=_get(env, "FLIGHTS_AWS_EMR_PRIMARY_INSTANCE_TYPE", "m6i.xlarge"),
        emr_core_instance_type=_get(env, "FLIGHTS_AWS_EMR_CORE_INSTANCE_TYPE", "m6i.2xlarge"),
        emr_core_instance_count=_int(env, "FLIGHTS_AWS_EMR_CORE_INSTANCE_COUNT", 2),
        emr_subnet_id=_get(env, "FLIGHTS_AWS_EMR_SUBNET_ID"),
        emr_service_role=_get(env, "FLIGHTS_AWS_EMR_SERVICE_ROLE", "EMR_DefaultRole"),
        emr_instance_profile=_get(env, "FLIGHTS_AWS_EMR_INSTANCE_PROFILE", "flights-emr-ec2"),
        xgboost_framework_version=_get(env, "FLIGHTS_AWS_XGBOOST_FRAMEWORK_VERSION", "1.7-1"),
        training_image_uri=_get(env, "FLIGHTS_AWS_TRAINING_IMAGE_URI"),
        training_instance_type=instance_type,
        training_instance_count=_int(env, "FLIGHTS_AWS_TRAINING_INSTANCE_COUNT", 1),
        training_volume_gb=_int(env, "FLIGHTS_AWS_TRAINING_VOLUME_GB", 30),
        training_max_runtime_s=max_runtime, training_spot=spot, training_max_wait_s=max_wait,
        model_package_group=_get(env, "FLIGHTS_AWS_MODEL_PACKAGE_GROUP", "flights-delay-xgboost"),
        redshift_workgroup=workgroup, redshift_cluster_id=cluster,
        redshift_database=_get(env, "FLIGHTS_AWS_REDSHIFT_DATABASE", "dev"),
        redshift_db_user=_get(env, "FLIGHTS_AWS_REDSHIFT_DB_USER"),
        redshift_secret_arn=arns["FLIGHTS_AWS_REDSHIFT_SECRET_ARN"],
        redshift_copy_role_arn=arns["FLIGHTS_AWS_REDSHIFT_COPY_ROLE_ARN"],
        endpoint_url=_get(env, "FLIGHTS_AWS_ENDPOINT_URL"), delta_log_table=log_table,
        pii_key_secret_arn=pii_key_secret(env, "FLIGHTS_AWS_PII_KEY_SECRET_ARN", "include.targets.aws.pii_key",
                                          "a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:"
                                          "secret:<name>-<suffix>)"),
        deferrable=_bool(env, "FLIGHTS_AWS_DEFERRABLE", True),
        poll_s=_int(env, "FLIGHTS_AWS_POLL_S", 30), retry_mode=retry_mode, max_attempts=max_attempts,
    )
