#!/usr/bin/env bash
# Make sure Debian's chromium exists for the UI flows the tests drive with Playwright (no browser is downloaded:
# Playwright launches this one through its executable path; FLIGHTS_CHROMIUM names another).
set -euo pipefail
if [ -n "${FLIGHTS_CHROMIUM:-}" ] && [ -x "${FLIGHTS_CHROMIUM}" ]; then
  exit 0
fi
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "==> Installing chromium (Debian package) for the browser tests of the Airflow UI"
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
