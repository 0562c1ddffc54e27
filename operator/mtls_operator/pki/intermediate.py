"""Intermediate CAs: a CA certificate signed by a parent CA, optionally constrained in path length and names.

The result is what an MTLSIssuer's CA Secret holds: ``tls.key`` and ``tls.crt`` (the intermediate followed
by the parent's chain, root excluded, as leaves carry it); ``ca.crt`` is the parent's root. Loaded with
:func:`mtls_operator.pki.ca.load_ca`, the intermediate signs leaves with the ordinary ``sign_leaf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509

from mtls_operator.api.constants import Reason
from mtls_operator.api.fields import validate_dns_name
from mtls_operator.api.models import KeyEncoding, SelfSignedCASpec
from mtls_operator.api.tls import CAError, TLSMaterialError
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.certs import (
    authority_key_identifier,
    build_subject,
    ca_key_usage,
    certificates_to_pem,
    signature_hash,
    whole_seconds,
)
from mtls_operator.pki.keys import generate_private_key, private_key_to_pem


def sign_intermediate(
    spec: SelfSignedCASpec,
    parent: CAKeyPair,
    now: datetime,
    path_length: int | None = None,
    permitted_dns: Sequence[str] = (),
    excluded_dns: Sequence[str] = (),
) -> tuple[bytes, bytes]:
    """A new intermediate CA for ``spec`` (common name, subject, duration, private key; ``secret_name`` is
    not used) signed by ``parent``: (PKCS#8 key PEM, chain PEM).

    The validity starts at ``now`` (whole seconds) and is cut at the parent's notAfter. basicConstraints
    is CA:TRUE with ``path_length``, which must be shorter than the parent's; left None under a parent
    with a path length, it becomes the parent's minus one. ``permitted_dns``/``excluded_dns`` become a
    critical nameConstraints extension (a name such as ``team-a.svc`` covers itself and every name below
    it). Raises :class:`CAError` when the parent cannot sign a CA or has expired, and
    :class:`TLSMaterialError` (``INVALID_SPEC``) for a bad path length or constraint.
    """
    path_length = _path_length(parent, path_length)
    not_before = whole_seconds(now)
    parent_not_after = parent.certificate.not_valid_after_utc
    not_after = min(whole_seconds(not_before + spec.duration), parent_not_after)
    if not_after <= not_before:
        raise CAError(
            f"The parent CA expired at {parent_not_after.isoformat()} and cannot sign an intermediate.",
            Reason.CA_EXPIRED,
        )
    key = generate_private_key(spec.private_key)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(build_subject(spec.common_name, spec.subject, where="spec.intermediate"))
        .issuer_name(parent.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_identifier(parent.certificate), critical=False)
    )
    if permitted_dns or excluded_dns:
        builder = builder.add_extension(
            x509.NameConstraints(
                permitted_subtrees=_subtrees(permitted_dns, "permitted") or None,
                excluded_subtrees=_subtrees(excluded_dns, "excluded") or None,
            ),
            critical=True,  # RFC 5280 4.2.1.10: conforming CAs MUST mark it critical
        )
    cert = builder.sign(parent.private_key, signature_hash(parent.private_key))
    chain = certificates_to_pem([cert, *parent.issuer_chain])
    return private_key_to_pem(key, KeyEncoding.PKCS8), chain


def _path_length(parent: CAKeyPair, wanted: int | None) -> int | None:
    if wanted is not None and wanted < 0:
        raise TLSMaterialError(
            f"spec.intermediate.pathLength must be 0 or more, not {wanted}.", Reason.INVALID_SPEC
        )
    limit = parent.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    if limit is None:
        return wanted
    if limit == 0:
        raise CAError(
            "The parent CA has pathLength 0: it may sign leaves only, not another CA.", Reason.CA_NOT_CA
        )
    if wanted is None:
        return limit - 1
    if wanted >= limit:
        raise TLSMaterialError(
            f"spec.intermediate.pathLength {wanted} must be less than the parent CA's pathLength {limit}.",
            Reason.INVALID_SPEC,
        )
    return wanted


def _subtrees(names: Sequence[str], which: str) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        problem = validate_dns_name(name.removeprefix("."))
        if problem or name.startswith("*"):
            raise TLSMaterialError(
                f"spec.intermediate.nameConstraints.{which}DNSDomains: {name!r} is not a DNS domain "
                "such as team-a.svc.",
                Reason.INVALID_SPEC,
            )
        out.append(x509.DNSName(name))
    return out
