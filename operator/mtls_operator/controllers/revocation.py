"""Revocation: the revoked serials of each issuer, its signed CRL (ConfigMap and HTTP) and OCSP answers.

Skeleton with the interface the runtime calls; the store, CRL publishing and HTTP responder fill it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtls_operator.k8s.api import ApiClient
from mtls_operator.observability.metrics import Metrics
from mtls_operator.pki.ca import CAKeyPair


class Revocations:
    def __init__(self, api: ApiClient, metrics: Metrics | None = None) -> None:
        self.api = api
        self.metrics = metrics or Metrics()

    async def start(self) -> None:
        """Start the HTTP responder (CRL and OCSP) and the CRL refresh task."""

    async def stop(self) -> None:
        """Stop what start() started."""

    def is_revoked(self, namespace: str, issuer: str, serial_hex: str) -> bool:
        """Whether ``serial_hex`` (lower-case hex, as CertFacts.serial_number) is on the issuer's list."""
        return False

    async def revoke(
        self, namespace: str, issuer: str, serial_hex: str, reason: str, certificate: str
    ) -> None:
        """Put a serial on the issuer's list and publish a new CRL. Idempotent."""

    async def sync_issuer(
        self, namespace: str, issuer: str, spec: Mapping[str, Any], ca: CAKeyPair | None
    ) -> None:
        """Called at every issuer reconcile: load the issuer's list and (re)publish its CRL when needed."""

    def forget_issuer(self, namespace: str, issuer: str) -> None:
        """The issuer is gone."""

    def leaf_urls(self, namespace: str, issuer: str) -> tuple[str | None, str | None]:
        """(CRL distribution point, OCSP URL) to embed in leaves the issuer signs, if configured."""
        return None, None
