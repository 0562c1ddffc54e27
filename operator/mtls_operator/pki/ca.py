"""The issuing CA: create a self-signed one, and load and vet a CA key pair from a Secret's data.

A CA Secret holds ``tls.crt`` (the CA certificate, optionally followed by the chain above it),
``tls.key`` (its private key) and, when the CA is an intermediate, optionally ``ca.crt`` (the root).
:func:`load_ca` turns that into a :class:`CAKeyPair` or raises :class:`CAError` with the reason an
MTLSIssuer condition shows and a sentence that names the offending key of the Secret.

A dual CA also holds one more CA per key algorithm in ``tls-<algorithm>.crt`` and ``tls-<algorithm>.key``
(e.g. an ECDSA CA next to an ML-DSA one); each is vetted the same way and signs the certificates'
additional keys of its algorithm (:meth:`CAKeyPair.for_algorithm`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from cryptography import x509

from mtls_operator.api.constants import CA_CRT, TLS_CRT, TLS_KEY, Reason, additional_secret_keys
from mtls_operator.api.models import KeyAlgorithm, KeyEncoding, KeySpec, SelfSignedCASpec
from mtls_operator.api.tls import CAError, CAFacts, TLSMaterialError
from mtls_operator.pki.certs import (
    READ_ERRORS,
    build_subject,
    ca_key_usage,
    certificates_to_pem,
    issued_by,
    parse_certificate_pem,
    signature_hash,
    whole_seconds,
)
from mtls_operator.pki.fingerprints import certificate_fingerprint
from mtls_operator.pki.keys import (
    PrivateKey,
    UnsupportedKeyError,
    generate_private_key,
    key_algorithm_of,
    keys_match,
    load_private_key_pem,
    private_key_to_pem,
)


@dataclass(frozen=True)
class CAKeyPair:
    """A CA that has passed :func:`load_ca`'s checks and can sign leaves."""

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)
    intermediates: tuple[x509.Certificate, ...]  # the CA's chain above it, root excluded
    root: x509.Certificate  # the trust anchor; the CA itself when it is self-signed
    facts: CAFacts
    additional: tuple[CAKeyPair, ...] = ()  # a dual CA's other CAs, one per key algorithm (tls-<alg>.*)

    def for_algorithm(self, algorithm: KeyAlgorithm) -> CAKeyPair | None:
        """The CA that signs additional keys of ``algorithm``: an additional CA of that algorithm, else this
        CA when its own key is of it; None when the issuer holds no CA of that algorithm."""
        found = next((a for a in self.additional if a.facts.key_algorithm is algorithm), None)
        if found is not None:
            return found
        return self if self.facts.key_algorithm is algorithm else None

    @property
    def algorithms(self) -> frozenset[KeyAlgorithm]:
        """The key algorithms of the CAs this key pair holds (the additional keys it can sign)."""
        return frozenset({self.facts.key_algorithm, *(a.facts.key_algorithm for a in self.additional)})

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """Every trust anchor: this CA's root, then the additional CAs' roots."""
        return (self.root, *(a.root for a in self.additional))

    @property
    def signing_fingerprint(self) -> str:
        """Names the set of CAs that sign: this CA's fingerprint, plus a digest of the additional CAs' when
        there are any (a leaf judged against one set is judged again when any of them changes)."""
        if not self.additional:
            return self.facts.fingerprint
        extra = ",".join(sorted(a.facts.fingerprint for a in self.additional))
        return f"{self.facts.fingerprint}+{hashlib.sha256(extra.encode()).hexdigest()[:16]}"

    def only(self, algorithms: Iterable[KeyAlgorithm]) -> CAKeyPair:
        """This CA with only the additional CAs of ``algorithms`` (what a managed CA's spec asks for)."""
        wanted = frozenset(algorithms)
        kept = tuple(a for a in self.additional if a.facts.key_algorithm in wanted)
        return self if kept == self.additional else replace(self, additional=kept)

    @property
    def issuer_chain(self) -> tuple[x509.Certificate, ...]:
        """What a leaf's ``tls.crt`` carries after the leaf: the CA and its intermediates, root excluded."""
        return tuple(c for c in (self.certificate, *self.intermediates) if c != self.root)

    @property
    def root_pem(self) -> bytes:
        """The trust anchor, for ``ca.crt`` and truststores."""
        return certificates_to_pem([self.root])

    @property
    def chain_algorithms(self) -> tuple[KeyAlgorithm, ...]:
        """The key algorithms of the CA, its intermediates and the root (the PostQuantum condition)."""
        return tuple(
            key_algorithm_of(c.public_key())[0] for c in (self.certificate, *self.intermediates, self.root)
        )

    def signed_by(self, parent: CAKeyPair) -> bool:
        """Whether this CA's certificate verifies under ``parent``'s CA certificate."""
        return issued_by(self.certificate, parent.certificate)

    @property
    def chain_pem(self) -> bytes:
        """The CA certificate followed by its intermediates."""
        return certificates_to_pem([self.certificate, *self.intermediates])


def create_self_signed_ca(spec: SelfSignedCASpec, now: datetime) -> tuple[bytes, bytes]:
    """A new root CA for ``spec``: (PKCS#8 key PEM, certificate PEM). CA:TRUE without a path length,
    keyCertSign + cRLSign + digitalSignature, SKI and AKI; valid from ``now`` (whole seconds)."""
    key = generate_private_key(spec.private_key)
    not_before = whole_seconds(now)
    subject = build_subject(spec.common_name, spec.subject, where="spec.selfSigned")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(whole_seconds(not_before + spec.duration))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, signature_hash(key))
    )
    return private_key_to_pem(key, KeyEncoding.PKCS8), certificates_to_pem([cert])


def self_signed_ca_data(spec: SelfSignedCASpec, now: datetime) -> dict[str, bytes]:
    """The data of a new self-signed CA Secret for ``spec``: ``tls.crt``, ``tls.key``, the additional CAs of a
    dual CA (``tls-<algorithm>.crt``/``.key``) and ``ca.crt`` holding every root."""
    key_pem, cert_pem = create_self_signed_ca(spec, now)
    extra = additional_ca_data(spec, now, [k.algorithm for k in spec.additional_private_keys])
    roots = [cert_pem, *(v for k, v in sorted(extra.items()) if k.endswith(".crt"))]
    return {TLS_CRT: cert_pem, TLS_KEY: key_pem, **extra, CA_CRT: b"".join(roots)}


def additional_ca_data(
    spec: SelfSignedCASpec, now: datetime, algorithms: Iterable[KeyAlgorithm]
) -> dict[str, bytes]:
    """New self-signed CAs for the additional keys of ``spec`` whose algorithm is in ``algorithms``, as
    ``tls-<algorithm>.crt``/``.key`` entries. Each has the CA's subject with the key named in the common
    name (``mesh root (ECDSA-P256)``), so that no two roots of a dual CA share a subject."""
    out: dict[str, bytes] = {}
    wanted = frozenset(algorithms)
    for key in spec.additional_private_keys:
        if key.algorithm not in wanted:
            continue
        key_pem, cert_pem = create_self_signed_ca(
            replace(spec, common_name=_named_for(spec.common_name, key), private_key=key), now
        )
        crt_name, key_name = additional_secret_keys(key.algorithm)
        out[crt_name], out[key_name] = cert_pem, key_pem
    return out


def _named_for(common_name: str, key: KeySpec) -> str:
    suffix = f" ({key.label})"
    return common_name[: 64 - len(suffix)] + suffix


def load_ca(data: Mapping[str, bytes], now: datetime) -> CAKeyPair:
    """Load and vet the CA in a Secret's decoded ``data`` as of ``now``, with the additional CAs of a dual CA
    (``tls-<algorithm>.crt``/``.key``); raise :class:`CAError`."""
    main = _load_pair(data, TLS_CRT, TLS_KEY, now)
    additional: list[CAKeyPair] = []
    for algorithm in KeyAlgorithm:
        crt_name, key_name = additional_secret_keys(algorithm)
        if not data.get(crt_name) and not data.get(key_name):
            continue
        extra = _load_pair(data, crt_name, key_name, now)
        if extra.facts.key_algorithm is not algorithm:
            raise CAError(
                f"{crt_name} holds a {extra.facts.key_algorithm} CA certificate; it must hold the "
                f"{algorithm} CA its name says.",
                Reason.CA_KEY_UNSUPPORTED,
            )
        if algorithm is main.facts.key_algorithm:
            raise CAError(
                f"{crt_name} holds a second {algorithm} CA next to the one in {TLS_CRT}; an additional CA "
                "must be of another algorithm than the main one.",
                Reason.CA_KEY_UNSUPPORTED,
            )
        additional.append(extra)
    return replace(main, additional=tuple(additional)) if additional else main


def _load_pair(data: Mapping[str, bytes], crt_name: str, key_name: str, now: datetime) -> CAKeyPair:
    for name, what in ((crt_name, "the CA certificate"), (key_name, "the CA's private key")):
        if not data.get(name):
            raise CAError(f"{name} is missing: the CA secret must hold {what} in {name}.")
    try:
        certs = parse_certificate_pem(data[crt_name], name=crt_name)
    except TLSMaterialError as exc:
        raise CAError(exc.message) from None
    cert, above = certs[0], certs[1:]
    try:
        key = load_private_key_pem(data[key_name], name=key_name)
    except UnsupportedKeyError as exc:
        raise CAError(exc.message, Reason.CA_KEY_UNSUPPORTED) from None
    except TLSMaterialError as exc:
        raise CAError(exc.message) from None
    try:
        public_key = cert.public_key()
        algorithm, size = key_algorithm_of(public_key, name=f"{crt_name}'s public key")
        extensions = cert.extensions
    except UnsupportedKeyError as exc:
        raise CAError(exc.message, Reason.CA_KEY_UNSUPPORTED) from None
    except READ_ERRORS:
        raise CAError(f"{crt_name} holds a certificate whose key or extensions cannot be read.") from None

    _check_can_sign_certificates(extensions, crt_name)
    if not keys_match(key, public_key):
        raise CAError(
            f"{key_name} is not the private key of the certificate in {crt_name}.", Reason.CA_KEY_MISMATCH
        )
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < not_before:
        raise CAError(
            f"{crt_name} is not valid yet: its validity starts at {not_before.isoformat()}.",
            Reason.CA_NOT_YET_VALID,
        )
    if now >= not_after:
        raise CAError(f"{crt_name} expired at {not_after.isoformat()}.", Reason.CA_EXPIRED)

    root = _trust_anchor([cert, *above], data.get(CA_CRT), crt_name)
    intermediates = tuple(c for c in above if c != root)
    facts = CAFacts(
        fingerprint=certificate_fingerprint(cert),
        not_before=not_before,
        not_after=not_after,
        subject=cert.subject.rfc4514_string(),
        key_algorithm=algorithm,
        key_size=size,
        root_fingerprint=certificate_fingerprint(root),
    )
    return CAKeyPair(certificate=cert, private_key=key, intermediates=intermediates, root=root, facts=facts)


def _check_can_sign_certificates(extensions: x509.Extensions, crt_name: str = TLS_CRT) -> None:
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CAError(
            f"{crt_name} is not a CA certificate: it has no basicConstraints extension.", Reason.CA_NOT_CA
        ) from None
    if not constraints.ca:
        raise CAError(
            f"{crt_name} is not a CA certificate: its basicConstraints say CA:FALSE.", Reason.CA_NOT_CA
        )
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return  # no keyUsage extension: every usage is allowed (RFC 5280 4.2.1.3)
    if not usage.key_cert_sign:
        raise CAError(
            f"{crt_name} cannot sign certificates: its keyUsage extension lacks keyCertSign.",
            Reason.CA_MISSING_KEY_CERT_SIGN,
        )


def _trust_anchor(
    chain: list[x509.Certificate], ca_crt: bytes | None, crt_name: str = TLS_CRT
) -> x509.Certificate:
    """The root that ``ca.crt`` and truststores carry.

    ``chain`` is ``tls.crt``: the CA first, then each issuer in turn. Its top is the root when it is
    self-signed; otherwise the root is the certificate in ``ca.crt`` that issued the top, and with no
    ``ca.crt`` the top itself is the anchor the operator knows.
    """
    for position, (child, parent) in enumerate(itertools.pairwise(chain), start=1):
        if not issued_by(child, parent):
            raise CAError(
                f"{crt_name} lists its certificates out of order: certificate {position + 1} did not issue "
                f"certificate {position}; put the CA first, then each issuer in turn."
            )
    top = chain[-1]
    if issued_by(top, top) or not ca_crt:
        return top
    try:
        bundle = parse_certificate_pem(ca_crt, name=CA_CRT)
    except TLSMaterialError as exc:
        raise CAError(exc.message) from None
    for candidate in bundle:
        if candidate == top or issued_by(top, candidate):
            return candidate
    raise CAError(
        f"{CA_CRT} does not hold the certificate that issued {top.issuer.rfc4514_string()!r}, the top of "
        f"the chain in {crt_name}."
    )
