"""The code artefact every cloud job runs: ``spark_jobs/``, ``include/`` and the GX suites as one zip.

The zip is deterministic (sorted entries, fixed timestamps and permissions), so the same
source always has the same SHA-256, and it is uploaded content-addressed under the
target's artifacts root (``s3://``, ``gs://`` or ``abfss://``):

    <artifacts root>/code/<sha256>/flights.zip            --py-files of every Spark job
    <artifacts root>/code/<sha256>/spark_jobs/<job>.py    the entry point of each job
    <artifacts root>/code/<sha256>/sourcedir.tar.gz       training source (SageMaker script mode, Vertex AI,
                                                           Azure ML), with the training requirements

Re-uploading the same source writes nothing (the objects exist under the same digest), and
two versions of the code never overwrite each other, so a job started before a deploy keeps
reading the code it was started with.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import logging
import re
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from include.config import REPO_ROOT

log = logging.getLogger(__name__)

PACKAGES = ("include", "spark_jobs")
DATA = (("expectations", "*.json"),)  # shipped with the code; read by include.quality.suites from the zip
ZIP_NAME = "flights.zip"
SOURCEDIR_NAME = "sourcedir.tar.gz"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest timestamp a zip entry can hold
TRAINING_REQUIREMENTS = ("xgboost", "scikit-learn", "pandas", "pyarrow", "matplotlib", "joblib")


def source_files(root: Path = REPO_ROOT) -> list[tuple[str, bytes]]:
    """Every ``.py`` file of the packages and the data files (suites), as (POSIX path relative to ``root``, bytes)."""
    out = []
    for folder, pattern in [(p, "*.py") for p in PACKAGES] + list(DATA):
        for path in (root / folder).rglob(pattern):
            if "__pycache__" in path.parts:
                continue
            out.append((path.relative_to(root).as_posix(), path.read_bytes()))
    if not out:
        raise FileNotFoundError(f"No Python files under {root}/{{{','.join(PACKAGES)}}}: wrong repository root?")
    return sorted(out)


def build_zip(files: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files):
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def pinned_requirements(lock: Path = REPO_ROOT / "requirements.txt",
                        names: tuple[str, ...] = TRAINING_REQUIREMENTS) -> str:
    """``name==version`` lines for the training container, taken from the lock (xgboost-cpu becomes xgboost)."""
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", lock.read_text(encoding="utf-8"), flags=re.M))
    pins = {k.lower(): v for k, v in pins.items()}
    if "xgboost" not in pins and "xgboost-cpu" in pins:
        pins["xgboost"] = pins["xgboost-cpu"]  # the same release, CUDA build, for the GPU instance
    missing = [n for n in names if n not in pins]
    if missing:
        raise ValueError(f"{lock} pins no version for {missing}: recompile the lock (make lock).")
    return "".join(f"{n}=={pins[n]}\n" for n in names)


def build_sourcedir(files: list[tuple[str, bytes]], requirements: str) -> bytes:
    """SageMaker script-mode source: the packages plus a requirements.txt, as a reproducible tar.gz."""
    entries = sorted(files + [("requirements.txt", requirements.encode("utf-8"))])
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


@dataclass(frozen=True)
class Artifact:
    sha256: str
    zip_bytes: bytes
    sourcedir_bytes: bytes
    scripts: dict[str, bytes]  # job name -> entry-point source

    def prefix(self, artifacts_root: str) -> str:
        return f"{artifacts_root.rstrip('/')}/code/{self.sha256}"

    def zip_uri(self, artifacts_root: str) -> str:
        return f"{self.prefix(artifacts_root)}/{ZIP_NAME}"

    def script_uri(self, artifacts_root: str, job: str) -> str:
        if job not in self.scripts:
            raise KeyError(f"Unknown Spark job {job!r}; jobs in the artefact: {', '.join(sorted(self.scripts))}")
        return f"{self.prefix(artifacts_root)}/spark_jobs/{job}.py"

    def sourcedir_uri(self, artifacts_root: str) -> str:
        return f"{self.prefix(artifacts_root)}/{SOURCEDIR_NAME}"


def build_artifact(root: Path = REPO_ROOT) -> Artifact:
    files = source_files(root)
    data = build_zip(files)
    scripts = {Path(n).stem: b for n, b in files
               if n.startswith("spark_jobs/") and n.count("/") == 1 and not n.endswith("__init__.py")}
    lock = root / "requirements.txt"
    sourcedir = build_sourcedir(files, pinned_requirements(lock) if lock.exists() else "")
    return Artifact(hashlib.sha256(data).hexdigest(), data, sourcedir, scripts)


class ObjectStore:
    """What ``upload`` needs of a cloud's object storage: ``exists(uri)`` and ``put(uri, body, metadata)``."""

    def exists(self, uri: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def put(self, uri: str, body: bytes, metadata: dict[str, str]) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def upload(artifact: Artifact, artifacts_root: str, store: ObjectStore) -> dict[str, str]:
    """Upload the artefact under its digest; objects already there are left alone. Returns the URIs."""
    objects = {artifact.zip_uri(artifacts_root): artifact.zip_bytes,
               artifact.sourcedir_uri(artifacts_root): artifact.sourcedir_bytes}
    for job, body in artifact.scripts.items():
        objects[artifact.script_uri(artifacts_root, job)] = body
    written = 0
    for uri, body in sorted(objects.items()):
        if store.exists(uri):
            continue  # content-addressed: same key, same bytes
        store.put(uri, body, {"source-sha256": artifact.sha256})
        written += 1
    log.info("Code artefact %s: %d object(s) uploaded, %d already there", artifact.sha256[:12], written,
             len(objects) - written)
    return {"sha256": artifact.sha256, "zip": artifact.zip_uri(artifacts_root),
            "sourcedir": artifact.sourcedir_uri(artifacts_root), "prefix": artifact.prefix(artifacts_root),
            "written": str(written)}


def code_uris(artifact: Artifact, artifacts_root: str) -> dict[str, str]:
    """The URIs a job spec names (``prefix``, ``zip``, ``sourcedir``), without uploading anything."""
    return {"prefix": artifact.prefix(artifacts_root), "zip": artifact.zip_uri(artifacts_root),
            "sourcedir": artifact.sourcedir_uri(artifacts_root), "sha256": artifact.sha256}


@functools.lru_cache(maxsize=4)
def checkout_code_uris(artifacts_root: str) -> dict[str, str]:
    """``code_uris`` of this checkout's artefact under ``artifacts_root`` (built once per process and root).

    Every cloud's step backend names these in its job specs when the DAGs are parsed; the
    upload (each cloud's ``artifact`` command) puts the same content-addressed objects there.
    """
    return code_uris(build_artifact(), artifacts_root)


def fetch_jars(wanted: dict[str, str], folder: Path, what: str, fetch: bool = True) -> list[Path]:
    """The jars ``wanted`` (file name -> Maven coordinate) in ``folder``, fetched with ``mvn dependency:copy``
    from Maven Central when missing; ``what`` names the runtime in the errors."""
    import shutil
    import subprocess

    from include.config import ConfigError

    missing = [c for n, c in wanted.items() if not (folder / n).exists()]
    if missing and fetch:
        if shutil.which("mvn") is None:
            raise ConfigError(f"The Delta jars {missing} are not in {folder} and Maven (mvn) is not installed to fetch "
                              "them: apt-get install maven, or copy the jars there from Maven Central.")
        folder.mkdir(parents=True, exist_ok=True)
        for coordinate in missing:
            subprocess.run(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={coordinate}",
                            f"-DoutputDirectory={folder}", f"-Dmaven.repo.local={REPO_ROOT / '.cache' / 'm2'}"],
                           check=True)
    absent = [n for n in wanted if not (folder / n).exists()]
    if absent:
        raise ConfigError(f"Missing Delta jars {absent} in {folder} for {what}.")
    return [folder / n for n in sorted(wanted)]


def upload_with_jars(artifacts_root: str, store: ObjectStore, jars: list[Path], allowed: list[str],
                     what: str) -> dict[str, str]:
    """Upload this checkout's code artefact, then each jar under ``<artifacts root>/jars/`` unless it is there.

    Args:
        allowed: the jar URIs the runtime's jobs name (a jar not among them is refused, naming ``what``).
    Returns:
        The code URIs of ``upload``, ``written`` counting the jars too.
    """
    from include.config import ConfigError

    uris = upload(build_artifact(), artifacts_root, store)
    written = int(uris["written"])
    for path in jars:
        uri = f"{artifacts_root}/jars/{path.name}"
        if uri not in allowed:
            raise ConfigError(f"{path.name} is not a Delta jar of {what}.")
        if not store.exists(uri):
            store.put(uri, path.read_bytes(), {"source": "Maven Central"})
            written += 1
    log.info("Artifacts under %s: %d object(s) written", artifacts_root, written)
    return {**uris, "written": str(written)}


def upload_command(argv: list[str] | None, description: str, upload_now: Callable[[], dict[str, str]]) -> int:
    """The body of every cloud's ``python -m include.targets.<cloud>.artifact``: parse (``--help`` works
    without settings), then ``upload_now()`` (which loads the cloud's settings), then print the URIs."""
    import argparse

    argparse.ArgumentParser(description=description).parse_args(argv)
    uris = upload_now()
    for key in ("sha256", "zip", "sourcedir", "prefix", "written"):
        print(f"{key}: {uris[key]}")
    return 0
