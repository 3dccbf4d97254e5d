"""The code artefact on S3: ``include.targets.cloud.artifact`` uploaded to the artifacts bucket.

    python -m include.targets.aws.artifact     # upload this checkout's artefact (idempotent)
"""

from __future__ import annotations

from include.targets.cloud import artifact as _artifact
from include.targets.cloud.artifact import Artifact, ObjectStore, build_artifact, upload_command  # noqa: F401 (re-exported)


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


class S3Store(ObjectStore):
    """``ObjectStore`` over an S3 client."""

    def __init__(self, s3_client):
        self.s3 = s3_client

    def exists(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            return False

    def put(self, uri: str, body: bytes, metadata: dict[str, str]) -> None:
        bucket, key = split_s3(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)


def upload(artifact: Artifact, artifacts_root: str, s3_client) -> dict[str, str]:
    """Upload the artefact under its digest to S3; objects already there are left alone. Returns the URIs."""
    return _artifact.upload(artifact, artifacts_root, S3Store(s3_client))


def main(argv: list[str] | None = None) -> int:
    """Upload this checkout's artefact with the FLIGHTS_AWS_* settings; print its URIs."""
    def upload_now() -> dict[str, str]:
        import boto3

        from include.targets.aws.settings import load_aws_settings

        aws = load_aws_settings()
        return upload(build_artifact(), aws.artifacts_root, boto3.client("s3", **aws.client_kwargs()))

    return upload_command(argv, "Upload the code artefact the AWS target's jobs run (idempotent).", upload_now)


if __name__ == "__main__":
    raise SystemExit(main())
