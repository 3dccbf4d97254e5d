"""The control flow every cloud job operator shares: reattach on retry, cancel stale jobs, check the end.

The providers' operators submit a new job on every try. When a worker dies while a job is
running, or a deferred task times out while the job goes on, the retry would start a
second job writing the same partitions (apache/airflow 42401, 60517); a static job id fails
with ALREADY_EXISTS instead (apache/airflow PR 69855). Every cloud operator of this project
therefore names its job ``<dag>.<task>.<interval>.try<n>`` (or a cloud-safe form of it) and,
before submitting, looks for a job of the same DAG, task, interval and run:

* from a try of the current attempt, still running: wait for it instead of submitting;
* from a try of the current attempt, succeeded: return it, submitting nothing;
* from before the task was cleared and still running: cancel it, then submit.

After the wait, success needs the job's final state *and* its outputs (apache/airflow
69042: a deferred task reporting success on a failed job). A cloud package supplies only
the listing (``JobRef`` per candidate job) and the calls; ``classify`` decides.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from include.targets.cloud.naming import attempt_tries, job_name, job_stem, try_of

ACTIVE, SUCCEEDED, FAILED = "active", "succeeded", "failed"


class JobStateError(RuntimeError):
    """A cloud job ended in a state other than success although the wait reported success, or wrote nothing."""


@dataclass(frozen=True)
class JobRef:
    """One cloud job found by name: its id, its name, its run id (tag or label) and its state.

    ``status`` is one of ``ACTIVE``, ``SUCCEEDED`` or ``FAILED``; ``state`` is the cloud's own word for it.
    """

    id: str
    name: str
    run_id: str
    status: str
    state: str = ""
    raw: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Found:
    reattach: JobRef | None  # the newest active or succeeded job of this attempt
    stale: list[JobRef]  # active jobs of earlier attempts: cancel them
    latest: JobRef | None = None  # the newest job of this attempt, whatever its state (to report a failure)


@dataclass(frozen=True)
class Identity:
    """Who a task's job is: the name of this try, the stem every try shares, the run and the attempt's tries."""

    stem: str
    name: str
    run_id: str
    try_number: int
    tries: range

    def names(self, fmt: Callable[[str], str] = lambda n: n) -> dict[str, int]:
        """Each try of the attempt by name (formatted the cloud's way), newest last."""
        return {fmt(f"{self.stem}{n}"): n for n in self.tries}


def identity(context, interval_key: str, retries: int | None) -> Identity:
    """The job identity of the running task instance (``context`` is the task's Airflow context)."""
    ti = context["ti"]
    tries = attempt_tries(ti.try_number, getattr(ti, "max_tries", None), retries or 0)
    return Identity(job_stem(ti.dag_id, ti.task_id, interval_key),
                    job_name(ti.dag_id, ti.task_id, interval_key, ti.try_number),
                    context["run_id"], int(ti.try_number), tries)


def classify(jobs: Iterable[JobRef], stem: str, run_id: str, tries: range,
             try_number_of: Callable[[JobRef], int | None] | None = None) -> Found:
    """Decide which job to reattach to (the newest try of this attempt) and which to cancel (stale, active).

    Args:
        jobs: candidate jobs listed by the cloud (any order; others are ignored).
        stem: ``job_stem`` of the task; a job belongs to it when its name is ``stem`` + a try number.
        run_id: jobs of other DAG runs are ignored.
        tries: the tries of the current attempt (``attempt_tries``).
        try_number_of: how to read the try number from a job, for clouds whose names cannot hold the stem
            (default: ``try_of(job.name, stem)``).
    """
    number = try_number_of or (lambda j: try_of(j.name, stem))
    reattach, stale, latest = None, [], None
    for job in sorted((j for j in jobs if number(j) is not None and j.run_id == run_id), key=number):
        if number(job) in tries:
            latest = job
            if job.status in (ACTIVE, SUCCEEDED):
                reattach = job  # the newest try wins
        elif job.status == ACTIVE:
            stale.append(job)
    return Found(reattach, stale, latest)


def require_output(exists: Callable[[str], bool], uri: str | None, what: str) -> str | None:
    """After a successful job: its output must exist (when the task names one). Returns ``uri``."""
    if uri and not exists(uri):
        raise JobStateError(f"{what} succeeded but wrote nothing at {uri}; see its driver log.")
    return uri


async def wait_for_end(get: Callable[[], Any], ended: Callable[[Any], tuple[bool, str, str] | None], *, log,
                       what: str, job_name: str, state_key: str, poll_interval: float,
                       max_poll_errors: int) -> dict[str, Any]:
    """A deferred job's wait, as every cloud's trigger runs it: the event payload once the job is over.

    ``get()`` (the cloud's synchronous client call, run in a thread: one call per poll interval) returns
    the job; ``ended(job)`` returns ``(succeeded, state, message)`` once it is over, else None. A failed
    poll is logged and tried again; ``max_poll_errors`` failures in a row give ``{"status": "error"}``
    (the job itself goes on). Payload: ``status`` (success, failed or error), ``job_name``, the state
    under ``state_key`` and a ``message``.
    """
    errors = 0
    while True:
        try:
            job = await asyncio.to_thread(get)
            errors = 0
        except Exception as exc:  # a transient API error must not end the wait at once
            errors += 1
            log.warning("Polling %s %s failed (%d/%d): %s", what, job_name, errors, max_poll_errors, exc)
            if errors >= max_poll_errors:
                return {"status": "error", "job_name": job_name, state_key: "",
                        "message": f"{type(exc).__name__}: {exc}"}
            await asyncio.sleep(poll_interval)
            continue
        over = ended(job)
        if over is not None:
            succeeded, state, message = over
            return {"status": "success" if succeeded else "failed", "job_name": job_name, state_key: state,
                    "message": message}
        await asyncio.sleep(poll_interval)
