"""The runtime table: the local row matches the lock, and every EMR row is well-formed."""

from __future__ import annotations

import re

import pytest

from include.config import REPO_ROOT
from include.targets.aws import releases


def _pin(name: str) -> str:
    found = re.search(rf"^{re.escape(name)}==([^\s\\]+)", (REPO_ROOT / "requirements.txt").read_text(), flags=re.M)
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


def _functions_called(path) -> set[str]:
    """Names used as ``<alias>.<name>`` where the alias is ``pyspark.sql.functions``."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and node.module == "pyspark.sql" for a in node.names if a.name == "functions"}
    aliases |= {a.asname for node in ast.walk(tree) if isinstance(node, ast.Import)
                for a in node.names if a.name == "pyspark.sql.functions" and a.asname}
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id in aliases}


def test_the_jobs_call_no_spark_function_newer_than_the_emr_runtime():
    listed = REPO_ROOT / "tests" / "aws" / "spark_4_1_plus_functions.txt"
    newer = {line.strip() for line in listed.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert "try_to_date" in newer and releases.runtime(releases.DEFAULT_EMR_RELEASE).spark.startswith("4.0.")
    assert releases.LOCAL.spark == "4.2.0", "the list compares 4.2.0 with 4.0.2: regenerate it for the new pin"
    used = {str(p.relative_to(REPO_ROOT)): _functions_called(p) & newer
            for folder in ("spark_jobs", "include") for p in (REPO_ROOT / folder).rglob("*.py")}
    assert {path: names for path, names in used.items() if names} == {}, \
        "Spark 4.0 (emr-spark-8.0.0) lacks these; use an equivalent from 4.0"
