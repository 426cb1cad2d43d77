#!/usr/bin/env bash
# Set up a virtual environment and run the main job: `edgejudge demo` (offline; on a tiny random-weight
# judge built with the real converter when the real model is not installed), then say how to run
# edgejudge next (it lives in the virtual environment, which is not active in the calling shell).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${EDGEJUDGE_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet .
status=0
"$VENV/bin/edgejudge" demo "$@" || status=$?
# The environment is not active in the user's shell: say how to run edgejudge from here on (absolute
# paths: the user's shell may be in another folder than this script's cd).
VENV_DIR="$(cd "$VENV" && pwd)"
if [ "$(command -v edgejudge 2>/dev/null || true)" != "$VENV_DIR/bin/edgejudge" ]; then
  cat >&2 <<EOF

edgejudge is installed in $VENV_DIR, which is not on your PATH
(typing plain \`edgejudge\` now says "command not found"). To run it next, either activate it first:
  source $VENV_DIR/bin/activate
  edgejudge models pull prometheus-vision-7b
or use the full path:
  $VENV_DIR/bin/edgejudge models pull prometheus-vision-7b
EOF
fi
exit "$status"
