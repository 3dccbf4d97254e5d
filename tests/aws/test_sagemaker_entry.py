"""The SageMaker training entry point, run here the way the framework container runs it.

What SageMaker does for a script-mode job, done by hand from the rendered ``CreateTrainingJob``
request: unpack ``sourcedir.tar.gz`` (the real code artefact) into a code folder, copy the
channel's S3 prefix (from the moto server) into ``input/data/<channel>/``, pass the
hyperparameters as ``--name value`` arguments and the folders as ``SM_*`` variables, run
``sagemaker_program`` with Python, and pack ``SM_MODEL_DIR`` as ``model.tar.gz`` under the
output path. Then ``SageMakerTrainer.collect`` reads it back, as ``register_model`` does.
The container's own image and its pip install of the pinned requirements are not emulated.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from include.targets.aws import SageMakerTrainer
from include.targets.aws.artifact import build_artifact, upload
from include.targets.aws.sagemaker import training_config
from tests.include.test_training import _fixture


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


@pytest.fixture()
def exported(aws, buckets):
    """A training set laid out as export_training_set writes it: <dataset>/data/part-*.parquet + manifest."""
    dataset = f"{aws.lake_root}/exports/training/20130101_20130228/manual__entry"
    frame = _fixture(n=2000, seed=3)
    for i, part in enumerate((frame.iloc[:1000], frame.iloc[1000:])):
        buf = io.BytesIO()
        part.to_parquet(buf, index=False)
        buckets.put_object(Bucket=aws.lake_bucket, Key=_split(f"{dataset}/data/part-{i}.parquet")[1],
                           Body=buf.getvalue())
    buckets.put_object(Bucket=aws.lake_bucket, Key=_split(f"{dataset}/manifest.json")[1], Body=b"{}")
    return dataset


def test_the_entry_point_trains_from_the_channel_layout_and_collect_reads_its_model(aws, buckets, exported,
                                                                                    tmp_path):
    code = upload(build_artifact(), aws.artifacts_root, buckets)
    job = "export-entry-test-t1"
    request = training_config(aws, job_name=job, dataset_uri=exported, sourcedir_uri=code["sourcedir"],
                              params={"n_estimators": 30, "max_depth": 3, "learning_rate": 0.2, "device": "cpu"})
    hyper = request["HyperParameters"]

    # 1. The code: sagemaker_submit_directory, unpacked.
    code_dir = tmp_path / "opt/ml/code"
    code_dir.mkdir(parents=True)
    bucket, key = _split(json.loads(hyper["sagemaker_submit_directory"]))
    body = buckets.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tf:
        tf.extractall(code_dir, filter="data")
    program = json.loads(hyper["sagemaker_program"])
    assert (code_dir / program).is_file() and (code_dir / "requirements.txt").is_file()

    # 2. The data: each channel's S3 prefix copied into input/data/<channel>/ (File mode).
    [channel] = request["InputDataConfig"]
    prefix_bucket, prefix = _split(channel["DataSource"]["S3DataSource"]["S3Uri"])
    channel_dir = tmp_path / "opt/ml/input/data" / channel["ChannelName"]
    channel_dir.mkdir(parents=True)
    listed = buckets.list_objects_v2(Bucket=prefix_bucket, Prefix=prefix)["Contents"]
    for obj in listed:
        target = channel_dir / obj["Key"][len(prefix):]
        target.write_bytes(buckets.get_object(Bucket=prefix_bucket, Key=obj["Key"])["Body"].read())
    assert sorted(p.name for p in channel_dir.iterdir()) == ["part-0.parquet", "part-1.parquet"]  # not the manifest

    # 3. The run: hyperparameters as arguments, folders as SM_* variables, in a clean process.
    model_dir = tmp_path / "opt/ml/model"
    model_dir.mkdir()
    argv = [a for k, v in sorted(hyper.items()) for a in (f"--{k}", v)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLIGHTS_", "PYTHONPATH"))}
    env.update({f"SM_CHANNEL_{channel['ChannelName'].upper()}": str(channel_dir), "SM_MODEL_DIR": str(model_dir),
                "MLFLOW_DISABLE_TELEMETRY": "true"})
    done = subprocess.run([sys.executable, program, *argv], cwd=code_dir, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    xgb, baseline = printed["metrics"]["xgboost"], printed["metrics"]["baseline"]
    assert printed["device"] == "cpu" and xgb["auc"] > 0.7 and baseline["auc"] > 0.5, printed  # the signal was learnt

    # 4. SageMaker packs the model folder as model.tar.gz under the output path; collect reads it back.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            tf.add(path, arcname=path.relative_to(model_dir).as_posix())
    artefact = f"{request['OutputDataConfig']['S3OutputPath']}{job}/output/model.tar.gz"
    out_bucket, out_key = _split(artefact)
    buckets.put_object(Bucket=out_bucket, Key=out_key, Body=buf.getvalue())
    collected = SageMakerTrainer(aws, tmp_path / "cache", buckets).collect(
        {"Training": {"TrainingJobName": job, "TrainingJobStatus": "Completed",
                      "ModelArtifacts": {"S3ModelArtifacts": artefact}}})
    assert collected.metrics == printed["metrics"] and collected.params["n_estimators"] == 30
    assert collected.device == "cpu" and (collected.output_dir / "metrics.json").is_file()
