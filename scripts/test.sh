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

# The scale-out tests run a real llama-server: build it once (about 4 minutes on 2 cores on a new machine,
# a cache hit afterwards: ~/.cache/edgejudge/llama-server/) and make a missing one a failure, not a skip.
EDGEJUDGE_LLAMA_SERVER="$("$VENV/bin/edgejudge" server build)"
export EDGEJUDGE_LLAMA_SERVER
export EDGEJUDGE_REQUIRE_SERVER=1

# The promptfoo example runs on the real promptfoo CLI (Node 22 and promptfoo from the npm registry: about a
# minute and 1.5 GB on a new machine, a cache hit afterwards: ~/.cache/edgejudge/promptfoo/); a missing one
# is a failure, not a skip.
EDGEJUDGE_PROMPTFOO="$(bash scripts/install_promptfoo.sh)"
export EDGEJUDGE_PROMPTFOO
export EDGEJUDGE_REQUIRE_PROMPTFOO=1

# The vLLM tests run when its environment exists (scripts/install_vllm.sh creates it).
VLLM_PYTHON="${EDGEJUDGE_VLLM_ENV:-$HOME/.cache/edgejudge/vllm-env}/bin/python"
if [ -x "$VLLM_PYTHON" ]; then
  export EDGEJUDGE_VLLM_PYTHON="$VLLM_PYTHON"
  export EDGEJUDGE_REQUIRE_VLLM=1
else
  echo "no vLLM environment at $VLLM_PYTHON: the vLLM tests will be skipped (scripts/install_vllm.sh)" >&2
fi

"$VENV/bin/ruff" check edgejudge scripts tests
"$VENV/bin/mypy" edgejudge
"$VENV/bin/python" -m pytest -q "$@"
