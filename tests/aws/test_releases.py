"""The runtime table: the local row matches the lock, and every EMR row is well-formed."""

from __future__ import annotations

import re

import pytest

from include.config import REPO_ROOT
from include.targets.aws import releases


def _pin(name: str) -> str:
    found = re.search(rf"^{re.escape(name)}==(\S+)$", (REPO_ROOT / "requirements.txt").read_text(), flags=re.M)
    assert found, f"{name} is not pinned in requirements.txt"
    return found.group(1)


def test_local_row_is_the_locked_pair():
    assert releases.LOCAL.spark == _pin("pyspark")
    assert releases.LOCAL.delta == _pin("delta-spark")
    pom = (REPO_ROOT / "scripts" / "delta-jars.pom.xml").read_text()
    assert f"<version>{releases.LOCAL.delta}</version>" in pom  # the jar is the same release as the wheel


def test_default_emr_release_is_in_the_table_and_on_the_same_major_lines():
    assert releases.DEFAULT_EMR_RELEASE in releases.RUNTIMES
    assert releases.compatible_with_local(releases.DEFAULT_EMR_RELEASE)
    assert not releases.compatible_with_local("emr-7.12.0")  # Spark 3.5 / Scala 2.12 / Delta 3


def test_unknown_release_names_the_table():
    with pytest.raises(ValueError, match="releases.py"):
        releases.runtime("emr-9.9.9")
