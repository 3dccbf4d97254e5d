"""Cloud targets: one package per target, each exposing the same small set of objects.

``get_target()`` returns the target chosen by ``FLIGHTS_TARGET`` (the six seams the Python
tasks use), ``get_step_backend()`` what it tells the one step factory (``include.steps``): per
step, the cloud operator that runs it, or None for a Python task. A new target is a new
package with ``build(cfg)`` and ``step_backend(cfg)``, registered in ``_MODULES``; no DAG
file changes, and the task graph stays the same (``tests/dags/test_same_graph.py``).
"""

from __future__ import annotations

import importlib

from include.config import ConfigError, Settings, settings
from include.targets.base import StepBackend, Target

_MODULES = {"local": "include.targets.local", "aws": "include.targets.aws", "gcp": "include.targets.gcp",
            "azure": "include.targets.azure"}


def _module(cfg: Settings):
    module = _MODULES.get(cfg.target)
    if module is None:
        raise ConfigError(
            f"FLIGHTS_TARGET={cfg.target!r} has no target module yet; available: {', '.join(sorted(_MODULES))}."
        )
    return importlib.import_module(module)


def get_target(cfg: Settings | None = None) -> Target:
    cfg = cfg or settings()
    return _module(cfg).build(cfg)


def get_step_backend(cfg: Settings | None = None) -> StepBackend:
    """What the target chosen by ``FLIGHTS_TARGET`` runs each step with; settings only, no cloud call."""
    cfg = cfg or settings()
    return _module(cfg).step_backend(cfg)
