"""Certificate profiles for offline issuance: small YAML files shipped in ``cli/profiles/``.

A profile holds the fields of an MTLSIssuer's ``selfSigned`` block (``kind: ca``) or of an
MTLSCertificate's spec (``kind: leaf``) in the CRDs' own spelling. mtlsctl merges the command-line flags
into it and parses the result with the operator's own parsers (``api.models``), so an offline certificate
is described, validated and later issued exactly as the operator would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.issuer_spec import parse_issuer_spec
from mtls_operator.api.models import CertificateSpec, SelfSignedCASpec, SpecError

PROFILE_KINDS = ("ca", "leaf")
# Fields a profile may set, per kind: the CRD spelling of what the spec parsers read.
_CA_FIELDS = frozenset({"kind", "description", "duration", "privateKey", "subject", "commonName"})
_LEAF_FIELDS = frozenset(
    {
        "kind",
        "description",
        "duration",
        "privateKey",
        "subject",
        "usages",
        "commonName",
        "dnsNames",
        "ipAddresses",
        "uris",
        "emailAddresses",
    }
)


class ProfileError(ValueError):
    """A profile that does not exist or cannot be used; the message is a sentence."""


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    kind: str
    description: str
    doc: Mapping[str, Any]


def builtin_profiles() -> list[str]:
    """The names of the profiles shipped with mtlsctl, sorted."""
    folder = resources.files("mtls_operator.cli") / "profiles"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name (``pqc-ca``) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            text = path.read_text()
        except OSError as exc:
            raise ProfileError(f"Cannot read profile {name_or_path}: {exc.strerror}.") from None
        name = path.stem
    else:
        resource = resources.files("mtls_operator.cli") / "profiles" / f"{name_or_path}.yaml"
        if not resource.is_file():
            known = ", ".join(builtin_profiles())
            raise ProfileError(f"There is no profile named {name_or_path!r}; built-in profiles: {known}.")
        text = resource.read_text()
        name = name_or_path
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"Profile {name} is not valid YAML: {exc}.") from None
    if not isinstance(doc, dict):
        raise ProfileError(f"Profile {name} must be a YAML mapping.")
    kind = doc.get("kind")
    if kind not in PROFILE_KINDS:
        raise ProfileError(f"Profile {name} must say kind: ca or kind: leaf, not {kind!r}.")
    allowed = _CA_FIELDS if kind == "ca" else _LEAF_FIELDS
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ProfileError(
            f"Profile {name} has fields a {kind} profile cannot set: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})."
        )
    return Profile(name=name, kind=kind, description=str(doc.get("description") or ""), doc=doc)


def ca_spec(profile: Profile, common_name: str | None, duration: str | None = None) -> SelfSignedCASpec:
    """The self-signed CA ``profile`` describes, named ``common_name``; raises :class:`ProfileError`."""
    if profile.kind != "ca":
        raise ProfileError(f"Profile {profile.name} is a {profile.kind} profile; `ca init` needs a ca one.")
    fields = {k: v for k, v in profile.doc.items() if k not in ("kind", "description")}
    if common_name:
        fields["commonName"] = common_name
    if duration:
        fields["duration"] = duration
    if not fields.get("commonName"):
        raise ProfileError("Name the CA with --name (its subject common name).")
    try:
        spec = parse_issuer_spec({"selfSigned": {"secretName": "offline", **fields}}).self_signed
    except SpecError as exc:
        raise ProfileError(_offline_words(exc.message)) from None
    assert spec is not None
    return spec


def leaf_spec(
    profile: Profile,
    *,
    common_name: str | None = None,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    uris: Sequence[str] = (),
    duration: str | None = None,
) -> CertificateSpec:
    """The end-entity certificate ``profile`` plus the flags describe; names from flags are added to
    the profile's own. Raises :class:`ProfileError` with the parser's sentence."""
    if profile.kind != "leaf":
        raise ProfileError(
            f"Profile {profile.name} is a {profile.kind} profile; `cert issue` needs a leaf one."
        )
    fields: dict[str, Any] = {k: v for k, v in profile.doc.items() if k not in ("kind", "description")}
    for key, extra in (("dnsNames", dns_names), ("ipAddresses", ip_addresses), ("uris", uris)):
        if extra:
            fields[key] = [*(fields.get(key) or []), *extra]
    if common_name:
        fields["commonName"] = common_name
    if duration:
        fields["duration"] = duration
    try:
        return parse_certificate_spec({"secretName": "offline", "issuerRef": {"name": "offline"}, **fields})
    except SpecError as exc:
        raise ProfileError(_offline_words(exc.message)) from None


def _offline_words(message: str) -> str:
    """Parser messages name CRD fields; offline, say which flag sets them."""
    if message.startswith("The certificate names nothing"):
        return "The certificate names nothing: pass --cn, --dns, --ip or --uri (or set names in the profile)."
    return (
        message.replace("spec.selfSigned.commonName", "--name")
        .replace("spec.commonName", "--cn")
        .replace("spec.dnsNames", "--dns")
        .replace("spec.ipAddresses", "--ip")
        .replace("spec.uris", "--uri")
    )
