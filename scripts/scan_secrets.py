"""Secret scan of the working tree and of every blob in the git history, against ``.secrets.baseline``.

    python scripts/scan_secrets.py [--repo DIR] [--baseline FILE]      (make scan-secrets)

Uses detect-secrets with the plugins and file exclusions recorded in the baseline.

- Working tree: tracked files plus untracked files git does not ignore. A finding that the baseline
  does not list for that file fails.
- History: every blob reachable from any ref, scanned once under the path it had. A finding whose
  secret the baseline does not list (in any file) fails, with the commit that introduced the blob.
- The baseline itself: every entry must be audited as a false positive (``"is_secret": false``).

Exit status 1 with one line per finding, ``where:line: type``. After checking that a new finding is a
false positive: ``detect-secrets scan --baseline .secrets.baseline`` then
``detect-secrets audit .secrets.baseline``. A real secret must be revoked; removing it from the tree
does not remove it from the history.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, check=True).stdout


def tree_files(repo: Path) -> list[str]:
    """Tracked files and untracked files git does not ignore, relative to the repository root."""
    names = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").decode().split("\0")
    return sorted({n for n in names if n and (repo / n).is_file() and not (repo / n).is_symlink()})


def history_blobs(repo: Path) -> dict[str, tuple[str, str]]:
    """Every blob reachable from any ref: blob id -> (the oldest commit seen adding it, its path there)."""
    if not _git(repo, "rev-parse", "--all").strip():
        return {}
    where: dict[str, tuple[str, str]] = {}
    for line in _git(repo, "rev-list", "--all", "--objects").decode().splitlines():
        oid, _, path = line.partition(" ")
        if path:
            where[oid] = ("", path)  # a tree or a blob; trees are dropped below
    commit = ""
    log = _git(repo, "log", "--all", "-m", "--no-renames", "--raw", "--no-abbrev", "--format=commit %H")
    for line in log.decode(errors="replace").splitlines():  # newest first: the last one seen is the oldest
        if line.startswith("commit "):
            commit = line.split()[1]
        elif line.startswith(":"):
            meta, _, path = line.partition("\t")
            new = meta.split()[3]
            if set(new) != {"0"}:
                where[new] = (commit, path)
    kinds = _git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="\n".join(where).encode())
    blobs = {oid for oid, kind in (l.split() for l in kinds.decode().splitlines()) if kind == "blob"}
    return {oid: where[oid] for oid in blobs}


# Line-oriented file types: detect-secrets looks at one line at a time, so a line already scanned in a
# file of the same type needs no second look. Other types (YAML, INI-like) are parsed as a whole.
LINE_TYPES = {".py", ".md", ".json", ".sh", ".xml", ".txt", ".in", ".csv", ".sql", ".html", ".js"}


def _new_lines(suffix: str, body: bytes, seen: set[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
    """(line number, line) of the lines of ``body`` not seen before in a file of the same type."""
    fresh = []
    for number, line in enumerate(body.splitlines(), start=1):
        if (suffix, line) not in seen:
            seen.add((suffix, line))
            fresh.append((number, line))
    return fresh


def write_blobs(repo: Path, blobs: dict[str, tuple[str, str]], root: Path,
                seen: set[tuple[str, bytes]]) -> dict[str, tuple[str, list[int]]]:
    """Write what the history adds to ``seen`` (the working tree's lines) under ``root/<blob id>/<path>``.

    Blobs the baseline excludes are left out; a line-oriented blob is written as its unseen lines only. Returns relative file name ->
    (blob id, the original line number of each written line; empty when the blob is written whole).
    """
    from detect_secrets.filters.regex import should_exclude_file

    out = _git(repo, "cat-file", "--batch", stdin="\n".join(sorted(blobs)).encode())
    files, pos = {}, 0
    while pos < len(out):
        header_end = out.index(b"\n", pos)
        oid, _, size = out[pos:header_end].decode().split()
        body = out[header_end + 1:header_end + 1 + int(size)]
        pos = header_end + 1 + int(size) + 1
        path = blobs[oid][1]
        if should_exclude_file(path):  # the baseline's exclusions (the locks), before their lines count as seen
            continue
        suffix = PurePosixPath(path).suffix.lower()
        numbers: list[int] = []
        if suffix in LINE_TYPES:
            fresh = _new_lines(suffix, body, seen)
            if not fresh:
                continue
            numbers = [n for n, _ in fresh]
            body = b"\n".join(line for _, line in fresh) + b"\n"
        name = f"{oid}/{path}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)
        files[name] = (oid, numbers)
    return files


def scan(repo: Path, baseline_file: Path) -> tuple[list[str], int, int]:
    """The findings the baseline does not cover, as ``where:line: type`` lines (empty when clean),
    and how many working-tree files and history blobs were scanned."""
    from detect_secrets.core import baseline
    from detect_secrets.core.secrets_collection import SecretsCollection
    from detect_secrets.filters.regex import should_exclude_file

    # the file name (not its path) is what detect-secrets' own filter uses to skip the baseline
    known = baseline.load(baseline.load_from_file(str(baseline_file)), filename=baseline_file.name)
    problems = [f"{baseline_file.name}: {name}:{s.line_number}: {s.type} is not audited as a false positive"
                for name, s in known if s.is_secret is not False]
    known_hashes = {(s.type, s.secret_hash) for _, s in known}

    names = tree_files(repo)
    tree = SecretsCollection()  # names relative to the working directory, the repository, as in the baseline
    tree.scan_files(*names)
    problems += [f"{name}:{s.line_number}: {s.type}" for name, s in (tree - known)]

    with tempfile.TemporaryDirectory(prefix="secret-scan-") as tmp:
        seen = set()
        for name in names:
            suffix = PurePosixPath(name).suffix.lower()
            if suffix in LINE_TYPES and not should_exclude_file(name):
                _new_lines(suffix, (repo / name).read_bytes(), seen)
        blobs = history_blobs(repo)
        files = write_blobs(repo, blobs, Path(tmp), seen)
        history = SecretsCollection(root=tmp)
        history.scan_files(*files)
        for name, s in history:
            if (s.type, s.secret_hash) not in known_hashes:
                oid, numbers = files[name]
                commit, path = blobs[oid]
                line = numbers[s.line_number - 1] if numbers else s.line_number
                at = f"commit {commit[:12]}" if commit else f"blob {oid[:12]} (git log --all --find-object={oid})"
                problems.append(f"{at} {path}:{line}: {s.type}")
    return sorted(set(problems)), len(names), len(blobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    parser.add_argument("--baseline", type=Path, help="default: REPO/.secrets.baseline")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    baseline_file = (args.baseline or repo / ".secrets.baseline").resolve()
    os.chdir(repo)  # detect-secrets' file filters see paths relative to the repository
    problems, n_files, n_blobs = scan(repo, baseline_file)
    for line in problems:
        print(f"secret: {line}")
    if problems:
        print(f"{len(problems)} finding(s) not in {baseline_file.name}: revoke a real secret; audit a false positive "
              f"into the baseline (detect-secrets scan --baseline {baseline_file.name}; detect-secrets audit ...).")
        return 1
    print(f"no secret beyond the audited baseline in {n_files} working-tree files and {n_blobs} history blobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
