"""The code artefact every cloud job runs: reproducible bytes, every job, the suites and the training pins."""

from __future__ import annotations

import io
import tarfile
import zipfile

from include.targets.cloud import artifact


def test_same_source_same_digest_and_a_change_changes_it(tmp_path):
    for pkg in ("include", "spark_jobs"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "spark_jobs" / "job.py").write_text("print('a')\n")
    first, second = artifact.build_artifact(tmp_path), artifact.build_artifact(tmp_path)
    assert first.sha256 == second.sha256 and first.sourcedir_bytes == second.sourcedir_bytes
    names = zipfile.ZipFile(io.BytesIO(first.zip_bytes)).namelist()
    assert names == sorted(names) == ["include/__init__.py", "spark_jobs/__init__.py", "spark_jobs/job.py"]
    assert {i.date_time for i in zipfile.ZipFile(io.BytesIO(first.zip_bytes)).infolist()} == {artifact.FIXED_DATE}
    (tmp_path / "spark_jobs" / "job.py").write_text("print('b')\n")
    assert artifact.build_artifact(tmp_path).sha256 != first.sha256


def test_repository_artifact_holds_every_job_and_pinned_training_requirements():
    a = artifact.build_artifact()
    assert {"bronze_landing", "gold_flight_features", "gold_training_set", "predictions_flight_delay_risk",
            "quality_gate"} <= set(a.scripts)
    names = zipfile.ZipFile(io.BytesIO(a.zip_bytes)).namelist()
    assert "include/training/train.py" in names and "include/targets/aws/sagemaker_entry.py" in names
    assert not [n for n in names if "__pycache__" in n or not n.endswith((".py", ".json"))]
    # The GX suites ship with the code: quality_gate.py reads them from the zip on a cluster.
    assert {"expectations/bronze/flights.json", "expectations/gold/flight_features.json",
            "expectations/predictions/flight_delay_risk.json"} <= set(names)
    assert not [n for n in names if n.endswith(".json") and not n.startswith("expectations/")]
    with tarfile.open(fileobj=io.BytesIO(a.sourcedir_bytes), mode="r:gz") as tf:
        reqs = tf.extractfile("requirements.txt").read().decode()
    assert "xgboost==3.2.0\n" in reqs and "scikit-learn==" in reqs  # the lock's versions, CUDA build of xgboost


def test_suites_are_read_from_the_zip_when_the_code_runs_from_it(tmp_path):
    import subprocess
    import sys

    archive = tmp_path / "flights.zip"
    archive.write_bytes(artifact.build_artifact().zip_bytes)
    probe = ("import include.quality.suites as s; print(s.suites_root()); "
             "print(len(s.load_suite_dict('bronze/flights')['expectations']))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(archive)})
    assert out.returncode == 0, out.stderr[-2000:]
    root, count = out.stdout.split()
    assert root == f"{archive}/expectations/" and int(count) > 10  # from the archive, as on EMR (--py-files)
