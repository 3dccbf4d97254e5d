#!/usr/bin/env bash
# A Spark 3.5 + Delta 3.2 environment (the Azure Spark runtimes' line) for running spark_jobs/ as on a cluster.
#
#   bash scripts/spark3_env.sh VENV_DIR        (make spark3-env; VENV_DIR defaults there to .cache/spark3)
#
# Builds VENV_DIR with python3 -m venv from scripts/spark3-requirements.txt, the other packages held to
# the versions of the lock (requirements.txt), and puts the two Delta jars of the pinned delta-spark
# release for Scala 2.12 (delta-spark_2.12, delta-storage: what the runtime row's jar_uris name) in
# VENV_DIR/jars, from Maven Central through the repository's Maven cache (.cache/m2). Idempotent: a second
# run with the same requirements and lock changes nothing, and needs no network once the jars and wheels
# are cached.
set -euo pipefail

venv="${1:?usage: bash scripts/spark3_env.sh VENV_DIR}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$repo/scripts/spark3-requirements.txt"
lock="$repo/requirements.txt"
scala="2.12"

pin() {  # the exact version of $1 in spark3-requirements.txt
  sed -n "s/^$1==\([^[:space:]]*\).*/\1/p" "$requirements"
}
delta="$(pin delta-spark)"
spark="$(pin pyspark)"
if [[ -z "$delta" || -z "$spark" ]]; then
  echo "spark3_env.sh: $requirements must pin pyspark and delta-spark (name==version)" >&2
  exit 1
fi

fingerprint="$(cat "$requirements" "$lock" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
jars="$venv/jars"
jar_names=("delta-spark_${scala}-${delta}.jar" "delta-storage-${delta}.jar")

have_jars() {
  local name
  for name in "${jar_names[@]}"; do [[ -s "$jars/$name" ]] || return 1; done
}

if [[ -x "$venv/bin/python" && "$(cat "$venv/.fingerprint" 2>/dev/null)" == "$fingerprint" ]] && have_jars; then
  exit 0
fi

echo "==> Spark $spark + Delta $delta environment in $venv"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"

# The lock's pins for everything the requirements pull in, except the packages pinned above and py4j
# (pyspark 3.5 bounds it itself), so the gates and the scores run the same library versions on both lines.
constraints="$venv/constraints.txt"
own="$(awk -F'==' '/^[A-Za-z0-9_.-]+==/ { n = tolower($1); gsub(/[_.]/, "-", n); print n }' "$requirements" \
  | paste -sd'|')"
sed -n 's/^\([A-Za-z0-9_.-]*==[^[:space:];\\]*\).*/\1/p' "$lock" \
  | awk -F'==' -v own="^(${own}|py4j)$" '{ n = tolower($1); gsub(/[_.]/, "-", n) } n !~ own' >"$constraints"

uv="$repo/.venv/bin/uv"
if [[ -x "$uv" ]]; then
  "$uv" pip install -q --python "$venv/bin/python" -r "$requirements" -c "$constraints"
else
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" -c "$constraints"
fi
"$venv/bin/python" - "$spark" "$delta" <<'EOF'
import sys
from importlib.metadata import version

import delta, great_expectations, pandas, pyarrow, pyspark, xgboost  # noqa: F401  what the jobs import

want = {"pyspark": sys.argv[1], "delta-spark": sys.argv[2]}
got = {name: version(name) for name in want}
if got != want:
    sys.exit(f"spark3_env.sh: installed {got}, expected {want}")
EOF

if ! have_jars; then
  if ! command -v mvn >/dev/null; then
    echo "Maven (mvn) is needed to fetch the Delta jars: apt-get install maven" >&2
    exit 1
  fi
  mkdir -p "$jars"
  for artifact in "io.delta:delta-spark_${scala}:${delta}" "io.delta:delta-storage:${delta}"; do
    mvn -q -B dependency:copy -Dartifact="$artifact" \
      -DoutputDirectory="$jars" -Dmaven.repo.local="$repo/.cache/m2"
  done
  have_jars || { echo "spark3_env.sh: Maven did not leave ${jar_names[*]} in $jars" >&2; exit 1; }
fi
echo "$fingerprint" >"$venv/.fingerprint"
