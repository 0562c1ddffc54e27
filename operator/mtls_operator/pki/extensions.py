"""Extensions that tell relying parties where to check revocation: CRL distribution point and OCSP (AIA).

``sign_leaf`` is to add what :func:`revocation_extensions` returns, all non-critical (RFC 5280 4.2.1.13,
4.2.2.1), when the issuer has ``spec.revocation``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from mtls_operator.api.constants import Reason
from mtls_operator.api.tls import TLSMaterialError


def revocation_extensions(crl_url: str | None, ocsp_url: str | None) -> list[x509.ExtensionType]:
    """cRLDistributionPoints for ``crl_url`` and authorityInfoAccess (id-ad-ocsp) for ``ocsp_url``; an
    empty list when both are None. Raises :class:`TLSMaterialError` (``INVALID_SPEC``) for a URL that is
    not absolute http(s) (RFC 5280 and RFC 6960 expect http; https is accepted)."""
    out: list[x509.ExtensionType] = []
    if crl_url is not None:
        name = x509.UniformResourceIdentifier(_checked(crl_url, "spec.revocation.crlURL"))
        out.append(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint(full_name=[name], relative_name=None, reasons=None, crl_issuer=None)]
            )
        )
    if ocsp_url is not None:
        name = x509.UniformResourceIdentifier(_checked(ocsp_url, "spec.revocation.ocspURL"))
        out.append(
            x509.AuthorityInformationAccess(
                [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, name)]
            )
        )
    return out


def _checked(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or not url.isascii() or " " in url:
        raise TLSMaterialError(
            f"{where} {url!r} must be an absolute http:// URL such as http://ca.example/ca.crl.",
            Reason.INVALID_SPEC,
        )
    return url
