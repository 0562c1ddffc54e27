"""Issue 10, finding 10 (bounded revocation lists), against the real API server: an issuer whose list is one
entry short of the budget (about 3,200 revoked certificates still valid, a ConfigMap of almost 1 MB the API
server accepts) still revokes, with the latency printed; the revocation after that is refused with a
RevocationsFull Warning event, and nothing already listed is lost. (Entries leaving after notAfter, and
10,000 revocations over time, are measured by tests/unit/test_revocation_bounds.py and
bench/bench_revocations.py.)"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from tests.helpers import Cluster, wait_for

from mtls_objects import (
    create_certificate,
    create_issuer,
    get,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from mtls_operator.pki.ca import CAKeyPair, load_ca
from mtls_operator.pki.crl import build_crl
from mtls_operator.policy.revocations import BUDGET_BYTES, Revoked, Stored, der_to_pem, dump_revoked_json
from operator_process import OperatorProcess

TIMEOUT = 60.0


def _size(ca: CAKeyPair, entries: list[Revoked], crl_number: int) -> int:
    listed = tuple(sorted(entries, key=lambda r: r.serial))
    der = build_crl(ca, [r.entry() for r in listed], datetime.now(UTC), timedelta(hours=24), crl_number)
    return Stored(revoked=listed, crl_number=crl_number, crl_der=der, crl_pem=der_to_pem(der)).size()


def _seeds(ca: CAKeyPair, first: Revoked, second: Revoked, crl_number: int) -> list[Revoked]:
    """Seed entries (certificates valid for 90 more days) such that the list has room for ``first`` and
    not for ``second`` after it, whatever the signature's length."""
    now = datetime.now(UTC).replace(microsecond=0)
    pool = [
        Revoked(
            secrets.randbits(159) | 1 << 158, now, "keyCompromise", f"seed-{i:05d}", now + timedelta(days=90)
        )
        for i in range(4000)
    ]
    low, high = 0, len(pool)
    while low < high:  # the most seeds that leave room for `first`, with a few bytes to spare
        mid = (low + high + 1) // 2
        if _size(ca, [*pool[:mid], first], crl_number) <= BUDGET_BYTES - 16:
            low = mid
        else:
            high = mid - 1
    assert _size(ca, [*pool[:low], first, second], crl_number) > BUDGET_BYTES + 16, "no room for the second"
    return pool[:low]


def _cm(cluster: Cluster, ns: str) -> Any:
    return cluster.core.read_namespaced_config_map("big-revocations", ns)


def _crl_serials(cm: Any) -> set[int]:
    crl = x509.load_der_x509_crl(base64.b64decode(cm.binary_data["ca.crl.der"]))
    return {r.serial_number for r in crl}


def _revoke(cluster: Cluster, ns: str, name: str) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "mtls_operator.cli.main", "revoke", name, "-n", ns,
         "--reason", "keyCompromise"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return time.monotonic()


def test_a_list_at_its_budget_still_revokes_then_refuses_and_loses_nothing(
    cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    operator = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", "--namespace", ns).start()
    try:
        create_issuer(cluster, ns, "big", {**self_signed("big"), "revocation": {}})
        wait_issuer_ready(cluster, ns, "big")
        leaves = {}
        for name in ("near-a", "near-b"):
            create_certificate(
                cluster,
                ns,
                name,
                {"secretName": f"{name}-tls", "issuerRef": {"name": "big"}, "dnsNames": [f"{name}.t"]},
            )
            wait_ready(cluster, ns, name, timeout=TIMEOUT)
            leaves[name] = x509.load_pem_x509_certificate(secret_data(cluster, ns, f"{name}-tls")["tls.crt"])
        ca = load_ca(secret_data(cluster, ns, "big-ca"), datetime.now(UTC))
        cm = wait_for(
            lambda: _cm(cluster, ns), timeout=TIMEOUT, message="the issuer's list", ignore=(Exception,)
        )
        number = int(cm.data["crlNumber"]) + 1
        now = datetime.now(UTC).replace(microsecond=0)
        a, b = leaves["near-a"], leaves["near-b"]
        # near-a as the operator may write it (with notAfter: the larger form), near-b without (the smaller).
        first = Revoked(a.serial_number, now, "keyCompromise", "near-a", a.not_valid_after_utc)
        second = Revoked(b.serial_number, now, "keyCompromise", "near-b")
        seeds = _seeds(ca, first, second, number)

        # An admin puts the seeds on the list (as years of revocations would have); a reconcile of the issuer
        # makes the operator read them and sign a CRL over them.
        cm.data["revoked.json"] = dump_revoked_json(seeds)
        cluster.core.replace_namespaced_config_map("big-revocations", ns, cm)
        cluster.custom.patch_namespaced_custom_object(
            "mtls.dev",
            "v1alpha1",
            ns,
            "mtlsissuers",
            "big",
            {"metadata": {"annotations": {"test/poke": "1"}}},
        )
        seeded = {s.serial for s in seeds}
        wait_for(
            lambda: seeded <= _crl_serials(_cm(cluster, ns)), timeout=TIMEOUT, message="the seeds signed"
        )
        full = _cm(cluster, ns)

        time.sleep(1.1)  # the revocation request must be later than the certificates' notBefore
        asked = _revoke(cluster, ns, "near-a")
        wait_for(
            lambda: a.serial_number in _crl_serials(_cm(cluster, ns)),
            timeout=TIMEOUT,
            interval=0.1,
            message="near-a",
        )
        latency = time.monotonic() - asked
        after_a = _cm(cluster, ns)
        size = sum(len(v.encode()) for v in after_a.data.values()) + sum(
            len(base64.b64decode(v)) for v in after_a.binary_data.values()
        )

        _revoke(cluster, ns, "near-b")

        def refused() -> list[Any]:
            events = cluster.core.list_namespaced_event(ns, field_selector="involvedObject.name=big").items
            return [e for e in events if e.reason == "RevocationsFull"]

        events = wait_for(refused, timeout=TIMEOUT, message="a RevocationsFull event")
        time.sleep(2)  # and nothing is written meanwhile
        after_b = _cm(cluster, ns)
        status_b = get(cluster, ns, "mtlscertificates", "near-b")["status"]
    finally:
        operator.stop()
        print(operator.tail(15))

    listed = json.loads(after_b.data["revoked.json"])
    print(
        f"\nlist at its budget: {len(seeds)} seeded entries, ConfigMap {size} bytes after one more "
        f"revocation (budget {BUDGET_BYTES}; the API server's limit 1048576); revoke latency at that size "
        f"(mtlsctl annotation to the serial in the stored CRL) {latency:.2f} s; the next one refused: "
        f"{events[0].message}"
    )
    assert len(full.data["revoked.json"]) > 500_000, "the seeded list is large"
    assert size <= BUDGET_BYTES
    assert after_b.metadata.resource_version == after_a.metadata.resource_version, "nothing written after"
    assert len(listed) == len(seeds) + 1 and b.serial_number not in _crl_serials(after_b)
    assert seeded | {a.serial_number} <= _crl_serials(after_b), "nothing already listed was lost"
    assert events[0].type == "Warning" and "cannot be revoked yet" in events[0].message
    assert status_b["serialNumber"] == format(b.serial_number, "x"), "near-b is not replaced as if revoked"
