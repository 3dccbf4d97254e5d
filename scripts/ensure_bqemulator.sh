#!/usr/bin/env bash
# The BigQuery emulator the GCP warehouse tests run against: bqemulator (PyPI), in a virtualenv
# of its own because its pins (fastapi, grpcio-tools, sqlglot) clash with Airflow's.
#
#   bash scripts/ensure_bqemulator.sh        # prints the launcher's path on stdout
#   "$(bash scripts/ensure_bqemulator.sh)" start --rest-port 9050 --grpc-port 0 --ephemeral
#
# Idempotent: once installed it only checks a stamp. Needs Python >= 3.11 (PYTHON=..., default
# python3) and PyPI; uses uv when there is one (the repo's .venv has it), pip otherwise (or with UV=).
# BQEMULATOR_VENV=... installs elsewhere (default .cache/bqemulator-venv).
#
# At start bqemulator runs `INSTALL spatial; LOAD spatial` (DuckDB's spatial extension, for
# GEOGRAPHY), which downloads from the DuckDB extension host and aborts the start when that
# fails; bqemulator has no setting for it (bqemulator/storage/engine.py, DuckDBEngine._load_spatial).
# The launcher written here replaces that step before starting: it turns DuckDB's extension
# auto-install/auto-load off and loads spatial only if it is already installed locally, so the
# emulator starts offline with GEOGRAPHY unavailable. The other download, the avro extension,
# is switched off with bqemulator's own setting BQEMU_ENABLE_FORMAT_EXTENSIONS=false, which
# the launcher sets unless the caller did. numpy is added because the emulator's built-in
# functions need it at start (it is only in bqemulator's optional extras).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BQEMULATOR_VENV:-$REPO/.cache/bqemulator-venv}"
VERSION="1.4.0"
# Tested together; bqemulator itself leaves them open (duckdb>=1.0, sqlglot<30.12).
REQUIREMENTS=("bqemulator==$VERSION" "duckdb==2.0.1" "sqlglot==30.11.0" "numpy==2.4.6")
STAMP="$VENV/.installed-bqemulator-$VERSION"
LAUNCHER="$VENV/bin/bqemulator-offline"

if [ -f "$STAMP" ] && [ -x "$LAUNCHER" ] && [ -x "$VENV/bin/python" ]; then
  echo "$LAUNCHER"
  exit 0
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "bqemulator $VERSION needs Python >= 3.11; '$PYTHON' is missing or older. Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

echo "==> bqemulator $VERSION into $VENV" >&2
if [ ! -x "$VENV/bin/python" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ -z "${UV+set}" ]; then  # UV= (empty) forces pip
  UV="$(command -v uv || true)"
  if [ -z "$UV" ] && [ -x "$REPO/.venv/bin/uv" ]; then UV="$REPO/.venv/bin/uv"; fi
fi
if [ -n "$UV" ]; then
  UV_CACHE_DIR="${UV_CACHE_DIR:-$REPO/.cache/uv}" "$UV" pip install -q --python "$VENV/bin/python" "${REQUIREMENTS[@]}"
else
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}"
fi

cat > "$LAUNCHER" <<EOF
#!$VENV/bin/python
"""bqemulator's command line, started without downloading DuckDB extensions (see scripts/ensure_bqemulator.sh)."""
import os
import sys

from bqemulator.storage import engine


def _load_spatial_if_installed(self):
    con = self.connection
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    try:
        con.execute("LOAD spatial")
    except Exception as exc:  # not installed locally: GEOGRAPHY functions are unavailable
        print(f"bqemulator: DuckDB spatial extension not loaded, GEOGRAPHY unavailable ({exc.__class__.__name__})",
              file=sys.stderr)


engine.DuckDBEngine._load_spatial = _load_spatial_if_installed
os.environ.setdefault("BQEMU_ENABLE_FORMAT_EXTENSIONS", "false")

from bqemulator.cli import main  # noqa: E402

sys.exit(main())
EOF
chmod +x "$LAUNCHER"

# The patched hook must exist in this version, or the emulator would try the download again.
"$VENV/bin/python" - <<'EOF'
from bqemulator.storage.engine import DuckDBEngine
assert callable(getattr(DuckDBEngine, "_load_spatial", None)), "bqemulator no longer has DuckDBEngine._load_spatial"
EOF
"$LAUNCHER" version >&2
touch "$STAMP"
echo "$LAUNCHER"
