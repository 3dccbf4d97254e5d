"""Filling the identity templates of every cloud: ``${NAME}`` placeholders and the ``IfSet`` rule.

The AWS policies (``infra/aws/iam/*.json``) and the GCP roles and bindings (``infra/gcp/``) are
templates with ``${NAME}`` placeholders (bucket names, project, account, service accounts)
filled from the cloud's settings (``placeholders()``), so what is applied in an account is
exactly what the tests check. Two rules hold for both clouds:

* a placeholder the values do not name is an error (``KeyError`` naming it), never left as text;
* an entry (an IAM statement, a binding) whose marker starts with ``IfSet`` is kept only when
  every placeholder it uses has a non-empty value: the grant for an optional resource (a
  DynamoDB log table, a Pub/Sub topic) exists only when that resource is configured.

Values are substituted into the parsed document, string by string, so a value can never change
the structure of the JSON or YAML it lands in.

Grants scoped to a folder (a GCS object-name condition, an Azure blob path condition) are only as
safe as the folder names: ``grantable_prefixes`` refuses a lake or artifacts prefix such a grant
cannot express, or one that overlaps the landing zone or the other root.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
IF_SET = "IfSet"
LANDING_PREFIX = "landing"  # every cloud lake's landing zone: <lake bucket or container>/landing
_FOLDERS = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def overlaps(a: str, b: str) -> bool:
    """Whether one folder path is, or contains, the other."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def grantable_prefixes(lake_prefix: str, artifacts_prefix: str, *, env: str, condition: str, writer: str,
                       shared_root: str | None) -> tuple[str, str]:
    """The lake and artifacts prefixes (stripped of ``/``), once a grant scoped to each is safe.

    Args:
        env: the settings' variable stem (``FLIGHTS_GCP``), to name the variable at fault.
        condition: what scopes the grant (``an object name prefix``), for the message.
        writer: the identity that writes the lake (``Dataproc runtime``), for the message.
        shared_root: where both roots live when they share one (``bucket flights-lake``), else None.

    Raises ValueError naming the variable: a prefix that is empty (the whole root), holds characters
    other than letters, digits, ``._-/`` or a ``.``/``..`` segment, a lake prefix overlapping the
    landing folder, or (in a shared root) an artifacts prefix overlapping the lake or landing.
    """
    lake, artifacts = lake_prefix.strip("/"), artifacts_prefix.strip("/")
    for name, prefix in ((f"{env}_LAKE_PREFIX", lake), (f"{env}_ARTIFACTS_PREFIX", artifacts)):
        if not _FOLDERS.match(prefix) or {".", ".."} & set(prefix.split("/")):
            raise ValueError(f"{name}={prefix!r} cannot be granted by {condition}: use one or more folder names of "
                             "letters, digits, '.', '_' or '-' separated by '/' (no '.' or '..').")
    if overlaps(lake, LANDING_PREFIX):
        raise ValueError(f"{env}_LAKE_PREFIX={lake!r} overlaps the landing folder {LANDING_PREFIX!r}: the {writer} "
                         "could then delete landing files. Choose another lake prefix.")
    if shared_root:
        for other in (lake, LANDING_PREFIX):
            if overlaps(artifacts, other):
                raise ValueError(f"{env}_ARTIFACTS_PREFIX={artifacts!r} overlaps {other!r} in the same {shared_root}: "
                                 "choose prefixes that do not contain one another.")
    return lake, artifacts


def placeholders_in(obj: Any) -> set[str]:
    """Every placeholder name used in ``obj`` (a string, or lists and dicts of them, keys included)."""
    if isinstance(obj, str):
        return set(PLACEHOLDER.findall(obj))
    if isinstance(obj, Mapping):
        return set().union(*(placeholders_in(k) | placeholders_in(v) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return set().union(*(placeholders_in(v) for v in obj))
    return set()


def require_known(text: str, values: Mapping[str, str], *, source: str, filler: str) -> None:
    """Raise KeyError naming every placeholder of ``text`` that ``values`` does not fill.

    Args:
        text: the template's text.
        values: placeholder name -> value.
        source: the template, for the message (e.g. ``airflow-role.json``).
        filler: what supplies the values, for the message (e.g. ``AwsSettings.placeholders()``).
    """
    unknown = sorted(set(PLACEHOLDER.findall(text)) - set(values))
    if unknown:
        raise KeyError(f"{source} uses placeholder(s) {unknown} that {filler} does not fill: add them there, or "
                       f"use one of {sorted(values)}.")


def is_set(obj: Any, values: Mapping[str, str]) -> bool:
    """Whether every placeholder ``obj`` uses has a non-empty value."""
    return all(values.get(name) for name in placeholders_in(obj))


def fill(obj: Any, values: Mapping[str, str]) -> Any:
    """A copy of ``obj`` with every ``${NAME}`` replaced by ``values[NAME]`` (KeyError for an unknown one)."""
    if isinstance(obj, str):
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), obj)
    if isinstance(obj, Mapping):
        return {fill(k, values): fill(v, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [fill(v, values) for v in obj]
    return obj


def keep_if_set(entries: Iterable[dict], values: Mapping[str, str], marker: str) -> list[dict]:
    """The entries to keep: all, except those whose ``marker`` field starts with ``IfSet`` and that use an
    empty placeholder. Entries are returned unfilled."""
    return [e for e in entries if not (str(e.get(marker, "")).startswith(IF_SET) and not is_set(e, values))]


def render(doc: dict, values: Mapping[str, str], *, entries: str, marker: str) -> dict:
    """Fill a parsed template: drop the unset ``IfSet`` entries of ``doc[entries]``, then substitute.

    Args:
        doc: the parsed template (check its text with ``require_known`` first).
        values: placeholder name -> value.
        entries: the key of the list the ``IfSet`` rule applies to (``Statement``, ``bindings``); a
            document without it is filled as it is.
        marker: the field of an entry that may start with ``IfSet`` (``Sid``, ``id``).
    Returns:
        A new document; ``doc`` is left as it was.
    """
    if entries not in doc:
        return fill(doc, values)
    listed = doc[entries] if isinstance(doc[entries], list) else [doc[entries]]
    kept = keep_if_set(listed, values, marker)
    return {**fill({k: v for k, v in doc.items() if k != entries}, values), entries: fill(kept, values)}


def write_script(path: Path, lines: list[str]) -> Path:
    """Write the commands that apply a cloud's rendered identities (``apply.sh``), executable; returns it."""
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path
