"""Repository hygiene: hashed locks, test tools kept out of the image, the secret scan, a safe ``make clean``."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = REPO / "requirements.txt"
DEV_LOCK = REPO / "requirements-dev.txt"
TEST_TOOLS = {"pytest", "pytest-timeout", "moto", "aiosmtpd", "gcp-storage-emulator", "cfn-lint", "detect-secrets"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) for every requirement of a pip-style lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    logical = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))  # join the backslash continuations
    for line in logical.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        found = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        assert found, f"{path.name}: not a name==version pin: {line[:80]}"
        entries[_canonical(found.group(1))] = (found.group(3), re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return entries


def _make(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "FLIGHTS_HOME" and not k.startswith("MAKE")}
    return subprocess.run(["make", "--no-print-directory", "-C", str(cwd), *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=60)


# Hashed locks -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_every_locked_package_carries_a_sha256_hash(lock):
    entries = _lock(lock)
    assert len(entries) > 10, f"{lock.name} looks empty"
    unhashed = sorted(name for name, (_, hashes) in entries.items() if not hashes)
    assert not unhashed, f"{lock.name}: no --hash for {unhashed[:10]} (make lock compiles with --generate-hashes)"


def test_make_install_requires_the_hashes_of_both_locks():
    dry = _make("-n", "-B", str(REPO / ".venv" / ".installed"))
    assert dry.returncode == 0, dry.stderr
    install = [line for line in dry.stdout.splitlines() if "uv pip install" in line]
    assert install and all("--require-hashes" in line for line in install), dry.stdout
    assert "-r requirements.txt" in install[-1] and "-r requirements-dev.txt" in install[-1], install


def test_make_lock_compiles_both_locks_with_hashes():
    dry = _make("-n", "lock")
    compiles = [line for line in dry.stdout.splitlines() if "pip compile" in line]
    assert len(compiles) == 2 and all("--generate-hashes" in line for line in compiles), dry.stdout
    assert any("requirements.in" in c and "-o requirements.txt" in c for c in compiles), compiles
    assert any("requirements-dev.in" in c and "-o requirements-dev.txt" in c for c in compiles), compiles


def test_pinned_requirements_reads_the_hashed_lock(tmp_path):
    from include.targets.cloud.artifact import TRAINING_REQUIREMENTS, pinned_requirements

    runtime = _lock(RUNTIME_LOCK)
    pins = dict(line.split("==") for line in pinned_requirements(RUNTIME_LOCK).split())
    assert pins["xgboost"] == runtime["xgboost-cpu"][0]  # the CPU wheel's release, for the GPU build
    assert all(pins[name] == runtime[name][0] for name in TRAINING_REQUIREMENTS if name != "xgboost")
    hashed = tmp_path / "requirements.txt"
    hashed.write_text("joblib==1.6.0 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via scikit-learn\n")
    assert pinned_requirements(hashed, ("joblib",)) == "joblib==1.6.0\n"


# Test tools stay out of the image ------------------------------------------------------------------------------------

def test_test_tools_are_in_the_dev_lock_only():
    runtime, dev = _lock(RUNTIME_LOCK), _lock(DEV_LOCK)
    assert not TEST_TOOLS & set(runtime), f"test tools in the image's lock: {sorted(TEST_TOOLS & set(runtime))}"
    assert not {n for n in runtime if n.startswith("pytest")}, "a pytest plugin is in requirements.txt"
    assert TEST_TOOLS <= set(dev), f"missing from requirements-dev.txt: {sorted(TEST_TOOLS - set(dev))}"


def test_both_locks_agree_on_every_shared_version():
    runtime, dev = _lock(RUNTIME_LOCK), _lock(DEV_LOCK)
    differ = {n: (runtime[n][0], dev[n][0]) for n in set(runtime) & set(dev) if runtime[n][0] != dev[n][0]}
    assert not differ, f"requirements-dev.in must constrain to the runtime lock (-c requirements.txt): {differ}"
    assert "-c requirements.txt" in (REPO / "requirements-dev.in").read_text()


def test_dockerfile_installs_the_runtime_lock_with_hashes_required():
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    installs = [line for line in text.splitlines() if re.search(r"\b(uv pip|pip) install\b.*\s-r\s", line)]
    assert installs, "the Dockerfile installs no lock"
    for line in installs:
        assert "--require-hashes" in line, line
        assert re.search(r"-r \S*/requirements\.txt\b", line) and "requirements-dev" not in line, line


def _dev_only_modules() -> dict[str, str]:
    """Top-level import name -> distribution, for the distributions only the dev lock has."""
    dev_only = set(_lock(DEV_LOCK)) - set(_lock(RUNTIME_LOCK))
    return {module: dist for module, dists in packages_distributions().items()
            for dist in dists if _canonical(dist) in dev_only}


def test_pipeline_code_imports_no_dev_only_package():
    dev_modules = _dev_only_modules()
    assert {"pytest", "moto", "detect_secrets"} <= set(dev_modules)  # the venv holds the dev lock
    offenders = []
    for folder in ("include", "dags", "plugins", "spark_jobs"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                         else [])
                offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n} ({dev_modules[n.split('.')[0]]})"
                              for n in names if n.split(".")[0] in dev_modules]
    assert not offenders, f"pipeline code imports test-only packages (move them to requirements.in): {offenders}"


# Secret scan ---------------------------------------------------------------------------------------------------------

# Built from pieces so that this file holds no secret-looking line itself.
FAKE_AWS = "aws_secret_access_key = " + '"' + "wJalrXUtnFEMI/K7" + "MDENG/bPxRfiCY" + "PLANTEDKEY" + '"'
FAKE_KEY_HEADER = "-----BEGIN " + "RSA PRIVATE KEY" + "-----"


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _scan(repo: Path, baseline: Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, str(REPO / "scripts" / "scan_secrets.py"), "--repo", str(repo)]
    if baseline:
        args += ["--baseline", str(baseline)]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.fixture
def scanned_repo(tmp_path):
    """A small git repository with the project's baseline and one ordinary committed file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    shutil.copy(REPO / ".secrets.baseline", repo / ".secrets.baseline")
    (repo / "settings.py").write_text('"""Settings."""\nREGION = "eu-west-1"\n')
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "settings")
    return repo


def test_secret_scan_passes_a_clean_repository(scanned_repo):
    result = _scan(scanned_repo)
    assert result.returncode == 0, result.stdout + result.stderr


def test_secret_scan_fails_on_a_secret_in_the_working_tree(scanned_repo):
    (scanned_repo / "settings.py").write_text(f'"""Settings."""\nREGION = "eu-west-1"\n{FAKE_AWS}\n')
    result = _scan(scanned_repo)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "settings.py:3:" in result.stdout, result.stdout  # the file and the line


def test_secret_scan_fails_on_a_secret_only_in_the_history(scanned_repo):
    (scanned_repo / "deploy").mkdir()
    # line 1 repeats a working-tree line, so the scan sees only lines 2-4 and must still report line 3
    (scanned_repo / "deploy" / "key.py").write_text(f'REGION = "eu-west-1"\nKEY = """\n{FAKE_KEY_HEADER}\n"""\n')
    _git(scanned_repo, "add", "-A")
    _git(scanned_repo, "commit", "-q", "-m", "deploy key")
    planted = _git(scanned_repo, "rev-parse", "HEAD")
    _git(scanned_repo, "rm", "-q", "deploy/key.py")
    _git(scanned_repo, "commit", "-q", "-m", "no deploy key")
    result = _scan(scanned_repo)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"commit {planted[:12]} deploy/key.py:3: Private Key" in result.stdout, result.stdout


def test_secret_scan_refuses_an_unaudited_baseline(scanned_repo):
    baseline = json.loads((scanned_repo / ".secrets.baseline").read_text())
    baseline["results"] = {"settings.py": [{"type": "Secret Keyword", "filename": "settings.py",
                                            "hashed_secret": "0" * 40, "is_verified": False, "line_number": 2}]}
    (scanned_repo / ".secrets.baseline").write_text(json.dumps(baseline))
    result = _scan(scanned_repo)
    assert result.returncode == 1 and "not audited" in result.stdout, result.stdout


def test_baseline_is_small_audited_and_skips_the_locks():
    baseline = json.loads((REPO / ".secrets.baseline").read_text())
    entries = [e for found in baseline["results"].values() for e in found]
    assert all(e.get("is_secret") is False for e in entries), "every baseline entry is an audited false positive"
    assert len(entries) <= 12, f"{len(entries)} baseline entries: exclude generated files rather than list them"
    excluded = [f["pattern"] for f in baseline["filters_used"] if f["path"].endswith("should_exclude_file")]
    assert excluded and all(any(re.search(p, lock) for p in excluded[0])
                            for lock in ("requirements.txt", "requirements-dev.txt"))


def test_the_repository_passes_the_secret_scan():
    result = _scan(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_scans_for_secrets_before_the_tests():
    steps = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
             if line.strip().startswith("make ")]
    assert "make scan-secrets" in steps and "make test" in steps, steps
    assert steps.index("make scan-secrets") < steps.index("make test")


# make clean ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def repo_copy(tmp_path):
    """The Makefile alone in a fresh git repository: ``make clean`` there acts on that copy."""
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(REPO / "Makefile", copy / "Makefile")
    _git(copy, "init", "-q")
    return copy


def _sentinel(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lake").mkdir(exist_ok=True)
    sentinel = folder / "keep-me.txt"
    sentinel.write_text("still here\n")
    return sentinel


def test_make_clean_refuses_a_folder_outside_the_repository(repo_copy, tmp_path):
    sentinel = _sentinel(tmp_path / "elsewhere")
    result = _make("clean", f"FLIGHTS_HOME={sentinel.parent}", cwd=repo_copy)
    assert result.returncode != 0 and "refusing" in result.stderr, result.stdout + result.stderr
    assert sentinel.exists()


@pytest.mark.parametrize("where", ["/", "$HOME", "repository root", "parent of the repository", "tracked folder"])
def test_make_clean_refuses_root_home_and_the_repository(repo_copy, tmp_path, where):
    # A stand-in rm on PATH: nothing can be deleted even if the recipe calls rm.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "rm-calls"
    (bin_dir / "rm").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "rm").chmod(0o755)
    home = tmp_path / "home"
    _sentinel(home)
    (repo_copy / "dags").mkdir()
    (repo_copy / "dags" / "flights_daily.py").write_text('"""A DAG."""\n')
    _git(repo_copy, "add", "dags/flights_daily.py")
    target = {"/": "/", "$HOME": str(home), "repository root": str(repo_copy),
              "parent of the repository": f"{repo_copy}/..", "tracked folder": str(repo_copy / "dags")}[where]
    result = _make("clean", f"FLIGHTS_HOME={target}", cwd=repo_copy,
                   env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home)})
    assert result.returncode != 0 and "refusing" in result.stderr, result.stdout + result.stderr
    assert not calls.exists(), f"rm was called: {calls.read_text()}"


@pytest.mark.parametrize("flights_home", [None, "state", ".state"])
def test_make_clean_deletes_the_state_folder_inside_the_repository(repo_copy, flights_home):
    sentinel = _sentinel(repo_copy / (flights_home or ".state"))
    args = ["clean"] + ([f"FLIGHTS_HOME={repo_copy / flights_home}"] if flights_home else [])
    result = _make(*args, cwd=repo_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not sentinel.parent.exists() and (repo_copy / "Makefile").exists()
