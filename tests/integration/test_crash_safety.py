"""Crash safety and API economy with a real operator process that is SIGKILLed and restarted.

These tests run their own operator on a namespace the shared one does not watch (it watches `t-*`), logged
in as a user of its own: its writes are read from the API server's audit log, not from what it says.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from api_audit import ISSUANCE_WRITES, kinds, per_certificate, show
from helpers import free_port, wait_for
from mtls_objects import condition, create_certificate, create_issuer, self_signed, wait_issuer_ready
from operator_process import OperatorProcess
from secret_recorder import SecretRecorder

BURST = 200


def _ready_count(cluster: Any, namespace: str) -> int:
    items = cluster.custom.list_namespaced_custom_object(
        "mtls.dev", "v1alpha1", namespace, "mtlscertificates"
    )
    return sum(1 for obj in items["items"] if (condition(obj) or {}).get("status") == "True")


def _secret_creations(operator: OperatorProcess, namespace: str, since: int) -> int:
    writes = operator.writes(since=since, namespace=namespace)
    return sum(1 for r in writes if r.verb == "create" and r.resource == "secrets" and r.code == 201)


def test_sigkill_during_a_burst_loses_nothing(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    start = cluster.audit.mark()
    recorder = SecretRecorder(cluster, ns)
    # Two workers keep the burst long enough to be cut in the middle on a fast machine.
    first = OperatorProcess.audited(
        cluster, tmp_path / "op1.log", "--namespace", ns, env={"MTLS_WORKERS": "2"}
    ).start()
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca", "MLDSA", 65))
        wait_issuer_ready(cluster, ns, "ca")
        for i in range(BURST):
            create_certificate(
                cluster,
                ns,
                f"svc-{i}",
                {
                    "secretName": f"svc-{i}-tls",
                    "issuerRef": {"name": "ca"},
                    "commonName": f"svc-{i}",
                    "privateKey": {"algorithm": "MLDSA", "size": 65},
                },
            )
        # 20 Secrets created (the CA's and 19 leaves'), as the API server recorded them.
        wait_for(
            lambda: _secret_creations(first, ns, start) >= 20,
            timeout=60,
            interval=0.05,
            message="20 Secrets created by the operator",
        )
        first.kill()
        killed_at = _ready_count(cluster, ns)
    finally:
        first.kill()
    assert killed_at < BURST, "the kill came mid-burst"

    second = OperatorProcess.audited(cluster, tmp_path / "op2.log", "--namespace", ns).start()
    try:
        wait_for(lambda: _ready_count(cluster, ns) == BURST, timeout=120, message=f"all {BURST} Ready")
        secrets = cluster.core.list_namespaced_secret(ns).items
        names = {s.metadata.name for s in secrets}
        assert names == {"ca-ca"} | {f"svc-{i}-tls" for i in range(BURST)}, "nothing left behind"
        for secret in secrets:
            if secret.metadata.name == "ca-ca":
                continue
            data = {k: base64.b64decode(v) for k, v in secret.data.items()}
            leaf = x509.load_pem_x509_certificate(data["tls.crt"])
            key = serialization.load_pem_private_key(data["tls.key"], None)
            fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            assert key.public_key().public_bytes(*fmt) == leaf.public_key().public_bytes(*fmt)
        # Every version the watch saw: one key per revision, and each key the key of its certificate.
        wait_for(
            lambda: (
                {(v.name, v.revision) for v in recorder.versions}
                >= {(f"svc-{i}-tls", "1") for i in range(BURST)}
            ),
            timeout=30,
            message="the recorder saw every leaf Secret",
        )
        recorder.finish()
        assert not recorder.doubles(), (
            f"two keys published for one revision: {sorted(recorder.doubles())[:5]}"
        )
        assert not recorder.mismatched(), (
            f"a key published with another's certificate: {recorder.mismatched()[:5]}"
        )
        print(f"recorded {len(recorder.versions)} Secret versions; killed with {killed_at}/{BURST} Ready")
    finally:
        second.stop()
        recorder.stop()


def test_restart_writes_nothing_when_all_is_valid(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    audit = cluster.audit
    start = audit.mark()
    # Two workers keep the burst long enough to be cut in the middle on a fast machine.
    first = OperatorProcess.audited(
        cluster, tmp_path / "op1.log", "--namespace", ns, env={"MTLS_WORKERS": "2"}
    ).start()
    count = 30
    secrets = {f"c-{i}": f"c-{i}-tls" for i in range(count)}
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        for name, secret in secrets.items():
            create_certificate(
                cluster,
                ns,
                name,
                {"secretName": secret, "issuerRef": {"name": "ca"}, "dnsNames": [f"{name}.example.com"]},
            )
        wait_for(lambda: _ready_count(cluster, ns) == count, timeout=60, message="all Ready")

        # Issuance itself, from the API server's audit log: per certificate its Secret's creation, one
        # status patch and one Event (at most three writes); the rest are the issuer's (at most three).
        def all_issued() -> dict[str, list[Any]] | None:
            by_cert = per_certificate(first.writes(since=start), secrets)
            return by_cert if all(kinds(by_cert[c])["create events"] for c in secrets) else None

        by_cert = wait_for(all_issued, timeout=30, message="every certificate's Event in the audit log")
        for name in secrets:
            assert kinds(by_cert[name]) == ISSUANCE_WRITES, f"{name}:\n{show(by_cert[name])}"
        assert len(by_cert[""]) <= 3, f"the issuer's writes:\n{show(by_cert[''])}"
        everything = first.writes(since=start)
        assert {r.namespace for r in everything} == {ns}, show(everything)
        total = sum(len(w) for w in by_cert.values())
        assert total <= 3 * count + 3, f"{total} writes for {count} issuances"
        print(f"writes for {count} issuances: {total} ({dict(kinds(everything))})")
    finally:
        first.stop()

    def versions() -> dict[str, str]:
        out = {}
        for s in cluster.core.list_namespaced_secret(ns).items:
            out[f"secret/{s.metadata.name}"] = s.metadata.resource_version
        items = cluster.custom.list_namespaced_custom_object("mtls.dev", "v1alpha1", ns, "mtlscertificates")
        for obj in items["items"]:
            out[f"cert/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
        issuers = cluster.custom.list_namespaced_custom_object("mtls.dev", "v1alpha1", ns, "mtlsissuers")
        for obj in issuers["items"]:
            out[f"issuer/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
        return out

    before = versions()
    events_before = len(cluster.core.list_namespaced_event(ns).items)
    mark = audit.mark()
    second = OperatorProcess.audited(
        cluster, tmp_path / "op2.log", "--namespace", ns, "--metrics-port", str(free_port())
    ).start()
    try:
        # The restarted operator has judged every certificate (its Ready series), then stays quiet.
        wait_for(
            lambda: second.ready_certificates(ns) == count,
            timeout=60,
            message="the restarted operator judged every certificate Ready",
        )
        quiet_until = time.monotonic() + 3
        while time.monotonic() < quiet_until:
            assert second.writes(since=mark) == [], show(second.writes(since=mark))
            time.sleep(0.5)
        # The audit log did see this operator: it listed the Secrets it then left alone.
        reads = audit.requests(since=mark, user=second.user)
        assert any(r.resource == "secrets" and r.verb in ("list", "watch") for r in reads), show(reads)
        assert second.writes(since=mark) == [], "a restart with valid Secrets makes no API writes"
        assert versions() == before
        assert len(cluster.core.list_namespaced_event(ns).items) == events_before
    finally:
        second.stop()


def test_a_changed_secret_is_judged_from_the_watch_event_without_a_read(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    """Someone strips ``ca.crt`` from three leaf Secrets: the operator re-issues each (CABundleMismatch),
    judging the Secret as the watch event delivered it: one guarded replace per Secret and no GET (the
    API server's audit log). Before, every changed Secret was read again before it was judged."""
    ns = own_namespace
    audit = cluster.audit
    op = OperatorProcess.audited(cluster, tmp_path / "op.log", "--namespace", ns).start()
    secrets = {f"d-{i}": f"d-{i}-tls" for i in range(3)}
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        for name, secret in secrets.items():
            create_certificate(
                cluster, ns, name, {"secretName": secret, "issuerRef": {"name": "ca"}, "commonName": name}
            )
        wait_for(lambda: _ready_count(cluster, ns) == len(secrets), timeout=60, message="all Ready")

        mark = audit.mark()
        for secret in secrets.values():
            cluster.core.patch_namespaced_secret(secret, ns, [{"op": "remove", "path": "/data/ca.crt"}])

        def restored() -> bool:
            return all("ca.crt" in cluster.core.read_namespaced_secret(s, ns).data for s in secrets.values())

        wait_for(restored, timeout=30, message="every Secret re-issued with its ca.crt")
        on_secrets = [r for r in audit.requests(since=mark, user=op.user) if r.resource == "secrets"]
        by_verb = {(r.verb, r.name) for r in on_secrets if r.name in secrets.values()}
        assert by_verb == {("update", s) for s in secrets.values()}, show(on_secrets)
        assert len([r for r in on_secrets if r.verb == "update"]) == len(secrets), show(on_secrets)
    finally:
        op.stop()
