"""Write the ``.env`` docker-compose.yaml reads: ``.env.example`` with a fresh random value for every empty name.

    python scripts/env_file.py [--out .env] [--example .env.example] [--force]      (make env-file)

Names ending in ``FERNET_KEY`` get a Fernet key (``cryptography``), every other empty name 32 random
bytes from ``secrets.token_urlsafe``: letters, digits, ``-`` and ``_``, safe inside connection URLs.
Comments and names that already have a value are copied as they are. The file is created with mode
0600 and only the names are printed, never the values.

Refuses, changing nothing, when the file exists (``--force`` replaces it: every secret changes, so
Postgres volumes made with the old passwords must be recreated), and when it lies in a git work
tree that does not ignore it (it would be committed).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMPTY_NAME = re.compile(r"^([A-Z][A-Z0-9_]*)=\s*$")


def fresh_value(name: str) -> str:
    """A new random value for the variable ``name``."""
    if name.endswith("FERNET_KEY"):
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()
    return secrets.token_urlsafe(32)


def render(example: str) -> tuple[str, list[str]]:
    """``example`` with every empty ``NAME=`` line given a fresh value; returns the text and the names filled."""
    lines, filled = [], []
    for line in example.splitlines():
        m = EMPTY_NAME.match(line)
        if m:
            filled.append(m[1])
            line = f"{m[1]}={fresh_value(m[1])}"
        lines.append(line)
    return "\n".join(lines) + "\n", filled


def git_would_commit(path: Path) -> bool:
    """Whether ``path`` is inside a git work tree that tracks it or does not ignore it (False outside git)."""
    folder = path.parent
    try:
        inside = subprocess.run(["git", "-C", str(folder), "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, text=True)
    except FileNotFoundError:  # no git: nothing can commit it
        return False
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return False
    tracked = subprocess.run(["git", "-C", str(folder), "ls-files", "--error-unmatch", path.name],
                             capture_output=True)
    ignored = subprocess.run(["git", "-C", str(folder), "check-ignore", "-q", "--no-index", path.name])
    return tracked.returncode == 0 or ignored.returncode != 0


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (no reader sees a partial file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / ".env", help="the file to write (default: .env)")
    p.add_argument("--example", type=Path, default=REPO / ".env.example", help="the names (default: .env.example)")
    p.add_argument("--force", action="store_true", help="replace an existing file (every secret changes)")
    a = p.parse_args(argv)
    out = a.out.resolve()
    if out.exists() and not a.force:
        print(f"{out} exists; keeping it. Pass --force (make env-file FORCE=1) to replace every secret in it; "
              "recreate the Postgres volumes afterwards (docker compose down -v).", file=sys.stderr)
        return 2
    if git_would_commit(out):
        print(f"Refusing to write secrets to {out}: git does not ignore it. Add '/{out.name}' to .gitignore.",
              file=sys.stderr)
        return 2
    text, filled = render(a.example.read_text(encoding="utf-8"))
    if not filled:
        print(f"{a.example} has no empty NAME= line to fill.", file=sys.stderr)
        return 2
    write_private(out, text)
    print(f"wrote {out} (mode 0600) with fresh values for: {', '.join(filled)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
