"""The trainer's hyperparameter contract, shared by every target's job and every training container."""

import argparse

import pytest

from include.targets.aws.sagemaker_entry import parse as sagemaker_parse
from include.training.hyperparameters import HYPERPARAMETERS, add_arguments, check, given


def test_the_dags_params_are_the_trainers_hyperparameters():
    from include.plan import TRAIN_PARAMS

    assert set(TRAIN_PARAMS) == set(HYPERPARAMETERS)


def test_an_unknown_hyperparameter_is_refused_naming_the_known_ones():
    check({"n_estimators": 10, "device": "cuda"})
    with pytest.raises(ValueError, match=r"\['depth'\].*n_estimators, max_depth, learning_rate, device"):
        check({"depth": 3})


def test_an_entry_point_parses_the_types_and_leaves_unset_ones_to_the_trainer():
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert given(vars(p.parse_args(["--n_estimators", "20", "--learning_rate", "0.3"]))) == {
        "n_estimators": 20, "learning_rate": 0.3, "device": "auto"}
    with pytest.raises(SystemExit):
        p.parse_args(["--device", "gpu"])


def test_every_entry_point_refuses_a_device_the_trainer_does_not_know():
    assert sagemaker_parse(["--max_depth", "3", "sagemaker_program", "x"]) == {"max_depth": 3, "device": "auto"}
    with pytest.raises(SystemExit):  # it used to take any --device and fail later, inside the trainer
        sagemaker_parse(["--device", "gpu"])
