"""`mtlsctl revoke NAME [--reason R]`: ask the operator to revoke an MTLSCertificate's current certificate.

Like ``renew`` it only annotates the MTLSCertificate (``mtls.dev/revoke-requested-at: <now>`` and
``mtls.dev/revoke-reason: <reason>``). The operator puts the serial of the certificate current at that time
on the issuer's CRL (OCSP then answers revoked) and issues a replacement with a new key.

`mtlsctl revoke --serial HEX --issuer NAME [--cluster-issuer]`: revoke one serial an issuer signed that no
MTLSCertificate stands for, such as a pod certificate (KEP-4317: the kubelet holds the key, and no object
outlives the request). It puts the serial on the issuer's revocation list through the same store the
operator uses (:class:`~mtls_operator.controllers.revocation.Revocations`: a merge into the
``<issuer>-revocations`` ConfigMap guarded by its resourceVersion, never lost to a concurrent write), then
touches the issuer (``mtls.dev/revocations-changed-at``) so that the operator reads the list at once, signs
a new CRL and answers OCSP "revoked". Nothing is re-issued: the kubelet asks for a new certificate at the
old one's ``beginRefreshAt`` (delete the pod to replace it now).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from mtls_operator.api.conditions import parse_rfc3339, rfc3339
from mtls_operator.api.constants import (
    ANN_REVOKE_REASON,
    ANN_REVOKE_REQUESTED,
    CERTIFICATE_PLURAL,
    CLUSTER_ISSUER_KIND,
    CLUSTER_ISSUER_PLURAL,
    GROUP,
    ISSUER_KIND,
    ISSUER_PLURAL,
    VERSION,
)
from mtls_operator.cli.cluster import ClusterError, Target, connect, request_token
from mtls_operator.cli.output import Printer
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.k8s.api import MERGE_PATCH, ApiClient, ApiError, group_path
from mtls_operator.policy.revocations import config_map_name, parse_serial

# RFC 5280 reasons that make sense for a leaf the operator issued (no CA- or attribute-only ones).
REASONS: Final = (
    "unspecified",
    "keyCompromise",
    "caCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
)
# Set on the issuer after a revocation by serial: any change makes the operator reconcile it, which reads
# the revocation list again (a hint; the list itself is the ConfigMap).
ANN_REVOCATIONS_CHANGED: Final = "mtls.dev/revocations-changed-at"
BY_SERIAL: Final = "(by serial)"  # the entry's "certificate": no MTLSCertificate stands for it
DEFAULT_CLUSTER_RESOURCES: Final = "mtls-system"  # the operator's default --cluster-resource-namespace


def add_revoke_parser(sub: Any, common: Callable[..., None]) -> argparse.ArgumentParser:
    """Register ``revoke`` on mtlsctl's subcommands (``common`` adds -o, -n and --kubeconfig)."""
    revoke: argparse.ArgumentParser = sub.add_parser(
        "revoke",
        help="revoke an MTLSCertificate's current certificate and have it re-issued with a new key, or "
        "(--serial) one serial an issuer signed, such as a pod certificate",
    )
    revoke.add_argument("name", nargs="?", help="the MTLSCertificate (not with --serial)")
    revoke.add_argument("--serial", help="revoke this serial number (hex) instead; needs --issuer")
    revoke.add_argument("--issuer", help="with --serial: the MTLSIssuer (in -n) or MTLSClusterIssuer")
    revoke.add_argument(
        "--cluster-issuer", action="store_true", help="with --serial: --issuer names an MTLSClusterIssuer"
    )
    revoke.add_argument(
        "--cluster-resource-namespace",
        default=DEFAULT_CLUSTER_RESOURCES,
        help="with --cluster-issuer: the operator's --cluster-resource-namespace (default mtls-system)",
    )
    revoke.add_argument(
        "--not-after",
        help="with --serial: the certificate's notAfter (RFC 3339), so the entry leaves the list once it has "
        "expired (default: kept until the issuer's CA expires)",
    )
    revoke.add_argument(
        "--reason",
        choices=REASONS,
        default="unspecified",
        help="RFC 5280 reason on the CRL (default unspecified)",
    )
    common(revoke, cluster=True)
    return revoke


async def request_revocation(
    api: ApiClient, namespace: str, name: str, reason: str, now: datetime
) -> dict[str, Any]:
    """Annotate the MTLSCertificate; return what was set and the serial it names (the current one)."""
    if reason not in REASONS:
        raise ClusterError(f"--reason {reason!r} is not one of {', '.join(REASONS)}.")
    stamp = request_token(now)
    path = group_path(GROUP, VERSION, namespace, CERTIFICATE_PLURAL, name)
    # The token is the request's identity: the operator revokes the certificate current when it acts,
    # once, and records the token on the replacement's Secret (so the replacement is never revoked too).
    try:
        body = await api.request(
            "PATCH",
            path,
            body={"metadata": {"annotations": {ANN_REVOKE_REQUESTED: stamp, ANN_REVOKE_REASON: reason}}},
            content_type=MERGE_PATCH,
        )
    except ApiError as exc:
        if exc.not_found:
            raise ClusterError(f"MTLSCertificate {namespace}/{name} does not exist.") from None
        raise ClusterError(f"Cannot annotate MTLSCertificate {namespace}/{name}: {exc}.") from None
    except OSError as exc:
        raise ClusterError(f"Cannot reach the API server: {exc}.") from None
    serial = (body.get("status") or {}).get("serialNumber")
    return {
        "namespace": namespace,
        "name": name,
        "serialNumber": serial,
        "reason": reason,
        "annotations": {ANN_REVOKE_REQUESTED: stamp, ANN_REVOKE_REASON: reason},
    }


def render_revocation(out: Printer, doc: dict[str, Any]) -> None:
    serial = doc.get("serialNumber") or "(not issued yet)"
    out.line(
        f"Revocation requested for MTLSCertificate {doc['namespace']}/{doc['name']} (serial {serial}, "
        f"reason {doc['reason']}): {ANN_REVOKE_REQUESTED}={doc['annotations'][ANN_REVOKE_REQUESTED]}"
    )


async def revoke_serial(
    api: ApiClient,
    *,
    issuer: str,
    namespace: str,
    cluster: bool,
    cluster_resources: str,
    serial: str,
    reason: str,
    not_after: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """Put ``serial`` on the issuer's revocation list, durably, and nudge the issuer; return what was done.
    Raises :class:`ClusterError` with a sentence when the issuer does not exist or the list refuses it."""
    if reason not in REASONS:
        raise ClusterError(f"--reason {reason!r} is not one of {', '.join(REASONS)}.")
    number = parse_serial(serial)
    if number is None:
        raise ClusterError(f"--serial {serial!r} is not a hexadecimal certificate serial number.")
    kind, plural = (CLUSTER_ISSUER_KIND, CLUSTER_ISSUER_PLURAL) if cluster else (ISSUER_KIND, ISSUER_PLURAL)
    where = "" if cluster else namespace
    label = f"{kind} {issuer}" if cluster else f"{kind} {namespace}/{issuer}"
    path = group_path(GROUP, VERSION, where, plural, issuer)
    try:
        await api.get(path)
    except ApiError as exc:
        if exc.not_found:
            raise ClusterError(f"{label} does not exist.") from None
        raise ClusterError(f"Cannot read {label}: {exc}.") from None
    except OSError as exc:
        raise ClusterError(f"Cannot reach the API server: {exc}.") from None
    # Where the operator keeps the list (IssuerStore.revocation_ref): a cluster issuer's in the cluster
    # resource namespace, under a "cluster." prefix.
    ref = (cluster_resources, f"cluster.{issuer}") if cluster else (namespace, issuer)
    store = Revocations(api, clock=lambda: now, events=False)
    hex_serial = format(number, "x")
    if not await store.revoke(*ref, hex_serial, reason, BY_SERIAL, not_after=not_after):
        problem = store.problem(*ref)
        why = problem[1] if problem is not None else "the API server did not take the write; try again."
        raise ClusterError(f"Serial {hex_serial} of {label} is not revoked: {why}")
    try:
        await api.request(
            "PATCH",
            path,
            body={"metadata": {"annotations": {ANN_REVOCATIONS_CHANGED: request_token(now)}}},
            content_type=MERGE_PATCH,
        )
        nudged = True
    except (ApiError, OSError):
        nudged = False  # the operator still reads the list at its next look at the issuer (10 minutes)
    return {
        "issuer": {"kind": kind, "name": issuer, **({} if cluster else {"namespace": namespace})},
        "serialNumber": hex_serial,
        "reason": reason,
        "notAfter": rfc3339(not_after),
        "configMap": f"{ref[0]}/{config_map_name(ref[1])}",
        "issuerNudged": nudged,
    }


def render_serial_revocation(out: Printer, doc: dict[str, Any]) -> None:
    issuer = doc["issuer"]
    name = f"{issuer['namespace']}/{issuer['name']}" if "namespace" in issuer else issuer["name"]
    then = (
        "the operator was asked to publish a new CRL now"
        if doc["issuerNudged"]
        else "the operator publishes a new CRL when it next looks at the issuer"
    )
    out.line(
        f"Revoked serial {doc['serialNumber']} of {issuer['kind']} {name} (reason {doc['reason']}): "
        f"listed in ConfigMap {doc['configMap']}; {then}."
    )


def cmd_revoke(args: argparse.Namespace, out: Printer) -> int:
    if args.serial is not None or args.issuer is not None:
        return _cmd_revoke_serial(args, out)
    if not args.name:
        raise ClusterError("Name the MTLSCertificate to revoke, or give --serial and --issuer.")
    api, namespace = connect(Target(kubeconfig=args.kubeconfig, namespace=args.namespace))

    async def run() -> dict[str, Any]:
        try:
            return await request_revocation(api, namespace, args.name, args.reason, datetime.now(UTC))
        finally:
            await api.close()

    out.emit(asyncio.run(run()), render_revocation)
    return 0


def _cmd_revoke_serial(args: argparse.Namespace, out: Printer) -> int:
    if args.name or not args.serial or not args.issuer:
        raise ClusterError("--serial and --issuer go together, without an MTLSCertificate name.")
    not_after = parse_rfc3339(args.not_after) if args.not_after else None
    if args.not_after and not_after is None:
        raise ClusterError(
            f"--not-after {args.not_after!r} is not an RFC 3339 time such as 2026-03-01T12:00:00Z."
        )
    api, namespace = connect(Target(kubeconfig=args.kubeconfig, namespace=args.namespace))

    async def run() -> dict[str, Any]:
        try:
            return await revoke_serial(
                api,
                issuer=args.issuer,
                namespace=namespace,
                cluster=args.cluster_issuer,
                cluster_resources=args.cluster_resource_namespace,
                serial=args.serial,
                reason=args.reason,
                not_after=not_after,
                now=datetime.now(UTC),
            )
        finally:
            await api.close()

    out.emit(asyncio.run(run()), render_serial_revocation)
    return 0
