"""Cloud targets: one module per target, each exposing the same small set of objects.

``get_target()`` returns the target chosen by ``FLIGHTS_TARGET``. A new target is a new
module registered in ``_MODULES``; no DAG file changes.
"""

from __future__ import annotations

import importlib

from include.config import ConfigError, Settings, settings
from include.targets.base import Target

_MODULES = {"local": "include.targets.local"}


def get_target(cfg: Settings | None = None) -> Target:
    cfg = cfg or settings()
    module = _MODULES.get(cfg.target)
    if module is None:
        raise ConfigError(
            f"FLIGHTS_TARGET={cfg.target!r} has no target module yet; available: {', '.join(sorted(_MODULES))}."
        )
    return importlib.import_module(module).build(cfg)
