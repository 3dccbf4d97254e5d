"""Entry point of the Vertex AI training container.

    python include/targets/gcp/vertex_entry.py --data-dir DIR [--n_estimators N --max_depth N
        --learning_rate F --device auto|cpu|cuda]

(``python -m include.targets.gcp.vertex_entry`` takes the same arguments.)
The model folder is ``AIP_MODEL_DIR``, which Vertex AI sets to ``gs://<base output>/model/``;
``gs://bucket/key`` paths, there and in ``--data-dir``, are read through the Cloud Storage FUSE
mount at ``/gcs/bucket/key``; a local path is used as it is. This adapter hands them to the same
``train_and_evaluate`` the local target runs and prints one JSON line with the metrics and the
device. It imports the training code only: the image has no Airflow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

FUSE_ROOT = "/gcs"


def local_path(uri: str) -> Path:
    """``gs://bucket/key`` -> ``/gcs/bucket/key`` (Cloud Storage FUSE); any other path as it is."""
    if uri.startswith("gs://"):
        rest = uri[len("gs://"):].strip("/")
        if not rest:
            raise ValueError(f"{uri!r} names no bucket.")
        return Path(FUSE_ROOT) / rest
    return Path(uri)


def parse(argv: list[str]) -> tuple[str, dict]:
    from include.training import hyperparameters  # after main put the source folder on the path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the exported training set's Parquet folder (gs:// or local)")
    hyperparameters.add_arguments(p)
    args = vars(p.parse_args(argv))
    return args["data_dir"], hyperparameters.given(args)


def main(argv: list[str] | None = None) -> None:
    root = str(Path(__file__).resolve().parents[3])  # run as a file, `include` is not on the path
    if root not in sys.path:
        sys.path.insert(0, root)
    from include.training.train import train_and_evaluate

    data_dir, params = parse(sys.argv[1:] if argv is None else argv)
    model_dir = os.environ.get("AIP_MODEL_DIR", "").strip()
    if not model_dir:
        sys.exit("AIP_MODEL_DIR is not set: Vertex AI sets it when the job has a base_output_directory; "
                 "set it to the folder the model should be written to.")
    data, model = local_path(data_dir), local_path(model_dir)
    if not data.is_dir():
        sys.exit(f"--data-dir {data_dir} is not a folder here ({data}): export the training set first, or check "
                 "that the job's service account can read its bucket.")
    out = train_and_evaluate(data, model, params)
    print(json.dumps({"metrics": out.metrics, "device": out.device, "model_dir": model_dir}))


if __name__ == "__main__":
    main()
