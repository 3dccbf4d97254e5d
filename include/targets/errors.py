"""How a Spark job ends badly: retried (``SparkJobFailed``) or failed at once (``SparkJobRejected``).

Imports Airflow (a rejected job is an ``AirflowFailException``), so only code that runs inside
Airflow imports this module.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

# Exit statuses of a Spark job that a retry cannot fix: 2 is argparse's (bad arguments),
# 3 is spark_jobs.session.PERMANENT_EXIT (bad input, a missing table or column).
PERMANENT_EXIT_CODES = (2, 3)


class SparkJobFailed(RuntimeError):
    """A Spark job ended in failure; the message carries the tail of its driver log. Retried."""


class SparkJobRejected(SparkJobFailed, AirflowFailException):
    """A Spark job failed for a reason a retry cannot fix: the task fails at once, without retries."""
