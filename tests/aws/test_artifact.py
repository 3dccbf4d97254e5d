"""The code artefact uploaded to S3 (moto): content-addressed and idempotent."""

from __future__ import annotations

from include.targets.aws import artifact


def test_upload_is_content_addressed_and_idempotent(aws, buckets):
    a = artifact.build_artifact()
    root = aws.artifacts_root
    first = artifact.upload(a, root, buckets)
    assert first["zip"] == f"s3://{aws.artifacts_bucket}/artifacts/code/{a.sha256}/flights.zip"
    assert int(first["written"]) == len(a.scripts) + 2
    assert artifact.upload(a, root, buckets)["written"] == "0"  # re-upload writes nothing
    key = first["zip"].split("/", 3)[3]
    assert buckets.get_object(Bucket=aws.artifacts_bucket, Key=key)["Body"].read() == a.zip_bytes
    script = a.script_uri(root, "bronze_landing").split("/", 3)[3]
    assert buckets.head_object(Bucket=aws.artifacts_bucket, Key=script)["Metadata"]["source-sha256"] == a.sha256
