"""What the API server saw, read from its audit log (`ControlPlane.start(audit=True)`), per client.

A test gives each operator it runs a client identity of its own (`audited_identity`): a client certificate
from the control plane's CA, for a user named after the operator, in ``system:masters`` (the same power as
the admin kubeconfig the operators used before) and in the audited group (every one of its requests is
recorded, reads included). Every request of that process carries it, kopf's as well as the operator's own
client, and no other process: so the writes of one operator are counted exactly, apart from those of the
test itself and of every other operator running at the same time. (Filtering on the user agent could not
tell two operators apart, nor count kopf's requests.)

`AuditLog.mark()` is a point in the log; `requests(since=mark)` reads only what came after it.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtls_operator.testing.controlplane import AUDITED_GROUP, WRITE_VERBS, ControlPlane, render_kubeconfig

WRITES = frozenset(WRITE_VERBS)
# What one issuance costs, as `kinds` counts it: the Secret created (a first issuance) or replaced (a
# re-issue), one status patch, one Event. The README's "at most 3 writes".
ISSUANCE_WRITES = Counter({"create secrets": 1, "patch mtlscertificates/status": 1, "create events": 1})
REISSUE_WRITES = Counter({"update secrets": 1, "patch mtlscertificates/status": 1, "create events": 1})
# `kind` of the involvedObject of an Event about a certificate
CERTIFICATE_KIND = "MTLSCertificate"


@dataclass(frozen=True)
class Request:
    """One request as the API server recorded it when it completed."""

    user: str
    user_agent: str
    verb: str
    group: str  # API group, "" for the core group
    resource: str  # with its subresource: "mtlscertificates/status"
    namespace: str
    name: str
    code: int
    reason: str  # the authorizer's reason for a denial, else ""
    about: tuple[str, str] | None  # an Event creation: the (kind, name) of the object it is about
    uri: str

    @property
    def is_write(self) -> bool:
        return self.verb in WRITES

    @property
    def denied(self) -> bool:
        return self.code in (401, 403)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        target = f"{self.resource} {where}{self.name}"
        if self.about is not None:
            target += f" (about {self.about[0]} {self.about[1]})"
        return f"{self.verb} {target} -> {self.code} [{self.user}, {self.user_agent}]"


def parse_event(doc: Mapping[str, Any]) -> Request:
    ref = doc.get("objectRef") or {}
    resource = str(ref.get("resource", ""))
    if ref.get("subresource"):
        resource += f"/{ref['subresource']}"
    about = None
    body = doc.get("requestObject") or {}
    involved = body.get("involvedObject") or body.get("regarding")
    if resource == "events" and isinstance(involved, Mapping):
        about = (str(involved.get("kind", "")), str(involved.get("name", "")))
    annotations = doc.get("annotations") or {}
    return Request(
        user=str((doc.get("user") or {}).get("username", "")),
        user_agent=str(doc.get("userAgent", "")),
        verb=str(doc.get("verb", "")),
        group=str(ref.get("apiGroup", "")),
        resource=resource,
        namespace=str(ref.get("namespace", "")),
        name=str(ref.get("name", "")),
        code=int((doc.get("responseStatus") or {}).get("code", 0)),
        reason=str(annotations.get("authorization.k8s.io/reason", "")) if doc.get("responseStatus") else "",
        about=about,
        uri=str(doc.get("requestURI", "")),
    )


class AuditLog:
    """The API server's audit log (one JSON event per line), read from byte offsets."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """A point in the log: what is recorded after it is `requests(since=mark)`."""
        if not self.path.exists():
            raise AssertionError(f"no audit log at {self.path}: start the control plane with audit=True")
        return self._complete_end(0)

    def _complete_end(self, since: int) -> int:
        with self.path.open("rb") as log:
            log.seek(since)
            data = log.read()
        return since + data.rfind(b"\n") + 1

    def requests(
        self,
        *,
        since: int = 0,
        user: str | None = None,
        namespace: str | None = None,
    ) -> list[Request]:
        """The completed requests recorded after `since`, of `user` and in `namespace` if given."""
        with self.path.open("rb") as log:
            log.seek(since)
            data = log.read()
        data = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        out = []
        for line in data.splitlines():
            doc = json.loads(line)
            if doc.get("stage") not in ("ResponseComplete", "Panic"):
                continue
            if user is not None and (doc.get("user") or {}).get("username") != user:
                continue
            request = parse_event(doc)
            if namespace is not None and request.namespace != namespace:
                continue
            out.append(request)
        return out

    def writes(self, user: str, *, since: int = 0, namespace: str | None = None) -> list[Request]:
        """The writes (create, update, patch, delete) `user` made after `since`, refused ones included."""
        return [r for r in self.requests(since=since, user=user, namespace=namespace) if r.is_write]

    def denied(self, user: str, *, since: int = 0) -> list[Request]:
        """The requests of `user` the API server refused with 401 or 403."""
        return [r for r in self.requests(since=since, user=user) if r.denied]


def per_certificate(writes: Iterable[Request], secrets: Mapping[str, str]) -> dict[str, list[Request]]:
    """The writes about each certificate (name -> its Secret's name): its Secret, the certificate and its
    status, the Events about it. Writes about anything else are under the key ``""``."""
    by_secret = {secret: cert for cert, secret in secrets.items()}
    out: dict[str, list[Request]] = {cert: [] for cert in secrets}
    out[""] = []
    for request in writes:
        cert = ""
        if request.about is not None:
            kind, name = request.about
            cert = name if kind == CERTIFICATE_KIND and name in secrets else ""
        elif request.resource.split("/")[0] == "mtlscertificates" and request.name in secrets:
            cert = request.name
        elif request.resource == "secrets" and request.name in by_secret:
            cert = by_secret[request.name]
        out[cert].append(request)
    return out


def kinds(writes: Iterable[Request]) -> Counter[str]:
    """How many writes of each kind: "create secrets", "patch mtlscertificates/status", "create events"."""
    return Counter(f"{r.verb} {r.resource}" for r in writes)


def show(requests: Iterable[Request]) -> str:
    return "\n".join(str(r) for r in requests) or "(none)"


# --------------------------------------------------------------------------------------------------
# Client identities


@dataclass(frozen=True)
class ClientIdentity:
    """A user of the test control plane and a kubeconfig that logs in as it."""

    user: str
    kubeconfig: Path


def audited_identity(plane: ControlPlane, name: str, directory: Path) -> ClientIdentity:
    """A new user ``mtls-operator:<name>:<random>`` in ``system:masters`` and the audited group, with a
    kubeconfig (client certificate from the plane's CA) written in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    user = f"mtls-operator:{name}:{uuid.uuid4().hex[:6]}"
    pki = plane.run_dir / "pki"
    ca_pem = (pki / "ca.crt").read_bytes()
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, AUDITED_GROUP),
            x509.NameAttribute(NameOID.COMMON_NAME, user),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.kubeconfig"
    path.write_text(
        render_kubeconfig(
            server=plane.server,
            ca_pem=ca_pem,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            user=user,
        )
    )
    path.chmod(0o600)
    return ClientIdentity(user, path)
