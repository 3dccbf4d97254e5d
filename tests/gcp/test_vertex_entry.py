"""The Vertex AI training entry point, run the way the rendered custom job runs it.

From the rendered ``CustomJob``: the container's command (``/bin/bash -c BOOTSTRAP``) with its
args and env, in a clean process, on the real ``sourcedir.tar.gz``. Cloud Storage FUSE paths
are replaced by local ones (the training set folder, the code artefact, ``AIP_MODEL_DIR``),
``python3`` is this project's interpreter, with its ``pip install`` recorded instead of run and
Airflow made unimportable, as in the image. Then ``VertexTrainer.collect`` reads the model
folder back from the Cloud Storage emulator, as ``register_model`` does. The image itself
and its pip install of the pinned requirements are not emulated (the clean-venv test installs them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from include.targets.cloud.artifact import build_artifact
from include.targets.gcp import vertex
from include.targets.gcp.vertex_entry import local_path, parse
from tests.include.test_training import _fixture


def test_paths_map_gs_uris_to_the_fuse_mount():
    assert local_path("gs://bkt/training/job/model/") == Path("/gcs/bkt/training/job/model")
    assert local_path("/tmp/model") == Path("/tmp/model")
    with pytest.raises(ValueError, match="names no bucket"):
        local_path("gs://")
    assert parse(["--data-dir", "gs://b/d", "--max_depth", "3", "--device", "cuda"]) == (
        "gs://b/d", {"max_depth": 3, "device": "cuda"})
    with pytest.raises(SystemExit):
        parse(["--n_estimators", "3"])  # --data-dir is required


def _shims(tmp_path: Path) -> tuple[Path, Path]:
    """``python3`` that records ``-m pip`` calls and runs everything else with this interpreter, Airflow hidden."""
    bindir, blocker, log = tmp_path / "bin", tmp_path / "no-airflow" / "airflow", tmp_path / "pip.log"
    bindir.mkdir()
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("Airflow is not in the training image")\n')
    shim = bindir / "python3"
    shim.write_text(f'#!/bin/bash\nif [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "$@" >> "{log}"; exit 0; fi\n'
                    f'exec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    return bindir, log


def test_the_container_command_trains_and_collect_reads_the_model(gcp, buckets, tmp_path):
    artifact = build_artifact()
    (tmp_path / "sourcedir.tar.gz").write_bytes(artifact.sourcedir_bytes)
    data = tmp_path / "dataset" / "data"
    data.mkdir(parents=True)
    frame = _fixture(n=2000, seed=3)
    frame.iloc[:1000].to_parquet(data / "part-0.parquet", index=False)
    frame.iloc[1000:].to_parquet(data / "part-1.parquet", index=False)

    display = "train-models-entry-test-t1"
    body = vertex.custom_job_body(gcp, display_name=display, dataset_uri="gs://flights-lake-example/exports/e",
                                  sourcedir_uri=artifact.sourcedir_uri(gcp.artifacts_root),
                                  params={"n_estimators": 30, "max_depth": 3, "learning_rate": 0.2, "device": "cpu"})
    container = body["job_spec"]["worker_pool_specs"][0]["container_spec"]
    args = list(container["args"])
    assert args[:2] == ["--data-dir", "gs://flights-lake-example/exports/e/data"]
    args[1] = str(data)  # the FUSE path, here
    model_dir = tmp_path / "gcs" / "model"  # AIP_MODEL_DIR, here

    bindir, pip_log = _shims(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLIGHTS_", "PYTHON", "AIRFLOW"))}
    env.update({"PATH": f"{bindir}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(tmp_path / "no-airflow"),
                "PYTHONNOUSERSITE": "1", "AIP_MODEL_DIR": str(model_dir), "MPLCONFIGDIR": str(tmp_path / "mpl"),
                **{e["name"]: str(tmp_path / "sourcedir.tar.gz") for e in container["env"]}})
    done = subprocess.run([*container["command"], *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    pip = pip_log.read_text().split()
    assert pip[:3] == ["-m", "pip", "install"] and pip[-2] == "-r" and pip[-1].endswith("/requirements.txt"), pip
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    xgb, baseline = printed["metrics"]["xgboost"], printed["metrics"]["baseline"]
    assert printed["device"] == "cpu" and xgb["auc"] > 0.7 and baseline["auc"] > 0.5, printed  # the signal was learnt
    assert sorted(p.name for p in model_dir.iterdir()) == ["baseline", "bundle", "metrics.json", "report.png"]

    # Vertex AI's AIP_MODEL_DIR is <base_output_directory>/model/ in Cloud Storage; collect reads it from there.
    prefix = body["job_spec"]["base_output_directory"]["output_uri_prefix"] + "model"
    bucket, _, key = prefix[len("gs://"):].partition("/")
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        buckets.bucket(bucket).blob(f"{key}/{path.relative_to(model_dir).as_posix()}").upload_from_filename(str(path))
    trained = {"job_name": "projects/flights-example/locations/us-central1/customJobs/1", "display_name": display,
               "state": "JOB_STATE_SUCCEEDED", "model_dir": prefix}
    collected = vertex.VertexTrainer(gcp, tmp_path / "cache", buckets).collect(trained)
    assert collected.metrics == printed["metrics"] and collected.params["n_estimators"] == 30
    assert collected.device == "cpu" and collected.model_uri == prefix
    assert (collected.output_dir / "bundle" / "model.json").is_file()
    assert not list(collected.output_dir.rglob("*.part"))


def test_the_container_command_stops_with_a_clear_message_when_the_code_is_missing(tmp_path):
    env = {"PATH": os.environ["PATH"], "FLIGHTS_SOURCEDIR": str(tmp_path / "missing.tar.gz")}
    done = subprocess.run(["/bin/bash", "-c", vertex.BOOTSTRAP, "vertex_entry", "--data-dir", "x"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "is not in Cloud Storage: upload this checkout's artefact" in done.stderr
