from include.training.promotion import decide

BASE = {"auc": 0.60, "log_loss": 0.50}


def m(auc, ll=0.45):
    return {"auc": auc, "log_loss": ll}


def test_first_model_becomes_champion_when_it_beats_the_baseline():
    d = decide(m(0.70), BASE, None)
    assert d.promote and "no champion" in d.reason


def test_model_not_better_than_baseline_is_never_promoted_even_without_champion():
    d = decide(m(0.59), BASE, None)
    assert not d.promote and "baseline" in d.reason


def test_better_challenger_replaces_champion():
    assert decide(m(0.72, 0.44), BASE, m(0.70, 0.45)).promote


def test_equal_challenger_keeps_champion():
    d = decide(m(0.70), BASE, m(0.70))
    assert not d.promote and "does not beat champion" in d.reason


def test_required_gain_is_respected():
    assert not decide(m(0.705), BASE, m(0.70), min_auc_gain=0.01).promote
    assert decide(m(0.72), BASE, m(0.70), min_auc_gain=0.01).promote


def test_higher_auc_with_worse_log_loss_is_rejected():
    d = decide(m(0.75, 0.60), BASE, m(0.70, 0.45))
    assert not d.promote and "log loss" in d.reason


def test_undefined_auc_is_rejected():
    assert not decide(m(float("nan")), BASE, None).promote
