import numpy as np
import pytest

from include.training.metrics import evaluate, expected_calibration_error
from include.training.split import time_split
from datetime import date


def test_perfectly_calibrated_predictions_have_zero_ece():
    y = np.array([0, 1] * 50)
    p = np.full(100, 0.5)
    assert expected_calibration_error(y, p) == pytest.approx(0.0)


def test_ece_of_overconfident_predictions():
    y = np.array([0, 1] * 50)
    p = np.full(100, 0.95)  # says 95 %, reality is 50 %
    assert expected_calibration_error(y, p) == pytest.approx(0.45)


def test_evaluate_reports_all_metrics():
    y = np.array([0, 0, 1, 1])
    out = evaluate(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert out["auc"] == 1.0
    assert set(out) >= {"auc", "log_loss", "brier", "ece", "rows"}
    assert out["brier"] == pytest.approx(np.mean([0.01, 0.04, 0.04, 0.01]))


def test_time_split_puts_the_last_days_in_the_holdout():
    s = time_split(date(2013, 1, 1), date(2013, 2, 28), validation_days=7, holdout_days=7)
    assert s.holdout == (date(2013, 2, 22), date(2013, 2, 28))
    assert s.validation == (date(2013, 2, 15), date(2013, 2, 21))
    assert s.train == (date(2013, 1, 1), date(2013, 2, 14))
    assert s.label(date(2013, 2, 14)) == "train" and s.label(date(2013, 2, 22)) == "holdout"


def test_time_split_refuses_a_window_too_short():
    with pytest.raises(ValueError, match="needs at least"):
        time_split(date(2013, 1, 1), date(2013, 1, 2), validation_days=1, holdout_days=1)
