"""The local Spark runner: failures a retry cannot fix fail at once, the rest are retried."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.config import ConfigError, settings
from include.pipeline import fails_fast
from include.targets.base import SparkJobFailed, SparkJobRejected
from include.targets.local import LocalSparkRunner


def test_configuration_errors_are_not_retried():
    @fails_fast
    def step():
        raise ConfigError("FLIGHTS_WAREHOUSE='oracle' is not supported; use one of duckdb, postgres.")

    with pytest.raises(AirflowFailException, match=r"(?s)FLIGHTS_WAREHOUSE=.oracle.*Not retried"):
        step()


def test_other_errors_stay_retryable():
    @fails_fast
    def step():
        raise SparkJobFailed("executor lost")

    with pytest.raises(SparkJobFailed) as info:
        step()
    assert not isinstance(info.value, AirflowFailException)  # Airflow retries it with backoff


def test_unknown_job_is_a_configuration_error():
    with pytest.raises(ConfigError, match="Unknown Spark job 'no_such_job'"):
        LocalSparkRunner(settings()).command("no_such_job", [], name="x")


@pytest.mark.slow
def test_bad_arguments_and_missing_tables_are_rejected_not_retried(tmp_path):
    runner = LocalSparkRunner(settings())
    with pytest.raises(SparkJobRejected, match="exit 2"):  # argparse: a required argument is missing
        runner.submit("gold_flight_features", ["--lake", str(tmp_path)], name="bad-args")
    with pytest.raises(SparkJobRejected, match="exit 3.*PERMANENT FAILURE AnalysisException"):  # no bronze table
        runner.submit("gold_flight_features", ["--lake", str(tmp_path / "empty"), "--start", "2013-01-01",
                                               "--end", "2013-01-01", "--run-id", "r"], name="no-bronze")
    assert issubclass(SparkJobRejected, AirflowFailException)
