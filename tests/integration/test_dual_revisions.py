"""A peer never sees a mixed pair: every revision of a dual certificate's Secret, watched from before it
existed through its first issuance, a forced renewal (`mtlsctl renew`), an automatic renewal and a CA
rotation of the dual issuer (`mtlsctl rotate-ca`), holds one consistent set.

A watch on the namespace's Secrets, started at the resourceVersion of a list taken before anything was
created, records every ADDED and MODIFIED object: the certificate's Secret and the issuer's CA Secrets
(``<name>-ca`` and the rotation's ``<name>-ca-next``). For each revision of the certificate's Secret:

* tls.crt/tls.key (ML-DSA-65) and tls-ecdsa.crt/tls-ecdsa.key (ECDSA P-256) are all there;
* each key is the private key of its certificate;
* the two certificates name the same identity (subject, SANs, usages) and have the same notBefore and
  notAfter (within a second);
* they were issued by the ML-DSA CA and the ECDSA CA of one and the same dual CA (one revision of one of
  the issuer's CA Secrets), and ca.crt holds both of that CA's roots;
* and from one revision to the next the two certificates change together or not at all.

The figures (revisions seen, certificate pairs, CA generations) are printed and written to
``dual-revisions.json`` in the test's tmp dir.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from helpers import wait_for
from mtls_objects import create_certificate, create_issuer, get, wait_issuer_ready, wait_ready
from operator_process import OperatorProcess

pytestmark = pytest.mark.slow

ISSUER, CERT, SECRET = "dualw", "api", "api-tls"
CA_SECRETS = (f"{ISSUER}-ca", f"{ISSUER}-ca-next")


def fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class Recorder:
    """Every ADDED/MODIFIED Secret the watch delivers, in order."""

    cluster: Any
    ns: str
    start_rv: str
    leaf: list[tuple[str, str, dict[str, bytes]]] = field(default_factory=list)  # (event, rv, data)
    ca: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # (name, data)
    stop: threading.Event = field(default_factory=threading.Event)
    error: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        from kubernetes import watch

        rv = self.start_rv
        try:
            while not self.stop.is_set():
                w = watch.Watch()
                for event in w.stream(
                    self.cluster.core.list_namespaced_secret,
                    self.ns,
                    resource_version=rv,
                    timeout_seconds=5,
                    allow_watch_bookmarks=False,
                ):
                    obj = event["object"]
                    rv = obj.metadata.resource_version
                    if event["type"] not in ("ADDED", "MODIFIED"):
                        continue
                    data = {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}
                    if obj.metadata.name == SECRET:
                        self.leaf.append((event["type"], rv, data))
                    elif obj.metadata.name in CA_SECRETS:
                        self.ca.append((obj.metadata.name, data))
                    if self.stop.is_set():
                        w.stop()
        except BaseException as exc:  # surfaced by the test
            self.error.append(exc)


@pytest.fixture
def recorded(crds: Any, tmp_path: Path) -> Iterator[tuple[Recorder, OperatorProcess, str]]:
    from kubernetes import client

    ns = f"own-dualw-{uuid.uuid4().hex[:6]}"
    crds.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    start_rv = crds.core.list_namespaced_secret(ns).metadata.resource_version
    recorder = Recorder(crds, ns, start_rv)
    thread = threading.Thread(target=recorder.run, daemon=True)
    thread.start()
    env = {"MTLS_ROLLOUT_COALESCE": "1", "MTLS_ROLLOUT_MIN_INTERVAL": "1", "MTLS_ROLLOUT_TIMEOUT": "2"}
    op = OperatorProcess(crds.kubeconfig, tmp_path / "operator.log", "--namespace", ns, env=env).start()
    try:
        yield recorder, op, ns
    finally:
        recorder.stop.set()
        thread.join(timeout=15)
        op.stop()
        crds.core.delete_namespace(ns)


def mtlsctl(cluster: Any, ns: str, *args: str) -> str:
    argv = [
        sys.executable,
        "-m",
        "mtls_operator.cli.main",
        *args,
        "-n",
        ns,
        "--kubeconfig",
        str(cluster.kubeconfig),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def key_matches(key_pem: bytes, cert: x509.Certificate) -> bool:
    spki = PublicFormat.SubjectPublicKeyInfo
    key = load_pem_private_key(key_pem, None)
    return bool(
        key.public_key().public_bytes(Encoding.DER, spki)
        == cert.public_key().public_bytes(Encoding.DER, spki)
    )


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def identity(cert: x509.Certificate) -> tuple[Any, ...]:
    ext = cert.extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    return (cert.subject, sorted(map(str, san)), sorted(o.dotted_string for o in eku))


def test_no_revision_of_a_dual_secret_holds_a_mixed_pair(
    recorded: tuple[Recorder, OperatorProcess, str], cluster: Any, tmp_path: Path
) -> None:
    recorder, op, ns = recorded
    create_issuer(
        cluster,
        ns,
        ISSUER,
        {
            "selfSigned": {
                "secretName": f"{ISSUER}-ca",
                "commonName": "dualw root",
                "privateKey": {"algorithm": "MLDSA", "size": 65},
                "additionalPrivateKeys": [{"algorithm": "ECDSA", "size": 256}],
            }
        },
    )
    wait_issuer_ready(cluster, ns, ISSUER)
    create_certificate(
        cluster,
        ns,
        CERT,
        {
            "secretName": SECRET,
            "issuerRef": {"name": ISSUER},
            "dnsNames": ["api.example.com"],
            "ipAddresses": ["127.0.0.1"],
            "duration": "90s",
            "renewBefore": "25s",
            "privateKey": {"algorithm": "MLDSA", "size": 65},
            "additionalPrivateKeys": [{"algorithm": "ECDSA", "size": 256}],
        },
    )
    wait_ready(cluster, ns, CERT, timeout=90)

    def serials() -> set[str]:
        return {fp(x509.load_pem_x509_certificates(d["tls.crt"])[0]) for _, _, d in recorder.leaf}

    # A forced renewal, as a user asks for one.
    issued_before = len(serials())
    mtlsctl(cluster, ns, "renew", CERT)
    wait_for(lambda: len(serials()) > issued_before, timeout=60, message="the forced renewal")

    # A CA rotation of the dual issuer, to its end (both CAs replaced, the old roots gone from ca.crt).
    first = wait_for(
        lambda: next((d for n, d in recorder.ca if n == CA_SECRETS[0]), None), timeout=30, message="the CA"
    )
    first_ca = x509.load_pem_x509_certificate(first["tls.crt"])
    mtlsctl(cluster, ns, "rotate-ca", ISSUER)
    phases: list[str] = []

    def rotated() -> bool:
        phase = ((get(cluster, ns, "mtlsissuers", ISSUER).get("status") or {}).get("rotation") or {}).get(
            "phase"
        )
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        if not recorder.leaf:
            return False
        roots = x509.load_pem_x509_certificates(recorder.leaf[-1][2]["ca.crt"])
        return phase == "Stable" and len(phases) > 1 and fp(first_ca) not in {fp(r) for r in roots}

    wait_for(rotated, timeout=420, interval=1, message=f"the CA rotation to finish (phases {phases})")

    def caught_up() -> bool:
        latest = cluster.core.read_namespaced_secret(SECRET, ns).metadata.resource_version
        return bool(recorder.leaf) and recorder.leaf[-1][1] == latest

    wait_for(caught_up, timeout=30, message="the watch caught up")
    recorder.stop.set()
    assert not recorder.error, recorder.error

    # The dual CAs seen: each revision of a CA Secret pairs one ML-DSA CA with one ECDSA CA.
    pairs: dict[str, str] = {}  # ML-DSA CA fingerprint -> ECDSA CA fingerprint
    cas: dict[str, x509.Certificate] = {}
    for _, data in recorder.ca:
        main = x509.load_pem_x509_certificate(data["tls.crt"])
        extra = x509.load_pem_x509_certificate(data["tls-ecdsa.crt"])
        assert pairs.setdefault(fp(main), fp(extra)) == fp(extra), "a CA Secret revision paired other CAs"
        cas[fp(main)], cas[fp(extra)] = main, extra

    revisions = recorder.leaf
    assert revisions[0][0] == "ADDED", "the watch saw the Secret from its creation on"
    previous: tuple[str, str] | None = None
    pair_changes = trust_only = 0
    generations: set[str] = set()
    for event, rv, data in revisions:
        where = f"revision rv={rv} ({event})"
        assert {"tls.crt", "tls.key", "tls-ecdsa.crt", "tls-ecdsa.key", "ca.crt"} <= set(data), where
        main = x509.load_pem_x509_certificates(data["tls.crt"])[0]
        extra = x509.load_pem_x509_certificates(data["tls-ecdsa.crt"])[0]
        assert key_matches(data["tls.key"], main), where
        assert key_matches(data["tls-ecdsa.key"], extra), where
        assert identity(main) == identity(extra), where
        assert abs((main.not_valid_before_utc - extra.not_valid_before_utc).total_seconds()) <= 1, where
        assert abs((main.not_valid_after_utc - extra.not_valid_after_utc).total_seconds()) <= 1, where
        signer = next((f for f, ca in cas.items() if f in pairs and issued_by(main, ca)), None)
        assert signer is not None, f"{where}: tls.crt is not from any of the issuer's ML-DSA CAs"
        assert issued_by(extra, cas[pairs[signer]]), f"{where}: tls-ecdsa.crt is not from the same dual CA"
        roots = {fp(r) for r in x509.load_pem_x509_certificates(data["ca.crt"])}
        assert {signer, pairs[signer]} <= roots, f"{where}: ca.crt lacks a root of its own dual CA"
        generations.add(signer)
        current = (fp(main), fp(extra))
        if previous is not None:
            changed = (current[0] != previous[0], current[1] != previous[1])
            assert changed in ((True, True), (False, False)), (
                f"{where}: one certificate changed without the other"
            )
            pair_changes += changed[0]
            trust_only += not changed[0]
        previous = current

    assert len(pairs) >= 2 and len(generations) >= 2, "the rotation replaced both CAs and the leaves moved"
    # The overlap carried both roots of both dual CAs (four) in ca.crt, then only the new ones.
    widest = max(len(x509.load_pem_x509_certificates(d["ca.crt"])) for _, _, d in revisions)
    assert widest == 4, f"ca.crt never held the old and the new root of both algorithms ({widest})"
    assert len(x509.load_pem_x509_certificates(revisions[-1][2]["ca.crt"])) == 2
    figures = {
        "revisions": len(revisions),
        "certificatePairs": pair_changes + 1,
        "trustOnlyRevisions": trust_only,
        "dualCAs": len(pairs),
        "signedByCAGenerations": len(generations),
        "mostRootsInCaCrt": widest,
        "phases": phases,
        "consistent": True,
    }
    (tmp_path / "dual-revisions.json").write_text(json.dumps(figures, indent=2))
    print(f"\ndual Secret revisions: {json.dumps(figures)}")
    assert "PRIVATE KEY" not in op.log_path.read_text()
