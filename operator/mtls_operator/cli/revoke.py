"""`mtlsctl revoke NAME [--reason R]`: ask the operator to revoke an MTLSCertificate's current certificate.

Like ``renew`` it only annotates the MTLSCertificate (``mtls.dev/revoke-requested-at: <now>`` and
``mtls.dev/revoke-reason: <reason>``). The operator puts the serial of the certificate current at that time
on the issuer's CRL (OCSP then answers revoked) and issues a replacement with a new key.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from mtls_operator.api.constants import (
    ANN_REVOKE_REASON,
    ANN_REVOKE_REQUESTED,
    CERTIFICATE_PLURAL,
    GROUP,
    VERSION,
)
from mtls_operator.cli.cluster import ClusterError, Target, connect, request_token
from mtls_operator.cli.output import Printer
from mtls_operator.k8s.api import MERGE_PATCH, ApiClient, ApiError, group_path

# RFC 5280 reasons that make sense for a leaf the operator issued (no CA- or attribute-only ones).
REASONS: Final = (
    "unspecified",
    "keyCompromise",
    "caCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
)


def add_revoke_parser(sub: Any, common: Callable[..., None]) -> argparse.ArgumentParser:
    """Register ``revoke`` on mtlsctl's subcommands (``common`` adds -o, -n and --kubeconfig)."""
    revoke: argparse.ArgumentParser = sub.add_parser(
        "revoke", help="revoke an MTLSCertificate's current certificate and have it re-issued with a new key"
    )
    revoke.add_argument("name")
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


def cmd_revoke(args: argparse.Namespace, out: Printer) -> int:
    api, namespace = connect(Target(kubeconfig=args.kubeconfig, namespace=args.namespace))

    async def run() -> dict[str, Any]:
        try:
            return await request_revocation(api, namespace, args.name, args.reason, datetime.now(UTC))
        finally:
            await api.close()

    out.emit(asyncio.run(run()), render_revocation)
    return 0
