"""An upgrade from an operator that wrote Secrets without ``mtls.dev/secret-role`` (the Secret watch selects
on that label) and CA Secrets without the issuer's UID: the new operator labels each of its certificates'
Secrets and its CA Secret once, keeping certificates and keys as they were (no re-issue, the same CA),
and from then on sees a deletion through its watch, long before the resync would."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from helpers import wait_for
from mtls_objects import create_certificate, create_issuer, self_signed, wait_issuer_ready, wait_ready
from mtls_operator.api.constants import ANN_ISSUER_UID, LABEL_SECRET_ROLE
from operator_process import OperatorProcess

COUNT = 3


def test_secrets_of_an_older_operator_are_labelled_not_reissued(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    names = [f"legacy-{i}" for i in range(COUNT)]
    first = OperatorProcess(crds.kubeconfig, tmp_path / "op1.log", "--namespace", ns).start()
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        for name in names:
            create_certificate(
                cluster,
                ns,
                name,
                {"secretName": f"{name}-tls", "dnsNames": [f"{name}.svc"], "issuerRef": {"name": "ca"}},
            )
        for name in names:
            wait_ready(cluster, ns, name)
    finally:
        first.stop()
    # What an older operator left: the same Secrets without the role label.
    before = {}
    for name in names:
        secret = cluster.core.read_namespaced_secret(f"{name}-tls", ns)
        del secret.metadata.labels[LABEL_SECRET_ROLE]
        replaced = cluster.core.replace_namespaced_secret(f"{name}-tls", ns, secret)
        assert LABEL_SECRET_ROLE not in (replaced.metadata.labels or {})
        before[name] = replaced.data
    ca_secret = cluster.core.read_namespaced_secret("ca-ca", ns)
    del ca_secret.metadata.labels[LABEL_SECRET_ROLE]
    del ca_secret.metadata.annotations[ANN_ISSUER_UID]
    ca_data = cluster.core.replace_namespaced_secret("ca-ca", ns, ca_secret).data

    # Resync every hour: only the label-selected watch can notice the deletion below in time.
    second = OperatorProcess(
        crds.kubeconfig, tmp_path / "op2.log", "--namespace", ns, env={"MTLS_RESYNC_INTERVAL": "3600"}
    ).start()
    try:

        def labelled() -> bool:
            secrets = [cluster.core.read_namespaced_secret(f"{n}-tls", ns) for n in names]
            return all((s.metadata.labels or {}).get(LABEL_SECRET_ROLE) == "certificate" for s in secrets)

        wait_for(labelled, timeout=60, message="every legacy Secret labelled")

        def ca_adopted() -> bool:
            meta = cluster.core.read_namespaced_secret("ca-ca", ns).metadata
            return (meta.labels or {}).get(LABEL_SECRET_ROLE) == "ca" and ANN_ISSUER_UID in (
                meta.annotations or {}
            )

        wait_for(ca_adopted, timeout=60, message="the legacy CA Secret labelled and given the issuer's UID")
        assert cluster.core.read_namespaced_secret("ca-ca", ns).data == ca_data, "the same CA"
        for name in names:
            assert cluster.core.read_namespaced_secret(f"{name}-tls", ns).data == before[name], (
                "not re-issued"
            )

        old_cert = base64.b64decode(before[names[0]]["tls.crt"])
        cluster.core.delete_namespaced_secret(f"{names[0]}-tls", ns)
        wait_for(
            lambda: _tls_crt(cluster, ns, f"{names[0]}-tls") not in (None, old_cert),
            timeout=30,
            message="the deleted Secret re-issued through the watch",
        )
    finally:
        second.stop()


def _tls_crt(cluster: Any, ns: str, name: str) -> bytes | None:
    from kubernetes.client.rest import ApiException

    try:
        secret = cluster.core.read_namespaced_secret(name, ns)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return base64.b64decode((secret.data or {}).get("tls.crt", ""))
