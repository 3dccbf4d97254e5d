"""The training entry points, run in a virtual environment made of the training requirements alone.

A managed training container (SageMaker's XGBoost image, Vertex AI's prebuilt XGBoost image,
Azure ML) has no Airflow: it installs the ``requirements.txt`` shipped in ``sourcedir.tar.gz``
and runs the entry point from the unpacked source. This test does the same: a fresh
``python -m venv`` (no system site packages) with exactly that requirements.txt, the real
artefact unpacked into an empty folder, and each entry point run from it with nothing of the
repository on the path. An entry point that reaches Airflow (for instance through
``include.targets.errors``) fails here as it would in the cloud. The entry points run as files,
as both containers run them, and import as modules too: the ``include.targets`` packages they
sit in import nothing that needs Airflow.

The environment is kept under ``.cache/training-venv/<sha256 of requirements.txt>``: a clean
checkout builds it once with uv (from PyPI, or uv's cache), later runs reuse it.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import joblib
import pytest

from include.features import LABEL
from include.targets.cloud.artifact import build_artifact
from include.training.bundle import load_bundle
from include.training.metrics import evaluate
from include.training.train import _baseline_frame
from tests.include.test_training import _fixture

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV_CACHE = REPO / ".cache" / "training-venv"
HYPERPARAMETERS = ["--n_estimators", "20", "--max_depth", "3", "--learning_rate", "0.3", "--device", "cpu"]


def _uv() -> str:
    uv = Path(sys.executable).parent / "uv"  # installed into the project venv by `make install`
    return str(uv) if uv.is_file() else (shutil.which("uv") or pytest.fail("uv is needed: run `make install`"))


def _build_venv(requirements: str) -> Path:
    """A venv holding exactly ``requirements``, cached by its digest. Returns its interpreter."""
    key = hashlib.sha256(requirements.encode("utf-8")).hexdigest()
    venv, stamp = VENV_CACHE / key, f"{platform.python_version()} {sys._base_executable}\n"
    python, complete = venv / "bin" / "python", venv / ".complete"
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    with open(VENV_CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel workers build it once
        if complete.is_file() and complete.read_text() == stamp and python.exists():
            return python
        for stale in VENV_CACHE.iterdir():  # an environment for older requirements (about 1 GB each)
            if stale.is_dir() and stale.name != key:
                shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        (venv / "requirements.txt").write_text(requirements, encoding="utf-8")
        env = _clean_env(UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR", str(REPO / ".cache" / "uv")))
        done = subprocess.run([_uv(), "pip", "install", "--quiet", "--python", str(python),
                               "-r", str(venv / "requirements.txt")],
                              env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"installing the training requirements failed:\n{done.stderr[-3000:]}"
        complete.write_text(stamp)
    return python


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus anything that points Python at the repository or its venv."""
    ours = str(REPO / ".venv")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "FLIGHTS_", "AIRFLOW", "CONDA"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(ours))
    env["PYTHONNOUSERSITE"] = "1"  # no ~/.local packages either
    env.update(extra)
    return env


def _run(python: Path, args: list[str], sourcedir: Path, tmp: Path, **extra: str) -> subprocess.CompletedProcess:
    """Run ``python args`` in the unpacked source folder, as the containers do; no PYTHONPATH."""
    env = _clean_env(MPLCONFIGDIR=str(tmp / "mpl"), **extra)
    env["PATH"] = os.pathsep.join([str(python.parent), env["PATH"]])
    return subprocess.run([str(python), *args], cwd=sourcedir, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def sourcedir_bytes() -> bytes:
    return build_artifact().sourcedir_bytes


@pytest.fixture(scope="session")
def training_python(sourcedir_bytes) -> Path:
    """The interpreter of a venv with the sourcedir's requirements.txt and nothing else."""
    with tarfile.open(fileobj=io.BytesIO(sourcedir_bytes), mode="r:gz") as tf:
        requirements = tf.extractfile("requirements.txt").read().decode("utf-8")
    assert "xgboost==" in requirements, requirements  # the lock pins the training stack
    return _build_venv(requirements)


@pytest.fixture(scope="session")
def sourcedir(sourcedir_bytes, tmp_path_factory) -> Path:
    """``sourcedir.tar.gz`` unpacked, as the container's code folder."""
    folder = tmp_path_factory.mktemp("sourcedir")
    with tarfile.open(fileobj=io.BytesIO(sourcedir_bytes), mode="r:gz") as tf:
        tf.extractall(folder, filter="data")
    return folder


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """A small training set in the exported layout: a folder of Parquet parts with a ``split`` column."""
    folder = tmp_path_factory.mktemp("dataset")
    frame = _fixture(n=1500, seed=3)
    frame.iloc[:750].to_parquet(folder / "part-0.parquet", index=False)
    frame.iloc[750:].to_parquet(folder / "part-1.parquet", index=False)
    return folder


def test_the_environment_holds_the_training_requirements_and_no_airflow(training_python, sourcedir, tmp_path):
    pins = dict(line.split("==") for line in (sourcedir / "requirements.txt").read_text().split())
    probe = ("import importlib.metadata as m, json; "
             f"print(json.dumps({{n: m.version(n) for n in {sorted(pins)!r}}}))")
    done = _run(training_python, ["-c", probe], tmp_path, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == pins  # exactly the versions the container installs

    done = _run(training_python, ["-c", "import airflow"], tmp_path, tmp_path)
    assert done.returncode != 0 and "No module named 'airflow'" in done.stderr, done.stderr[-2000:]


def test_the_training_code_and_the_entry_points_import_without_airflow(training_python, sourcedir, tmp_path):
    done = _run(training_python, ["-c", "import include.training.train"], sourcedir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    entries = ("import include.targets.aws.sagemaker_entry, include.targets.gcp.vertex_entry, "
               "include.targets.azure.azureml_entry")
    done = _run(training_python, ["-c", entries], sourcedir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    done = _run(training_python, ["-c", "import include.targets.errors"], sourcedir, tmp_path)
    assert done.returncode != 0 and "airflow" in done.stderr, done.stderr[-2000:]  # proves Airflow is absent


def _sagemaker(data: Path, model: Path) -> tuple[list[str], dict[str, str]]:
    """As SageMaker's framework container runs ``sagemaker_program``: a file, folders in SM_* variables."""
    return (["include/targets/aws/sagemaker_entry.py", *HYPERPARAMETERS],
            {"SM_CHANNEL_DATASET": str(data), "SM_MODEL_DIR": str(model)})


def _vertex(data: Path, model: Path) -> tuple[list[str], dict[str, str]]:
    """As the Vertex AI job's container command runs it (``include.targets.gcp.vertex.BOOTSTRAP``): a file,
    the data folder as an argument, the model folder in AIP_MODEL_DIR."""
    return (["include/targets/gcp/vertex_entry.py", "--data-dir", str(data), *HYPERPARAMETERS],
            {"AIP_MODEL_DIR": str(model)})


def _azureml(data: Path, model: Path) -> tuple[list[str], dict[str, str]]:
    """As the Azure ML job's command runs it (``include.targets.azure.azureml.command_line``): a file, the mounted
    data and model folders as arguments."""
    return (["include/targets/azure/azureml_entry.py", "--data-dir", str(data), "--model-dir", str(model),
             *HYPERPARAMETERS], {})


@pytest.mark.parametrize("entry_point", [_sagemaker, _vertex, _azureml], ids=["sagemaker", "vertex", "azureml"])
def test_the_entry_point_trains_in_the_container_environment(entry_point, training_python, sourcedir, dataset,
                                                             tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    args, env = entry_point(dataset, model)
    done = _run(training_python, args, sourcedir, tmp_path, **env)
    assert done.returncode == 0, done.stderr[-3000:]

    printed = json.loads(done.stdout.strip().splitlines()[-1])  # the one JSON line the job log ends with
    saved = json.loads((model / "metrics.json").read_text())
    assert printed["device"] == "cpu" and printed["metrics"] == saved["metrics"], printed
    assert saved["params"]["n_estimators"] == 20 and saved["params"]["max_depth"] == 3  # the arguments arrived
    for name in ("xgboost", "baseline"):
        assert 0 < saved["metrics"][name]["auc"] < 1, saved["metrics"]

    # What the registry and the scorer read back, in the project's environment.
    hold = _fixture(n=1500, seed=3).query("split == 'holdout'")
    probs = load_bundle(model / "bundle").predict(hold)
    assert len(probs) == len(hold) and 0 <= probs.min() and probs.max() <= 1
    baseline = joblib.load(model / "baseline" / "model.joblib").predict_proba(_baseline_frame(hold))[:, 1]
    assert evaluate(hold[LABEL], baseline)["auc"] == pytest.approx(saved["metrics"]["baseline"]["auc"], abs=1e-6)
    assert (model / "report.png").stat().st_size > 10_000
