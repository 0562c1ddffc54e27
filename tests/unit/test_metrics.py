"""The Metrics registry: series appear and disappear with their objects, and the fast exposition agrees
with prometheus_client's own."""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mtls_operator.observability.metrics import Metrics
from mtls_operator.observability.server import MetricsServer

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, metric: str, /, **labels: str) -> float | None:
    return samples(metrics.render()).get((metric, tuple(sorted(labels.items()))))


def observe(metrics: Metrics, name: str = "web", *, ready: bool = True, reason: str = "UpToDate") -> None:
    metrics.observe_certificate(
        "team-a",
        name,
        "mesh-ca",
        not_after=NOW + timedelta(days=90),
        renewal_time=NOW + timedelta(days=60),
        ready=ready,
        reason=reason,
    )


def test_certificate_series_carry_the_secret_dates_and_ready_condition() -> None:
    m = Metrics()
    observe(m)
    assert (
        value(
            m,
            "mtls_certificate_expiration_timestamp_seconds",
            namespace="team-a",
            name="web",
            issuer="mesh-ca",
        )
        == (NOW + timedelta(days=90)).timestamp()
    )
    assert (
        value(
            m, "mtls_certificate_renewal_timestamp_seconds", namespace="team-a", name="web", issuer="mesh-ca"
        )
        == (NOW + timedelta(days=60)).timestamp()
    )
    for condition, expected in (("True", 1.0), ("False", 0.0), ("Unknown", 0.0)):
        got = value(m, "mtls_certificate_ready_status", namespace="team-a", name="web", condition=condition)
        assert got == expected, condition


@pytest.mark.parametrize(
    ("ready", "reason", "current"),
    [
        pytest.param(True, "UpToDate", "True", id="a ready certificate reports condition True"),
        pytest.param(False, "IssuanceFailed", "False", id="a failing certificate reports condition False"),
        pytest.param(False, "", "Unknown", id="a certificate not judged yet reports Unknown"),
    ],
)
def test_exactly_one_ready_condition_is_current(ready: bool, reason: str, current: str) -> None:
    m = Metrics()
    observe(m, ready=ready, reason=reason)
    for condition in ("True", "False", "Unknown"):
        got = value(m, "mtls_certificate_ready_status", namespace="team-a", name="web", condition=condition)
        assert got == (1.0 if condition == current else 0.0)


def test_a_secret_without_a_valid_certificate_has_no_expiration_series() -> None:
    m = Metrics()
    observe(m)
    m.observe_certificate(
        "team-a", "web", "mesh-ca", not_after=None, renewal_time=None, ready=False, reason="SecretCorrupt"
    )
    text = m.render().decode()
    assert 'mtls_certificate_expiration_timestamp_seconds{namespace="team-a",name="web"' not in text
    assert value(m, "mtls_certificate_ready_status", namespace="team-a", name="web", condition="False") == 1


def test_series_disappear_with_their_object() -> None:
    m = Metrics()
    observe(m, "web")
    observe(m, "api")
    m.observe_issuer("team-a", "mesh-ca", ca_not_after=NOW + timedelta(days=3650), ready=True, reason="X")
    m.forget_certificate("team-a", "web")
    m.forget_issuer("team-a", "mesh-ca")
    text = m.render().decode()
    assert 'name="web"' not in text
    assert 'name="api"' in text
    assert 'name="mesh-ca"' not in text.replace('issuer="mesh-ca"', "")
    assert 'name="web"' not in generate_latest(m.registry).decode()


def test_a_certificate_moved_to_another_issuer_leaves_no_series_behind() -> None:
    m = Metrics()
    observe(m, "web")
    m.observe_certificate(
        "team-a", "web", "new-ca", not_after=NOW, renewal_time=NOW, ready=True, reason="UpToDate"
    )
    text = m.render().decode()
    assert 'issuer="mesh-ca"' not in text
    assert text.count('name="web",issuer="new-ca"') == 2


def test_issuer_series() -> None:
    m = Metrics()
    m.observe_issuer("team-a", "ca", ca_not_after=NOW, ready=False, reason="CAExpired")
    assert value(m, "mtls_issuer_ca_expiration_timestamp_seconds", namespace="team-a", name="ca") == (
        NOW.timestamp()
    )
    assert value(m, "mtls_issuer_ready_status", namespace="team-a", name="ca", condition="False") == 1


def test_counters_histogram_and_build_info() -> None:
    m = Metrics(build={"version": "0.1.0", "kopf": "1.45.2", "cryptography": "50", "openssl": "X"})
    m.issuance(result="success", algorithm="ML-DSA-65", seconds=0.2)
    m.issuance(result="failure", algorithm="ML-DSA-65", seconds=0.0)
    m.rollout_restart(kind="Deployment")
    m.rollout_blocked(reason="RestartLoop")
    m.api_write(verb="PUT")
    m.api_write(verb="PUT")
    assert value(m, "mtls_issuance_total", result="success", algorithm="ML-DSA-65") == 1
    assert value(m, "mtls_issuance_total", result="failure", algorithm="ML-DSA-65") == 1
    assert value(m, "mtls_issuance_duration_seconds_count", algorithm="ML-DSA-65") == 1
    assert value(m, "mtls_issuance_duration_seconds_bucket", algorithm="ML-DSA-65", le="0.25") == 1
    assert value(m, "mtls_rollout_restarts_total", kind="Deployment") == 1
    assert value(m, "mtls_rollout_blocked_total", reason="RestartLoop") == 1
    assert value(m, "mtls_api_writes_total", verb="PUT") == 2
    assert value(m, "mtls_api_writes_total", verb="DELETE") == 0
    assert value(m, "mtls_build_info", version="0.1.0", kopf="1.45.2", cryptography="50", openssl="X") == 1


def test_each_instance_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.api_write(verb="POST")
    assert value(b, "mtls_api_writes_total", verb="POST") == 0


def test_the_cached_exposition_follows_every_change() -> None:
    m = Metrics()
    observe(m, "web", ready=True)
    first = m.render()
    assert m.render() == first
    observe(m, "web", ready=False, reason="IssuanceFailed")
    assert value(m, "mtls_certificate_ready_status", namespace="team-a", name="web", condition="False") == 1
    m.forget_certificate("team-a", "web")
    assert b'name="web"' not in m.render()


def test_fast_exposition_equals_the_collector_interface() -> None:
    m = Metrics(build={"version": "t"})
    for i in range(30):
        observe(m, f"c{i}", ready=i % 3 != 0, reason="" if i % 5 == 0 else "UpToDate")
    m.observe_issuer("team-a", 'odd"name', ca_not_after=NOW, ready=True, reason="KeyPairVerified")
    m.issuance(result="success", algorithm="Ed25519", seconds=0.01)
    assert samples(m.render()) == samples(generate_latest(m.registry))


def test_a_scrape_of_10k_certificates_stays_within_50_ms() -> None:
    m = Metrics()
    for i in range(10_000):
        m.observe_certificate(
            f"ns-{i % 40}",
            f"cert-{i}",
            "ca",
            not_after=NOW,
            renewal_time=NOW,
            ready=True,
            reason="UpToDate",
        )
    timings = []
    for i in range(5):  # each scrape right after a change: the cached text is rebuilt every time
        observe(m, f"changed-{i}")
        t = time.perf_counter()
        m.render()
        timings.append(time.perf_counter() - t)
    assert statistics.median(timings) < 0.050, timings


def test_the_server_serves_metrics_and_healthz() -> None:
    async def scenario() -> tuple[str, str, str]:
        m = Metrics()
        observe(m)
        server = MetricsServer(m, host="127.0.0.1", port=0)
        port = await server.start()
        try:

            def get(path: str) -> tuple[str, str]:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                    return resp.read().decode(), resp.headers["Content-Type"]

            body, ctype = await asyncio.to_thread(get, "/metrics")
            health, _ = await asyncio.to_thread(get, "/healthz")
            return body, ctype, health
        finally:
            await server.stop()

    body, ctype, health = asyncio.run(scenario())
    assert "mtls_certificate_expiration_timestamp_seconds" in body
    assert ctype.startswith("text/plain; version=0.0.4")
    assert health == "ok\n"
