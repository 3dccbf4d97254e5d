"""The Azure Spark runtime table: well-formed rows, a default per service, the Spark 3 line the jobs are tested on."""

from __future__ import annotations

import ast
import re

import pytest

from include.config import REPO_ROOT
from include.targets.azure import runtimes
from include.targets.azure.runtimes import RUNTIMES, compatible_with_jobs, runtime
from include.targets.azure.settings import DEFAULT_SPARK_RUNTIME, SPARK_SERVICES

SPARK3_REQUIREMENTS = REPO_ROOT / "scripts" / "spark3-requirements.txt"
# the Delta major release built for each Spark line (delta-io/delta's compatibility table)
DELTA_MAJOR_OF_SPARK_LINE = {"3.3": 2, "3.4": 2, "3.5": 3}


def spark3_pins() -> dict[str, str]:
    """The ``name==version`` lines of scripts/spark3-requirements.txt; any other requirement line fails."""
    pins = {}
    for line in SPARK3_REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            found = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\d+(?:\.\d+)+)", line)
            assert found, f"{SPARK3_REQUIREMENTS.name}: {line!r} is not an exact pin (name==version)"
            pins[found.group(1).lower()] = found.group(2)
    return pins


def test_each_service_has_its_default_row():
    assert set(DEFAULT_SPARK_RUNTIME) == set(SPARK_SERVICES)
    for service, name in DEFAULT_SPARK_RUNTIME.items():
        assert runtime(name).service == service, name


def test_rows_are_well_formed():
    for name, row in RUNTIMES.items():
        assert row.name == name
        assert row.service in SPARK_SERVICES, name
        assert re.fullmatch(r"\d+\.\d+", row.spark) and row.spark_line == row.spark, name
        assert row.scala in ("2.12", "2.13"), name
        assert re.fullmatch(r"\d+", row.java) and re.fullmatch(r"3\.\d+", row.python), name
        assert re.fullmatch(r"\d+\.\d+\.\d+", row.delta), name
        assert row.delta_major == DELTA_MAJOR_OF_SPARK_LINE[row.spark_line], f"{name}: Delta {row.delta}"
        assert row.source.strip(), name
        connector, storage = row.delta_jar_names()
        assert connector == f"{'delta-spark' if row.delta_major >= 3 else 'delta-core'}_{row.scala}-{row.delta}.jar"
        assert storage == f"delta-storage-{row.delta}.jar"
        assert [c.split(":")[1] for c in row.delta_packages()] == [
            n.removesuffix(f"-{row.delta}.jar") for n in row.delta_jar_names()]  # the jars Maven names so
        assert row.jar_uris("abfss://artifacts@acct.dfs.core.windows.net/artifacts/") == [
            f"abfss://artifacts@acct.dfs.core.windows.net/artifacts/jars/{n}" for n in row.delta_jar_names()]


def test_unknown_runtime_names_the_table():
    with pytest.raises(ValueError, match=r"include/targets/azure/runtimes\.py.*synapse-3\.5"):
        runtime("synapse-9.9")


def test_spark3_requirements_pin_the_synapse_rows_spark_line_and_delta():
    pins = spark3_pins()
    row = runtime(DEFAULT_SPARK_RUNTIME["synapse"])
    assert pins["delta-spark"] == row.delta == runtimes.JOBS_SPARK3_DELTA
    assert ".".join(pins["pyspark"].split(".")[:2]) == row.spark_line == runtimes.JOBS_SPARK3_LINE
    script = (REPO_ROOT / "scripts" / "spark3_env.sh").read_text(encoding="utf-8")
    assert f'scala="{row.scala}"' in script  # the env fetches the row's jars: delta-spark_<scala>-<delta>.jar
    lock = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8")
    for name, version in pins.items():  # everything but Spark and Delta runs the lock's release on both lines
        if name not in ("pyspark", "delta-spark"):
            assert re.search(rf"^{re.escape(name)}=={re.escape(version)}\b", lock, flags=re.M | re.I), \
                f"{name}=={version} is not the release requirements.txt pins"


def test_only_the_tested_line_is_compatible_with_the_jobs():
    assert {name for name in RUNTIMES if compatible_with_jobs(name)} == {"synapse-3.5", "livy-spark-3.5"}
    assert set(DEFAULT_SPARK_RUNTIME.values()) == {"synapse-3.5", "livy-spark-3.5"}  # each service's default runs them
    assert "NOT run" in runtime("hdinsight-5.1").note  # tried, and why not, is recorded on the row


def _names_used(path) -> tuple[set[str], set[str]]:
    """(``F.<name>`` uses where ``F`` is ``pyspark.sql.functions``, every other ``.<name>`` attribute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and node.module == "pyspark.sql" for a in node.names if a.name == "functions"}
    aliases |= {a.asname for node in ast.walk(tree) if isinstance(node, ast.Import)
                for a in node.names if a.name == "pyspark.sql.functions" and a.asname}
    attributes = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute)]
    functions = {n.attr for n in attributes if isinstance(n.value, ast.Name) and n.value.id in aliases}
    return functions, {n.attr for n in attributes} - functions


def test_the_jobs_use_no_spark_api_missing_from_spark_3_5():
    listed = [line.strip() for line in (REPO_ROOT / "tests" / "azure" / "spark_3_5_missing_api.txt").read_text()
              .splitlines() if line.strip() and not line.startswith("#")]
    functions = {n for n in listed if "." not in n}
    methods = {n.split(".", 1)[1] for n in listed if "." in n}
    assert {"try_to_date", "uuid"} <= functions and "try_cast" in methods  # the list is 4.2.0 against 3.5.9
    used = {}
    for folder in ("spark_jobs", "include"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            called, attributes = _names_used(path)
            found = sorted((called & functions) | (attributes & methods))
            if found:
                used[str(path.relative_to(REPO_ROOT))] = found
    assert used == {}, \
        "Spark 3.5 (Synapse 3.5 pools) lacks these; use an equivalent from 3.5 (SQL TRY_CAST for Column.try_cast)"
