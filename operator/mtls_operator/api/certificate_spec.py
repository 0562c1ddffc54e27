"""Parsing an MTLSCertificate ``spec`` into :class:`~mtls_operator.api.models.CertificateSpec`, with the
subject and private-key readers an issuer's CA reuses (:mod:`mtls_operator.api.issuer_spec`).

The CRD schema (with CEL) rejects most bad input at the API server; these parsers repeat the checks that
matter for safety and add the ones CEL cannot express (DNS name syntax, IP parsing), raising
:class:`SpecError` with a reason and a sentence. Nothing past the parser sees a raw dict.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mtls_operator.api.constants import ISSUER_KIND, ISSUER_KINDS, LABEL_MANAGED_BY
from mtls_operator.api.errors import SpecError
from mtls_operator.api.fields import (
    as_duration,
    as_mapping,
    as_strs,
    as_text,
    as_texts,
    validate_dns_name,
)
from mtls_operator.api.models import (
    ALLOWED_SIZES,
    DEFAULT_CERT_DURATION,
    DEFAULT_SIZES,
    DEFAULT_USAGES,
    MAX_ADDITIONAL_KEYS,
    MAX_RENEW_FRACTION,
    MAX_RENEW_PERCENTAGE,
    MIN_DURATION,
    MIN_RENEW_BEFORE,
    RESERVED_KEY_PREFIX,
    CertificateSpec,
    CleanupPolicy,
    IssuerRef,
    KeyAlgorithm,
    KeyEncoding,
    KeySpec,
    PKCS12Spec,
    RolloutPolicy,
    RolloutSpec,
    RotationPolicy,
    SecretKeyRef,
    SecretTemplate,
    Subject,
    Usage,
    WorkloadRef,
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]+$")


def parse_subject(raw: Any, where: str = "spec.subject") -> Subject:
    doc = as_mapping(raw, where)
    serial = doc.get("serialNumber")
    if serial is not None and not isinstance(serial, str):
        raise SpecError(f"{where}.serialNumber must be a string.")
    return Subject(
        organizations=as_texts(doc.get("organizations"), f"{where}.organizations"),
        organizational_units=as_texts(doc.get("organizationalUnits"), f"{where}.organizationalUnits"),
        countries=as_texts(doc.get("countries"), f"{where}.countries"),
        provinces=as_texts(doc.get("provinces"), f"{where}.provinces"),
        localities=as_texts(doc.get("localities"), f"{where}.localities"),
        street_addresses=as_texts(doc.get("streetAddresses"), f"{where}.streetAddresses"),
        postal_codes=as_texts(doc.get("postalCodes"), f"{where}.postalCodes"),
        serial_number=None if serial is None else as_text(serial, f"{where}.serialNumber"),
    )


def parse_key_spec(raw: Any, where: str = "spec.privateKey") -> KeySpec:
    doc = as_mapping(raw, where)
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
    ref = as_mapping(spec.get("issuerRef"), "spec.issuerRef")
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
        as_text(common_name, "spec.commonName")
    dns_names = as_texts(spec.get("dnsNames"), "spec.dnsNames")
    for name in dns_names:
        problem = validate_dns_name(name)
        if problem:
            raise SpecError(f"spec.dnsNames: {problem}.")
    ips: list[str] = []
    for ip in as_strs(spec.get("ipAddresses"), "spec.ipAddresses"):
        try:
            ips.append(str(ipaddress.ip_address(ip)))
        except ValueError:
            raise SpecError(f"spec.ipAddresses: {ip!r} is not an IPv4 or IPv6 address.") from None
    uris = as_texts(spec.get("uris"), "spec.uris")
    for uri in uris:
        if not _URI.match(uri):
            raise SpecError(f"spec.uris: {uri!r} is not an absolute URI such as spiffe://domain/path.")
    emails = as_texts(spec.get("emailAddresses"), "spec.emailAddresses")
    for email in emails:
        if not _EMAIL.match(email):
            raise SpecError(f"spec.emailAddresses: {email!r} is not an email address.")
    if not (common_name or dns_names or ips or uris or emails or spec.get("spiffe")):
        raise SpecError(
            "The certificate names nothing: set at least one of commonName, dnsNames, "
            "ipAddresses, uris, emailAddresses or spiffe."
        )

    raw_usages = as_strs(spec.get("usages"), "spec.usages")
    usages: list[Usage] = []
    for u in raw_usages:
        try:
            usages.append(Usage(u))
        except ValueError:
            allowed = ", ".join(x.value for x in Usage)
            raise SpecError(f"spec.usages: {u!r} is not a known usage ({allowed}).") from None
    duration = as_duration(spec.get("duration"), "spec.duration", DEFAULT_CERT_DURATION)
    assert duration is not None
    if duration < MIN_DURATION:
        raise SpecError(f"spec.duration must be at least 1m, not {spec.get('duration')}.")
    renew_before = as_duration(spec.get("renewBefore"), "spec.renewBefore", None)
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

    template = as_mapping(spec.get("secretTemplate"), "spec.secretTemplate")
    labels = as_mapping(template.get("labels"), "spec.secretTemplate.labels")
    annotations = as_mapping(template.get("annotations"), "spec.secretTemplate.annotations")
    for k, v in [*labels.items(), *annotations.items()]:
        if not isinstance(v, str):
            raise SpecError(f"spec.secretTemplate: the value of {k!r} must be a string.")
        if str(k).startswith(RESERVED_KEY_PREFIX) or k == LABEL_MANAGED_BY:
            raise SpecError(
                f"spec.secretTemplate: {k!r} is the operator's own key (it records who owns the Secret); "
                "a template cannot set it."
            )

    keystores = as_mapping(spec.get("keystores"), "spec.keystores")
    p12 = as_mapping(keystores.get("pkcs12"), "spec.keystores.pkcs12")
    p12_ref = None
    if p12.get("passwordSecretRef") is not None:
        pref = as_mapping(p12.get("passwordSecretRef"), "spec.keystores.pkcs12.passwordSecretRef")
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

    rollout_doc = as_mapping(spec.get("rollout"), "spec.rollout")
    try:
        rollout_policy = RolloutPolicy(rollout_doc.get("policy") or RolloutPolicy.AUTO)
    except ValueError:
        raise SpecError("spec.rollout.policy must be Auto, Explicit or None.") from None
    targets: list[WorkloadRef] = []
    for t in rollout_doc.get("targets") or []:
        t = as_mapping(t, "spec.rollout.targets[]")
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
