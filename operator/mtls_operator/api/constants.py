"""Names shared by every layer: API group, annotations, labels and the Reason vocabulary."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

GROUP: Final = "mtls.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CERTIFICATE_KIND: Final = "MTLSCertificate"
ISSUER_KIND: Final = "MTLSIssuer"
CLUSTER_ISSUER_KIND: Final = "MTLSClusterIssuer"
ISSUER_KINDS: Final = (ISSUER_KIND, CLUSTER_ISSUER_KIND)
CERTIFICATE_PLURAL: Final = "mtlscertificates"
ISSUER_PLURAL: Final = "mtlsissuers"
CLUSTER_ISSUER_PLURAL: Final = "mtlsclusterissuers"
# Signer names this project's pod-certificate signers and ClusterTrustBundles use: mtls.dev/<issuer>.
SIGNER_DOMAIN: Final = "mtls.dev"
FIELD_MANAGER: Final = "mtls-operator"
COMPONENT: Final = "mtls-operator"

# Labels and annotations the operator writes on Secrets it manages.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "mtls-operator"
ANN_CERTIFICATE_NAME: Final = "mtls.dev/certificate-name"
ANN_CERTIFICATE_UID: Final = "mtls.dev/certificate-uid"
ANN_ISSUER_NAME: Final = "mtls.dev/issuer-name"
ANN_ISSUER_KIND: Final = "mtls.dev/issuer-kind"
ANN_COMMON_NAME: Final = "mtls.dev/common-name"
ANN_DNS_NAMES: Final = "mtls.dev/alt-names"
ANN_IP_ADDRESSES: Final = "mtls.dev/ip-sans"
ANN_URIS: Final = "mtls.dev/uri-sans"
ANN_EMAILS: Final = "mtls.dev/email-sans"
ANN_SERIAL: Final = "mtls.dev/serial-number"
ANN_NOT_AFTER: Final = "mtls.dev/not-after"
ANN_FINGERPRINT: Final = "mtls.dev/fingerprint-sha256"
ANN_REVISION: Final = "mtls.dev/revision"
ANN_SPEC_HASH: Final = "mtls.dev/spec-hash"
ANN_CA_FOR_ISSUER: Final = "mtls.dev/ca-for-issuer"
ANN_ISSUER_UID: Final = "mtls.dev/issuer-uid"  # with ANN_CA_FOR_ISSUER: the issuer object that owns a CA
ANN_CA_ROLE: Final = "mtls.dev/ca-role"  # "next" on the staged CA of a rotation
CA_ROLE_NEXT: Final = "next"
# The request (renew, revoke) a Secret's current content fulfilled: requests are acted on exactly once.
ANN_FULFILLED_RENEW: Final = "mtls.dev/renew-request-fulfilled"
ANN_FULFILLED_REVOKE: Final = "mtls.dev/revoke-request-fulfilled"
# When the Secret's current content (certificate or ca.crt) was written: restarts compare it with the
# workload's creation time.
ANN_CONTENT_SINCE: Final = "mtls.dev/content-since"

# Every Secret the operator watches carries this label, so its watch can be filtered by the API server:
# "certificate" (leaf Secrets it issues), "ca" (CA Secrets it keeps, or a user's CA Secret opted in).
LABEL_SECRET_ROLE: Final = "mtls.dev/secret-role"
SECRET_ROLE_CERTIFICATE: Final = "certificate"
SECRET_ROLE_CA: Final = "ca"
# Set by whoever may write a CA Secret the operator did not create: the MTLSIssuers (names, in the
# Secret's namespace, comma-separated) allowed to sign with it. Without it the operator never uses it.
ANN_ALLOWED_ISSUERS: Final = "mtls.dev/allowed-issuers"
# Set by a namespace's admin: the issuers ("<namespace>/<name>", comma-separated, "*" for any) whose trust
# bundles may be published into it. A namespaced issuer's own namespace needs no opt-in.
ANN_ACCEPT_BUNDLES_FROM: Final = "mtls.dev/accept-trust-bundles-from"
# Set by a workload's owner: the MTLSCertificates (names, comma-separated, "*" for any) that may restart
# it through spec.rollout.targets without the workload mounting their Secret.
ANN_ROLLOUT_TARGET_OF: Final = "mtls.dev/rollout-target-of"

# On MTLSCertificates with revocationPolicy Revoke: deletion waits until the serial is on the CRL.
FINALIZER_REVOKE: Final = "mtls.dev/revoke-on-delete"

# Annotations users (or mtlsctl) set on an MTLSCertificate.
ANN_RENEW_REQUESTED: Final = "mtls.dev/renew-requested-at"
# Set by `mtlsctl revoke`: revoke the certificate current at that time (RFC 3339), with a reason.
ANN_REVOKE_REQUESTED: Final = "mtls.dev/revoke-requested-at"
ANN_REVOKE_REASON: Final = "mtls.dev/revoke-reason"
# Set by `mtlsctl rotate-ca` on an MTLSIssuer: start a CA rotation with overlap.
ANN_ROTATE_REQUESTED: Final = "mtls.dev/rotate-requested-at"
# The values of these three are opaque request tokens (mtlsctl writes "<RFC 3339 time>/<random>"): a
# request is acted on once, when its token differs from the one recorded as handled (status.requests).

# kopf keeps its own bookkeeping under its own prefix so that product annotations stay visible to it.
KOPF_PREFIX: Final = "kopf.mtls.dev"

SECRET_TYPE_TLS: Final = "kubernetes.io/tls"
TLS_CRT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"
CA_CRT: Final = "ca.crt"
KEYSTORE_P12: Final = "keystore.p12"
TRUSTSTORE_P12: Final = "truststore.p12"
# A certificate's (and a dual CA's) additional key pairs, next to tls.crt/tls.key in the same Secret: one pair
# per key algorithm, named tls-<algorithm>.crt and tls-<algorithm>.key (tls-ecdsa.*, tls-rsa.*,
# tls-ed25519.*, tls-mldsa.*). docs/post-quantum-migration.md.
ADDITIONAL_KEY_PREFIX: Final = "tls-"


def additional_secret_keys(algorithm: str) -> tuple[str, str]:
    """The Secret data keys (certificate, private key) of the additional key pair of ``algorithm`` (a
    KeyAlgorithm value such as ``ECDSA``): ``("tls-ecdsa.crt", "tls-ecdsa.key")``."""
    stem = f"{ADDITIONAL_KEY_PREFIX}{algorithm.lower()}"
    return f"{stem}.crt", f"{stem}.key"


class ConditionType(StrEnum):
    """The condition types the operator sets."""

    READY = "Ready"
    ISSUING = "Issuing"
    ROLLOUT_BLOCKED = "RolloutBlocked"
    POST_QUANTUM = "PostQuantum"
    TRUST_BUNDLE = "TrustBundle"
    CA_ROTATION = "CARotation"
    REVOCATION = "Revocation"


class Reason(StrEnum):
    """Why a condition, an event or a metric label says what it says. One vocabulary for all three."""

    # Certificate: ready states.
    ISSUED = "Issued"
    UP_TO_DATE = "UpToDate"
    # Certificate: why (re-)issuance is needed. Each is the name of the check that detected it.
    DOES_NOT_EXIST = "DoesNotExist"
    SECRET_MISSING = "SecretMissing"
    SECRET_CORRUPT = "SecretCorrupt"
    MISSING_DATA = "MissingData"
    KEY_MISMATCH = "KeyMismatch"
    KEY_SPEC_CHANGED = "KeySpecChanged"
    SPEC_CHANGED = "SpecChanged"
    NAMES_MISMATCH = "NamesMismatch"
    USAGES_MISMATCH = "UsagesMismatch"
    ISSUER_CHANGED = "IssuerChanged"
    CA_BUNDLE_MISMATCH = "CABundleMismatch"
    KEYSTORE_MISSING = "KeystoreMissing"
    # Certificate: its additional key pairs (spec.additionalPrivateKeys, tls-<algorithm>.crt/.key).
    ADDITIONAL_KEY_MISSING = "AdditionalKeyMissing"
    ADDITIONAL_KEY_MISMATCH = "AdditionalKeyMismatch"
    ADDITIONAL_CERT_MISMATCH = "AdditionalCertMismatch"
    RENEWAL_DUE = "RenewalDue"
    EXPIRED = "Expired"
    MANUAL_RENEWAL = "ManualRenewal"
    REVOKED = "Revoked"
    # Certificate: why nothing can be issued.
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_MANAGED = "SecretNotManaged"
    DUPLICATE_SECRET_NAME = "DuplicateSecretName"
    ISSUER_NOT_FOUND = "IssuerNotFound"
    ISSUER_NOT_READY = "IssuerNotReady"
    ISSUANCE_FAILED = "IssuanceFailed"
    POLICY_DENIED = "PolicyDenied"
    ADDITIONAL_KEY_UNSUPPORTED = "AdditionalKeyUnsupported"  # the issuer has no CA of that algorithm
    BACKING_OFF = "BackingOff"
    ISSUANCE_BUDGET_EXCEEDED = "IssuanceBudgetExceeded"
    REVOCATION_PENDING = "RevocationPending"
    TRUST_REFRESHED = "TrustRefreshed"
    # Certificate: the PostQuantum condition.
    POST_QUANTUM_CHAIN = "PostQuantumChain"
    MIXED_CHAIN = "MixedChain"
    # Certificate: restarts of the workloads that use it.
    ROLLOUT_LOOP_GUARD = "RolloutLoopGuard"
    ROLLOUT_ALLOWED = "RolloutAllowed"
    ROLLOUT_TARGET_NOT_OPTED_IN = "RolloutTargetNotOptedIn"
    # Issuer.
    KEY_PAIR_VERIFIED = "KeyPairVerified"
    CA_CREATED = "CACreated"
    CA_KEYS_ADDED = "CAKeysAdded"  # a dual CA: the additional CAs its spec asks for were added
    CA_SECRET_MISSING = "CASecretMissing"
    CA_INVALID = "CAInvalid"
    CA_NOT_CA = "CANotCA"
    CA_MISSING_KEY_CERT_SIGN = "CAMissingKeyCertSign"
    CA_KEY_MISMATCH = "CAKeyMismatch"
    CA_EXPIRED = "CAExpired"
    CA_NOT_YET_VALID = "CANotYetValid"
    CA_KEY_UNSUPPORTED = "CAKeyUnsupported"
    CA_SECRET_NOT_MANAGED = "CASecretNotManaged"
    CA_SECRET_NOT_ALLOWED = "CASecretNotAllowed"
    CAN_ROTATE = "CanRotate"
    # Issuer: trust bundles.
    BUNDLE_PUBLISHED = "BundlePublished"
    BUNDLE_CONFLICT = "BundleConflict"
    BUNDLE_NOT_ACCEPTED = "BundleNotAccepted"
    BUNDLE_PUBLISH_FAILED = "BundlePublishFailed"
    # Issuer: its revocation list (the <issuer>-revocations ConfigMap).
    REVOCATIONS_CONFLICT = "RevocationsConflict"
    REVOCATIONS_FULL = "RevocationsFull"
    REVOCATIONS_PUBLISHED = "RevocationsPublished"
    # PodCertificateRequest answers (besides Issued, PolicyDenied, IssuerNotReady, IssuanceFailed).
    # Denied: the request itself is refused; a new request for the same pod gets the same answer.
    UNSUPPORTED_KEY_TYPE = "UnsupportedKeyType"  # the API's own reason for a key type the signer refuses
    INVALID_USER_ANNOTATIONS = "InvalidUnverifiedUserAnnotations"  # the API's own reason, too
    POD_MISMATCH = "PodMismatch"  # pod, ServiceAccount or node are not what the request names
    # Failed: the signer cannot sign now (the kubelet reports it on the pod; a new pod asks again).
    SIGNER_CONFLICT = "SignerConflict"  # two issuers claim the signer name for the request's namespace
    CA_EXPIRES_TOO_SOON = "CAExpiresTooSoon"  # the CA cannot cover the 1-hour minimum lifetime


class RestartWait(StrEnum):
    """Why a workload restart waits (pacing), as the rollout decision says."""

    MIN_INTERVAL = "MinInterval"
    MAX_IN_FLIGHT = "MaxInFlight"
