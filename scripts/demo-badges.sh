#!/usr/bin/env bash
# The badge demo: real mutual TLS 1.3 handshakes with the certificates the operator wrote into Secrets.
# For each algorithm (ML-DSA-65, then ECDSA P-256): `mtlsctl serve` with the server certificate for
# api.example.com, then `mtlsctl handshake` as Alice, Bob, Mallory (a badge from another CA) and "web"
# (a server-only certificate used as a client). Alice and Bob must get in; Mallory and web must not.
# Exits non-zero if any outcome differs from that.
#
# Environment: KUBECONFIG (default .local/kubeconfig), NAMESPACE (default demo), ALGORITHMS (default
# "mldsa ecdsa"), MTLSCTL (default .venv/bin/mtlsctl), KUBECTL (default: the control plane's kubectl).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export KUBECONFIG="${KUBECONFIG:-$PWD/.local/kubeconfig}"
NAMESPACE="${NAMESPACE:-demo}"
ALGORITHMS="${ALGORITHMS:-mldsa ecdsa}"
MTLSCTL="${MTLSCTL:-$PWD/.venv/bin/mtlsctl}"
PY="${PY:-$PWD/.venv/bin/python}"
KUBECTL="${KUBECTL:-$("$PY" -c 'from mtls_operator.testing.controlplane import default_bin_dir; print(default_bin_dir())')/kubectl}"

if [[ -t 1 ]]; then B=$'\e[1m' G=$'\e[32;1m' R=$'\e[31;1m' N=$'\e[0m'; else B="" G="" R="" N=""; fi

work="$(mktemp -d -t mtls-badges.XXXXXX)"
chmod 700 "$work"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Secret -> files (keys with mode 0600); nothing of the key is printed.
fetch() { # secret-name, directory
  local secret="$1" dir="$2" key
  mkdir -p "$dir"
  for key in tls.crt tls.key ca.crt; do
    (umask 077; "$KUBECTL" get secret -n "$NAMESPACE" "$secret" -o "jsonpath={.data.${key//./\\.}}" | base64 -d > "$dir/$key")
  done
}

label() { case "$1" in mldsa) echo "ML-DSA-65" ;; ecdsa) echo "ECDSA P-256" ;; *) echo "$1" ;; esac; }

declare -a summary=()
failures=0
for algo in $ALGORITHMS; do
  echo
  echo "${B}=== Badge demo: $(label "$algo") ===${N}"
  for who in server alice bob mallory web; do fetch "badge-$who-$algo-tls" "$work/$algo/$who"; done
  srv="$work/$algo/server"
  log="$work/$algo/serve.log"
  "$MTLSCTL" serve --cert "$srv/tls.crt" --key "$srv/tls.key" --ca "$srv/ca.crt" --port 0 --count 4 > "$log" 2>&1 &
  server_pid=$!
  port=""
  for _ in $(seq 1 300); do
    port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")"
    [[ -n "$port" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$log"; echo "mtlsctl serve exited" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$port" ]] || { cat "$log"; echo "mtlsctl serve did not listen within 30s" >&2; exit 1; }
  echo "server: badge-server-$algo-tls (api.example.com) on 127.0.0.1:$port"
  for who in alice bob mallory web; do
    case "$who" in
      alice | bob) expect=ok ;;
      *) expect=refused ;;
    esac
    echo
    echo "${B}--- $who (expected: $expect) ---${N}"
    out="$("$MTLSCTL" handshake --connect "127.0.0.1:$port" --cert "$work/$algo/$who/tls.crt" \
      --key "$work/$algo/$who/tls.key" --ca "$srv/ca.crt" --servername api.example.com)" && got=ok || got=refused
    echo "$out"
    group="$(sed -n 's/^ *group *//p' <<<"$out" | head -n1)"
    sig="$(sed -n 's/^ *peer signature *//p' <<<"$out" | head -n1)"
    reason="$(sed -n 's/.*handshake FAILED with [^:]*:[0-9]*[^:]*: //p' <<<"$out" | head -n1)"
    if [[ "$got" == "$expect" ]]; then verdict="${G}as expected${N}"; else verdict="${R}UNEXPECTED${N}"; failures=$((failures + 1)); fi
    summary+=("$(printf '%-12s %-8s %-8s %-15s %-18s %s' "$(label "$algo")" "$who" "$got" "${group:--}" "${sig:--}" "$verdict${reason:+ ($reason)}")")
  done
  # serve exits after its four connections; never wait on it for more than 10 s.
  for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  echo
  echo "${B}server side (mtlsctl serve):${N}"
  sed 's/^/  /' "$log"
done

echo
echo "${B}=== Outcomes ===${N}"
printf '%-12s %-8s %-8s %-15s %-18s %s\n' ALGORITHM CLIENT RESULT GROUP SERVER-SIG VERDICT
printf '%s\n' "${summary[@]}"
if ((failures)); then
  echo "${R}$failures outcome(s) differ from what mutual TLS must do${N}" >&2
  exit 1
fi
