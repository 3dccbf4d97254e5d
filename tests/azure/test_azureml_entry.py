"""The Azure ML training entry point, run the way the rendered command job runs it.

The job is submitted to ``FakeMLClient`` (the SDK's validation and REST body), then its command
runs as Azure ML runs it on the node: in a clean process under ``bash``, with ``${{inputs.*}}``
and ``${{outputs.*}}`` replaced by the mounted training set, the downloaded ``sourcedir.tar.gz``
(the real artefact), the literal hyperparameters and the outputs' datastore folders; ``python``
is this project's interpreter with Airflow made unimportable, as in the image. Then
``AzureMLTrainer.collect`` reads the model output back through ``jobs.download``, as
``register_model`` does. On low-priority VMs a preempted job runs again from the start: the
second run takes the complete outputs from the checkpoint folder instead of training again. The
image and its conda environment are not emulated (the clean-venv test installs the requirements).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from include.targets.azure import azureml, azureml_entry
from include.targets.azure.settings import AzureSettings
from include.targets.cloud.artifact import build_artifact, pinned_requirements
from include.training.outputs import METRICS_FILE
from tests.azure.azureml_fakes import FakeMLClient
from tests.include.test_training import _fixture

PARAMS = {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.2, "device": "auto"}
DATASET = "abfss://lake@flightsexample.dfs.core.windows.net/lake/exports/training/k/manual__2013-03-01"
OUTPUTS = ["baseline", "bundle", "metrics.json", "report.png"]


def test_arguments_and_the_completion_marker():
    assert azureml_entry.parse(["--data-dir", "/mnt/d/data", "--model-dir", "/mnt/m", "--max_depth", "3",
                                "--device", "cuda"]) == (Path("/mnt/d/data"), Path("/mnt/m"), None,
                                                         {"max_depth": 3, "device": "cuda"})
    assert azureml_entry.parse(["--data-dir", "d", "--model-dir", "m", "--checkpoint-dir", "c"])[2] == Path("c")
    with pytest.raises(SystemExit):
        azureml_entry.parse(["--data-dir", "d"])  # --model-dir is required
    assert azureml_entry.METRICS_FILE == METRICS_FILE  # the entry point's copy of the training code's marker


@pytest.fixture(scope="module")
def sourcedir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("code") / "sourcedir.tar.gz"
    path.write_bytes(build_artifact().sourcedir_bytes)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The exported training set as Azure ML mounts it: a folder whose ``data/`` holds Parquet parts."""
    folder = tmp_path_factory.mktemp("dataset")
    data = folder / "data"
    data.mkdir()
    frame = _fixture(n=2000, seed=3)
    frame.iloc[:1000].to_parquet(data / "part-0.parquet", index=False)
    frame.iloc[1000:].to_parquet(data / "part-1.parquet", index=False)
    return folder


def _node(tmp_path: Path) -> dict[str, str]:
    """The node's environment: ``python`` is this interpreter, Airflow cannot be imported, no project settings."""
    bindir, blocker = tmp_path / "bin", tmp_path / "no-airflow" / "airflow"
    bindir.mkdir(exist_ok=True)
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text('raise ImportError("Airflow is not in the training image")\n')
    (bindir / "python").write_text(f'#!/bin/bash\nexec "{sys.executable}" "$@"\n')
    (bindir / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLIGHTS_", "PYTHON", "AIRFLOW"))}
    env.update({"PATH": f"{bindir}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(tmp_path / "no-airflow"),
                "PYTHONNOUSERSITE": "1", "MPLCONFIGDIR": str(tmp_path / "mpl")})
    return env


def _submit(ml: FakeMLClient, azure: AzureSettings, name: str) -> None:
    job = azureml.command_job(azure, name=name, dataset_uri=DATASET, params=PARAMS,
                              sourcedir_uri=f"{azure.artifacts_root}/code/x/sourcedir.tar.gz",
                              requirements=pinned_requirements())
    ml.jobs.create_or_update(job)


def _run(ml, name, dataset, sourcedir, tmp_path) -> dict:
    command = ml.jobs.resolved_command(name, {"dataset": dataset, "code": sourcedir})
    done = subprocess.run(["/bin/bash", "-c", command], cwd=tmp_path, env=_node(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"printed": json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def test_the_job_command_trains_and_collect_reads_the_model(dataset, sourcedir, tmp_path):
    from include.training.train import pick_device

    ml = FakeMLClient(tmp_path / "datastores")
    azure = AzureSettings.example()
    name = "train-models-entry-test-t1"
    _submit(ml, azure, name)
    run = _run(ml, name, dataset, sourcedir, tmp_path)
    printed, model = run["printed"], ml.jobs.outputs(name)["model"]
    xgb, baseline = printed["metrics"]["xgboost"], printed["metrics"]["baseline"]
    assert printed["device"] == pick_device("auto") and printed["resumed"] is False
    assert xgb["auc"] > 0.7 and baseline["auc"] > 0.5, printed  # the signal was learnt
    assert sorted(p.name for p in model.iterdir()) == OUTPUTS

    while ml.jobs.status(name) != "Completed":
        ml.jobs.get(name)  # Azure ML finishes the job
    model_uri = azureml.output_uri(azure, name, "model").rstrip("/")
    trained = {"job_name": name, "status": "Completed", "model_uri": model_uri, "studio_url": "https://ml.azure.com/"}
    collected = azureml.AzureMLTrainer(azure, tmp_path / "cache", client=ml).collect(trained)
    assert collected.metrics == printed["metrics"] and collected.params["n_estimators"] == 30
    assert collected.model_uri == model_uri and (collected.output_dir / "bundle" / "model.json").is_file()
    assert not list((tmp_path / "cache").glob("*.part"))
    (collected.output_dir / "bundle" / "model.json").write_text("{}")  # downloaded once: the cache is read again
    assert azureml.AzureMLTrainer(azure, tmp_path / "cache", client=ml).collect(trained).metrics == printed["metrics"]


def test_a_restarted_low_priority_job_resumes_from_its_checkpoint(dataset, sourcedir, tmp_path):
    ml = FakeMLClient(tmp_path / "datastores")
    azure = AzureSettings.example(training_low_priority=True)
    name = "train-models-spot-test-t1"
    _submit(ml, azure, name)
    checkpoint = ml.jobs.outputs(name)["checkpoints"]
    (checkpoint / "outputs" / "bundle").mkdir(parents=True)
    (checkpoint / "outputs" / "bundle" / "half-written.json").write_text("{")  # a run preempted while training,
    (checkpoint / "outputs" / "metrics.json").write_text('{"metrics": {}, "params": {}}')  # not yet marked done

    first = _run(ml, name, dataset, sourcedir, tmp_path)
    assert first["printed"]["resumed"] is False and "Discarding the partial outputs" in first["stderr"]
    model = ml.jobs.outputs(name)["model"]
    assert sorted(p.name for p in model.iterdir()) == OUTPUTS
    assert not (checkpoint / "outputs" / "bundle" / "half-written.json").exists()
    assert (checkpoint / "outputs.done").is_file() and not (model / "outputs.done").exists()

    for path in sorted(model.rglob("*"), reverse=True):  # preempted again before Azure ML kept the output
        path.unlink() if path.is_file() else path.rmdir()
    again = _run(ml, name, dataset, sourcedir, tmp_path)
    assert again["printed"]["resumed"] is True and "not training again" in again["stderr"]
    assert again["printed"]["metrics"] == first["printed"]["metrics"]
    assert sorted(p.name for p in model.iterdir()) == OUTPUTS
    staged = checkpoint / "outputs"
    assert all((model / p.relative_to(staged)).read_bytes() == p.read_bytes()
               for p in staged.rglob("*") if p.is_file())  # the checkpoint's outputs, not a second training


def test_a_missing_training_set_stops_with_a_clear_message(sourcedir, tmp_path):
    done = subprocess.run([sys.executable, str(Path(azureml_entry.__file__)), "--data-dir", str(tmp_path / "none"),
                           "--model-dir", str(tmp_path / "m")], env=_node(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "is not a folder: export the training set first" in done.stderr
