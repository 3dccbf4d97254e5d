"""Checks every cloud operator makes before it submits a job: is what the job runs in the bucket?

A job whose entry point, code zip or jars are missing would fail minutes later on the cluster
with a file-not-found deep in its driver log; retrying cannot fix it, an upload does. Each cloud
passes its ``exists`` call and its upload command; the check and the message are the same.
"""

from __future__ import annotations

from typing import Callable, Iterable

from airflow.sdk.exceptions import AirflowFailException


class CodeMissing(AirflowFailException):
    """What a job runs is not in the cloud's storage: a retry cannot fix it, an upload does (not retried)."""


def require_code(uris: Iterable[str], exists: Callable[[str], bool], *, scheme: str, storage: str,
                 upload: str, doc: str) -> None:
    """Fail at once, naming the upload command, when an object the job runs is missing.

    Args:
        uris: entry point, code zip, jars; an item may be a comma-separated list (``--py-files``). Paths
            that are not under ``scheme`` (in the runtime's image) are not checked.
        exists: whether an object exists, e.g. ``lambda uri: ...`` over the cloud's client.
        scheme, storage, upload, doc: ``s3://`` / ``S3`` / the upload command / the guide that explains it.
    """
    missing = [u for uri in uris for u in str(uri).split(",") if u.startswith(scheme) and not exists(u)]
    if missing:
        raise CodeMissing(f"What this job runs is not in {storage}: {', '.join(missing)}. Upload this checkout's "
                          f"artefact (`{upload}`, {doc}) with the same code the DAGs were parsed from, then clear "
                          "the task.")
