#!/usr/bin/env bash
# Set up a clean virtual environment and run the whole test suite (the README's test command; .ci/run runs it).
# Builds llama-cpp-python from source on first use (about 5 minutes on 2 cores; pip caches the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${EDGEJUDGE_VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[dev]'

# The HTML report is tested in a real headless browser: install Debian's Chromium when it is missing.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the report's browser test..." >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing: install it (e.g. apt-get install chromium) for the report's browser test" >&2
  fi
fi

"$VENV/bin/ruff" check edgejudge scripts tests
"$VENV/bin/mypy" edgejudge
"$VENV/bin/python" -m pytest -q "$@"
