"""A resync that finds nothing changed writes nothing: an operator resyncing every two seconds lists its
certificates, issuers and Secrets again and again, and across several resyncs the API server records not
one write from it (its audit log: the lists are there, the writes are not), and no object changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api_audit import kinds, per_certificate, show
from helpers import wait_for
from mtls_objects import GROUP, VERSION, create_certificate, create_issuer, self_signed, wait_issuer_ready
from operator_process import OperatorProcess

RESYNC = 2  # seconds
RESYNCS = 4  # observed
COUNT = 10


def _versions(cluster: Any, namespace: str) -> dict[str, str]:
    out = {
        f"secret/{s.metadata.name}": s.metadata.resource_version
        for s in cluster.core.list_namespaced_secret(namespace).items
    }
    for plural in ("mtlscertificates", "mtlsissuers"):
        for obj in cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]:
            out[f"{plural}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    return out


def test_resyncs_that_find_nothing_changed_write_nothing(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    audit = cluster.audit
    start = audit.mark()
    operator = OperatorProcess.audited(
        cluster, tmp_path / "op.log", "--namespace", ns, env={"MTLS_RESYNC_INTERVAL": str(RESYNC)}
    ).start()
    secrets = {f"c-{i}": f"c-{i}-tls" for i in range(COUNT)}
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        for name, secret in secrets.items():
            create_certificate(
                cluster,
                ns,
                name,
                {"secretName": secret, "issuerRef": {"name": "ca"}, "dnsNames": [f"{name}.example"]},
            )

        # Issued, as the API server saw it: every certificate's Event is in the audit log.
        def issued() -> bool:
            by_cert = per_certificate(operator.writes(since=start, namespace=ns), secrets)
            return all(kinds(by_cert[c])["create events"] == 1 for c in secrets)

        wait_for(issued, timeout=60, message="every certificate issued")
        before = _versions(cluster, ns)
        mark = audit.mark()

        def resync_lists() -> int:
            requests = audit.requests(since=mark, user=operator.user)
            return sum(1 for r in requests if r.verb == "list" and r.resource == "secrets")

        wait_for(
            lambda: resync_lists() >= RESYNCS,
            timeout=RESYNC * (RESYNCS + 3) + 10,
            message=f"{RESYNCS} resyncs (lists of Secrets) in the audit log",
        )
        writes = operator.writes(since=mark)
        assert writes == [], f"{len(writes)} writes across {resync_lists()} resyncs:\n{show(writes)}"
        assert _versions(cluster, ns) == before
        lists = [r for r in audit.requests(since=mark, user=operator.user) if r.verb == "list"]
        print(f"{resync_lists()} resyncs: {len(lists)} lists ({dict(kinds(lists))}), 0 writes")
    finally:
        operator.stop()
