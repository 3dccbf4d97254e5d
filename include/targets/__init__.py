"""Cloud targets: one module per target, each exposing the same small set of objects.

``get_target()`` returns the target chosen by ``FLIGHTS_TARGET`` (the six seams the Python
tasks use), ``get_steps()`` its step factory (the tasks DAG files ask for). A new target
is a new module with ``build(cfg)`` and ``step_factory(cfg)``, registered in ``_MODULES``; no DAG
file changes.
"""

from __future__ import annotations

import importlib

from include.config import ConfigError, Settings, settings
from include.targets.base import Steps, Target

_MODULES = {"local": "include.targets.local", "aws": "include.targets.aws"}


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


def get_steps(cfg: Settings | None = None) -> Steps:
    """The step factory of the target chosen by ``FLIGHTS_TARGET``, for DAG files at parse time.

    It builds the tasks that run Spark jobs, quality gates, scoring, warehouse loads and
    training: Python tasks on ``local``, deferrable cloud operators on ``aws``. Reads
    settings only; no connection or cloud call.
    """
    cfg = cfg or settings()
    return _module(cfg).step_factory(cfg)
