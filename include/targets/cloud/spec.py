"""Operator specs: an operator class (dotted path) and its keyword arguments, as plain data.

Every cloud's job builders return an ``OperatorSpec``, not an operator: the explain plan
prints them, tests validate them against the cloud's own request types, and only
``instantiate`` imports the provider, when a DAG is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class OperatorSpec:
    """An operator class (dotted path) and its keyword arguments: what ``instantiate`` builds."""

    operator: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def class_name(self) -> str:
        return self.operator.rsplit(".", 1)[1]


def instantiate(spec: OperatorSpec, **extra):
    """Import the operator class of ``spec`` and build it with its kwargs (plus ``extra``, e.g. ``dag``)."""
    module, name = spec.operator.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**spec.kwargs, **extra)
