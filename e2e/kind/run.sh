#!/usr/bin/env bash
# End-to-end on a kind cluster (needs Docker, kind, kubectl, helm; NOT runnable on the project's build
# machines, which have no Docker engine: see README.md here). Steps:
#   kind cluster -> image build and load -> helm install (2 replicas, leader election) -> example
#   certificates Ready -> the short-lived certificate renewed -> its consuming Deployment restarted ->
#   /metrics scraped through the metrics Service.
# KEEP_CLUSTER=1 keeps the cluster afterwards; CLUSTER=name picks its name.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

CLUSTER="${CLUSTER:-mtls-e2e}"
IMAGE="mtls-operator:e2e"
NS=mtls-system
APP_NS=mtls-e2e

log() { printf '\n== %s\n' "$*"; }
for tool in docker kind kubectl helm curl; do
  command -v "$tool" >/dev/null || { echo "e2e/kind: $tool is required" >&2; exit 2; }
done

cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    log "FAILED: operator logs"
    kubectl -n "$NS" logs -l app.kubernetes.io/name=mtls-operator --tail=100 --prefix || true
    kubectl -n "$APP_NS" get mtlscertificates,mtlsissuers -o wide || true
  fi
  [ -n "${PF_PID:-}" ] && kill "$PF_PID" 2>/dev/null || true
  if [ -z "${KEEP_CLUSTER:-}" ]; then kind delete cluster --name "$CLUSTER" || true; fi
  exit "$status"
}
trap cleanup EXIT

log "kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s

log "image $IMAGE"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "helm install"
helm upgrade --install mtls-operator charts/mtls-operator --namespace "$NS" --create-namespace \
  --set image.repository=mtls-operator --set image.tag=e2e --set image.pullPolicy=Never \
  --set replicaCount=2 --wait --timeout 180s
kubectl -n "$NS" rollout status deployment/mtls-operator --timeout=180s
holder=$(kubectl -n "$NS" get lease mtls-operator -o jsonpath='{.spec.holderIdentity}')
echo "leader: $holder"
test -n "$holder"

log "example certificates"
kubectl create namespace "$APP_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f e2e/kind/certificates.yaml
kubectl -n "$APP_NS" wait --for=condition=Ready mtlsissuer/e2e-root --timeout=120s
kubectl -n "$APP_NS" wait --for=condition=Ready mtlscertificate/long mtlscertificate/short --timeout=120s
kubectl -n "$APP_NS" rollout status deployment/consumer --timeout=180s

log "short-lived certificate renewed, consumer restarted"
first=$(kubectl -n "$APP_NS" get mtlscertificate short -o jsonpath='{.status.serialNumber}')
deadline=$((SECONDS + 150))
until [ "$(kubectl -n "$APP_NS" get mtlscertificate short -o jsonpath='{.status.serialNumber}')" != "$first" ]; do
  [ $SECONDS -lt $deadline ] || { echo "not renewed within 150 s" >&2; exit 1; }
  sleep 3
done
echo "renewed: serial $first -> $(kubectl -n "$APP_NS" get mtlscertificate short -o jsonpath='{.status.serialNumber}')"
deadline=$((SECONDS + 120))
until [ -n "$(kubectl -n "$APP_NS" get deployment consumer -o jsonpath='{.spec.template.metadata.annotations.mtls\.dev/tls-stamp}')" ]; do
  [ $SECONDS -lt $deadline ] || { echo "consumer not restarted within 120 s" >&2; exit 1; }
  sleep 3
done
kubectl -n "$APP_NS" rollout status deployment/consumer --timeout=180s
echo "consumer restarted: $(kubectl -n "$APP_NS" get deployment consumer -o jsonpath='{.spec.template.metadata.annotations}')"

log "metrics (from the leader: a standby serves no certificate series)"
holder=$(kubectl -n "$NS" get lease mtls-operator -o jsonpath='{.spec.holderIdentity}')
kubectl -n "$NS" port-forward "pod/${holder%_*}" 19402:9402 >/dev/null &
PF_PID=$!
for _ in $(seq 30); do curl -sf http://127.0.0.1:19402/healthz >/dev/null && break; sleep 1; done
metrics=$(curl -sf http://127.0.0.1:19402/metrics)
grep -E "^mtls_certificate_expiration_timestamp_seconds\{namespace=\"$APP_NS\",name=\"long\"" <<<"$metrics"
grep -E "^mtls_certificate_ready_status\{namespace=\"$APP_NS\",name=\"short\",condition=\"True\"\} 1" <<<"$metrics"
grep -E "^mtls_issuance_total\{" <<<"$metrics"
grep -E "^mtls_rollout_restarts_total\{kind=\"Deployment\"\}" <<<"$metrics"
grep -E "^mtls_leader_election_is_leader 1" <<<"$metrics"
log "e2e passed"
