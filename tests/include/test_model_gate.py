"""A degraded challenger never becomes champion, and its rejection alerts with both models' metrics.

The challenger is trained on shuffled labels (a broken join, a label bug) and evaluated on a
true holdout; the champion is re-scored on that same holdout by the promotion step. Real
XGBoost models, the real MLflow registry, the real DuckDB ops table and the alert file,
through ``include.pipeline.promote`` exactly as the ``promote_champion`` task calls it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from include.config import settings
from include.features import LABEL
from include.pipeline import promote
from include.targets import get_target
from include.training.train import train_and_evaluate
from tests.include.test_alert_delivery import FakeTI
from tests.conftest import isolated_flights_home
from tests.include.test_training import _fixture

RUN_ID = "manual__2013-03-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with isolated_flights_home(tmp_path_factory, "model-gate") as path:
        yield path


def _export(root, frame):
    """An exported training set as the export task leaves it: <uri>/data/*.parquet."""
    (root / "data").mkdir(parents=True)
    frame.to_parquet(root / "data" / "part-0.parquet")
    return root


def test_a_challenger_trained_on_shuffled_labels_is_rejected_with_both_models_metrics(home, tmp_path):
    registry = get_target().registry
    good = _export(tmp_path / "good", _fixture(seed=1))
    champion = registry.register(train_and_evaluate(good / "data", tmp_path / "m1", {"n_estimators": 40}),
                                 {"run_name": "train-1", "training_window": "2013-01-01..2013-01-28"})
    registry.set_champion(champion, "first model")

    degraded = _fixture(seed=2)
    fit = degraded["split"] != "holdout"  # labels scrambled where the model learns, true where it is judged
    degraded.loc[fit, LABEL] = np.random.default_rng(3).permutation(degraded.loc[fit, LABEL].to_numpy())
    dataset = _export(tmp_path / "degraded", degraded)
    outputs = train_and_evaluate(dataset / "data", tmp_path / "m2", {"n_estimators": 40})
    challenger = registry.register(outputs, {"run_name": "train-2", "training_window": "2013-01-08..2013-02-04"})
    trained = {"output_dir": str(outputs.output_dir), "metrics": outputs.metrics, "params": outputs.params,
               "device": outputs.device}
    assert outputs.metrics["xgboost"]["auc"] < 0.6  # the challenger learnt nothing

    ti = FakeTI("flights_training", "promote_champion", RUN_ID, 1,
                "http://localhost:8080/dags/flights_training/runs/x/tasks/promote_champion?try_number=1",
                xcoms={"resolve_window": {"start": "2013-01-08", "end": "2013-02-04"}})
    registered = {"name": challenger.name, "version": challenger.version, "run_id": challenger.run_id,
                  "url": challenger.url}
    decision = promote({"ti": ti, "run_id": RUN_ID, "params": {}}, registered, trained, str(dataset), 0.0)

    assert decision["promoted"] is False
    assert registry.champion().version == champion.version == "1"  # the champion did not move
    assert decision["champion_metrics"]["auc"] > outputs.metrics["xgboost"]["auc"] + 0.1

    alerts = [json.loads(line) for line in settings().alerts_file.read_text().splitlines()]
    alert = [a for a in alerts if a["kind"] == "model_rejected"][-1]
    assert alert["details"]["challenger"]["auc"] == pytest.approx(outputs.metrics["xgboost"]["auc"])
    assert alert["details"]["champion"]["auc"] == pytest.approx(decision["champion_metrics"]["auc"])
    assert {"auc", "log_loss", "brier", "ece"} <= set(alert["details"]["champion"])
    assert alert["details"]["champion_version"] == "1" and "v2" in alert["title"]
    assert alert["interval"] == "2013-01-08..2013-02-04" and alert["dag_id"] == "flights_training"

    cols, rows = get_target().warehouse.query(
        "SELECT challenger_version, champion_version, promoted, challenger_auc, champion_auc FROM ops.model_decisions")
    assert rows == [("2", "1", False, pytest.approx(outputs.metrics["xgboost"]["auc"]),
                     pytest.approx(decision["champion_metrics"]["auc"]))]
    # what was decided, and what started the training run (here a manual trigger, no retraining request)
    assert get_target().warehouse.query("SELECT action, cause FROM ops.model_decisions")[1] == [
        ("refused", f"manual run {RUN_ID}")]
