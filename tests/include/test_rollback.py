"""One-step rollback of the champion against a real MLflow registry (SQLite) and DuckDB warehouse.

The module works in its own FLIGHTS_HOME: the registry's ``champion`` alias and
``ops.model_decisions`` are global state that the end-to-end tests assert on.
"""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from include.config import REPO_ROOT, settings
from include.targets import get_target
from include.training.bundle import load_bundle
from include.training.registry import PREVIOUS_CHAMPION, RollbackError
from include.training.rollback import default_user, main
from include.training.train import train_and_evaluate
from tests.conftest import isolated_flights_home
from tests.include.test_training import _fixture

WINDOWS = ("2013-01-01..2013-01-28", "2013-01-08..2013-02-04", "2013-01-15..2013-02-11")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A FLIGHTS_HOME of this module's own: registry, warehouse and alert file start empty."""
    with isolated_flights_home(tmp_path_factory, "rollback") as path:
        yield path


@pytest.fixture(scope="module")
def dataset(home, tmp_path_factory):
    """A small synthetic training set shaped like the exported one."""
    data = tmp_path_factory.mktemp("rollback-data") / "data"
    data.mkdir()
    _fixture().to_parquet(data / "part-0.parquet")
    return data


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """Three small real XGBoost models (10, 12 and 14 trees) trained on the synthetic set."""
    out = tmp_path_factory.mktemp("rollback-models")
    return [train_and_evaluate(dataset, out / f"m{i}", {"n_estimators": 10 + 2 * i, "seed": i}) for i in range(3)]


@pytest.fixture
def registry(trained):
    """The target's registry with a fresh model: versions 1, 2 and 3 registered, no champion yet."""
    reg = get_target().registry
    _, client = reg._client()
    if reg.versions():
        client.delete_registered_model(reg.name)
    versions = [reg.register(out, {"run_name": f"train-{i}", "training_window": w})
                for i, (out, w) in enumerate(zip(trained, WINDOWS))]
    assert [v.version for v in versions] == ["1", "2", "3"]
    reg.registered = versions  # the ModelVersions, for set_champion
    return reg


def _tags(reg, version: str) -> dict:
    _, client = reg._client()
    return client.get_model_version(reg.name, version).tags


def _decisions() -> list[dict]:
    """Rollback rows of ops.model_decisions, oldest first."""
    cols, rows = get_target().warehouse.query(
        "SELECT challenger_version, champion_version, promoted, reason, run_id, action FROM ops.model_decisions "
        "WHERE run_id LIKE 'rollback__%' ORDER BY recorded_at")
    return [dict(zip(cols, r)) for r in rows]


def _alerts() -> list[dict]:
    """model_rollback alerts of the alert file, oldest first."""
    path = settings().alerts_file
    lines = path.read_text().splitlines() if path.exists() else []
    return [a for a in map(json.loads, lines) if a["kind"] == "model_rollback"]


def _promote(reg, *numbers: int) -> None:
    for n in numbers:
        reg.set_champion(reg.registered[n - 1], f"test promotion of v{n}")


def test_every_promotion_remembers_the_champion_it_replaced(registry):
    _promote(registry, 1)
    assert PREVIOUS_CHAMPION not in _tags(registry, "1")  # the first champion replaced nothing
    _promote(registry, 2)
    assert _tags(registry, "2")[PREVIOUS_CHAMPION] == "1"
    _promote(registry, 2)  # promoting the champion again does not make it its own predecessor
    assert _tags(registry, "2")[PREVIOUS_CHAMPION] == "1"


def test_documented_command_rolls_back_to_the_previous_champion_records_and_alerts(registry, dataset):
    _promote(registry, 1, 2)
    seen_rows, seen_alerts = len(_decisions()), len(_alerts())
    why = "v2 over-predicts delays at EWR since 2013-03-02"
    out = subprocess.run([sys.executable, "-m", "include.training.rollback", "--reason", why, "--by", "alice"],
                         cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "champion v2 -> v1" in out.stdout and "ops.model_decisions" in out.stdout

    champion = registry.champion()
    assert champion.version == "1" and champion.run_id == registry.registered[0].run_id
    rows = pd.read_parquet(dataset).head(50)
    assert load_bundle(registry.bundle_dir(champion)).predict(rows).shape == (50,)  # v1 can score again

    tags = _tags(registry, "1")
    assert (tags["rollback_by"], tags["rollback_reason"], tags["rollback_from"]) == ("alice", why, "2")
    assert "alice" in _tags(registry, "2")["rolled_back"] and why in _tags(registry, "2")["rolled_back"]

    [row] = _decisions()[seen_rows:]
    assert (row["challenger_version"], row["champion_version"], row["promoted"]) == ("1", "2", True)
    assert row["reason"].startswith("rollback by alice: ") and why in row["reason"]
    assert row["action"] == "rollback"

    [alert] = _alerts()[seen_alerts:]
    assert alert["title"] == f"Champion {registry.name} rolled back from v2 to v1"
    assert alert["reason"] == f"rolled back by alice: {why}" and alert["run_id"] == row["run_id"]
    assert alert["interval"] == WINDOWS[0] and alert["log_url"] == champion.url
    assert (alert["dag_id"], alert["task_id"]) == ("flights_training", "manual_rollback")
    assert alert["details"]["from_version"] == "2" and alert["details"]["to_version"] == "1"


def test_rollback_to_an_explicit_version_defaults_to_the_os_user(registry, capsys):
    _promote(registry, 1, 2, 3)
    seen = len(_decisions())
    assert main(["--to-version", "1", "--reason", "v2 and v3 share a broken feature"]) == 0
    assert registry.champion().version == "1"
    [row] = _decisions()[seen:]
    assert (row["challenger_version"], row["champion_version"]) == ("1", "3")
    assert row["reason"].startswith(f"rollback by {default_user()}: ")
    assert "champion v3 -> v1" in capsys.readouterr().out


def test_a_rollback_is_not_undone_by_the_next_one_and_later_promotions_chain(registry):
    _promote(registry, 1, 2)
    old, new = registry.rollback(None, "bad v2", "alice")
    assert (old.version, new.version) == ("2", "1")
    with pytest.raises(RollbackError, match="no previous champion"):  # v1 replaced nothing: no flip back to v2
        registry.rollback(None, "again", "alice")
    _promote(registry, 3)
    assert _tags(registry, "3")[PREVIOUS_CHAMPION] == "1"
    old, new = registry.rollback(None, "bad v3", "bob")
    assert (old.version, new.version) == ("3", "1") and registry.champion().version == "1"


@pytest.mark.parametrize("setup, to_version, reason, message", [
    ((), None, "why", "has no champion"),
    ((1,), None, "why", "no previous champion is recorded"),
    ((1, 2), "99", "why", "has no version '99'"),
    ((1, 2), "latest", "why", "has no version 'latest'"),
    ((1, 2), "2", "why", "already is champion"),
    ((1, 2), None, "  ", "Say why"),
])
def test_refused_rollbacks_change_nothing(registry, setup, to_version, reason, message):
    _promote(registry, *setup)
    before = registry.champion()
    seen_rows, seen_alerts = len(_decisions()), len(_alerts())
    with pytest.raises(RollbackError, match=message):
        registry.rollback(to_version, reason, "alice")
    after = registry.champion()
    assert (after.version if after else None) == (before.version if before else None)
    assert len(_decisions()) == seen_rows and len(_alerts()) == seen_alerts


def test_command_reports_a_refusal_and_exits_2(registry, capsys):
    assert main(["--reason", "nothing to roll back", "--by", "alice"]) == 2
    err = capsys.readouterr().err
    assert "Rollback refused, nothing changed" in err and "has no champion" in err
    assert registry.champion() is None


def test_a_previous_champion_that_was_deleted_is_named_in_the_refusal(registry):
    _promote(registry, 1, 2)
    _, client = registry._client()
    client.delete_model_version(registry.name, "1")
    with pytest.raises(RollbackError, match="no previous champion '1'.*versions: 2, 3"):
        registry.rollback(None, "bad v2", "alice")
    assert registry.champion().version == "2"
