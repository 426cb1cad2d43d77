#!/usr/bin/env bash
# Set up a virtual environment and run the main job: `edgejudge demo` (offline; on a tiny random-weight
# judge built with the real converter when the real model is not installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${EDGEJUDGE_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet .
exec "$VENV/bin/edgejudge" demo "$@"
