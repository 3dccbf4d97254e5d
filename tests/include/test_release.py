"""Releasing quarantined rows: only real row ids reach the Spark job."""

from __future__ import annotations

import hashlib

import pytest

from include.quality import release

ROW_IDS = [hashlib.sha256(f"flights|2013-01-05|{n}".encode()).hexdigest() for n in range(2)]
INJECTION = "x' OR '1'='1"


class _Spark:
    def __init__(self):
        self.submitted: list[tuple[str, list[str]]] = []

    def submit(self, job: str, args: list[str], name: str) -> None:
        self.submitted.append((job, args))


@pytest.fixture
def spark_jobs(monkeypatch):
    """The target's Spark runner, recording what the release would submit."""
    import include.targets

    runner = _Spark()
    target = type("Target", (), {"spark": runner, "lake": type("Lake", (), {"root": "/lake"})()})()
    monkeypatch.setattr(include.targets, "get_target", lambda: target)
    monkeypatch.setattr(release, "get_target", lambda: target, raising=False)
    return runner


def _main(*row_ids: str) -> None:
    argv = ["--dataset", "flights", "--start", "2013-01-05", "--end", "2013-01-05", "--reason", "fixed", "--by", "a"]
    for row_id in row_ids:
        argv += ["--row-id", row_id]
    release.main(argv)


@pytest.mark.parametrize("bad", [INJECTION, ROW_IDS[0].upper(), ROW_IDS[0][:-1], ROW_IDS[0] + "'"])
def test_a_row_id_that_is_not_one_is_refused_before_anything_is_submitted(spark_jobs, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        _main(ROW_IDS[0], bad)
    assert exc.value.code == 2  # an argument error
    err = capsys.readouterr().err
    assert "--row-id" in err and repr(bad) in err and "64 lowercase hex" in err
    assert spark_jobs.submitted == []


def test_valid_row_ids_are_passed_to_the_release_job(spark_jobs):
    _main(*ROW_IDS)
    [(job, args)] = spark_jobs.submitted
    assert job == "quarantine_release"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--row-id"] == ROW_IDS


def test_check_row_ids_names_the_bad_id():
    assert release.check_row_ids(ROW_IDS) == ROW_IDS
    with pytest.raises(ValueError, match=r"x' OR '1'='1.*64 lowercase hex"):
        release.check_row_ids([ROW_IDS[0], INJECTION])
