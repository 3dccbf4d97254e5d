"""The trainer's hyperparameters: the one list a DAG run may set, each target's job passes on, and every
training container's entry point reads (SageMaker, Vertex AI, Azure ML). Imports nothing beyond the standard
library: it runs inside those containers, and on the DAGs' parse path."""

from __future__ import annotations

import argparse

HYPERPARAMETERS: dict[str, type] = {"n_estimators": int, "max_depth": int, "learning_rate": float, "device": str}
DEVICES = ("auto", "cpu", "cuda")


def check(params: dict) -> None:
    """Refuse a hyperparameter the trainer does not take, naming the ones it does."""
    unknown = set(params) - set(HYPERPARAMETERS)
    if unknown:
        raise ValueError(f"Unknown hyperparameters {sorted(unknown)}; the trainer takes {', '.join(HYPERPARAMETERS)}.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--n_estimators``, ``--max_depth``, ``--learning_rate`` and ``--device``, as an entry point takes them."""
    for name, kind in HYPERPARAMETERS.items():
        if name == "device":
            p.add_argument("--device", choices=DEVICES, default="auto")
        else:
            p.add_argument(f"--{name}", type=kind)


def given(args: dict) -> dict:
    """The hyperparameters set in parsed ``args`` (the trainer's defaults stand for the others)."""
    return {k: args[k] for k in HYPERPARAMETERS if args.get(k) is not None}
