"""Deterministic names of cloud jobs (every target), and the tries a retry may reattach to.

The project's job name is ``<dag>.<task>.<interval>.try<n>`` (``include.pipeline.job_name``).
A retry must find the job an earlier try of the *same attempt* started, instead of
starting a second one; but after someone clears the task on purpose (to recompute an
interval), the old job must not be reused. Airflow records that difference in
``max_tries``: clearing sets ``max_tries = try_number + retries``, so the tries of the
current attempt are ``max_tries - retries + 1 .. try_number``.
"""

from __future__ import annotations

import hashlib
import re

TRAINING_NAME_MAX = 63  # SageMaker: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}


def job_name(dag_id: str, task_id: str, interval_key: str, try_number: int) -> str:
    """The same name ``include.pipeline.job_name`` gives, from its parts."""
    return f"{dag_id}.{task_id}.{interval_key}.try{int(try_number)}"


def job_stem(dag_id: str, task_id: str, interval_key: str) -> str:
    return f"{dag_id}.{task_id}.{interval_key}.try"


def try_of(name: str, stem: str) -> int | None:
    """The try number in ``name`` when it belongs to ``stem``, else None."""
    if not name or not name.startswith(stem):
        return None
    tail = name[len(stem):]
    return int(tail) if tail.isdigit() else None


def attempt_tries(try_number: int, max_tries: int | None, retries: int) -> range:
    """Tries of the current attempt, oldest first (the current one included)."""
    first = 1
    if max_tries is not None and max_tries >= 0:
        first = max(1, int(max_tries) - int(retries) + 1)
    first = min(first, int(try_number))
    return range(first, int(try_number) + 1)


def short_job_name(dag_id: str, task_id: str, interval_key: str, run_id: str, try_number: int, *,
                   max_len: int = TRAINING_NAME_MAX, lower: bool = False) -> str:
    """A cloud-safe job name: ≤ ``max_len`` characters of [a-zA-Z0-9-], deterministic, unique per run and try.

    Clouds keep job names (or ids) long after the job (SageMaker forever, Dataproc batches for weeks)
    and restrict their characters, so the name carries a digest of the DAG, task, interval and run,
    and the try number; the readable part is shortened to fit. ``lower`` for clouds that take lower
    case only (Dataproc batch ids: ``[a-z0-9][a-z0-9-]{2,61}[a-z0-9]``).
    """
    digest = hashlib.sha256(f"{dag_id}|{task_id}|{interval_key}|{run_id}".encode()).hexdigest()[:10]
    suffix = f"-{digest}-t{int(try_number)}"
    readable = re.sub(r"[^a-zA-Z0-9]+", "-", f"{task_id}-{interval_key}").strip("-")
    if lower:
        readable = readable.lower()
    readable = readable[: max_len - len(suffix)].rstrip("-") or "job"
    return f"{readable}{suffix}"


def training_job_name(dag_id: str, task_id: str, interval_key: str, run_id: str, try_number: int) -> str:
    """A SageMaker training job name: ≤ 63 characters of [a-zA-Z0-9-] (``short_job_name``)."""
    return short_job_name(dag_id, task_id, interval_key, run_id, try_number)
