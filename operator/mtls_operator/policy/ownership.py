"""Whose object is it? The one place that decides whether the operator may use or write an object.

The operator writes only objects it created for the object that asks, proven by what it wrote on them
(the managed-by label, an annotation naming the owner and the owner's UID), and uses a CA Secret it did not
create only when the Secret itself says so (``mtls.dev/allowed-issuers``, set by whoever may write the
Secret). Everything else is foreign: the caller reports a condition and an event, and writes nothing.
Names alone never prove ownership: an object deleted and re-created under the same name (perhaps by
someone else) is another owner.

Pure functions over labels and annotations; see docs/security.md for the threat model.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from mtls_operator.api.constants import (
    ANN_ACCEPT_BUNDLES_FROM,
    ANN_ALLOWED_ISSUERS,
    ANN_CA_FOR_ISSUER,
    ANN_CA_ROLE,
    ANN_CERTIFICATE_NAME,
    ANN_CERTIFICATE_UID,
    ANN_ISSUER_UID,
    ANN_ROLLOUT_TARGET_OF,
    CA_ROLE_NEXT,
    LABEL_MANAGED_BY,
    MANAGED_BY_VALUE,
)

ANN_BUNDLE_FOR = "mtls.dev/bundle-for"  # "<namespace>/<issuer>"
ANN_BUNDLE_FOR_UID = "mtls.dev/bundle-for-uid"


class CASecretAccess(StrEnum):
    OWNED = "Owned"  # created by the operator for this issuer: it may use and rewrite it
    ALLOWED = "Allowed"  # someone else's, opted in for this issuer: it may use it, never write it
    NOT_MANAGED = "NotManaged"  # someone else's, or another issuer's: neither use nor write
    NOT_ALLOWED = "NotAllowed"  # a bring-your-own CA without the opt-in for this issuer


def names_in(value: str | None) -> frozenset[str]:
    """The comma-separated names of an opt-in annotation."""
    return frozenset(part.strip() for part in (value or "").split(",") if part.strip())


def _managed(labels: Mapping[str, str]) -> bool:
    return labels.get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE


def owns_leaf_secret(
    labels: Mapping[str, str], annotations: Mapping[str, str], certificate: str, uid: str
) -> bool:
    """A certificate's Secret is its own when the operator wrote it for that very certificate object."""
    return (
        _managed(labels)
        and annotations.get(ANN_CERTIFICATE_NAME) == certificate
        and annotations.get(ANN_CERTIFICATE_UID) == uid
    )


def ca_secret_access(
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    issuer: str,
    uid: str,
    *,
    keeps_ca: bool,
    proven_fingerprint: bool = False,
) -> CASecretAccess:
    """What an issuer may do with the CA Secret it names.

    ``keeps_ca``: a selfSigned or intermediate issuer (the operator creates and rotates its CA); else a
    ``ca`` issuer, which only ever reads. ``proven_fingerprint``: the issuer's own status records the CA in
    this Secret (it used it before), which adopts a Secret written before owner UIDs were recorded.
    """
    ours = _managed(labels) and annotations.get(ANN_CA_FOR_ISSUER) == issuer
    if ours and annotations.get(ANN_CA_ROLE) is None:
        recorded = annotations.get(ANN_ISSUER_UID)
        if recorded == uid or (recorded is None and proven_fingerprint):
            return CASecretAccess.OWNED
    if issuer in names_in(annotations.get(ANN_ALLOWED_ISSUERS)):
        return CASecretAccess.ALLOWED
    return CASecretAccess.NOT_MANAGED if keeps_ca else CASecretAccess.NOT_ALLOWED


def owns_staged_ca(labels: Mapping[str, str], annotations: Mapping[str, str], issuer: str, uid: str) -> bool:
    """The staged next CA of a rotation (``<secretName>-next``) was created for this issuer object."""
    return (
        _managed(labels)
        and annotations.get(ANN_CA_FOR_ISSUER) == issuer
        and annotations.get(ANN_ISSUER_UID) == uid
        and annotations.get(ANN_CA_ROLE) == CA_ROLE_NEXT
    )


def owns_bundle(
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    issuer: tuple[str, str],
    uid: str,
    *,
    holds_current_anchors: bool = False,
) -> bool:
    """A trust-bundle ConfigMap is the issuer's when the operator wrote it for that issuer object.
    ``holds_current_anchors`` adopts a bundle written before owner UIDs were recorded, when it already
    holds exactly what the issuer publishes (so taking it over changes nobody's trust)."""
    if not _managed(labels) or annotations.get(ANN_BUNDLE_FOR) != f"{issuer[0]}/{issuer[1]}":
        return False
    recorded = annotations.get(ANN_BUNDLE_FOR_UID)
    return recorded == uid or (recorded is None and holds_current_anchors)


def namespace_accepts_bundle(
    target: str, annotations: Mapping[str, str] | None, issuer: tuple[str, str]
) -> bool:
    """Whether an issuer's trust bundle may be published into namespace ``target``: its own namespace
    always; any other only when that namespace's admin listed the issuer (``<namespace>/<name>``) or
    ``*`` in ``mtls.dev/accept-trust-bundles-from``."""
    if target == issuer[0]:
        return True
    accepted = names_in((annotations or {}).get(ANN_ACCEPT_BUNDLES_FROM))
    return "*" in accepted or f"{issuer[0]}/{issuer[1]}" in accepted


def workload_accepts_target(annotations: Mapping[str, str], certificate: str) -> bool:
    """Whether a workload that does not use a certificate's Secret agreed to be restarted for it
    (``spec.rollout.targets``): its owner listed the certificate, or ``*``, in
    ``mtls.dev/rollout-target-of``. A workload that mounts the Secret needs no opt-in."""
    accepted = names_in(annotations.get(ANN_ROLLOUT_TARGET_OF))
    return "*" in accepted or certificate in accepted
