"""Offline PKI with the operator's own ``pki`` code: create a CA, issue a certificate, verify one, and
describe TLS material (also used by ``mtlsctl inspect secret``).

Chains are verified by OpenSSL (through pyOpenSSL, the same library the handshakes use); the facts about a
certificate (names, usages, fingerprints, key algorithm) come from ``pki.certs.cert_facts``, as in the
operator. Private keys are written with mode 0600 and never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex
from typing import TYPE_CHECKING, Any

from OpenSSL import crypto

from mtls_operator.api.constants import CA_CRT, TLS_CRT, TLS_KEY
from mtls_operator.api.models import KeySpec, Usage
from mtls_operator.api.tls import CAError, CertFacts, TLSMaterialError
from mtls_operator.cli.profiles import Profile, ca_spec, leaf_spec
from mtls_operator.pki.ca import create_self_signed_ca, load_ca
from mtls_operator.pki.certs import cert_facts, parse_certificate_pem
from mtls_operator.pki.issuance import issue_tls_material
from mtls_operator.pki.keys import keys_match, load_private_key_pem, spki_fingerprint

if TYPE_CHECKING:  # the objects pki hands back; cli itself never imports cryptography
    from cryptography.x509 import Certificate

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
PURPOSES: Mapping[str, Usage] = {"client": Usage.CLIENT_AUTH, "server": Usage.SERVER_AUTH}


class OfflineError(Exception):
    """Something mtlsctl cannot do offline; the message is a sentence for the user."""


# ---------------------------------------------------------------------------------------------------------
# Files


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_private(path: Path, data: bytes, *, force: bool = False) -> None:
    """Write a private key readable by its owner only; refuse to replace one unless ``force``.

    The key is written to a new file in the target directory under a random name, created with O_EXCL
    and O_NOFOLLOW and mode 0600 from the start, then renamed (or, without ``force``, hard-linked, which
    fails if the target appeared meanwhile) to ``path``. Nothing planted in the directory is followed:
    not a symlink at a temporary name (there is no predictable one), nor at ``path`` (a rename replaces
    the link itself).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    exists = f"{path} already exists; pass --force to replace the key."
    if not force and (path.exists() or path.is_symlink()):
        raise OfflineError(exists)
    tmp = path.with_name(f".{path.name}.{token_hex(16)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path, exists)
    except FileExistsError:
        raise OfflineError(exists) from None
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path, exists: str) -> None:
    """Give ``tmp`` the name ``path`` only if nothing has it: a hard link fails on an existing name. On a
    filesystem without hard links (FAT, some FUSE mounts), check and rename instead."""
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        if path.exists() or path.is_symlink():
            raise OfflineError(exists) from None
        os.replace(tmp, path)


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise OfflineError(f"Cannot read {what} {path}: {exc.strerror}.") from None


# ---------------------------------------------------------------------------------------------------------
# Commands


def init_ca(
    profile: Profile, directory: Path, now: datetime, *, name: str | None, force: bool = False
) -> dict[str, Any]:
    """``mtlsctl ca init``: a self-signed CA in ``directory`` (ca.crt, and ca.key with mode 0600)."""
    spec = ca_spec(profile, name)
    key_pem, cert_pem = create_self_signed_ca(spec, now)
    write_private(directory / CA_KEY_FILE, key_pem, force=force)
    write_public(directory / CA_CERT_FILE, cert_pem)
    doc = describe_chain(cert_pem, roots_pem=cert_pem, now=now)
    doc["files"] = {"certificate": str(directory / CA_CERT_FILE), "privateKey": str(directory / CA_KEY_FILE)}
    doc["profile"] = profile.name
    return doc


def issue_certificate(
    profile: Profile,
    ca_dir: Path,
    now: datetime,
    *,
    out: Path,
    key_out: Path,
    ca_out: Path | None = None,
    common_name: str | None = None,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    uris: Sequence[str] = (),
    duration: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """``mtlsctl cert issue``: a leaf for ``profile`` plus the flags, signed by the CA in ``ca_dir``."""
    spec = leaf_spec(
        profile,
        common_name=common_name,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        uris=uris,
        duration=duration,
    )
    ca_data = {
        TLS_CRT: read_file(ca_dir / CA_CERT_FILE, "the CA certificate"),
        TLS_KEY: read_file(ca_dir / CA_KEY_FILE, "the CA key"),
    }
    try:
        ca = load_ca(ca_data, now)
        material = issue_tls_material(spec, ca, now)
    except (CAError, TLSMaterialError) as exc:
        raise OfflineError(f"{ca_dir}: {exc.message}") from None
    write_private(key_out, material.data[TLS_KEY], force=force)
    write_public(out, material.data[TLS_CRT])
    files = {"certificate": str(out), "privateKey": str(key_out)}
    if ca_out is not None:
        write_public(ca_out, material.data[CA_CRT])
        files["ca"] = str(ca_out)
    doc = describe_chain(material.data[TLS_CRT], roots_pem=material.data[CA_CRT], now=now)
    doc["keyMatches"] = material.facts.key_matches
    doc["files"] = files
    doc["profile"] = profile.name
    return doc


def verify_certificate(
    ca_path: Path,
    cert_path: Path,
    now: datetime,
    *,
    purpose: str | None = None,
    dns_name: str | None = None,
) -> dict[str, Any]:
    """``mtlsctl verify``: does ``cert_path`` chain to a root in ``ca_path``, now, for ``purpose``, and
    name ``dns_name``? Returns the description with ``ok`` and the ``problems`` found."""
    doc = describe_chain(
        read_file(cert_path, "the certificate"), roots_pem=read_file(ca_path, "the CA bundle"), now=now
    )
    problems: list[str] = list(doc["chain"]["problems"])
    leaf = doc["certificate"]
    if purpose is not None:
        usage = PURPOSES[purpose]
        extended = [
            u for u in leaf["usages"] if Usage(u) not in (Usage.DIGITAL_SIGNATURE, Usage.KEY_ENCIPHERMENT)
        ]
        if extended and usage not in extended:
            problems.append(
                f"the certificate may not be used as a TLS {purpose}: its extended key usage is "
                f"{', '.join(extended)}, without {usage}"
            )
        if leaf["isCA"]:
            problems.append(f"the certificate is a CA certificate, not a TLS {purpose} certificate")
    if dns_name is not None and not name_matches(dns_name, leaf["dnsNames"], leaf["ipAddresses"]):
        problems.append(
            f"the certificate is not valid for {dns_name}: it names "
            f"{', '.join([*leaf['dnsNames'], *leaf['ipAddresses']]) or 'no DNS name or IP address'}"
        )
    doc["purpose"] = purpose
    doc["dnsName"] = dns_name
    doc["problems"] = problems
    doc["ok"] = not problems
    return doc


# ---------------------------------------------------------------------------------------------------------
# Describing material


def describe_chain(chain_pem: bytes, *, roots_pem: bytes | None, now: datetime) -> dict[str, Any]:
    """The leaf of ``chain_pem`` described, and the chain verified by OpenSSL against ``roots_pem``."""
    try:
        certs = parse_certificate_pem(chain_pem, name="The certificate file")
        roots = parse_certificate_pem(roots_pem, name="The CA bundle") if roots_pem else []
        facts = cert_facts(certs[0], [*certs[1:], *roots])
    except TLSMaterialError as exc:
        raise OfflineError(exc.message) from None
    leaf = crypto.X509.from_cryptography(certs[0])
    problems = _verify_chain(leaf, certs[1:], roots, now) if roots else ["no CA to verify"]
    return {
        "certificate": _facts_doc(
            facts,
            certs[0].subject.rfc4514_string(),
            certs[0].issuer.rfc4514_string(),
            leaf,
            spki_fingerprint(certs[0].public_key()),
        ),
        "chain": {
            "length": len(certs),
            "certificates": [c.subject.rfc4514_string() for c in certs],
            "roots": [c.subject.rfc4514_string() for c in roots],
            "verified": not problems,
            "problems": problems,
        },
    }


def describe_secret_data(data: Mapping[str, bytes], now: datetime) -> dict[str, Any]:
    """What ``mtlsctl inspect secret`` shows for a ``kubernetes.io/tls`` Secret's decoded data."""
    if not data.get(TLS_CRT):
        raise OfflineError(f"The Secret has no {TLS_CRT}.")
    doc = describe_chain(data[TLS_CRT], roots_pem=data.get(CA_CRT) or None, now=now)
    key_matches: bool | None = None
    key_problem = None
    if data.get(TLS_KEY):
        try:
            key = load_private_key_pem(data[TLS_KEY], name=TLS_KEY)
            leaf = parse_certificate_pem(data[TLS_CRT], name=TLS_CRT)[0]
            key_matches = keys_match(key, leaf.public_key())
        except TLSMaterialError as exc:
            key_matches, key_problem = False, exc.message
    else:
        key_problem = f"the Secret has no {TLS_KEY}"
    doc["keyMatches"] = key_matches
    if key_problem:
        doc["keyProblem"] = key_problem
    doc["dataKeys"] = sorted(data)
    return doc


def name_matches(name: str, dns_names: Sequence[str], ip_addresses: Sequence[str]) -> bool:
    """RFC 6125 matching: exact (case-insensitive), or a ``*.`` wildcard for exactly one left label."""
    name = name.lower().rstrip(".")
    if name in ip_addresses:
        return True
    for dns in dns_names:
        dns = dns.lower()
        if dns == name:
            return True
        if dns.startswith("*.") and "." in name and name.split(".", 1)[1] == dns[2:]:
            return True
    return False


def _facts_doc(
    facts: CertFacts, subject: str, issuer: str, leaf: crypto.X509, public_key_sha256: str
) -> dict[str, Any]:
    return {
        "subject": subject,
        "issuer": issuer,
        "serialNumber": facts.serial_number,
        "notBefore": _rfc3339(facts.not_before),
        "notAfter": _rfc3339(facts.not_after),
        "commonName": facts.common_name,
        "dnsNames": list(facts.dns_names),
        "ipAddresses": list(facts.ip_addresses),
        "uris": list(facts.uris),
        "emailAddresses": list(facts.email_addresses),
        "usages": sorted(str(u) for u in facts.usages),
        "isCA": facts.is_ca,
        "keyAlgorithm": _key_label(facts),
        "signatureAlgorithm": leaf.get_signature_algorithm().decode(),
        "fingerprintSHA256": facts.fingerprint,
        "publicKeySHA256": public_key_sha256,
        "issuerFingerprintSHA256": facts.issuer_fingerprint,
    }


def _key_label(facts: CertFacts) -> str:
    return KeySpec(algorithm=facts.key_algorithm, size=facts.key_size).label


def _verify_chain(
    leaf: crypto.X509, intermediates: Sequence[Certificate], roots: Sequence[Certificate], now: datetime
) -> list[str]:
    """OpenSSL's verdict on ``leaf`` and ``intermediates`` under ``roots`` at ``now``; [] if it verifies."""
    store = crypto.X509Store()
    for root in roots:
        store.add_cert(crypto.X509.from_cryptography(root))
    store.set_time(now.astimezone(UTC).replace(tzinfo=None))
    chain = [crypto.X509.from_cryptography(c) for c in intermediates]
    try:
        crypto.X509StoreContext(store, leaf, chain).verify_certificate()
    except crypto.X509StoreContextError as exc:
        return [f"chain verification failed: {exc}"]
    return []


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
