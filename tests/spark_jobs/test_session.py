"""The settings every job's Spark session gets on a local master (no Spark started here)."""

import pytest

from spark_jobs.session import JobInputError, local_master_defaults


def test_a_local_master_evaluates_expressions_interpreted_unless_codegen_is_asked_for():
    assert local_master_defaults({})["spark.sql.codegen.factoryMode"] == "NO_CODEGEN"
    assert local_master_defaults({"FLIGHTS_SPARK_CODEGEN": "false"}) == local_master_defaults({})
    spark_default = local_master_defaults({"FLIGHTS_SPARK_CODEGEN": " True "})
    assert "spark.sql.codegen.factoryMode" not in spark_default  # Spark's own FALLBACK applies
    assert spark_default["spark.sql.sources.parallelPartitionDiscovery.parallelism"] == "4"  # the rest stays


def test_a_codegen_switch_that_is_neither_true_nor_false_is_refused_with_its_name():
    with pytest.raises(JobInputError, match=r"FLIGHTS_SPARK_CODEGEN='sometimes' is neither true nor false"):
        local_master_defaults({"FLIGHTS_SPARK_CODEGEN": "sometimes"})
