"""A PodCertificateRequest (KEP-4317) as the signer sees it, parsed once at intake, and the answer it gets.

A kubelet creates a ``certificates.k8s.io/v1beta1`` PodCertificateRequest naming a signer, its pod, the
pod's ServiceAccount and node (names and UIDs), the longest lifetime it accepts and a stub PKCS#10 request
carrying the public key of a private key that never leaves the node. The signer answers with exactly one
terminal condition (:class:`Outcome`): ``Issued`` (with the chain and three times), ``Denied`` or
``Failed``; terminal status is immutable. :class:`Decision` is that answer, or when to look again;
:class:`Issuance` what an ``Issued`` answer signs. Which issuer signs is decided in
:mod:`mtls_operator.policy.podcert_routing`, whether and for how long in :mod:`mtls_operator.policy.podcert`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from mtls_operator.api.conditions import parse_rfc3339
from mtls_operator.api.constants import SIGNER_DOMAIN, Reason
from mtls_operator.api.models import CertificateSpec

SIGNER_PREFIX: Final = f"{SIGNER_DOMAIN}/"
DEFAULT_MAX_EXPIRATION: Final = timedelta(hours=24)  # what kube-apiserver defaults maxExpirationSeconds to


class Outcome(StrEnum):
    """The terminal condition types of a PodCertificateRequest (at most one, status True)."""

    ISSUED = "Issued"
    DENIED = "Denied"
    FAILED = "Failed"


# ---------------------------------------------------------------------------------------------------------
# The request, parsed once at intake


@dataclass(frozen=True, slots=True)
class PodCertRequest:
    """A PodCertificateRequest as the watch delivered it. ``answered`` is the terminal condition type it
    already carries (None while it waits for a signer)."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    signer_name: str
    pod_name: str
    pod_uid: str
    service_account: str
    service_account_uid: str
    node_name: str
    node_uid: str
    max_expiration: timedelta = DEFAULT_MAX_EXPIRATION
    stub_pkcs10: bytes = b""
    pkix_public_key: bytes = b""
    user_annotations: tuple[tuple[str, str], ...] = ()
    created: datetime | None = None
    answered: Outcome | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ours(self) -> bool:
        """Whether the signer name is in this project's domain (only those are ever looked at)."""
        return self.signer_name.startswith(SIGNER_PREFIX)


def parse_pod_certificate_request(body: Mapping[str, Any]) -> PodCertRequest:
    """A PodCertificateRequest watch event's object, parsed; never raises (unreadable fields read as
    empty, which the checks then refuse)."""
    meta = _section(body, "metadata")
    spec = _section(body, "spec")
    status = _section(body, "status")
    annotations = _section(spec, "unverifiedUserAnnotations")
    seconds = spec.get("maxExpirationSeconds")
    return PodCertRequest(
        namespace=_text(meta.get("namespace")),
        name=_text(meta.get("name")),
        uid=_text(meta.get("uid")),
        resource_version=_text(meta.get("resourceVersion")),
        signer_name=_text(spec.get("signerName")),
        pod_name=_text(spec.get("podName")),
        pod_uid=_text(spec.get("podUID")),
        service_account=_text(spec.get("serviceAccountName")),
        service_account_uid=_text(spec.get("serviceAccountUID")),
        node_name=_text(spec.get("nodeName")),
        node_uid=_text(spec.get("nodeUID")),
        max_expiration=(
            timedelta(seconds=seconds)
            if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0
            else DEFAULT_MAX_EXPIRATION
        ),
        stub_pkcs10=_bytes(spec.get("stubPKCS10Request")),
        pkix_public_key=_bytes(spec.get("pkixPublicKey")),
        user_annotations=tuple(sorted((str(k), str(v)) for k, v in annotations.items())),
        created=parse_rfc3339(meta.get("creationTimestamp")),
        answered=answered_outcome(status.get("conditions")),
    )


def answered_outcome(conditions: Any) -> Outcome | None:
    """The terminal condition a request carries (Issued, Denied or Failed with status True), if any."""
    for found in conditions if isinstance(conditions, list) else ():
        if isinstance(found, Mapping) and found.get("status") == "True":
            try:
                return Outcome(str(found.get("type")))
            except ValueError:
                continue
    return None


def _section(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _bytes(value: Any) -> bytes:
    """A Go []byte field: base64 in JSON."""
    if not isinstance(value, str) or not value:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""


# ---------------------------------------------------------------------------------------------------------
# The answer


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a request: answer it (``outcome`` set: Denied or Failed, or Issued with
    ``issuance``), or look again at ``retry_at`` (``outcome`` None)."""

    outcome: Outcome | None
    reason: Reason | str
    message: str
    retry_at: datetime | None = None
    issuance: Issuance | None = None

    @property
    def waits(self) -> bool:
        return self.outcome is None


@dataclass(frozen=True, slots=True)
class Issuance:
    """What to sign: the leaf's spec (the SPIFFE ID as its one URI, mTLS usages, the lifetime) and the
    times the status carries."""

    spec: CertificateSpec
    spiffe_id: str
    not_before: datetime
    not_after: datetime
    begin_refresh_at: datetime
