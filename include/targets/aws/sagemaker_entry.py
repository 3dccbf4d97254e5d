"""Entry point of the SageMaker training container (script mode).

SageMaker passes hyperparameters as ``--name value`` arguments and the data and model
folders as ``SM_CHANNEL_DATASET`` and ``SM_MODEL_DIR``; this adapter hands them to the
same ``train_and_evaluate`` the local target runs. Everything written to the model folder
(bundle, baseline, metrics.json, report.png) is uploaded by SageMaker as model.tar.gz.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse(argv: list[str]) -> dict:
    from include.training import hyperparameters  # after main put the source folder on the path

    p = argparse.ArgumentParser(description=__doc__)
    hyperparameters.add_arguments(p)
    known, _ = p.parse_known_args(argv)  # SageMaker adds its own sagemaker_* arguments
    return hyperparameters.given(vars(known))


def main(argv: list[str] | None = None) -> None:
    root = str(Path(__file__).resolve().parents[3])  # the source folder: run as a script, `include` is not on the path
    if root not in sys.path:
        sys.path.insert(0, root)
    from include.training.train import train_and_evaluate

    params = parse(sys.argv[1:] if argv is None else argv)
    data = Path(os.environ.get("SM_CHANNEL_DATASET", "/opt/ml/input/data/dataset"))
    model = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    out = train_and_evaluate(data, model, params)
    print(json.dumps({"metrics": out.metrics, "device": out.device}))


if __name__ == "__main__":
    main()
