"""Pod certificates (KEP-4317): whether the chosen issuer may sign a PodCertificateRequest, and for how long.

A kubelet creates a ``certificates.k8s.io/v1beta1`` PodCertificateRequest naming a signer, its pod, the
pod's ServiceAccount and node (names and UIDs), the longest lifetime it accepts and a stub PKCS#10 request
carrying the public key of a private key that never leaves the node. kube-apiserver has already checked,
at creation (NodeRestriction), that the requesting node is the one named and that pod, ServiceAccount and
node agree; the signer checks again against what the API records when it signs, applies the issuer's
policy and answers with exactly one terminal condition: ``Issued`` (with the chain and three times),
``Denied`` or ``Failed``. Terminal status is immutable.

Decisions happen in two steps, both pure (``now`` is a parameter, nothing here reads the clock or the
API server):

1. :func:`~mtls_operator.policy.podcert_routing.choose_signer`, before anything is read: which issuer
   signs (see :mod:`mtls_operator.policy.podcert_routing`; the request itself is parsed in
   :mod:`mtls_operator.policy.podcert_request`).
2. :func:`decide` (here), on what was read: a chain of checks, each named after what it refuses, the first
   answer wins; then :func:`plan_issuance` sets the times.

The API server's limits (``pkg/apis/certificates/validation``, Kubernetes 1.36) that the times obey:
the leaf's lifetime is at least :data:`MIN_LIFETIME` (1 h) and at most ``spec.maxExpirationSeconds``
(which it bounds to [1 h, 91 days], default 24 h); ``notBefore`` and ``notAfter`` equal the leaf's;
``notBefore`` lies within 5 minutes of the API server's clock; ``beginRefreshAt`` lies in
[notBefore + 10 min, notAfter - 10 min].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from mtls_operator.api.conditions import rfc3339
from mtls_operator.api.constants import Reason
from mtls_operator.api.durations import DurationError, format_duration, parse_duration
from mtls_operator.api.issuer_policy import DEFAULT_TRUST_DOMAIN, IssuerPolicy, spiffe_uri
from mtls_operator.api.models import CertificateSpec, IssuerRef, KeyAlgorithm, KeySpec, Usage
from mtls_operator.policy.issuance_policy import (
    PolicyRequest,
    evaluate,
    key_algorithm_not_allowed,
    namespace_not_allowed,
)
from mtls_operator.policy.podcert_request import Decision, Issuance, Outcome, PodCertRequest
from mtls_operator.policy.podcert_routing import SignerIssuer

MIN_LIFETIME: Final = timedelta(hours=1)  # kube-apiserver refuses a shorter leaf
MAX_LIFETIME: Final = timedelta(seconds=7862400)  # 91 days: the largest maxExpirationSeconds it accepts
REFRESH_MARGIN: Final = timedelta(minutes=10)  # beginRefreshAt within [notBefore+10m, notAfter-10m]
# notBefore is set this far in the past, for clocks of relying parties a little behind the operator's (the
# Kubernetes CSR signer backdates 5 minutes). kube-apiserver wants notBefore within 5 minutes of its own
# clock: 3 minutes leaves 2 for the operator's clock and the time between signing and the status write.
BACKDATE: Final = timedelta(minutes=3)
DEFAULT_REFRESH_FRACTION: Final = 2 / 3  # refresh at 2/3 of the lifetime, as MTLSCertificates renew
# The unverifiedUserAnnotations the signer understands (pods set them in the podCertificate projection's
# userAnnotations); a request with any other key is denied, as the API asks of signers.
ANN_REFRESH_BEFORE: Final = "mtls.dev/refresh-before"
KNOWN_USER_ANNOTATIONS: Final = frozenset({ANN_REFRESH_BEFORE})
# Pod certificates are mTLS identities: both ends.
POD_USAGES: Final = (Usage.SERVER_AUTH, Usage.CLIENT_AUTH)
# The kubelet's names of the key types it generates (the projection's keyType), by algorithm and size.
KUBELET_KEY_TYPES: Final[Mapping[tuple[KeyAlgorithm, int], str]] = {
    (KeyAlgorithm.RSA, 3072): "RSA3072",
    (KeyAlgorithm.RSA, 4096): "RSA4096",
    (KeyAlgorithm.ECDSA, 256): "ECDSAP256",
    (KeyAlgorithm.ECDSA, 384): "ECDSAP384",
    (KeyAlgorithm.ECDSA, 521): "ECDSAP521",
    (KeyAlgorithm.ED25519, 0): "ED25519",
}


# ---------------------------------------------------------------------------------------------------------
# May it sign, and what


@dataclass(frozen=True, slots=True)
class Recorded:
    """The pod, its ServiceAccount and its node as the API server records them now (None: not found)."""

    pod_uid: str | None = None
    pod_node: str | None = None
    pod_service_account: str | None = None
    service_account_uid: str | None = None
    node_uid: str | None = None


@dataclass(frozen=True, slots=True)
class PodCertInput:
    request: PodCertRequest
    signer: SignerIssuer
    recorded: Recorded
    key: tuple[KeyAlgorithm, int] | None  # the requested key's algorithm and size; None: unusable
    key_problem: str | None  # why the key is unusable (a sentence)
    namespace_labels: Mapping[str, str] | None  # None: they could not be read
    now: datetime


def _denied(reason: Reason, message: str) -> Decision:
    return Decision(Outcome.DENIED, reason, message)


def spiffe_id_of(request: PodCertRequest, policy: IssuerPolicy | None) -> str:
    """``spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`` (the policy's trust domain, else
    cluster.local)."""
    domain = policy.trust_domain if policy is not None else DEFAULT_TRUST_DOMAIN
    return spiffe_uri(request.namespace, request.service_account, domain)


def leaf_spec(inp: PodCertInput, lifetime: timedelta) -> CertificateSpec:
    """The certificate the request amounts to, as the issuance policy judges certificates: no subject,
    the SPIFFE ID as its only name, server and client auth, the request's key type."""
    algorithm, size = inp.key or (KeyAlgorithm.ECDSA, 256)
    return CertificateSpec(
        secret_name="",
        issuer_ref=IssuerRef(inp.signer.name, inp.signer.kind),
        uris=(spiffe_id_of(inp.request, inp.signer.policy),),
        usages=POD_USAGES,
        duration=lifetime,
        private_key=KeySpec(algorithm=algorithm, size=size),
    )


def namespace_not_admitted(inp: PodCertInput) -> Decision | None:
    policy = inp.signer.policy
    if policy is None or policy.allowed_namespaces is None:
        return None
    if inp.namespace_labels is None:
        return _denied(
            Reason.POLICY_DENIED,
            f"The policy of {inp.signer.label} limits namespaces, but the labels of namespace "
            f"{inp.request.namespace} cannot be read; nothing is signed.",
        )
    found = namespace_not_allowed(_policy_request(inp, policy, MIN_LIFETIME))
    return _denied(Reason.POLICY_DENIED, found.message) if found is not None else None


def pod_mismatch(inp: PodCertInput) -> Decision | None:
    """The request must name the pod, ServiceAccount and node the API records now, the pod bound to that
    node and running as that ServiceAccount (NodeRestriction checked this at creation; a pod deleted and
    re-created under the same name since, or a ServiceAccount re-created, no longer matches)."""
    r, seen = inp.request, inp.recorded
    pod = f"Pod {r.namespace}/{r.pod_name}"
    problem = None
    if seen.pod_uid is None:
        problem = f"{pod} does not exist any more."
    elif seen.pod_uid != r.pod_uid:
        problem = f"{pod} has UID {seen.pod_uid}, not {r.pod_uid} as the request says (it was re-created)."
    elif seen.pod_node != r.node_name:
        problem = f"{pod} is bound to node {seen.pod_node or '(none)'}, not {r.node_name}."
    elif (seen.pod_service_account or "default") != r.service_account:
        problem = f"{pod} runs as ServiceAccount {seen.pod_service_account}, not {r.service_account}."
    elif seen.service_account_uid is None:
        problem = f"ServiceAccount {r.namespace}/{r.service_account} does not exist."
    elif seen.service_account_uid != r.service_account_uid:
        problem = (
            f"ServiceAccount {r.namespace}/{r.service_account} has UID {seen.service_account_uid}, not "
            f"{r.service_account_uid} (it was re-created)."
        )
    elif seen.node_uid is None:
        problem = f"Node {r.node_name} does not exist."
    elif seen.node_uid != r.node_uid:
        problem = f"Node {r.node_name} has UID {seen.node_uid}, not {r.node_uid} (it was re-created)."
    if problem is None:
        return None
    return _denied(Reason.POD_MISMATCH, f"{problem} Nothing is signed for a request that does not match.")


def user_annotations_invalid(inp: PodCertInput) -> Decision | None:
    for key, value in inp.request.user_annotations:
        if key not in KNOWN_USER_ANNOTATIONS:
            return _denied(
                Reason.INVALID_USER_ANNOTATIONS,
                f"unverifiedUserAnnotations key {key} is not one the mtls.dev signers understand (they "
                f"understand {', '.join(sorted(KNOWN_USER_ANNOTATIONS))}).",
            )
        if key == ANN_REFRESH_BEFORE and _refresh_before(value) is None:
            return _denied(
                Reason.INVALID_USER_ANNOTATIONS,
                f"unverifiedUserAnnotations {key}={value!r} is not a duration such as 30m or 8h.",
            )
    return None


def key_type_unsupported(inp: PodCertInput) -> Decision | None:
    """A key the operator cannot certify, or one the issuer's allowedAlgorithms refuses: the API's
    ``UnsupportedKeyType``, naming the key types that would do."""
    policy = inp.signer.policy
    allowed = [
        name
        for (algorithm, size), name in KUBELET_KEY_TYPES.items()
        if policy is None
        or key_algorithm_not_allowed(_policy_request(inp, policy, MIN_LIFETIME, key=(algorithm, size)))
        is None
    ]
    suggestion = (
        f"Use keyType {' or '.join(allowed)} in the podCertificate projection."
        if allowed
        else "No key type a kubelet generates is allowed."
    )
    if inp.key is None:
        return _denied(
            Reason.UNSUPPORTED_KEY_TYPE, f"{inp.key_problem or 'The key is unusable.'} {suggestion}"
        )
    if policy is None:
        return None
    found = key_algorithm_not_allowed(_policy_request(inp, policy, MIN_LIFETIME))
    return _denied(Reason.UNSUPPORTED_KEY_TYPE, f"{found.message} {suggestion}") if found else None


def lifetime_of(inp: PodCertInput) -> timedelta:
    """The leaf's lifetime: ``maxExpirationSeconds``, shortened to the policy's ``maxDuration``."""
    lifetime = min(inp.request.max_expiration, MAX_LIFETIME)
    policy = inp.signer.policy
    if policy is not None and policy.max_duration is not None:
        lifetime = min(lifetime, policy.max_duration)
    return timedelta(seconds=int(lifetime.total_seconds()))


def lifetime_too_short(inp: PodCertInput) -> Decision | None:
    policy = inp.signer.policy
    if policy is None or policy.max_duration is None or policy.max_duration >= MIN_LIFETIME:
        return None
    return _denied(
        Reason.POLICY_DENIED,
        f"The policy of {inp.signer.label} has maxDuration {format_duration(policy.max_duration)}, shorter "
        f"than the {format_duration(MIN_LIFETIME)} Kubernetes requires of a pod certificate.",
    )


def ca_expires_too_soon(inp: PodCertInput) -> Decision | None:
    ca_not_after = inp.signer.ca_not_after
    not_before = whole_seconds(inp.now - BACKDATE)
    if ca_not_after is None or ca_not_after - not_before >= MIN_LIFETIME:
        return None
    return Decision(
        Outcome.FAILED,
        Reason.CA_EXPIRES_TOO_SOON,
        f"The CA of {inp.signer.label} expires at {rfc3339(ca_not_after)}, less than "
        f"{format_duration(MIN_LIFETIME)} from now: it cannot sign a pod certificate (renew or rotate it).",
    )


def policy_denies(inp: PodCertInput) -> Decision | None:
    policy = inp.signer.policy
    if policy is None:
        return None
    found = evaluate(
        policy, leaf_spec(inp, lifetime_of(inp)), inp.request.namespace, inp.namespace_labels or {}
    )
    return _denied(Reason.POLICY_DENIED, found.message) if found is not None else None


CHECKS = (
    namespace_not_admitted,
    pod_mismatch,
    user_annotations_invalid,
    key_type_unsupported,
    lifetime_too_short,
    ca_expires_too_soon,
    policy_denies,
)


def decide(inp: PodCertInput) -> Decision:
    """Deny, fail, or issue: the first check that answers wins, else :func:`plan_issuance`."""
    for check in CHECKS:
        found = check(inp)
        if found is not None:
            return found
    issuance = plan_issuance(inp)
    return Decision(
        Outcome.ISSUED,
        Reason.ISSUED,
        f"Issued to Pod {inp.request.namespace}/{inp.request.pod_name} as {issuance.spiffe_id} by "
        f"{inp.signer.label}.",
        issuance=issuance,
    )


def plan_issuance(inp: PodCertInput) -> Issuance:
    """The times: notBefore :data:`BACKDATE` ago, notAfter after the lifetime (cut at the CA's
    notAfter, which :func:`ca_expires_too_soon` keeps at least an hour away), beginRefreshAt."""
    not_before = whole_seconds(inp.now - BACKDATE)
    not_after = not_before + lifetime_of(inp)
    if inp.signer.ca_not_after is not None:
        not_after = min(not_after, whole_seconds(inp.signer.ca_not_after))
    refresh = dict(inp.request.user_annotations).get(ANN_REFRESH_BEFORE)
    spec = leaf_spec(inp, not_after - not_before)
    return Issuance(
        spec=spec,
        spiffe_id=spec.uris[0],
        not_before=not_before,
        not_after=not_after,
        begin_refresh_at=begin_refresh_at(
            not_before, not_after, _refresh_before(refresh) if refresh is not None else None
        ),
    )


def begin_refresh_at(not_before: datetime, not_after: datetime, refresh_before: timedelta | None) -> datetime:
    """When the kubelet should ask again: ``refresh_before`` before notAfter (the pod's
    ``mtls.dev/refresh-before``), else at 2/3 of the lifetime; always within [notBefore + 10 min,
    notAfter - 10 min] as the API server requires (a value outside is moved to the nearest bound).
    Whole seconds. The kubelet adds up to 5 minutes of its own jitter."""
    lifetime = not_after - not_before
    target = (
        not_after - refresh_before
        if refresh_before is not None
        else not_before + lifetime * DEFAULT_REFRESH_FRACTION
    )
    earliest, latest = not_before + REFRESH_MARGIN, not_after - REFRESH_MARGIN
    return whole_seconds(min(max(target, earliest), latest))


def _refresh_before(value: str) -> timedelta | None:
    try:
        parsed = parse_duration(value)
    except DurationError:
        return None
    return parsed if parsed > timedelta(0) else None


def whole_seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _policy_request(
    inp: PodCertInput,
    policy: IssuerPolicy,
    lifetime: timedelta,
    *,
    key: tuple[KeyAlgorithm, int] | None = None,
) -> PolicyRequest:
    """The request one of issuance_policy's checks judges (``key``: another key type than the request's)."""
    spec = leaf_spec(inp, lifetime)
    if key is not None:
        spec = replace(spec, private_key=KeySpec(algorithm=key[0], size=key[1]))
    return PolicyRequest(policy, spec, inp.request.namespace, inp.namespace_labels or {})
