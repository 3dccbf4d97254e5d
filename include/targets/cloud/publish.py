"""Publishing a folder (a model's scoring bundle) to a cloud's object storage, complete or not at all.

Readers (the scoring Spark job) look for the marker file (``model.json``): it is written last,
so a half-published folder is never taken for a bundle, and a folder whose marker is there is
never uploaded again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from include.targets.cloud.artifact import ObjectStore

log = logging.getLogger(__name__)


def publish_folder(local: Path, uri: str, store: ObjectStore, marker: str = "model.json") -> str:
    """Upload every file under ``local`` to ``uri``/…, ``marker`` last; nothing when the marker is there.

    Returns ``uri``.
    """
    uri = uri.rstrip("/")
    if store.exists(f"{uri}/{marker}"):
        return uri
    local = Path(local)
    if not (local / marker).is_file():
        raise FileNotFoundError(f"{local} has no {marker}: it is not a complete bundle to publish.")
    for path in sorted(p for p in local.rglob("*") if p.is_file() and p.relative_to(local).as_posix() != marker):
        store.put(f"{uri}/{path.relative_to(local).as_posix()}", path.read_bytes(), {})
    store.put(f"{uri}/{marker}", (local / marker).read_bytes(), {})  # last: marks the folder complete
    log.info("Published %s to %s", local, uri)
    return uri
