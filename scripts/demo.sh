#!/usr/bin/env bash
# `make demo` after `make cluster-up`: install the CRDs, (re)start the operator in the background, apply
# examples/ into namespace demo, wait for every issuer and certificate to be Ready, show them, and run the
# badge demo (scripts/demo-badges.sh) and the migration act (scripts/demo-migration.py). `scripts/demo.sh
# down` stops the operator (make demo-down then stops the control plane).
#
# State lives in .local/: kubeconfig (from make cluster-up), operator.log, operator.pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUN=.local
export KUBECONFIG="$PWD/$RUN/kubeconfig"
PY="$PWD/.venv/bin/python"
KUBECTL="${KUBECTL:-$("$PY" -c 'from mtls_operator.testing.controlplane import default_bin_dir; print(default_bin_dir())')/kubectl}"
PIDFILE="$RUN/operator.pid"
LOG="$RUN/operator.log"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
if [[ -t 1 ]]; then B=$'\e[1m' N=$'\e[0m'; else B="" N=""; fi
say() { echo "${B}demo:${N} $*"; }

stop_operator() {
  [[ -f "$PIDFILE" ]] || return 0
  local pid
  pid="$(cat "$PIDFILE")"
  # Only our operator: the pid must still run the mtls-operator entry point.
  if [[ -n "$pid" ]] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "mtls-operator"; then
    say "stopping the operator (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

start_operator() {
  stop_operator
  : > "$LOG"
  say "starting the operator: .venv/bin/mtls-operator --all-namespaces (log $LOG)"
  PYTHONUNBUFFERED=1 setsid nohup "$PWD/.venv/bin/mtls-operator" --all-namespaces >> "$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  local pid
  pid="$(cat "$PIDFILE")"
  for _ in $(seq 1 300); do
    grep -q "mtls-operator started" "$LOG" && { say "operator running (pid $pid)"; return 0; }
    kill -0 "$pid" 2>/dev/null || { tail -n 40 "$LOG"; echo "demo: the operator exited" >&2; exit 1; }
    sleep 0.1
  done
  tail -n 40 "$LOG"
  echo "demo: the operator did not start within 30s" >&2
  exit 1
}

wait_ready() { # deadline for every MTLSIssuer and MTLSCertificate in demo to be Ready
  local deadline=$((SECONDS + READY_TIMEOUT)) pending
  while :; do
    pending="$("$KUBECTL" get missuer,mcert -n demo -o jsonpath='{range .items[*]}{.kind}/{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -v '=True$' || true)"
    [[ -z "$pending" ]] && return 0
    if ((SECONDS >= deadline)); then
      echo "demo: not Ready after ${READY_TIMEOUT}s:" >&2
      echo "$pending" >&2
      "$KUBECTL" get missuer,mcert -n demo >&2 || true
      tail -n 40 "$LOG" >&2
      exit 1
    fi
    sleep 1
  done
}

case "${1:-up}" in
  up)
    [[ -f "$KUBECONFIG" ]] || { echo "demo: no $KUBECONFIG: run make cluster-up first" >&2; exit 1; }
    say "installing the CRDs"
    "$KUBECTL" apply -f crds/ >/dev/null
    "$KUBECTL" wait --for=condition=Established crd/mtlscertificates.mtls.dev crd/mtlsissuers.mtls.dev \
      crd/mtlsclusterissuers.mtls.dev --timeout=60s >/dev/null
    start_operator
    # demo, and mtls-system: the operator keeps the MTLSClusterIssuer CA Secret of
    # examples/cluster-issuer-mesh.yaml there (its default cluster resource namespace)
    for ns in demo mtls-system; do
      "$KUBECTL" get namespace "$ns" >/dev/null 2>&1 || "$KUBECTL" create namespace "$ns" >/dev/null
    done
    say "applying examples/ into namespace demo"
    "$KUBECTL" apply -f examples/ | sed 's/^/  /'
    say "waiting up to ${READY_TIMEOUT}s for every issuer and certificate to be Ready"
    start=$SECONDS
    wait_ready
    say "all Ready after $((SECONDS - start))s"
    echo
    echo "\$ kubectl get missuer,mcert -n demo"
    "$KUBECTL" get missuer,mcert -n demo
    echo
    echo "\$ mtlsctl check"
    "$PWD/.venv/bin/mtlsctl" check -n demo || true
    bash scripts/demo-badges.sh
    "$PY" scripts/demo-migration.py
    echo
    say "done. Try: .venv/bin/mtlsctl --kubeconfig $RUN/kubeconfig -n demo status certificate badge-alice-mldsa"
    say "stop everything with: make demo-down"
    ;;
  down)
    stop_operator
    ;;
  *)
    echo "usage: scripts/demo.sh [up|down]" >&2
    exit 2
    ;;
esac
