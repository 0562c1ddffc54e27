"""Names shared by every layer: API group, annotations, labels and the Reason vocabulary."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

GROUP: Final = "mtls.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CERTIFICATE_KIND: Final = "MTLSCertificate"
ISSUER_KIND: Final = "MTLSIssuer"
CERTIFICATE_PLURAL: Final = "mtlscertificates"
ISSUER_PLURAL: Final = "mtlsissuers"
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

# Annotations users (or mtlsctl) set on an MTLSCertificate.
ANN_RENEW_REQUESTED: Final = "mtls.dev/renew-requested-at"
# Set by `mtlsctl revoke`: revoke the certificate current at that time (RFC 3339), with a reason.
ANN_REVOKE_REQUESTED: Final = "mtls.dev/revoke-requested-at"
ANN_REVOKE_REASON: Final = "mtls.dev/revoke-reason"
# Set by `mtlsctl rotate-ca` on an MTLSIssuer: start a CA rotation with overlap.
ANN_ROTATE_REQUESTED: Final = "mtls.dev/rotate-requested-at"

# kopf keeps its own bookkeeping under its own prefix so that product annotations stay visible to it.
KOPF_PREFIX: Final = "kopf.mtls.dev"

SECRET_TYPE_TLS: Final = "kubernetes.io/tls"
TLS_CRT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"
CA_CRT: Final = "ca.crt"
KEYSTORE_P12: Final = "keystore.p12"
TRUSTSTORE_P12: Final = "truststore.p12"


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
    BACKING_OFF = "BackingOff"
    # Issuer.
    KEY_PAIR_VERIFIED = "KeyPairVerified"
    CA_CREATED = "CACreated"
    CA_SECRET_MISSING = "CASecretMissing"
    CA_INVALID = "CAInvalid"
    CA_NOT_CA = "CANotCA"
    CA_MISSING_KEY_CERT_SIGN = "CAMissingKeyCertSign"
    CA_KEY_MISMATCH = "CAKeyMismatch"
    CA_EXPIRED = "CAExpired"
    CA_NOT_YET_VALID = "CANotYetValid"
    CA_KEY_UNSUPPORTED = "CAKeyUnsupported"
    CA_SECRET_NOT_MANAGED = "CASecretNotManaged"
    # Issuer: its revocation list (the <issuer>-revocations ConfigMap).
    REVOCATIONS_CONFLICT = "RevocationsConflict"
    REVOCATIONS_FULL = "RevocationsFull"
