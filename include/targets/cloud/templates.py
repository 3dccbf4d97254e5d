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
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
IF_SET = "IfSet"


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
