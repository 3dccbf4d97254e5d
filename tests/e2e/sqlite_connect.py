"""Connection arguments of the test deployments' SQLite metadata database (``airflow_stack.py``).

The scheduler, the API server, the task processes and the CLI all write the one file. SQLite
lets one writer in at a time and Python's driver gives up after 5 s of waiting, so on two busy
cores a CLI command (``airflow backfill create`` clearing runs) could fail with "database is
locked" halfway through. They wait up to two minutes for the lock instead.
"""

CONNECT_ARGS = {"timeout": 120}
