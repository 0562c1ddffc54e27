#!/usr/bin/env bash
# Builds what the test node needs beyond Debian's packages (see docs/node.md):
#   kubelet and kube-scheduler, from the same Go module graph as the control plane (e2e/controlplane:
#   k8s.io/kubernetes pinned, staging modules replaced), into $MTLS_CACHE/controlplane/<version>/bin;
#   pause, the sandbox binary, compiled statically from build/pause/linux/pause.c of that same pinned
#   k8s.io/kubernetes module, into $MTLS_CACHE/kubenode/bin.
# containerd, runc and the CNI plugins are Debian 12's packages (make node-deps): kubelet 1.36 still
# accepts containerd 1.6. The images (pause, operator) are built by `python -m mtls_operator.testing.images
# build`, at the first node start or by `make node`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cpdir="$here/../controlplane"
K8S_VERSION="$(grep -E '^(require)?[[:space:]]*k8s.io/kubernetes v' "$cpdir/go.mod" | awk '{print $NF}' | head -n1)"
MTLS_CACHE="${MTLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mtls-operator}"
BIN="$MTLS_CACHE/controlplane/$K8S_VERSION/bin"
NODE_BIN="$MTLS_CACHE/kubenode/bin"
export GOMODCACHE="$MTLS_CACHE/go/mod" GOCACHE="$MTLS_CACHE/go/build" GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
mkdir -p "$BIN" "$NODE_BIN" "$GOMODCACHE" "$GOCACHE"
command -v go >/dev/null 2>&1 || { echo "node: the 'go' command is not on PATH (Go >= 1.26 needed)" >&2; exit 1; }

major_minor="${K8S_VERSION#v}"
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=${major_minor%%.*} \
 -X k8s.io/component-base/version.gitMinor=$(echo "$major_minor" | cut -d. -f2) \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

total=$SECONDS
for name in kubelet kube-scheduler; do
  if [[ -x "$BIN/$name" ]]; then echo "node: $name $K8S_VERSION cached at $BIN/$name"; continue; fi
  start=$SECONDS
  echo "node: building $name (k8s.io/kubernetes/cmd/$name $K8S_VERSION) ..."
  if ! (cd "$cpdir" && go build -trimpath -ldflags "$ldflags" -o "$BIN/.$name.tmp" "k8s.io/kubernetes/cmd/$name"); then
    rm -f "$BIN/.$name.tmp"; echo "node: FAILED to build $name; see the compiler output above" >&2; exit 1
  fi
  mv -f "$BIN/.$name.tmp" "$BIN/$name"
  echo "node: built $name in $((SECONDS - start))s"
done

if [[ -x "$NODE_BIN/pause" ]]; then
  echo "node: pause cached at $NODE_BIN/pause"
else
  src="$(cd "$cpdir" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
  [[ -f "$src" ]] || { echo "node: $src not found in the module cache" >&2; exit 1; }
  command -v gcc >/dev/null 2>&1 || { echo "node: gcc is needed to compile pause (make node-deps)" >&2; exit 1; }
  gcc -Os -Wall -Werror -static -DVERSION="$K8S_VERSION-mtls" -o "$NODE_BIN/.pause.tmp" "$src"
  strip "$NODE_BIN/.pause.tmp" && mv -f "$NODE_BIN/.pause.tmp" "$NODE_BIN/pause"
  echo "node: built pause from $src"
fi
echo "node: binaries ready ($((SECONDS - total))s)"
