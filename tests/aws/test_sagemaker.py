"""SageMaker training: the rendered job, its name rules, and create / reattach against a moto server."""

from __future__ import annotations

import re
from types import SimpleNamespace

from include.targets.aws import sagemaker
from include.targets.aws.emr import instantiate
from include.targets.cloud.naming import training_job_name
from include.targets.aws.settings import AwsSettings

PARAMS = {"n_estimators": 400, "max_depth": 6, "learning_rate": 0.08, "device": "cuda"}
DATASET = "s3://flights-lake-example/lake/exports/training/20130101_20130228/manual__2013-03-01"
SOURCEDIR = "s3://flights-artifacts-example/artifacts/code/abc/sourcedir.tar.gz"


def test_training_config_is_script_mode_on_a_gpu():
    aws = AwsSettings.example()
    cfg = sagemaker.training_config(aws, job_name="j", dataset_uri=DATASET, sourcedir_uri=SOURCEDIR, params=PARAMS)
    assert cfg["AlgorithmSpecification"]["TrainingImage"] == \
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    assert cfg["ResourceConfig"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert cfg["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert cfg["EnableManagedSpotTraining"] is False and "CheckpointConfig" not in cfg
    channel = cfg["InputDataConfig"][0]
    assert channel["ChannelName"] == "dataset"  # read as SM_CHANNEL_DATASET by the entry point
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == DATASET + "/data/"  # the split-column Parquet folder
    hp = cfg["HyperParameters"]
    assert {k: hp[k] for k in PARAMS} == {"n_estimators": "400", "max_depth": "6", "learning_rate": "0.08",
                                          "device": "cuda"}
    assert hp["sagemaker_program"] == '"include/targets/aws/sagemaker_entry.py"'
    assert hp["sagemaker_submit_directory"] == f'"{SOURCEDIR}"'
    assert cfg["OutputDataConfig"]["S3OutputPath"] == "s3://flights-artifacts-example/artifacts/training/"


def test_spot_training_adds_wait_and_checkpoints():
    aws = AwsSettings.example(training_spot=True, training_max_wait_s=7200, region="eu-west-1")
    cfg = sagemaker.training_config(aws, job_name="job-1", dataset_uri=DATASET, sourcedir_uri=SOURCEDIR, params={})
    assert cfg["EnableManagedSpotTraining"] is True
    assert cfg["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert cfg["CheckpointConfig"] == {"S3Uri": "s3://flights-artifacts-example/artifacts/checkpoints/job-1/"}
    assert cfg["AlgorithmSpecification"]["TrainingImage"].startswith("141502667606.dkr.ecr.eu-west-1.")


def test_training_job_names_are_short_safe_and_deterministic():
    long = training_job_name("flights_training", "train_models", "20130101_20131231",
                             "manual__2013-12-31T23:59:59.123456+00:00_with_a_very_long_suffix", 12)
    assert len(long) <= 63 and re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", long)
    assert long == training_job_name("flights_training", "train_models", "20130101_20131231",
                                     "manual__2013-12-31T23:59:59.123456+00:00_with_a_very_long_suffix", 12)
    assert long.endswith("-t12")
    other_run = training_job_name("flights_training", "train_models", "20130101_20131231", "manual__other", 12)
    assert other_run != long  # SageMaker names are unique forever: each run gets its own


def test_operator_accepts_the_spec():
    op = instantiate(sagemaker.training_job(AwsSettings.example(), task_id="train_models", interval_key="k",
                                            dataset_uri=DATASET, sourcedir_uri=SOURCEDIR, params=PARAMS))
    assert op.deferrable and op.wait_for_completion and op.action_if_job_exists == "fail"
    assert "interval_key" in op.template_fields and "config" in op.template_fields


def _context(try_number, run_id="manual__2013-03-01"):
    ti = SimpleNamespace(dag_id="flights_training", task_id="train_models", try_number=try_number, max_tries=2,
                         run_id=run_id, xcom_push=lambda *a, **k: None)
    return {"ti": ti, "run_id": run_id, "task_instance": ti}


def test_training_job_runs_on_moto_and_a_retry_reattaches(aws, boto, buckets):
    buckets.put_object(Bucket=aws.lake_bucket, Key=DATASET.split("/", 3)[3] + "/data/part-0.parquet", Body=b"PAR1")
    spec = sagemaker.training_job(aws, task_id="train_models", interval_key="20130101_20130228",
                                  dataset_uri=DATASET, sourcedir_uri=SOURCEDIR, params=PARAMS,
                                  deferrable=False, retries=2, check_interval=1)
    first = instantiate(spec).execute(_context(1))["Training"]
    name = training_job_name("flights_training", "train_models", "20130101_20130228", "manual__2013-03-01", 1)
    desc = boto("sagemaker").describe_training_job(TrainingJobName=name)
    assert first["TrainingJobName"] == name and desc["TrainingJobStatus"] == "Completed"
    assert desc["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert desc["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600
    assert desc["HyperParameters"]["device"] == "cuda"
    assert desc["ModelArtifacts"]["S3ModelArtifacts"].endswith("model.tar.gz")
    retry = instantiate(spec)
    assert retry.execute(_context(2))["Training"]["TrainingJobName"] == name and retry.reattached == name
    names = [j["TrainingJobName"] for j in boto("sagemaker").list_training_jobs()["TrainingJobSummaries"]]
    assert names.count(name) == 1 and not [n for n in names if n.endswith("-t2")]  # no second job
