"""An operator that was down when a certificate's renewal time came, and when another one expired: once
back, it renews the first (RenewalDue) and re-issues the second (Expired) promptly, from what the
Secrets say, at the price of one issuance each (read from the API server's audit log)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from api_audit import REISSUE_WRITES, kinds, per_certificate, show
from helpers import wait_for
from mtls_objects import (
    condition,
    create_certificate,
    create_issuer,
    get,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from operator_process import OperatorProcess
from tls_checks import key_matches_certificate

PROMPTLY = 20.0  # seconds from the restarted operator's start to both Secrets renewed


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_an_operator_down_across_a_renewal_time_and_an_expiry_catches_up_promptly(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    first = OperatorProcess.audited(cluster, tmp_path / "op1.log", "--namespace", ns).start()
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        # Renewal due 30 s after issuance, expiry at 2 min; the other expires after 1 min.
        specs = {
            "renews": {"duration": "2m", "renewBefore": "90s"},
            "expires": {"duration": "1m", "renewBefore": "5s"},
        }
        for name, timing in specs.items():
            create_certificate(
                cluster,
                ns,
                name,
                {"secretName": f"{name}-tls", "issuerRef": {"name": "ca"}, "commonName": name, **timing},
            )
        before = {name: wait_ready(cluster, ns, name)["status"] for name in specs}
    finally:
        first.stop()
    stopped = datetime.now(UTC)
    assert stopped < _time(before["renews"]["renewalTime"]), "the operator stopped before the renewal time"

    # Down until the short one has expired (and so the other's renewal time has passed).
    expired_at = _time(before["expires"]["notAfter"])
    wait_for(
        lambda: datetime.now(UTC) > expired_at,
        timeout=(expired_at - datetime.now(UTC)).total_seconds() + 10,
        interval=0.5,
        message="the short certificate's expiry",
    )
    now = datetime.now(UTC)
    assert _time(before["renews"]["renewalTime"]) < now < _time(before["renews"]["notAfter"])
    for name in specs:  # nobody renewed anything meanwhile
        assert get(cluster, ns, "mtlscertificates", name)["status"]["revision"] == 1

    mark = cluster.audit.mark()
    second = OperatorProcess.audited(cluster, tmp_path / "op2.log", "--namespace", ns).start()
    started = time.monotonic()
    try:

        def caught_up() -> dict[str, dict[str, Any]] | None:
            objs = {name: get(cluster, ns, "mtlscertificates", name) for name in specs}
            done = all(
                o["status"].get("revision") == 2 and (condition(o) or {}).get("status") == "True"
                for o in objs.values()
            )
            return objs if done else None

        objs = wait_for(caught_up, timeout=PROMPTLY, message="both certificates renewed after the restart")
        took = time.monotonic() - started
        print(f"caught up {took:.1f} s after the restart ({(now - stopped).total_seconds():.0f} s down)")
        reasons = {name: (condition(obj, "Issuing") or {}).get("reason") for name, obj in objs.items()}
        assert reasons == {"renews": "RenewalDue", "expires": "Expired"}, reasons
        for name in specs:
            data = secret_data(cluster, ns, f"{name}-tls")
            assert key_matches_certificate(data["tls.crt"], data["tls.key"]), name
            assert _time(objs[name]["status"]["notAfter"]) > datetime.now(UTC), name

        def one_issuance_each() -> dict[str, list[Any]] | None:
            by_cert = per_certificate(second.writes(since=mark), {n: f"{n}-tls" for n in specs})
            return by_cert if all(kinds(by_cert[n])["create events"] for n in specs) else None

        by_cert = wait_for(one_issuance_each, timeout=10, message="both re-issues' Events in the audit log")
        for name in specs:
            assert kinds(by_cert[name]) == REISSUE_WRITES, show(by_cert[name])
        assert by_cert[""] == [], show(by_cert[""])  # the issuer's CA was valid: nothing written for it
    finally:
        second.stop()
