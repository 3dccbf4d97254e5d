"""Settings of the GCP target, read from ``FLIGHTS_GCP_*`` environment variables.

This module is the only reader of those variables (``include/config.py`` reads the rest).
Every value is validated when the settings are built, so a typo fails at once with a
message naming the variable and the fix. ``GcpSettings.example()`` gives placeholder
settings for the explain plan and the tests.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace

from include.config import ConfigError
from include.targets.cloud.settings import boolean, get, integer, pii_key_secret, require

SPARK_MODES = ("serverless", "cluster")
DEFAULT_DATAPROC_RUNTIME = "3.0"  # Spark 4.0 + Delta 4.0: the pair the jobs are verified on (runtimes.py)
DOC = "docs/running-on-gcp.md"

_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+\d$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_DATASET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9-]+\.iam\.gserviceaccount\.com$")
_TOPIC = re.compile(r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/topics/[A-Za-z][A-Za-z0-9._~%+-]{2,254}$")


@dataclass(frozen=True)
class GcpSettings:
    project: str
    region: str
    lake_bucket: str
    artifacts_bucket: str
    dataproc_service_account: str
    vertex_service_account: str
    lake_prefix: str = "lake"
    artifacts_prefix: str = "artifacts"
    spark_mode: str = "serverless"
    dataproc_runtime: str = DEFAULT_DATAPROC_RUNTIME
    dataproc_subnet: str = ""
    dataproc_job_timeout_minutes: int = 120
    dataproc_master_machine_type: str = "n2-standard-4"
    dataproc_worker_machine_type: str = "n2-standard-4"
    dataproc_worker_count: int = 2
    training_machine_type: str = "g2-standard-8"
    training_accelerator_type: str = "NVIDIA_L4"
    training_accelerator_count: int = 1
    training_image_uri: str = ""
    training_max_runtime_s: int = 3600
    training_spot: bool = False
    model_display_name: str = "flights-delay-xgboost"
    bigquery_project: str = ""
    bigquery_dataset: str = "flights"
    bigquery_location: str = ""
    pubsub_topic: str = ""
    pii_key_secret: str = ""  # Secret Manager version the ingest job reads the PII key from
    deferrable: bool = True
    poll_s: int = 30
    labels: dict = field(default_factory=lambda: {"project": "flights-lakehouse"})

    # --- derived locations ---------------------------------------------------------------
    @property
    def lake_root(self) -> str:
        return f"gs://{self.lake_bucket}/{self.lake_prefix.strip('/')}"

    @property
    def landing_root(self) -> str:
        return f"gs://{self.lake_bucket}/landing"

    @property
    def artifacts_root(self) -> str:
        return f"gs://{self.artifacts_bucket}/{self.artifacts_prefix.strip('/')}"

    @property
    def dataproc_staging_uri(self) -> str:
        return f"{self.artifacts_root}/dataproc/"

    @property
    def training_output_uri(self) -> str:
        return f"{self.artifacts_root}/training/"

    @property
    def warehouse_project(self) -> str:
        return self.bigquery_project or self.project

    @property
    def warehouse_location(self) -> str:
        """BigQuery location of the dataset: the region unless set (``US``/``EU`` multi-regions work too)."""
        return self.bigquery_location or self.region

    @property
    def training_image(self) -> str:
        """Vertex AI's prebuilt XGBoost training container, or the one set explicitly."""
        if self.training_image_uri:
            return self.training_image_uri
        host = {"us": "us-docker.pkg.dev", "eu": "europe-docker.pkg.dev",
                "as": "asia-docker.pkg.dev"}.get(self.region.split("-")[0][:2], "us-docker.pkg.dev")
        return f"{host}/vertex-ai/training/xgboost-gpu.2-1:latest"

    def placeholders(self) -> dict[str, str]:
        """Values substituted into the role templates under infra/gcp/."""
        return {
            "PROJECT": self.project, "REGION": self.region, "LAKE_BUCKET": self.lake_bucket,
            "ARTIFACTS_BUCKET": self.artifacts_bucket, "DATAPROC_SA": self.dataproc_service_account,
            "VERTEX_SA": self.vertex_service_account, "BQ_PROJECT": self.warehouse_project,
            "BQ_DATASET": self.bigquery_dataset, "PUBSUB_TOPIC": self.pubsub_topic,
            "PII_KEY_SECRET": self.pii_key_secret.split("/versions/")[0],  # a grant is on the secret, every version
        }

    @classmethod
    def example(cls, **overrides) -> "GcpSettings":
        """Placeholder settings (project flights-example) for the explain plan and tests."""
        base = cls(
            project="flights-example", region="us-central1", lake_bucket="flights-lake-example",
            artifacts_bucket="flights-artifacts-example",
            dataproc_service_account="flights-dataproc@flights-example.iam.gserviceaccount.com",
            vertex_service_account="flights-vertex@flights-example.iam.gserviceaccount.com",
        )
        return replace(base, **overrides)


def load_gcp_settings(env=None) -> GcpSettings:
    """Build and validate the GCP settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    require(env, ("FLIGHTS_GCP_PROJECT", "FLIGHTS_GCP_REGION", "FLIGHTS_GCP_LAKE_BUCKET",
                  "FLIGHTS_GCP_DATAPROC_SERVICE_ACCOUNT", "FLIGHTS_GCP_VERTEX_SERVICE_ACCOUNT"), "gcp", DOC)
    project, region = get(env, "FLIGHTS_GCP_PROJECT"), get(env, "FLIGHTS_GCP_REGION")
    if not _PROJECT.match(project):
        raise ConfigError(f"FLIGHTS_GCP_PROJECT={project!r} is not a project id (6-30 of a-z, 0-9, -).")
    if not _REGION.match(region):
        raise ConfigError(f"FLIGHTS_GCP_REGION={region!r} is not a region name; use e.g. us-central1.")
    lake = get(env, "FLIGHTS_GCP_LAKE_BUCKET")
    artifacts = get(env, "FLIGHTS_GCP_ARTIFACTS_BUCKET", lake)
    for name, bucket in (("FLIGHTS_GCP_LAKE_BUCKET", lake), ("FLIGHTS_GCP_ARTIFACTS_BUCKET", artifacts)):
        if not _BUCKET.match(bucket):
            raise ConfigError(f"{name}={bucket!r} is not a bucket name (no gs:// prefix, lower case, 3-63 chars).")
    accounts = {n: get(env, n) for n in ("FLIGHTS_GCP_DATAPROC_SERVICE_ACCOUNT", "FLIGHTS_GCP_VERTEX_SERVICE_ACCOUNT")}
    for name, sa in accounts.items():
        if not _SERVICE_ACCOUNT.match(sa):
            raise ConfigError(f"{name}={sa!r} is not a service account e-mail (name@project.iam.gserviceaccount.com).")
    mode = get(env, "FLIGHTS_GCP_SPARK_MODE", "serverless").lower()
    if mode not in SPARK_MODES:
        raise ConfigError(f"FLIGHTS_GCP_SPARK_MODE={mode!r} is not supported; use {' or '.join(SPARK_MODES)}.")
    runtime_version = get(env, "FLIGHTS_GCP_DATAPROC_RUNTIME", DEFAULT_DATAPROC_RUNTIME)
    from include.targets.gcp.runtimes import runtime

    try:
        runtime(runtime_version)
    except ValueError as exc:
        raise ConfigError(f"FLIGHTS_GCP_DATAPROC_RUNTIME: {exc}") from None
    dataset = get(env, "FLIGHTS_GCP_BIGQUERY_DATASET", "flights")
    if not _DATASET.match(dataset):
        raise ConfigError(f"FLIGHTS_GCP_BIGQUERY_DATASET={dataset!r} is not a dataset name (letters, digits, _).")
    topic = get(env, "FLIGHTS_GCP_PUBSUB_TOPIC")
    if topic and not _TOPIC.match(topic):
        raise ConfigError(f"FLIGHTS_GCP_PUBSUB_TOPIC={topic!r} must be the full name projects/<project>/topics/<t>.")
    return GcpSettings(
        project=project, region=region, lake_bucket=lake, artifacts_bucket=artifacts,
        dataproc_service_account=accounts["FLIGHTS_GCP_DATAPROC_SERVICE_ACCOUNT"],
        vertex_service_account=accounts["FLIGHTS_GCP_VERTEX_SERVICE_ACCOUNT"],
        lake_prefix=get(env, "FLIGHTS_GCP_LAKE_PREFIX", "lake"),
        artifacts_prefix=get(env, "FLIGHTS_GCP_ARTIFACTS_PREFIX", "artifacts"),
        spark_mode=mode, dataproc_runtime=runtime_version,
        dataproc_subnet=get(env, "FLIGHTS_GCP_DATAPROC_SUBNET"),
        dataproc_job_timeout_minutes=integer(env, "FLIGHTS_GCP_DATAPROC_JOB_TIMEOUT_MIN", 120, 5),
        dataproc_master_machine_type=get(env, "FLIGHTS_GCP_DATAPROC_MASTER_MACHINE_TYPE", "n2-standard-4"),
        dataproc_worker_machine_type=get(env, "FLIGHTS_GCP_DATAPROC_WORKER_MACHINE_TYPE", "n2-standard-4"),
        dataproc_worker_count=integer(env, "FLIGHTS_GCP_DATAPROC_WORKER_COUNT", 2, 2),
        training_machine_type=get(env, "FLIGHTS_GCP_TRAINING_MACHINE_TYPE", "g2-standard-8"),
        training_accelerator_type=get(env, "FLIGHTS_GCP_TRAINING_ACCELERATOR_TYPE", "NVIDIA_L4"),
        training_accelerator_count=integer(env, "FLIGHTS_GCP_TRAINING_ACCELERATOR_COUNT", 1, 0),
        training_image_uri=get(env, "FLIGHTS_GCP_TRAINING_IMAGE_URI"),
        training_max_runtime_s=integer(env, "FLIGHTS_GCP_TRAINING_MAX_RUNTIME_S", 3600, 60),
        training_spot=boolean(env, "FLIGHTS_GCP_TRAINING_SPOT", False),
        model_display_name=get(env, "FLIGHTS_GCP_MODEL_DISPLAY_NAME", "flights-delay-xgboost"),
        pii_key_secret=pii_key_secret(env, "FLIGHTS_GCP_PII_KEY_SECRET", "include.targets.gcp.pii_key",
                                      "a Secret Manager version (projects/<project>/secrets/<secret>/versions/"
                                      "<n|latest>)"),
        bigquery_project=get(env, "FLIGHTS_GCP_BIGQUERY_PROJECT"),
        bigquery_dataset=dataset,
        bigquery_location=get(env, "FLIGHTS_GCP_BIGQUERY_LOCATION"),
        pubsub_topic=topic,
        deferrable=boolean(env, "FLIGHTS_GCP_DEFERRABLE", True),
        poll_s=integer(env, "FLIGHTS_GCP_POLL_S", 30),
    )
