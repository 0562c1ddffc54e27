"""mtlsctl's cluster commands: status, inspect, renew, check.

They talk to the API server through the operator's own client (``k8s.api.ApiClient``) with credentials
from kopf's kubeconfig login, so mtlsctl needs nothing the operator does not already carry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from secrets import token_hex
from typing import Any

import kopf

from mtls_operator.api.constants import (
    ANN_CERTIFICATE_NAME,
    ANN_ISSUER_NAME,
    ANN_RENEW_REQUESTED,
    ANN_ROTATE_REQUESTED,
    CERTIFICATE_KIND,
    CERTIFICATE_PLURAL,
    GROUP,
    ISSUER_KIND,
    ISSUER_PLURAL,
    LABEL_MANAGED_BY,
    MANAGED_BY_VALUE,
    VERSION,
)
from mtls_operator.cli.offline import OfflineError, describe_secret_data
from mtls_operator.k8s.api import JSON, MERGE_PATCH, ApiClient, ApiError, core_path, group_path
from mtls_operator.k8s.resources import decode_secret

CRD_NAMES = (f"{CERTIFICATE_PLURAL}.{GROUP}", f"{ISSUER_PLURAL}.{GROUP}")
OPERATOR_LABELS = ("app.kubernetes.io/name=mtls-operator", "app=mtls-operator")
OPERATOR_LEASE = "mtls-operator"  # the default --leader-elect-name


class ClusterError(Exception):
    """A cluster command that cannot be done; the message is a sentence for the user."""


@dataclass(frozen=True)
class Target:
    kubeconfig: str | None
    namespace: str | None


def connect(target: Target) -> tuple[ApiClient, str]:
    """An API client for ``target`` and the namespace to use (flag, else the kubeconfig's, else default)."""
    if target.kubeconfig:
        os.environ["KUBECONFIG"] = target.kubeconfig
    try:
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    except (OSError, KeyError, kopf.LoginError) as exc:
        raise ClusterError(f"Cannot read the kubeconfig: {exc}.") from None
    if info is None:
        raise ClusterError("No kubeconfig: pass --kubeconfig or set KUBECONFIG.")
    from mtls_operator.k8s.api import credentials_from_kopf

    api = ApiClient(credentials_from_kopf(info), timeout=15.0)
    namespace = target.namespace or api.default_namespace or "default"
    return api, namespace


def now_rfc3339(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def request_token(now: datetime | None = None) -> str:
    """A request's identity: when it was made, and a random part, so two requests never collide (even in
    the same second, or right after the object was created); the operator acts on each token once."""
    return f"{now_rfc3339(now)}/{token_hex(4)}"


async def _get(api: ApiClient, path: str, what: str) -> JSON:
    try:
        return await api.get(path)
    except ApiError as exc:
        if exc.not_found:
            raise ClusterError(f"{what} does not exist.") from None
        raise ClusterError(f"Cannot read {what}: {exc}.") from None
    except OSError as exc:
        raise ClusterError(f"Cannot reach the API server: {exc}.") from None


# ---------------------------------------------------------------------------------------------------------
# status certificate


async def certificate_status(
    api: ApiClient, namespace: str, name: str, *, events: int = 10
) -> dict[str, Any]:
    obj = await _get(
        api,
        group_path(GROUP, VERSION, namespace, CERTIFICATE_PLURAL, name),
        f"MTLSCertificate {namespace}/{name}",
    )
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    conditions = [
        {
            "type": c.get("type"),
            "status": c.get("status"),
            "reason": c.get("reason"),
            "message": c.get("message"),
            "lastTransitionTime": c.get("lastTransitionTime"),
        }
        for c in status.get("conditions") or []
    ]
    return {
        "kind": CERTIFICATE_KIND,
        "namespace": namespace,
        "name": name,
        "ready": _condition_status(status, "Ready"),
        "issuer": (spec.get("issuerRef") or {}).get("name"),
        "secretName": spec.get("secretName"),
        "algorithm": status.get("algorithm"),
        "dnsNames": spec.get("dnsNames") or [],
        "commonName": spec.get("commonName"),
        "notBefore": status.get("notBefore"),
        "notAfter": status.get("notAfter"),
        "renewalTime": status.get("renewalTime"),
        "revision": status.get("revision"),
        "serialNumber": status.get("serialNumber"),
        "fingerprint": status.get("fingerprint"),
        "renewRequestedAt": (meta.get("annotations") or {}).get(ANN_RENEW_REQUESTED),
        "conditions": conditions,
        "events": await _events(api, namespace, CERTIFICATE_KIND, name, events),
    }


async def _events(api: ApiClient, namespace: str, kind: str, name: str, limit: int) -> list[dict[str, Any]]:
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    try:
        body = await api.request("GET", core_path(namespace, "events"), params={"fieldSelector": selector})
    except ApiError:
        return []
    items = body.get("items") or []

    def when(e: Mapping[str, Any]) -> str:
        return str(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or "")

    items.sort(key=when)
    return [
        {
            "time": when(e),
            "type": e.get("type"),
            "reason": e.get("reason"),
            "count": e.get("count") or 1,
            "message": e.get("message"),
        }
        for e in items[-limit:]
    ]


def _condition_status(status: Mapping[str, Any], kind: str) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status"))
    return None


# ---------------------------------------------------------------------------------------------------------
# inspect secret


async def inspect_secret(api: ApiClient, namespace: str, name: str, now: datetime) -> dict[str, Any]:
    body = await _get(api, core_path(namespace, "secrets", name), f"Secret {namespace}/{name}")
    secret = decode_secret(body)
    try:
        doc = describe_secret_data(secret.data, now)
    except OfflineError as exc:
        raise ClusterError(f"Secret {namespace}/{name}: {exc}") from None
    return {
        "kind": "Secret",
        "namespace": namespace,
        "name": name,
        "type": secret.type,
        "managedBy": secret.labels.get(LABEL_MANAGED_BY),
        "managedByOperator": secret.labels.get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE,
        "ownerCertificate": secret.annotations.get(ANN_CERTIFICATE_NAME),
        "ownerIssuer": secret.annotations.get(ANN_ISSUER_NAME),
        **doc,
    }


# ---------------------------------------------------------------------------------------------------------
# renew


async def annotate(
    api: ApiClient, plural: str, kind: str, namespace: str, name: str, annotations: dict[str, str]
) -> dict[str, Any]:
    """Merge-patch annotations onto one of the operator's objects; return the object as it now is."""
    path = group_path(GROUP, VERSION, namespace, plural, name)
    try:
        return await api.request(
            "PATCH", path, body={"metadata": {"annotations": annotations}}, content_type=MERGE_PATCH
        )
    except ApiError as exc:
        if exc.not_found:
            raise ClusterError(f"{kind} {namespace}/{name} does not exist.") from None
        raise ClusterError(f"Cannot annotate {kind} {namespace}/{name}: {exc}.") from None
    except OSError as exc:
        raise ClusterError(f"Cannot reach the API server: {exc}.") from None


async def request_renewal(api: ApiClient, namespace: str, name: str, now: datetime) -> dict[str, Any]:
    """Set ``mtls.dev/renew-requested-at`` to ``now``; the operator re-issues when it is newer than the
    certificate's notBefore."""
    stamp = request_token(now)
    await annotate(api, CERTIFICATE_PLURAL, CERTIFICATE_KIND, namespace, name, {ANN_RENEW_REQUESTED: stamp})
    return {"namespace": namespace, "name": name, "annotation": ANN_RENEW_REQUESTED, "value": stamp}


async def request_ca_rotation(api: ApiClient, namespace: str, name: str, now: datetime) -> dict[str, Any]:
    """Set ``mtls.dev/rotate-requested-at`` on an MTLSIssuer: the operator starts a CA rotation with
    overlap (status.rotation shows the phases)."""
    stamp = request_token(now)
    await annotate(api, ISSUER_PLURAL, ISSUER_KIND, namespace, name, {ANN_ROTATE_REQUESTED: stamp})
    return {"namespace": namespace, "name": name, "annotation": ANN_ROTATE_REQUESTED, "value": stamp}


# ---------------------------------------------------------------------------------------------------------
# check


async def check_health(api: ApiClient, namespace: str) -> dict[str, Any]:
    """Are the CRDs installed and established, and is an operator reconciling?

    An operator in the cluster is found by its Deployment's labels or a fresh leader-election Lease; one
    running elsewhere without a Lease (as in ``make demo``) shows only in its work, so the check also
    reports how many issuers and certificates in ``namespace`` carry a Ready condition for their
    current generation.
    """
    checks: list[dict[str, Any]] = []
    try:
        version = await api.get("/version")
        checks.append(
            {"name": "api-server", "ok": True, "message": f"reachable, {version.get('gitVersion')}"}
        )
    except (ApiError, OSError) as exc:
        checks.append({"name": "api-server", "ok": False, "message": f"not reachable: {exc}"})
        return {"ok": False, "checks": checks}

    for crd in CRD_NAMES:
        body = await api.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")
        if body is None:
            checks.append(
                {"name": f"crd/{crd}", "ok": False, "message": "not installed: kubectl apply -f crds/"}
            )
            continue
        conds = {c.get("type"): c.get("status") for c in (body.get("status") or {}).get("conditions") or []}
        served = [v.get("name") for v in (body.get("spec") or {}).get("versions") or [] if v.get("served")]
        ok = conds.get("Established") == "True" and VERSION in served
        message = f"established, serves {', '.join(str(s) for s in served)}" if ok else f"conditions {conds}"
        checks.append({"name": f"crd/{crd}", "ok": ok, "message": message})

    operator = await _operator_deployment(api)
    if not operator["ok"]:
        operator = await _operator_lease(api, datetime.now(UTC)) or operator
    checks.append(operator)
    for kind, plural in ((ISSUER_KIND, ISSUER_PLURAL), (CERTIFICATE_KIND, CERTIFICATE_PLURAL)):
        checks.append(await _reconciled(api, namespace, kind, plural))
    deployment, issuers, certificates = checks[-3], checks[-2], checks[-1]
    # No in-cluster Deployment is fine when objects show that some operator keeps them reconciled.
    evidence = issuers["count"] + certificates["count"] > 0
    if (
        not deployment["ok"]
        and deployment.get("absent")
        and evidence
        and issuers["ok"]
        and certificates["ok"]
    ):
        deployment["ok"] = True
        deployment["message"] += "; objects are reconciled, so an operator runs outside the cluster"
    return {"ok": all(c["ok"] for c in checks), "namespace": namespace, "checks": checks}


async def _operator_deployment(api: ApiClient) -> dict[str, Any]:
    for selector in OPERATOR_LABELS:
        try:
            body = await api.request("GET", "/apis/apps/v1/deployments", params={"labelSelector": selector})
        except ApiError:
            continue
        for item in body.get("items") or []:
            meta = item.get("metadata") or {}
            want = (item.get("spec") or {}).get("replicas", 1)
            ready = (item.get("status") or {}).get("readyReplicas") or 0
            return {
                "name": "operator",
                "ok": ready >= 1,
                "message": f"deployment {meta.get('namespace')}/{meta.get('name')} {ready}/{want} ready",
            }
    return {"name": "operator", "ok": False, "absent": True, "message": "no mtls-operator Deployment found"}


async def _operator_lease(api: ApiClient, now: datetime) -> dict[str, Any] | None:
    """A leader-elected operator (``--leader-elect``) renews its Lease; a fresh renewal shows it lives."""
    try:
        body = await api.request(
            "GET",
            "/apis/coordination.k8s.io/v1/leases",
            params={"fieldSelector": f"metadata.name={OPERATOR_LEASE}"},
        )
    except (ApiError, OSError):
        return None
    for item in body.get("items") or []:
        spec = item.get("spec") or {}
        meta = item.get("metadata") or {}
        renewed = parse_time(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or 15)
        if renewed is None or not spec.get("holderIdentity"):
            continue
        age = (now - renewed).total_seconds()
        return {
            "name": "operator",
            "ok": age <= 2 * duration,
            "message": f"lease {meta.get('namespace')}/{meta.get('name')} held by {spec['holderIdentity']}, "
            f"renewed {age:.0f}s ago (lease {duration:.0f}s)",
        }
    return None


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as the API server writes it (with or without fractional seconds), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


async def _reconciled(api: ApiClient, namespace: str, kind: str, plural: str) -> dict[str, Any]:
    """Whether every ``kind`` in ``namespace`` carries a Ready condition for its current generation."""
    try:
        body = await api.get(group_path(GROUP, VERSION, namespace, plural))
    except (ApiError, OSError) as exc:
        return {"name": plural, "ok": False, "count": 0, "message": f"cannot list: {exc}"}
    items = body.get("items") or []
    seen = 0
    ready = 0
    for item in items:
        generation = (item.get("metadata") or {}).get("generation")
        for c in (item.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("observedGeneration") in (None, generation):
                seen += 1
                ready += c.get("status") == "True"
                break
    ok = seen == len(items)
    if not items:
        message = f"no {kind} in namespace {namespace} yet"
    else:
        message = (
            f"{seen}/{len(items)} in namespace {namespace} observed by an operator at their current "
            f"generation, {ready} Ready"
        )
    return {"name": plural, "ok": ok, "count": len(items), "message": message}
