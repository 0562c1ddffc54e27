#!/usr/bin/env bash
# Builds the real control plane used by the integration tests and `make cluster-up`:
# kube-apiserver, kube-controller-manager, kubectl and etcd from this Go module (k8s.io/kubernetes with
# its staging modules pinned by `replace` in go.mod), and helm from helm.sh/helm.
#
# Output: $MTLS_CACHE/controlplane/<k8s version>/bin/. The Go module and build caches live under
# $MTLS_CACHE/go, so a second run builds nothing. Each binary is built only if missing, into a temporary
# name first, so a killed build never leaves a half-written binary behind.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="$(grep -E '^(require)?[[:space:]]*k8s.io/kubernetes v' "$here/go.mod" | awk '{print $NF}' | head -n1)"
[[ -n "$K8S_VERSION" ]] || { echo "controlplane: cannot read the k8s.io/kubernetes version from $here/go.mod" >&2; exit 1; }
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
MTLS_CACHE="${MTLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mtls-operator}"
BIN="$MTLS_CACHE/controlplane/$K8S_VERSION/bin"
export GOMODCACHE="$MTLS_CACHE/go/mod" GOCACHE="$MTLS_CACHE/go/build" GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
mkdir -p "$BIN" "$GOMODCACHE" "$GOCACHE"

if ! command -v go >/dev/null 2>&1; then
  echo "controlplane: the 'go' command is not on PATH; install Go >= 1.26 to build the control plane" >&2
  exit 1
fi

major_minor="${K8S_VERSION#v}"
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=${major_minor%%.*} \
 -X k8s.io/component-base/version.gitMinor=$(echo "$major_minor" | cut -d. -f2) \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

build() { # name, package, [dir]
  local name="$1" pkg="$2" dir="${3:-$here}" start
  if [[ -x "$BIN/$name" ]]; then
    echo "controlplane: $name $K8S_VERSION cached at $BIN/$name"
    return
  fi
  start=$SECONDS
  echo "controlplane: building $name ($pkg) ..."
  if ! (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$BIN/.$name.tmp" "$pkg"); then
    rm -f "$BIN/.$name.tmp"
    echo "controlplane: FAILED to build $name from $pkg (Go $(go env GOVERSION)); see the compiler output above" >&2
    exit 1
  fi
  mv -f "$BIN/.$name.tmp" "$BIN/$name"
  echo "controlplane: built $name in $((SECONDS - start))s"
}

total=$SECONDS
build etcd ./cmd/etcd
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl k8s.io/kubernetes/cmd/kubectl

# helm has its own module graph (other client-go versions), so it is built from its own module.
if [[ -x "$BIN/helm" ]]; then
  echo "controlplane: helm $HELM_VERSION cached at $BIN/helm"
else
  start=$SECONDS
  echo "controlplane: building helm (helm.sh/helm/v3 $HELM_VERSION) ..."
  if ! GOBIN="$BIN/.helm-tmp" GOFLAGS="-buildvcs=false" go install -trimpath -ldflags "-s -w" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"; then
    rm -rf "$BIN/.helm-tmp"
    echo "controlplane: FAILED to build helm $HELM_VERSION; see the compiler output above" >&2
    exit 1
  fi
  mv -f "$BIN/.helm-tmp/helm" "$BIN/helm" && rm -rf "$BIN/.helm-tmp"
  echo "controlplane: built helm in $((SECONDS - start))s"
fi
echo "$K8S_VERSION" > "$BIN/../VERSION"
echo "controlplane: ready in $BIN ($((SECONDS - total))s)"
