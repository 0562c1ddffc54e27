"""Typed, frozen views of MTLSIssuer and MTLSCertificate specs, parsed once at the edge.

The CRD schema (with CEL) rejects most bad input at the API server; these parsers repeat the checks that
matter for safety and add the ones CEL cannot express (DNS name syntax, IP parsing), raising
:class:`SpecError` with a reason and a sentence. Nothing past the parser sees a raw dict.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any

from mtls_operator.api.constants import ISSUER_KIND, ISSUER_KINDS, LABEL_MANAGED_BY
from mtls_operator.api.durations import DurationError, parse_duration
from mtls_operator.api.errors import SpecError as SpecError


class KeyAlgorithm(StrEnum):
    RSA = "RSA"
    ECDSA = "ECDSA"
    ED25519 = "Ed25519"
    MLDSA = "MLDSA"


class RotationPolicy(StrEnum):
    ALWAYS = "Always"
    NEVER = "Never"


class KeyEncoding(StrEnum):
    PKCS1 = "PKCS1"  # "traditional" PEM: PKCS#1 for RSA, SEC1 for ECDSA; PKCS#8 for the others
    PKCS8 = "PKCS8"


class CleanupPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class RolloutPolicy(StrEnum):
    AUTO = "Auto"  # discovered consumers plus explicit targets
    EXPLICIT = "Explicit"  # explicit targets only
    NONE = "None"


class Usage(StrEnum):
    """cert-manager's usage names."""

    SERVER_AUTH = "server auth"
    CLIENT_AUTH = "client auth"
    DIGITAL_SIGNATURE = "digital signature"
    KEY_ENCIPHERMENT = "key encipherment"
    CODE_SIGNING = "code signing"
    EMAIL_PROTECTION = "email protection"
    OCSP_SIGNING = "ocsp signing"


EXTENDED_USAGES = frozenset(
    {Usage.SERVER_AUTH, Usage.CLIENT_AUTH, Usage.CODE_SIGNING, Usage.EMAIL_PROTECTION, Usage.OCSP_SIGNING}
)
DEFAULT_USAGES: tuple[Usage, ...] = (Usage.SERVER_AUTH, Usage.CLIENT_AUTH)

ALLOWED_SIZES: Mapping[KeyAlgorithm, tuple[int, ...]] = {
    KeyAlgorithm.RSA: (2048, 3072, 4096),
    KeyAlgorithm.ECDSA: (256, 384, 521),
    KeyAlgorithm.ED25519: (),
    KeyAlgorithm.MLDSA: (44, 65, 87),
}
DEFAULT_SIZES: Mapping[KeyAlgorithm, int] = {
    KeyAlgorithm.RSA: 2048,
    KeyAlgorithm.ECDSA: 256,
    KeyAlgorithm.ED25519: 0,
    KeyAlgorithm.MLDSA: 44,
}

DEFAULT_CERT_DURATION = timedelta(days=90)
DEFAULT_CA_DURATION = timedelta(days=3650)
MIN_DURATION = timedelta(minutes=1)
MIN_RENEW_BEFORE = timedelta(seconds=5)
RESERVED_KEY_PREFIX = "mtls.dev/"  # labels and annotations the operator writes and reads for ownership
MAX_RENEW_PERCENTAGE = 90  # renewBefore at most 90 % of the duration: see policy.renewal's floor too
MAX_RENEW_FRACTION = MAX_RENEW_PERCENTAGE / 100

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]+$")
# C0 controls (NUL included), DEL and C1 controls: refused in every name and subject attribute.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class KeySpec:
    algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA
    size: int = 256
    rotation_policy: RotationPolicy = RotationPolicy.ALWAYS
    encoding: KeyEncoding = KeyEncoding.PKCS8

    @property
    def label(self) -> str:
        """A short human name, e.g. ``ECDSA-P256``, ``ML-DSA-65``, ``RSA-2048``, ``Ed25519``."""
        if self.algorithm is KeyAlgorithm.ECDSA:
            return f"ECDSA-P{self.size}"
        if self.algorithm is KeyAlgorithm.MLDSA:
            return f"ML-DSA-{self.size}"
        if self.algorithm is KeyAlgorithm.RSA:
            return f"RSA-{self.size}"
        return "Ed25519"

    @property
    def effective_encoding(self) -> KeyEncoding:
        """The encoding the key is written in: PKCS1 only for RSA and ECDSA (the others have no
        traditional form and are always PKCS#8)."""
        if self.algorithm in (KeyAlgorithm.RSA, KeyAlgorithm.ECDSA):
            return self.encoding
        return KeyEncoding.PKCS8


# spec.additionalPrivateKeys: at most one extra key pair per algorithm (three next to the main key).
MAX_ADDITIONAL_KEYS = 3


@dataclass(frozen=True, slots=True)
class Subject:
    organizations: tuple[str, ...] = ()
    organizational_units: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    provinces: tuple[str, ...] = ()
    localities: tuple[str, ...] = ()
    street_addresses: tuple[str, ...] = ()
    postal_codes: tuple[str, ...] = ()
    serial_number: str | None = None


@dataclass(frozen=True, slots=True)
class IssuerRef:
    name: str
    kind: str = ISSUER_KIND


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    name: str
    key: str = "password"


@dataclass(frozen=True, slots=True)
class PKCS12Spec:
    create: bool = False
    password_secret_ref: SecretKeyRef | None = None


@dataclass(frozen=True, slots=True)
class SecretTemplate:
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class WorkloadRef:
    kind: str  # Deployment | StatefulSet | DaemonSet
    name: str


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    policy: RolloutPolicy = RolloutPolicy.AUTO
    targets: tuple[WorkloadRef, ...] = ()


@dataclass(frozen=True, slots=True)
class CertificateSpec:
    secret_name: str
    issuer_ref: IssuerRef
    common_name: str | None = None
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    email_addresses: tuple[str, ...] = ()
    subject: Subject = field(default_factory=Subject)
    usages: tuple[Usage, ...] = DEFAULT_USAGES
    duration: timedelta = DEFAULT_CERT_DURATION
    renew_before: timedelta | None = None
    renew_before_percentage: int | None = None
    private_key: KeySpec = field(default_factory=KeySpec)
    secret_template: SecretTemplate = field(default_factory=SecretTemplate)
    pkcs12: PKCS12Spec = field(default_factory=PKCS12Spec)
    cleanup_policy: CleanupPolicy = CleanupPolicy.RETAIN
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    # More key pairs of the same identity (names, usages, lifetime), each of another algorithm, issued and
    # rotated together with the main one into tls-<algorithm>.crt/.key of the same Secret.
    additional_private_keys: tuple[KeySpec, ...] = ()

    @property
    def key_specs(self) -> tuple[KeySpec, ...]:
        """The main key, then the additional ones."""
        return (self.private_key, *self.additional_private_keys)

    def identity_hash(self) -> str:
        """A digest of everything that the issued certificate must reflect (names, usages, duration,
        key algorithm and size, issuer). Stored on the Secret so a spec change is seen at once."""
        doc = {
            "cn": self.common_name,
            "dns": sorted(self.dns_names),
            "ip": sorted(self.ip_addresses),
            "uri": sorted(self.uris),
            "email": sorted(self.email_addresses),
            "subject": [
                list(getattr(self.subject, f))
                if isinstance(getattr(self.subject, f), tuple)
                else getattr(self.subject, f)
                for f in Subject.__slots__
            ],
            "usages": sorted(str(u) for u in self.usages),
            "duration": int(self.duration.total_seconds()),
            "key": [str(self.private_key.algorithm), self.private_key.size, str(self.private_key.encoding)],
            "issuer": [self.issuer_ref.kind, self.issuer_ref.name],
            "p12": self.pkcs12.create,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SelfSignedCASpec:
    """A CA the operator creates and keeps (a self-signed root, or an intermediate's own CA)."""

    secret_name: str
    common_name: str
    subject: Subject = field(default_factory=Subject)
    duration: timedelta = DEFAULT_CA_DURATION
    private_key: KeySpec = field(default_factory=KeySpec)
    renew_before: timedelta | None = None  # start a CA rotation this long before the CA expires
    # A dual CA: one more self-signed CA per key (same subject, the algorithm in the common name), kept in
    # the same Secret as tls-<algorithm>.crt/.key; it signs certificates' additional keys of its algorithm.
    additional_private_keys: tuple[KeySpec, ...] = ()


@dataclass(frozen=True, slots=True)
class CASecretSpec:
    secret_name: str


@dataclass(frozen=True, slots=True)
class IntermediateSpec:
    """``spec.intermediate``: an intermediate CA the operator creates and keeps, signed by another
    MTLSIssuer of the same namespace (the parent)."""

    parent: str
    ca: SelfSignedCASpec  # secret name, common name, subject, duration, key of the intermediate
    parent_kind: str = ISSUER_KIND
    path_length: int | None = None
    permitted_dns: tuple[str, ...] = ()
    excluded_dns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IssuerSpec:
    self_signed: SelfSignedCASpec | None = None
    ca: CASecretSpec | None = None
    intermediate: IntermediateSpec | None = None

    @property
    def ca_secret_name(self) -> str:
        if self.self_signed is not None:
            return self.self_signed.secret_name
        if self.intermediate is not None:
            return self.intermediate.ca.secret_name
        assert self.ca is not None
        return self.ca.secret_name

    @property
    def managed_ca(self) -> SelfSignedCASpec | None:
        """The CA the operator creates and keeps for this issuer (None for a ``ca`` issuer)."""
        if self.self_signed is not None:
            return self.self_signed
        return self.intermediate.ca if self.intermediate is not None else None

    @property
    def kind(self) -> str:
        if self.self_signed is not None:
            return "SelfSigned"
        return "Intermediate" if self.intermediate is not None else "CA"


# ---------------------------------------------------------------------------------------------------------
# Parsing at the edge


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise SpecError(f"{what} must be a list of strings.")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise SpecError(f"{what} must be a list of strings, but holds {item!r}.")
        out.append(item)
    return tuple(out)


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{what} must be an object.")
    return value


def _duration(value: Any, what: str, default: timedelta | None) -> timedelta | None:
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise SpecError(f"{what} must be a duration string such as 2160h, but is {value!r}.")
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise SpecError(f"{what} is invalid: {exc}.") from None


def validate_dns_name(name: str) -> str | None:
    """Return why ``name`` is not a valid DNS SAN (a leading ``*.`` wildcard is allowed), or None."""
    if not name or len(name) > 253:
        return f"DNS name {name!r} must be 1 to 253 characters long"
    labels = name.split(".")
    for i, label in enumerate(labels):
        if i == 0 and label == "*" and len(labels) > 1:
            continue
        if not _DNS_LABEL.match(label):
            return f"DNS name {name!r} is not a valid lower-case hostname (label {label!r})"
    return None


def control_character_problem(value: str) -> str | None:
    """Why ``value`` cannot go into a certificate name or subject (it holds NUL, another C0 control, DEL
    or a C1 control, which readers truncate or display misleadingly), or None."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    return f"must not contain control characters (found U+{ord(found.group()):04X})"


def _text(value: str, what: str) -> str:
    problem = control_character_problem(value)
    if problem:
        raise SpecError(f"{what} {value!r} {problem}.")
    return value


def _texts(value: Any, what: str) -> tuple[str, ...]:
    return tuple(_text(item, what) for item in _strs(value, what))


def parse_subject(raw: Any, where: str = "spec.subject") -> Subject:
    doc = _mapping(raw, where)
    serial = doc.get("serialNumber")
    if serial is not None and not isinstance(serial, str):
        raise SpecError(f"{where}.serialNumber must be a string.")
    return Subject(
        organizations=_texts(doc.get("organizations"), f"{where}.organizations"),
        organizational_units=_texts(doc.get("organizationalUnits"), f"{where}.organizationalUnits"),
        countries=_texts(doc.get("countries"), f"{where}.countries"),
        provinces=_texts(doc.get("provinces"), f"{where}.provinces"),
        localities=_texts(doc.get("localities"), f"{where}.localities"),
        street_addresses=_texts(doc.get("streetAddresses"), f"{where}.streetAddresses"),
        postal_codes=_texts(doc.get("postalCodes"), f"{where}.postalCodes"),
        serial_number=None if serial is None else _text(serial, f"{where}.serialNumber"),
    )


def parse_key_spec(raw: Any, where: str = "spec.privateKey") -> KeySpec:
    doc = _mapping(raw, where)
    try:
        algorithm = KeyAlgorithm(doc.get("algorithm") or KeyAlgorithm.ECDSA)
    except ValueError:
        raise SpecError(
            f"{where}.algorithm {doc.get('algorithm')!r} is not one of RSA, ECDSA, Ed25519, MLDSA."
        ) from None
    size = doc.get("size")
    if size is None or (size == 0 and algorithm is not KeyAlgorithm.ED25519):
        size = DEFAULT_SIZES[algorithm]
    if not isinstance(size, int) or isinstance(size, bool):
        raise SpecError(f"{where}.size must be a number.")
    allowed = ALLOWED_SIZES[algorithm]
    if not allowed and size != 0:
        raise SpecError(f"{where}.size must be left out for {algorithm}: the algorithm has one size.")
    if allowed and size not in allowed:
        sizes = ", ".join(str(s) for s in allowed)
        raise SpecError(f"{where}.size {size} is not valid for {algorithm}: use one of {sizes}.")
    if not allowed:
        size = 0
    try:
        rotation = RotationPolicy(doc.get("rotationPolicy") or RotationPolicy.ALWAYS)
        encoding = KeyEncoding(doc.get("encoding") or KeyEncoding.PKCS8)
    except ValueError as exc:
        raise SpecError(f"{where} is invalid: {exc}.") from None
    return KeySpec(algorithm=algorithm, size=size, rotation_policy=rotation, encoding=encoding)


def parse_additional_keys(raw: Any, where: str, main: KeySpec) -> tuple[KeySpec, ...]:
    """``additionalPrivateKeys``: a list of key specs (the shape of ``privateKey``), at most
    :data:`MAX_ADDITIONAL_KEYS`, each of an algorithm of its own that differs from the main key's (a Secret
    holds one tls-<algorithm>.* pair per algorithm; so next to an ML-DSA key they are classical)."""
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise SpecError(f"{where} must be a list of keys such as [{{algorithm: ECDSA, size: 256}}].")
    if len(raw) > MAX_ADDITIONAL_KEYS:
        raise SpecError(f"{where} holds {len(raw)} keys; at most {MAX_ADDITIONAL_KEYS} (one per algorithm).")
    keys: list[KeySpec] = []
    seen = {main.algorithm}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not item.get("algorithm"):
            raise SpecError(f"{where}[{i}].algorithm is required: name the additional key's algorithm.")
        key = parse_key_spec(item, f"{where}[{i}]")
        if key.algorithm in seen:
            same = "the main key's" if key.algorithm is main.algorithm else "another additional key's"
            raise SpecError(
                f"{where}[{i}].algorithm {key.algorithm} is {same}: each additional key needs an "
                f"algorithm of its own (next to a {main.algorithm} key use "
                f"{', '.join(a.value for a in KeyAlgorithm if a is not main.algorithm)})."
            )
        seen.add(key.algorithm)
        keys.append(key)
    return tuple(keys)


def parse_certificate_spec(spec: Mapping[str, Any]) -> CertificateSpec:
    """Parse and validate an MTLSCertificate ``spec``; raise :class:`SpecError` on anything unusable."""
    secret_name = spec.get("secretName")
    if not isinstance(secret_name, str) or not secret_name:
        raise SpecError("spec.secretName is required.")
    ref = _mapping(spec.get("issuerRef"), "spec.issuerRef")
    issuer_name = ref.get("name")
    if not isinstance(issuer_name, str) or not issuer_name:
        raise SpecError("spec.issuerRef.name is required.")
    kind = ref.get("kind") or ISSUER_KIND
    if kind not in ISSUER_KINDS:
        raise SpecError(f"spec.issuerRef.kind {kind!r} is not supported: use {' or '.join(ISSUER_KINDS)}.")

    common_name = spec.get("commonName") or None
    if common_name is not None and (not isinstance(common_name, str) or len(common_name) > 64):
        raise SpecError("spec.commonName must be a string of at most 64 characters.")
    if common_name is not None:
        _text(common_name, "spec.commonName")
    dns_names = _texts(spec.get("dnsNames"), "spec.dnsNames")
    for name in dns_names:
        problem = validate_dns_name(name)
        if problem:
            raise SpecError(f"spec.dnsNames: {problem}.")
    ips: list[str] = []
    for ip in _strs(spec.get("ipAddresses"), "spec.ipAddresses"):
        try:
            ips.append(str(ipaddress.ip_address(ip)))
        except ValueError:
            raise SpecError(f"spec.ipAddresses: {ip!r} is not an IPv4 or IPv6 address.") from None
    uris = _texts(spec.get("uris"), "spec.uris")
    for uri in uris:
        if not _URI.match(uri):
            raise SpecError(f"spec.uris: {uri!r} is not an absolute URI such as spiffe://domain/path.")
    emails = _texts(spec.get("emailAddresses"), "spec.emailAddresses")
    for email in emails:
        if not _EMAIL.match(email):
            raise SpecError(f"spec.emailAddresses: {email!r} is not an email address.")
    if not (common_name or dns_names or ips or uris or emails or spec.get("spiffe")):
        raise SpecError(
            "The certificate names nothing: set at least one of commonName, dnsNames, "
            "ipAddresses, uris, emailAddresses or spiffe."
        )

    raw_usages = _strs(spec.get("usages"), "spec.usages")
    usages: list[Usage] = []
    for u in raw_usages:
        try:
            usages.append(Usage(u))
        except ValueError:
            allowed = ", ".join(x.value for x in Usage)
            raise SpecError(f"spec.usages: {u!r} is not a known usage ({allowed}).") from None
    duration = _duration(spec.get("duration"), "spec.duration", DEFAULT_CERT_DURATION)
    assert duration is not None
    if duration < MIN_DURATION:
        raise SpecError(f"spec.duration must be at least 1m, not {spec.get('duration')}.")
    renew_before = _duration(spec.get("renewBefore"), "spec.renewBefore", None)
    pct = spec.get("renewBeforePercentage")
    if renew_before is not None and pct is not None:
        raise SpecError("Set only one of spec.renewBefore and spec.renewBeforePercentage.")
    if renew_before is not None and not (MIN_RENEW_BEFORE <= renew_before <= duration * MAX_RENEW_FRACTION):
        raise SpecError(
            f"spec.renewBefore ({spec.get('renewBefore')}) must be at least 5s and at most 90% of "
            f"spec.duration ({spec.get('duration') or '2160h'}), so that a certificate lives a while "
            "before it is renewed."
        )
    if pct is not None and (
        not isinstance(pct, int) or isinstance(pct, bool) or not 1 <= pct <= MAX_RENEW_PERCENTAGE
    ):
        raise SpecError(
            f"spec.renewBeforePercentage must be a whole number from 1 to {MAX_RENEW_PERCENTAGE}, so that a "
            "certificate lives a while before it is renewed."
        )

    key = parse_key_spec(spec.get("privateKey"))
    additional = parse_additional_keys(spec.get("additionalPrivateKeys"), "spec.additionalPrivateKeys", key)

    template = _mapping(spec.get("secretTemplate"), "spec.secretTemplate")
    labels = _mapping(template.get("labels"), "spec.secretTemplate.labels")
    annotations = _mapping(template.get("annotations"), "spec.secretTemplate.annotations")
    for k, v in [*labels.items(), *annotations.items()]:
        if not isinstance(v, str):
            raise SpecError(f"spec.secretTemplate: the value of {k!r} must be a string.")
        if str(k).startswith(RESERVED_KEY_PREFIX) or k == LABEL_MANAGED_BY:
            raise SpecError(
                f"spec.secretTemplate: {k!r} is the operator's own key (it records who owns the Secret); "
                "a template cannot set it."
            )

    keystores = _mapping(spec.get("keystores"), "spec.keystores")
    p12 = _mapping(keystores.get("pkcs12"), "spec.keystores.pkcs12")
    p12_ref = None
    if p12.get("passwordSecretRef") is not None:
        pref = _mapping(p12.get("passwordSecretRef"), "spec.keystores.pkcs12.passwordSecretRef")
        if not pref.get("name"):
            raise SpecError("spec.keystores.pkcs12.passwordSecretRef.name is required.")
        p12_ref = SecretKeyRef(name=str(pref["name"]), key=str(pref.get("key") or "password"))
    pkcs12 = PKCS12Spec(create=bool(p12.get("create", False)), password_secret_ref=p12_ref)
    if pkcs12.create and key.algorithm is KeyAlgorithm.MLDSA:
        raise SpecError(
            "spec.keystores.pkcs12 cannot hold an ML-DSA key: PKCS#12 readers (Java, "
            "OpenSSL 3.0) do not support it yet. Remove keystores.pkcs12 or use a classical key."
        )
    if pkcs12.create and p12_ref is None:
        raise SpecError(
            "spec.keystores.pkcs12.passwordSecretRef is required when keystores.pkcs12.create is true: "
            "PKCS#12 files are always encrypted."
        )

    try:
        cleanup = CleanupPolicy(spec.get("cleanupPolicy") or CleanupPolicy.RETAIN)
    except ValueError:
        raise SpecError("spec.cleanupPolicy must be Retain or Delete.") from None

    rollout_doc = _mapping(spec.get("rollout"), "spec.rollout")
    try:
        rollout_policy = RolloutPolicy(rollout_doc.get("policy") or RolloutPolicy.AUTO)
    except ValueError:
        raise SpecError("spec.rollout.policy must be Auto, Explicit or None.") from None
    targets: list[WorkloadRef] = []
    for t in rollout_doc.get("targets") or []:
        t = _mapping(t, "spec.rollout.targets[]")
        if t.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet") or not t.get("name"):
            raise SpecError(
                "spec.rollout.targets[] needs kind (Deployment, StatefulSet or DaemonSet) and name."
            )
        targets.append(WorkloadRef(kind=str(t["kind"]), name=str(t["name"])))

    return CertificateSpec(
        secret_name=secret_name,
        issuer_ref=IssuerRef(name=issuer_name, kind=kind),
        common_name=common_name,
        dns_names=dns_names,
        ip_addresses=tuple(ips),
        uris=uris,
        email_addresses=emails,
        subject=parse_subject(spec.get("subject")),
        usages=tuple(usages) or DEFAULT_USAGES,
        duration=duration,
        renew_before=renew_before,
        renew_before_percentage=pct,
        private_key=key,
        secret_template=SecretTemplate(
            labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            annotations=tuple(sorted((str(k), str(v)) for k, v in annotations.items())),
        ),
        pkcs12=pkcs12,
        cleanup_policy=cleanup,
        rollout=RolloutSpec(policy=rollout_policy, targets=tuple(targets)),
        additional_private_keys=additional,
    )


def _managed_ca(doc: Mapping[str, Any], where: str, default_duration: timedelta) -> SelfSignedCASpec:
    name = doc.get("secretName")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}.secretName is required.")
    cn = doc.get("commonName")
    if not isinstance(cn, str) or not cn:
        raise SpecError(f"{where}.commonName is required.")
    _text(cn, f"{where}.commonName")
    duration = _duration(doc.get("duration"), f"{where}.duration", default_duration)
    assert duration is not None
    if duration < MIN_DURATION:
        raise SpecError(f"{where}.duration must be at least 1m.")
    return SelfSignedCASpec(
        secret_name=name,
        common_name=cn,
        subject=parse_subject(doc.get("subject"), f"{where}.subject"),
        duration=duration,
        private_key=parse_key_spec(doc.get("privateKey"), f"{where}.privateKey"),
    )


DEFAULT_INTERMEDIATE_DURATION = timedelta(days=365)
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _object_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{what} is required.")
    if len(value) > 253 or not _OBJECT_NAME.match(value):
        raise SpecError(f"{what} {value!r} is not a valid Kubernetes object name.")
    return value


def _ca_renew_before(doc: Mapping[str, Any], where: str, ca: SelfSignedCASpec) -> SelfSignedCASpec:
    renew_before = _duration(doc.get("renewBefore"), f"{where}.renewBefore", None)
    if renew_before is None:
        return ca
    if renew_before < MIN_DURATION or renew_before >= ca.duration:
        raise SpecError(f"{where}.renewBefore must be at least 1m and shorter than the CA's duration.")
    return replace(ca, renew_before=renew_before)


def _intermediate(doc: Mapping[str, Any]) -> IntermediateSpec:
    where = "spec.intermediate"
    ref = _mapping(doc.get("issuerRef"), f"{where}.issuerRef")
    parent = ref.get("name")
    if not isinstance(parent, str) or not parent:
        raise SpecError(f"{where}.issuerRef.name is required.")
    kind = ref.get("kind") or ISSUER_KIND
    if kind not in ISSUER_KINDS:
        raise SpecError(f"{where}.issuerRef.kind {kind!r} is not supported: use {' or '.join(ISSUER_KINDS)}.")
    _object_name(doc.get("secretName"), f"{where}.secretName")
    cn = doc.get("commonName")
    if isinstance(cn, str) and len(cn) > 64:
        raise SpecError(f"{where}.commonName must be at most 64 characters long.")
    path_length = doc.get("pathLength")
    if path_length is not None and (
        not isinstance(path_length, int) or isinstance(path_length, bool) or path_length < 0
    ):
        raise SpecError(f"{where}.pathLength must be a whole number of 0 or more.")
    constraints = _mapping(doc.get("nameConstraints"), f"{where}.nameConstraints")
    domains: dict[str, tuple[str, ...]] = {}
    for key in ("permittedDNSDomains", "excludedDNSDomains"):
        values = tuple(dict.fromkeys(_strs(constraints.get(key), f"{where}.nameConstraints.{key}")))
        for value in values:
            if value.startswith("*") or validate_dns_name(value.removeprefix(".")):
                raise SpecError(
                    f"{where}.nameConstraints.{key}: {value!r} is not a DNS domain such as team-a.svc."
                )
        domains[key] = values
    ca = _managed_ca(doc, where, DEFAULT_INTERMEDIATE_DURATION)
    return IntermediateSpec(
        parent=parent,
        parent_kind=kind,
        ca=_ca_renew_before(doc, where, ca),
        path_length=path_length,
        permitted_dns=domains["permittedDNSDomains"],
        excluded_dns=domains["excludedDNSDomains"],
    )


def parse_issuer_spec(spec: Mapping[str, Any]) -> IssuerSpec:
    """Parse and validate the CA part of an MTLSIssuer ``spec``: exactly one of ``selfSigned``, ``ca``,
    ``intermediate`` (the trust-lifecycle fields are parsed by :mod:`mtls_operator.api.trust_lifecycle`)."""
    kinds = [k for k in ("selfSigned", "ca", "intermediate") if spec.get(k) is not None]
    if len(kinds) != 1:
        raise SpecError("Set exactly one of spec.selfSigned, spec.ca and spec.intermediate.")
    if kinds[0] == "ca":
        doc = _mapping(spec["ca"], "spec.ca")
        return IssuerSpec(
            ca=CASecretSpec(secret_name=_object_name(doc.get("secretName"), "spec.ca.secretName"))
        )
    if kinds[0] == "selfSigned":
        doc = _mapping(spec["selfSigned"], "spec.selfSigned")
        _object_name(doc.get("secretName"), "spec.selfSigned.secretName")
        ca = _managed_ca(doc, "spec.selfSigned", DEFAULT_CA_DURATION)
        extra = parse_additional_keys(
            doc.get("additionalPrivateKeys"), "spec.selfSigned.additionalPrivateKeys", ca.private_key
        )
        ca = replace(ca, additional_private_keys=extra)
        return IssuerSpec(self_signed=_ca_renew_before(doc, "spec.selfSigned", ca))
    return IssuerSpec(intermediate=_intermediate(_mapping(spec["intermediate"], "spec.intermediate")))
