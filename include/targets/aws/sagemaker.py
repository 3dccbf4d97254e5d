"""The SageMaker training job that trains the model on a GPU instance.

Script mode in the XGBoost framework container: the container runs
``include/targets/aws/sagemaker_entry.py`` from the code artefact's ``sourcedir.tar.gz``,
which calls the same ``include.training.train.train_and_evaluate`` as the local target.
The exported training set (``<export>/data/``, one Parquet folder with a ``split``
column of train / validation / holdout rows, see ``spark_jobs/gold_training_set.py``)
is the ``dataset`` channel; everything the trainer writes (bundle, baseline,
``metrics.json``, ``report.png``) lands in ``model.tar.gz`` under the output path.
"""

from __future__ import annotations

import json
from typing import Any

from include.targets.aws.emr import OperatorSpec
from include.targets.aws.settings import AwsSettings
from include.training import hyperparameters

TRAINING_OPERATOR = "include.targets.aws.operators.ReattachingSageMakerTrainingOperator"
ENTRY_POINT = "include/targets/aws/sagemaker_entry.py"
CHANNEL = "dataset"


def training_config(aws: AwsSettings, *, job_name: str, dataset_uri: str, sourcedir_uri: str,
                    params: dict[str, Any]) -> dict:
    """The ``CreateTrainingJob`` request.

    Args:
        job_name: the TrainingJobName (``naming.training_job_name``; the operator sets it per try).
        dataset_uri: the exported training set folder (its ``data/`` holds the Parquet files).
        sourcedir_uri: the code artefact's ``sourcedir.tar.gz``.
        params: n_estimators, max_depth, learning_rate, device (SageMaker passes them as strings).
    """
    hyperparameters.check(params)
    hyper = {k: str(v) for k, v in params.items()}
    hyper.update({
        "sagemaker_program": json.dumps(ENTRY_POINT),  # framework containers read these two as JSON strings
        "sagemaker_submit_directory": json.dumps(sourcedir_uri),
        "sagemaker_region": json.dumps(aws.region),
    })
    config: dict[str, Any] = {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": {"TrainingImage": aws.training_image, "TrainingInputMode": "File"},
        "RoleArn": aws.sagemaker_role_arn,
        "HyperParameters": hyper,
        "InputDataConfig": [{
            "ChannelName": CHANNEL,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": dataset_uri.rstrip("/") + "/data/",
                                            "S3DataDistributionType": "FullyReplicated"}},
            "ContentType": "application/x-parquet",
            "InputMode": "File",
        }],
        "OutputDataConfig": {"S3OutputPath": aws.training_output_uri},
        "ResourceConfig": {"InstanceType": aws.training_instance_type, "InstanceCount": aws.training_instance_count,
                           "VolumeSizeInGB": aws.training_volume_gb},
        "StoppingCondition": {"MaxRuntimeInSeconds": aws.training_max_runtime_s},
        "EnableManagedSpotTraining": aws.training_spot,
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(aws.tags.items())],
    }
    if aws.training_spot:
        config["StoppingCondition"]["MaxWaitTimeInSeconds"] = aws.training_max_wait_s
        config["CheckpointConfig"] = {"S3Uri": f"{aws.checkpoint_uri}{job_name}/"}
    return config


def training_job(aws: AwsSettings, *, task_id: str, interval_key: str, dataset_uri: str, sourcedir_uri: str,
                 params: dict[str, Any], **operator_kwargs) -> OperatorSpec:
    """The training task: deferrable, waits for completion, reattaches on retry (see ``operators``)."""
    config = training_config(aws, job_name="set-at-run-time", dataset_uri=dataset_uri,
                             sourcedir_uri=sourcedir_uri, params=params)
    kwargs = {
        "task_id": task_id,
        "config": config,
        "interval_key": interval_key,
        "deferrable": True,
        "wait_for_completion": True,
        "check_if_job_exists": True,
        "action_if_job_exists": "fail",
        "print_log": False,
        "check_interval": 60,
        "max_ingestion_time": (aws.training_max_wait_s if aws.training_spot else aws.training_max_runtime_s) + 900,
        "region_name": aws.region,
        "botocore_config": aws.botocore_config,  # retries of every call the operator and its trigger make
    }
    kwargs.update(operator_kwargs)
    return OperatorSpec(TRAINING_OPERATOR, kwargs)
