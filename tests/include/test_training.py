"""Training and evaluation on a small fixture shaped like the exported training set."""

import json

import numpy as np
import pandas as pd
import pytest

from include.features import LABEL, NUMERIC_FEATURES
from include.training.bundle import load_bundle
from include.training.train import pick_device, train_and_evaluate


def _fixture(n=3000, seed=0, shuffle_labels=False):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: rng.normal(size=n) for c in NUMERIC_FEATURES})
    df["carrier"] = rng.choice(["AA", "UA", "B6", "DL"], size=n)
    df["origin"] = rng.choice(["EWR", "JFK", "LGA"], size=n)
    df["dest"] = rng.choice(["ORD", "ATL", "LAX", "SFO", "MIA"], size=n)
    df.loc[rng.random(n) < 0.1, "wind_gust"] = np.nan  # missing weather, as in the real data
    logit = 1.5 * df["sched_dep_hour"] + 1.0 * (df["carrier"] == "B6") - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    df[LABEL] = rng.permutation(y) if shuffle_labels else y
    df["split"] = np.where(np.arange(n) < n * 0.6, "train", np.where(np.arange(n) < n * 0.8, "validation", "holdout"))
    return df


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    _fixture().to_parquet(path / "part-0.parquet")
    return path


def test_training_produces_bundle_metrics_and_report(dataset, tmp_path):
    out = train_and_evaluate(dataset, tmp_path / "model", {"n_estimators": 60})
    assert out.device == "cpu"  # no GPU on this machine; 'auto' picks CPU
    xgb_m, base_m = out.metrics["xgboost"], out.metrics["baseline"]
    assert xgb_m["auc"] > 0.75  # the signal in the fixture is learnable
    assert base_m["auc"] > 0.70
    assert {"auc", "log_loss", "brier", "ece"} <= set(xgb_m)
    assert (tmp_path / "model" / "report.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert saved["params"]["device"] == "cpu" and saved["metrics"]["xgboost"]["auc"] == xgb_m["auc"]


def test_bundle_scores_like_the_trained_model(dataset, tmp_path):
    from include.training.metrics import evaluate

    out = train_and_evaluate(dataset, tmp_path / "model", {"n_estimators": 60})
    hold = pd.read_parquet(dataset).query("split == 'holdout'")
    probs = load_bundle(tmp_path / "model" / "bundle").predict(hold)
    assert probs.min() >= 0 and probs.max() <= 1
    assert evaluate(hold[LABEL], probs)["auc"] == pytest.approx(out.metrics["xgboost"]["auc"], abs=1e-6)


def test_bundle_scores_like_the_metrics_when_early_stopping_cuts_the_trees(tmp_path):
    from include.training.metrics import evaluate

    dataset = tmp_path / "data"
    dataset.mkdir()
    _fixture(n=1500, seed=3).to_parquet(dataset / "part-0.parquet")
    out = train_and_evaluate(dataset, tmp_path / "model", {"n_estimators": 20, "max_depth": 3, "learning_rate": 0.3})
    assert out.metrics["xgboost"]["best_iteration"] < 19  # early stopping bites on this data
    hold = pd.read_parquet(dataset).query("split == 'holdout'")
    probs = load_bundle(tmp_path / "model" / "bundle").predict(hold)
    assert evaluate(hold[LABEL], probs)["auc"] == pytest.approx(out.metrics["xgboost"]["auc"], abs=1e-6)


def test_bundle_treats_unseen_categories_as_missing(dataset, tmp_path):
    train_and_evaluate(dataset, tmp_path / "model", {"n_estimators": 20})
    row = _fixture(n=5).assign(carrier="ZZ", dest="XXX")
    probs = load_bundle(tmp_path / "model" / "bundle").predict(row)
    assert np.isfinite(probs).all()


def test_shuffled_labels_give_a_model_no_better_than_chance(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    _fixture(shuffle_labels=True).to_parquet(path / "part-0.parquet")
    out = train_and_evaluate(path, tmp_path / "model", {"n_estimators": 30})
    assert out.metrics["xgboost"]["auc"] < 0.6


def test_cuda_requested_without_gpu_is_a_clear_error():
    if pick_device("auto") == "cuda":
        pytest.skip("a GPU is visible here")
    with pytest.raises(RuntimeError, match="no GPU is usable"):
        pick_device("cuda")
