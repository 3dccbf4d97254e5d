"""Copying a cloud folder into a local cache, the same way for every cloud.

The lake's ``local_dir`` (exports a warehouse loads), a trainer's ``collect`` (a job's model folder)
and a registry's ``bundle_dir`` all list objects under a prefix and download them. ``mirror`` does
the part every cloud shares: a file already there with the same size is kept, each download goes to
``<name>.part`` and is renamed into place (so no reader ever sees a truncated file under its final
name), and an optional marker file is written after every other file (a folder holding it is complete).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable


def mirror(objects: Iterable[tuple[str, int | None, Any]], target: Path,
           download: Callable[[Any, Path], None], *, last: str | None = None) -> Path:
    """Download ``objects`` into ``target``; returns ``target``.

    Args:
        objects: ``(path relative to the prefix, size or None, handle)``; names ending in ``/`` (folder
            placeholders) are skipped.
        download: writes the object behind ``handle`` to the given local path.
        last: a relative path written after all the others (e.g. ``model.json``).
    """
    target = Path(target)
    entries = sorted((e for e in objects if e[0] and not e[0].endswith("/")), key=lambda e: (e[0] == last, e[0]))
    for name, size, handle in entries:
        dest = target / name
        if size is not None and dest.exists() and dest.stat().st_size == size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        download(handle, partial)
        partial.replace(dest)
    return target
