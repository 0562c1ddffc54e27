"""Prometheus metrics for mtls-operator (own registry; bounded labels; series removed with their object).

The runtime calls these methods; values come from the Secret bytes and the CA (the runtime's verdicts),
not only from status, so a Secret someone broke shows up here.

Per-object series (three families per certificate, two per issuer) are kept in plain dicts by
:class:`ObjectCollector`, not as labelled children: a certificate is one dict entry, and its exposition
lines are rendered once, when it changes. :meth:`Metrics.render` joins those cached lines with the
exposition of the handful of process-wide metrics, so a scrape of 10k certificates costs a few
milliseconds (``bench/bench_scrape.py``). ``generate_latest(metrics.registry)`` yields the same samples
through the ordinary collector interface (slower; the unit tests check that both agree).

Labels are bounded: namespace, name and issuer of existing objects, condition (True/False/Unknown),
result, algorithm, kind, reason and verb come from fixed vocabularies. No serial numbers, no fingerprints.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import utils as prometheus_utils
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CONDITIONS = ("True", "False", "Unknown")
ISSUANCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


# name -> (help, label names): the per-object families, in the order they are exposed.
CERT_EXPIRATION = "mtls_certificate_expiration_timestamp_seconds"
CERT_RENEWAL = "mtls_certificate_renewal_timestamp_seconds"
CERT_KEY_EXPIRATION = "mtls_certificate_key_expiration_timestamp_seconds"
CERT_READY = "mtls_certificate_ready_status"
ISSUER_EXPIRATION = "mtls_issuer_ca_expiration_timestamp_seconds"
ISSUER_READY = "mtls_issuer_ready_status"
OBJECT_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    CERT_EXPIRATION: (
        "The date after which the certificate in the Secret expires (notAfter), as a Unix timestamp. "
        "Absent while the Secret holds no valid certificate.",
        ("namespace", "name", "issuer"),
    ),
    CERT_RENEWAL: (
        "When the operator will renew the certificate, as a Unix timestamp.",
        ("namespace", "name", "issuer"),
    ),
    CERT_KEY_EXPIRATION: (
        "The notAfter of each certificate the Secret holds, one series per key algorithm (the main key and "
        "a dual certificate's additional keys, e.g. ML-DSA-65 and ECDSA-P256), as a Unix timestamp.",
        ("namespace", "name", "issuer", "algorithm"),
    ),
    CERT_READY: (
        "The Ready condition of the certificate: 1 for the current condition, 0 for the others.",
        ("namespace", "name", "condition"),
    ),
    ISSUER_EXPIRATION: (
        "The date after which the issuer's CA certificate expires, as a Unix timestamp.",
        ("namespace", "name"),
    ),
    ISSUER_READY: (
        "The Ready condition of the issuer: 1 for the current condition, 0 for the others.",
        ("namespace", "name", "condition"),
    ),
}


def _go_float(value: float) -> str:
    text: str = prometheus_utils.floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _line(family: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{family}{{{inner}}} {_go_float(value)}\n"


def condition_of(ready: bool, reason: str) -> str:
    """True when ready; Unknown when not ready and not yet judged (no reason); False otherwise."""
    if ready:
        return "True"
    return "False" if reason else "Unknown"


class _Entry:
    """One object's samples: (family, label values, value) triples and their rendered lines."""

    __slots__ = ("lines", "samples")

    def __init__(self, samples: list[tuple[str, tuple[str, ...], float]]) -> None:
        self.samples = samples
        self.lines: dict[str, str] = {}
        for family, values, value in samples:
            names = OBJECT_FAMILIES[family][1]
            self.lines[family] = self.lines.get(family, "") + _line(
                family, zip(names, values, strict=True), value
            )


ObjectKey = tuple[str, str, str]  # ("certificate" | "issuer", namespace, name)


class ObjectCollector(Collector):
    """The per-certificate and per-issuer gauges, kept as one dict entry per object.

    Besides the entries, each family keeps a dict of the objects' rendered lines, and the joined text of
    all of them is cached until an object changes: most scrapes (nothing renewed since the last one)
    return that cache, and a scrape after a change joins the cached lines without formatting anything.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: dict[ObjectKey, _Entry] = {}
        self._lines: dict[str, dict[ObjectKey, str]] = {name: {} for name in OBJECT_FAMILIES}
        self._text: bytes | None = None

    def put(self, key: ObjectKey, entry: _Entry) -> None:
        with self._lock:
            old = self.entries.get(key)
            self.entries[key] = entry
            for family, lines in self._lines.items():
                text = entry.lines.get(family)
                if text is None:
                    lines.pop(key, None)
                else:
                    lines[key] = text
            if old is None or old.lines != entry.lines:
                self._text = None

    def drop(self, key: ObjectKey) -> None:
        with self._lock:
            if self.entries.pop(key, None) is None:
                return
            for lines in self._lines.values():
                lines.pop(key, None)
            self._text = None

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, doc, labels=list(labels))
            for name, (doc, labels) in OBJECT_FAMILIES.items()
        }
        with self._lock:
            entries = list(self.entries.values())
        for entry in entries:
            for family, values, value in entry.samples:
                families[family].add_metric(list(values), value)
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        for name, (doc, labels) in OBJECT_FAMILIES.items():
            yield GaugeMetricFamily(name, doc, labels=list(labels))

    def render(self) -> bytes:
        """The exposition text of every per-object family, from the cached lines."""
        with self._lock:
            if self._text is None:
                parts: list[str] = []
                for name, (doc, _) in OBJECT_FAMILIES.items():
                    parts.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
                    parts.extend(self._lines[name].values())
                self._text = "".join(parts).encode()
            return self._text


class Metrics:
    """The operator's metrics: one registry per instance, created at startup (never at import time)."""

    def __init__(self, build: Mapping[str, str] | None = None) -> None:
        # No `*_created` series: they double every counter's series and no alert or panel uses them.
        # (A prometheus_client process-wide switch; set here, at startup, never at import time.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        # The process-wide metrics live in a second, small registry too, so that render() can expose them
        # with prometheus_client and add the per-object lines without walking 10k labelled children.
        self._process = CollectorRegistry(auto_describe=True)
        self.objects = ObjectCollector()
        self.registry.register(self.objects)

        def both(collector: Collector) -> None:
            self.registry.register(collector)
            self._process.register(collector)

        self.issuance_total = Counter(
            "mtls_issuance",
            "Issuance attempts by result (success, failure) and key algorithm.",
            ["result", "algorithm"],
            registry=None,
        )
        self.issuance_duration = Histogram(
            "mtls_issuance_duration_seconds",
            "Time to generate, sign and write one certificate's Secret, by key algorithm.",
            ["algorithm"],
            buckets=ISSUANCE_BUCKETS,
            registry=None,
        )
        self.rollout_restarts_total = Counter(
            "mtls_rollout_restarts",
            "Workloads restarted because a certificate they mount was re-issued, by kind.",
            ["kind"],
            registry=None,
        )
        self.rollout_blocked_total = Counter(
            "mtls_rollout_blocked",
            "Restarts the operator decided not to make (loop guard, pacing, ...), by reason.",
            ["reason"],
            registry=None,
        )
        self.api_writes_total = Counter(
            "mtls_api_writes",
            "Writes the operator made to the API server, by HTTP verb.",
            ["verb"],
            registry=None,
        )
        self.pod_certificate_requests_total = Counter(
            "mtls_pod_certificate_requests",
            "PodCertificateRequests the operator answered, by signer name, result (Issued, Denied, "
            "Failed) and reason.",
            ["signer", "result", "reason"],
            registry=None,
        )
        self.leader = Gauge(
            "mtls_leader_election_is_leader",
            "1 when this replica is the active writer (always 1 without --leader-elect), 0 on a standby.",
            registry=None,
        )
        self.build_info = Info(
            "mtls_build", "Versions of the operator and the libraries it issues with.", registry=None
        )
        for collector in (
            self.issuance_total,
            self.issuance_duration,
            self.rollout_restarts_total,
            self.rollout_blocked_total,
            self.api_writes_total,
            self.pod_certificate_requests_total,
            self.leader,
            self.build_info,
        ):
            both(collector)
        self.build_info.info(dict(build or {}))
        # Pre-create the counters' usual series so that rate() works from the first failure on.
        for verb in ("POST", "PUT", "PATCH", "DELETE"):
            self.api_writes_total.labels(verb=verb)

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        """The text exposition format (0.0.4) of every metric, fast at 10k certificates."""
        return generate_latest(self._process) + self.objects.render()

    def set_leader(self, leader: bool) -> None:
        self.leader.set(1 if leader else 0)

    # ------------------------------------------------------------------ hooks the runtime calls

    def observe_certificate(
        self,
        namespace: str,
        name: str,
        issuer: str,
        *,
        not_after: datetime | None,
        renewal_time: datetime | None,
        ready: bool,
        reason: str,
        keys: Sequence[tuple[str, datetime]] = (),
    ) -> None:
        """Called after every certificate reconcile with what the Secret holds (None: no valid cert);
        ``keys`` is (algorithm label, notAfter) of each certificate in it, the main one first."""
        samples: list[tuple[str, tuple[str, ...], float]] = []
        if not_after is not None:
            samples.append((CERT_EXPIRATION, (namespace, name, issuer), not_after.timestamp()))
        if renewal_time is not None:
            samples.append((CERT_RENEWAL, (namespace, name, issuer), renewal_time.timestamp()))
        for algorithm, key_not_after in keys:
            samples.append(
                (CERT_KEY_EXPIRATION, (namespace, name, issuer, algorithm), key_not_after.timestamp())
            )
        current = condition_of(ready, reason)
        for c in CONDITIONS:
            samples.append((CERT_READY, (namespace, name, c), 1.0 if c == current else 0.0))
        self.objects.put(("certificate", namespace, name), _Entry(samples))

    def forget_certificate(self, namespace: str, name: str) -> None:
        """The certificate is gone: drop all its series."""
        self.objects.drop(("certificate", namespace, name))

    def observe_issuer(
        self, namespace: str, name: str, *, ca_not_after: datetime | None, ready: bool, reason: str
    ) -> None:
        """Called after every issuer reconcile."""
        samples: list[tuple[str, tuple[str, ...], float]] = []
        if ca_not_after is not None:
            samples.append((ISSUER_EXPIRATION, (namespace, name), ca_not_after.timestamp()))
        current = condition_of(ready, reason)
        for c in CONDITIONS:
            samples.append((ISSUER_READY, (namespace, name, c), 1.0 if c == current else 0.0))
        self.objects.put(("issuer", namespace, name), _Entry(samples))

    def forget_issuer(self, namespace: str, name: str) -> None:
        """The issuer is gone: drop all its series."""
        self.objects.drop(("issuer", namespace, name))

    def issuance(self, *, result: str, algorithm: str, seconds: float) -> None:
        """One issuance attempt: result is "success", "failure" or "throttled" (the certificate's issuance
        budget was spent: the attempt waits); seconds is the crypto + write time."""
        self.issuance_total.labels(result=result, algorithm=algorithm).inc()
        if result == "success":
            self.issuance_duration.labels(algorithm=algorithm).observe(seconds)

    def rollout_restart(self, *, kind: str) -> None:
        """A workload (Deployment, StatefulSet, DaemonSet) was restarted for a new certificate."""
        self.rollout_restarts_total.labels(kind=kind).inc()

    def rollout_blocked(self, *, reason: str) -> None:
        """A restart was not made (loop guard, pacing...): reason is a Reason value."""
        self.rollout_blocked_total.labels(reason=reason).inc()

    def pod_certificate_request(self, *, signer: str, result: str, reason: str) -> None:
        """A PodCertificateRequest was answered: signer is its signer name (one per issuer that declares
        spec.podCertificates), result its condition type, reason the condition's reason."""
        self.pod_certificate_requests_total.labels(signer=signer, result=result, reason=reason).inc()

    def api_write(self, *, verb: str) -> None:
        """The operator made one API write (POST, PUT, PATCH, DELETE)."""
        self.api_writes_total.labels(verb=verb).inc()
