"""Defaults shared by every DAG: owner, retries with exponential backoff, alerts, tags.

Read at parse time, so it imports nothing heavy and reads only environment variables.
"""

from __future__ import annotations

import os
from datetime import timedelta

from include.alerts import FailureAlert

OWNER = "flights-data-platform"

# The one controlled list of tags; the DAG integrity test rejects any other.
APPROVED_TAGS = frozenset({"flights", "lakehouse", "daily", "training", "ml", "quality", "warehouse", "maintenance"})

# Every task that launches a Spark job runs in this pool, so the machine (or the cluster's
# queue) never holds more Spark jobs than it can run: `make airflow-init` creates it with
# FLIGHTS_SPARK_POOL_SLOTS slots (default: one per two cores; a local job uses local[2]).
SPARK_POOL = os.environ.get("FLIGHTS_SPARK_POOL", "spark")

SPARK_TIMEOUT = timedelta(minutes=int(os.environ.get("FLIGHTS_SPARK_TIMEOUT_MIN", "60")))
TRAINING_TIMEOUT = timedelta(minutes=int(os.environ.get("FLIGHTS_TRAINING_TIMEOUT_MIN", "120")))


def default_args() -> dict:
    return {
        "owner": OWNER,
        "retries": int(os.environ.get("FLIGHTS_RETRIES", "3")),
        "retry_delay": timedelta(seconds=float(os.environ.get("FLIGHTS_RETRY_DELAY_S", "60"))),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": [FailureAlert()],
    }
