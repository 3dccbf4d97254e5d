"""The code artefact uploaded to S3 (moto): content-addressed and idempotent."""

from __future__ import annotations

from include.targets.aws import artifact
from include.targets.cloud import artifact as _artifact


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


def test_the_upload_command_prints_the_uris_and_a_second_run_writes_nothing(aws, buckets, monkeypatch, capsys):
    from include.targets.aws import settings

    monkeypatch.setattr(settings, "load_aws_settings", lambda: aws)  # the FLIGHTS_AWS_* settings of this emulator
    assert artifact.main([]) == 0
    first = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert first["zip"] == _artifact.code_uris(artifact.build_artifact(), aws.artifacts_root)["zip"]
    assert artifact.main([]) == 0
    again = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert again["written"] == "0" and again["zip"] == first["zip"]
