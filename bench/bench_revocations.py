"""Revocation lists at 10,000 revocations: ConfigMap size, CRL signing time and revoke latency.

Unit level: controllers.revocation.Revocations against an in-memory API server (the resourceVersion-guarded
fake of tests/unit/test_revocation_store.py) with an injected clock, and a real ECDSA P-256 CA signing
every CRL. Two scenarios:

1. over time: 10,000 revocations at ``--per-day`` a day of certificates whose notAfter lies up to
   ``--lifetime-days`` ahead (uniformly). Entries leave one CRL validity (24 h) after their notAfter, so the
   list settles near per-day * (lifetime/2 + 1) entries. Reports entries and ConfigMap bytes every 1,000
   revocations, revoke latency (p50/p99/max) and the CRL signing time at the end.
2. all still valid: revocations of certificates that stay valid, until the 1,000,000-byte budget refuses
   one (RevocationsFull). Reports the entry count and ConfigMap bytes at that point, and (pki level, as if
   it fit) the CRL signing time and ConfigMap bytes for 10,000 entries.

Writes bench/results/revocations.json and prints the figures.

    python bench/bench_revocations.py [--revocations 10000] [--per-day 50] [--lifetime-days 90]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.unit.pki_factory import ECDSA_P256, self_signed_ca  # noqa: E402
from tests.unit.test_revocation_store import FakeApi  # noqa: E402

from mtls_operator.controllers.revocation import Revocations  # noqa: E402
from mtls_operator.k8s.api import ApiClient  # noqa: E402
from mtls_operator.pki.crl import build_crl  # noqa: E402
from mtls_operator.policy.revocations import (  # noqa: E402
    BUDGET_BYTES,
    Revoked,
    Stored,
    der_to_pem,
    stored_from_config_map,
)

RESULTS = Path(__file__).resolve().parent / "results" / "revocations.json"
NS, ISSUER = "team-a", "mesh-ca"
CM = f"/api/v1/namespaces/{NS}/configmaps/{ISSUER}-revocations"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CA = self_signed_ca(ECDSA_P256, days=3650)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _serial() -> str:
    return format(secrets.randbits(159) | 1 << 158, "x")  # 20 bytes, as the operator's serials


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def _over_time(count: int, per_day: float, lifetime: timedelta) -> dict[str, Any]:
    api, clock = FakeApi(), Clock()
    store = Revocations(cast(ApiClient, api), clock=clock, events=False)
    await store.sync_issuer(NS, ISSUER, {"revocation": {}}, CA)
    latencies: list[float] = []
    samples = []
    for i in range(count):
        clock.now = T0 + timedelta(days=i / per_day)
        not_after = clock.now + lifetime * ((i * 7919) % 1000 + 1) / 1000
        started = time.perf_counter()
        done = await store.revoke(
            NS, ISSUER, _serial(), "cessationOfOperation", f"app-{i:05d}", not_after=not_after
        )
        latencies.append(time.perf_counter() - started)
        assert done, store.problem(NS, ISSUER)
        if (i + 1) % 1000 == 0:
            stored = stored_from_config_map(api.objects[CM])[0]
            samples.append({"revocations": i + 1, "entries": len(stored.revoked), "bytes": stored.size()})
            print(
                f"  {i + 1:6d} revocations: {len(stored.revoked):5d} entries, {stored.size():8d} bytes",
                flush=True,
            )
    stored = stored_from_config_map(api.objects[CM])[0]
    started = time.perf_counter()
    build_crl(CA, [r.entry() for r in stored.revoked], clock.now, timedelta(hours=24), stored.crl_number + 1)
    signing = time.perf_counter() - started
    return {
        "revocations": count,
        "per_day": per_day,
        "lifetime_days": lifetime.total_seconds() / 86400,
        "samples": samples,
        "final_entries": len(stored.revoked),
        "final_bytes": stored.size(),
        "revoke_ms": {"p50": _ms(latencies, 0.5), "p99": _ms(latencies, 0.99), "max": max(latencies) * 1000},
        "crl_signing_ms_at_end": signing * 1000,
    }


async def _until_full(lifetime: timedelta) -> dict[str, Any]:
    api, clock = FakeApi(), Clock()
    store = Revocations(cast(ApiClient, api), clock=clock, events=False)
    await store.sync_issuer(NS, ISSUER, {"revocation": {}}, CA)
    latencies: list[float] = []
    refused_at = None
    for i in range(20_000):
        started = time.perf_counter()
        done = await store.revoke(
            NS, ISSUER, _serial(), "keyCompromise", f"app-{i:05d}", not_after=T0 + lifetime
        )
        latencies.append(time.perf_counter() - started)
        if not done:
            refused_at = i
            break
    stored = stored_from_config_map(api.objects[CM])[0]
    problem = store.problem(NS, ISSUER)
    return {
        "entries_when_full": len(stored.revoked),
        "bytes_when_full": stored.size(),
        "refused_revocation": refused_at,
        "problem": [str(problem[0]), problem[1]] if problem else None,
        "revoke_ms_last_100": {
            "p50": statistics.median(latencies[-100:]) * 1000,
            "max": max(latencies[-100:]) * 1000,
        },
    }


def _ten_thousand_at_once() -> dict[str, Any]:
    entries = tuple(
        Revoked(int(_serial(), 16), T0, "keyCompromise", f"app-{i:05d}-tls", T0 + timedelta(days=90))
        for i in range(10_000)
    )
    started = time.perf_counter()
    der = build_crl(CA, [e.entry() for e in entries], T0, timedelta(hours=24), 2)
    signing = time.perf_counter() - started
    size = Stored(revoked=entries, crl_number=2, crl_der=der, crl_pem=der_to_pem(der)).size()
    return {
        "entries": 10_000,
        "crl_signing_ms": signing * 1000,
        "crl_der_bytes": len(der),
        "config_map_bytes": size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--revocations", type=int, default=10_000)
    parser.add_argument("--per-day", type=float, default=50.0)
    parser.add_argument("--lifetime-days", type=float, default=90.0)
    args = parser.parse_args()
    lifetime = timedelta(days=args.lifetime_days)
    print(
        f"1. {args.revocations} revocations at {args.per_day:g}/day, "
        f"notAfter up to {args.lifetime_days:g} days ahead",
        flush=True,
    )
    over_time = asyncio.run(_over_time(args.revocations, args.per_day, lifetime))
    print(
        f"   settled at {over_time['final_entries']} entries, {over_time['final_bytes']} bytes "
        f"(budget {BUDGET_BYTES}); revoke p50 {over_time['revoke_ms']['p50']:.1f} ms, "
        f"p99 {over_time['revoke_ms']['p99']:.1f} ms, max {over_time['revoke_ms']['max']:.1f} ms; "
        f"CRL signing {over_time['crl_signing_ms_at_end']:.1f} ms"
    )
    print("2. revocations of certificates that all stay valid, until the budget refuses one", flush=True)
    full = asyncio.run(_until_full(timedelta(days=3650)))
    print(
        f"   refused revocation #{full['refused_revocation']} at {full['entries_when_full']} entries, "
        f"{full['bytes_when_full']} bytes: {full['problem'][0] if full['problem'] else None}; "
        f"revoke p50 of the last 100 {full['revoke_ms_last_100']['p50']:.1f} ms"
    )
    at_once = _ten_thousand_at_once()
    print(
        f"   10,000 entries (pki only, as if they fit): CRL signing {at_once['crl_signing_ms']:.0f} ms, CRL "
        f"{at_once['crl_der_bytes']} bytes DER, ConfigMap {at_once['config_map_bytes']} bytes"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"over_time": over_time, "until_full": full, "at_once": at_once}, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
