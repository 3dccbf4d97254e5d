"""Entry point of the Azure ML training job.

    python include/targets/azure/azureml_entry.py --data-dir DIR --model-dir DIR [--checkpoint-dir DIR]
        [--n_estimators N --max_depth N --learning_rate F --device auto|cpu|cuda]

(``python -m include.targets.azure.azureml_entry`` takes the same arguments.) Azure ML mounts the
job's inputs and outputs and puts their paths into the command (``${{inputs.dataset}}/data``,
``${{outputs.model}}``, ``${{outputs.checkpoints}}``). This adapter hands them to the same
``train_and_evaluate`` the local target runs (``device=auto`` picks CUDA where a GPU is visible)
and prints one JSON line with the metrics and the device. It imports the training code only:
the image has no Airflow.

On low-priority VMs Azure ML may preempt the node and run the job again from the start. With
``--checkpoint-dir`` (a read-write output that survives the restart) the model is trained into
``<checkpoint>/outputs`` first, ``<checkpoint>/outputs.done`` is written once training has
returned, and the outputs are copied to the model folder (``metrics.json`` last); a restarted run
that finds ``outputs.done`` copies the outputs instead of training again, and one that finds
outputs without it (stopped while training or writing) trains afresh.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

METRICS_FILE = "metrics.json"  # include.training.outputs.METRICS_FILE: written last, marks complete outputs
STAGED = "outputs"  # the checkpoint folder's copy of the outputs
DONE = "outputs.done"  # next to it, written once training has returned: the copy is complete


def parse(argv: list[str]) -> tuple[Path, Path, Path | None, dict]:
    from include.training import hyperparameters  # after main put the source folder on the path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the exported training set's Parquet folder")
    p.add_argument("--model-dir", required=True, help="where the outputs go (the job's model output)")
    p.add_argument("--checkpoint-dir", help="a folder that survives a restart of the job (low-priority VMs)")
    hyperparameters.add_arguments(p)
    args = vars(p.parse_args(argv))
    data, model, checkpoint = args["data_dir"], args["model_dir"], args["checkpoint_dir"]
    return Path(data), Path(model), Path(checkpoint) if checkpoint else None, hyperparameters.given(args)


def copy_outputs(src: Path, dest: Path) -> None:
    """Copy a finished output folder, ``metrics.json`` last, so that a reader never takes a partial copy for done."""
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted((p for p in src.rglob("*") if p.is_file()), key=lambda p: (p.name == METRICS_FILE, str(p)))
    for path in files:
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def train_with_checkpoint(data: Path, model: Path, checkpoint: Path, params: dict, train) -> tuple[dict, str, bool]:
    """Train into ``checkpoint``/outputs (or take the complete outputs found there), then copy them to ``model``.

    Returns ``(metrics, device, resumed)``.
    """
    staged, done = checkpoint / STAGED, checkpoint / DONE
    resumed = done.is_file() and (staged / METRICS_FILE).is_file()
    if resumed:
        print(f"Resuming: {staged} holds the complete outputs of an earlier run of this job; not training again.",
              file=sys.stderr)
        saved = json.loads((staged / METRICS_FILE).read_text(encoding="utf-8"))
        metrics, device = saved["metrics"], str(saved.get("params", {}).get("device", ""))
    else:
        if staged.exists():
            print(f"Discarding the partial outputs in {staged} (the run that wrote them was stopped).",
                  file=sys.stderr)
            shutil.rmtree(staged)
        done.unlink(missing_ok=True)
        out = train(data, staged, params)
        metrics, device = out.metrics, out.device
        done.write_text(json.dumps({"device": device}), encoding="utf-8")
    copy_outputs(staged, model)
    return metrics, device, resumed


def main(argv: list[str] | None = None) -> None:
    root = str(Path(__file__).resolve().parents[3])  # run as a file, `include` is not on the path
    if root not in sys.path:
        sys.path.insert(0, root)
    from include.training.train import train_and_evaluate

    data, model, checkpoint, params = parse(sys.argv[1:] if argv is None else argv)
    if not data.is_dir():
        sys.exit(f"--data-dir {data} is not a folder: export the training set first, or check that the job's "
                 "identity can read the lake's storage account.")
    resumed = False
    if checkpoint is None:
        out = train_and_evaluate(data, model, params)
        metrics, device = out.metrics, out.device
    else:
        metrics, device, resumed = train_with_checkpoint(data, model, checkpoint, params, train_and_evaluate)
    print(json.dumps({"metrics": metrics, "device": device, "model_dir": str(model), "resumed": resumed}))


if __name__ == "__main__":
    main()
