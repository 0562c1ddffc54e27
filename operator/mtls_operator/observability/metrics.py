"""Prometheus metrics for mtls-operator (own registry; bounded labels; series removed with their object).

The runtime calls these methods; values come from the Secret bytes and the CA (the runtime's verdicts),
not only from status, so a Secret someone broke shows up here.

Per-object series (four families per certificate, two per issuer) are kept by :class:`ObjectCollector`,
not as labelled children: a certificate is one entry, its exposition lines rendered once, when it
changes, and kept as one bytes object and nothing else (~0.7 KB a certificate). :meth:`Metrics.render`
joins those lines with the exposition of the handful of process-wide metrics, so a scrape of 10k
certificates costs ~10 ms (``bench/bench_scrape.py``).
``generate_latest(metrics.registry)`` yields the same samples through the ordinary collector interface
(slower; the unit tests check that both agree).

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
from prometheus_client.parser import text_string_to_metric_families
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


def _series(labels: Iterable[tuple[str, str]], value: float) -> str:
    """One exposition line without its family name and newline: ``{k="v",...} value``."""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{{{inner}}} {_go_float(value)}"


def condition_of(ready: bool, reason: str) -> str:
    """True when ready; Unknown when not ready and not yet judged (no reason); False otherwise."""
    if ready:
        return "True"
    return "False" if reason else "Unknown"


Key = tuple[str, str]  # (namespace, name)
# Per kind of object: its families in exposition order (the order of OBJECT_FAMILIES), its timestamp
# families (in the order of its values) and its Ready family.
_KIND_FAMILIES = {
    "certificate": (CERT_EXPIRATION, CERT_RENEWAL, CERT_KEY_EXPIRATION, CERT_READY),
    "issuer": (ISSUER_EXPIRATION, ISSUER_READY),
}
_VALUE_FAMILIES = {"certificate": (CERT_EXPIRATION, CERT_RENEWAL), "issuer": (ISSUER_EXPIRATION,)}
_READY_FAMILY = {"certificate": CERT_READY, "issuer": ISSUER_READY}
_HEADERS = {
    name: f"# HELP {name} {doc}\n# TYPE {name} gauge\n".encode() for name, (doc, _) in OBJECT_FAMILIES.items()
}
# An entry's blocks are joined by NUL and a block's lines by SOH: label values are Kubernetes names and
# fixed words, never either byte.
_SEP = b"\0"
_LINE = b"\1"


def _entry(
    kind: str,
    labels: tuple[str, ...],
    values: tuple[float | None, ...],
    condition: str,
    keys: tuple[tuple[str, float], ...] = (),
) -> bytes:
    """One object's series, rendered once: one block per family of its kind (empty where it has no
    series), in exposition order, joined by NUL; a block is its lines without the family name (the same
    for every object) and joined by SOH. 10k of them live as long as their objects, so an entry is this
    one bytes object and nothing else (the samples are read back from the exposition when needed)."""
    blocks: dict[str, list[str]] = {family: [] for family in _KIND_FAMILIES[kind]}
    names = OBJECT_FAMILIES
    for family, value in zip(_VALUE_FAMILIES[kind], values, strict=True):
        if value is not None:
            blocks[family].append(_series(zip(names[family][1], labels, strict=True), value))
    for algorithm, not_after in keys:
        label_values = (*labels, algorithm)
        blocks[CERT_KEY_EXPIRATION].append(
            _series(zip(names[CERT_KEY_EXPIRATION][1], label_values, strict=True), not_after)
        )
    ready, (namespace, name) = _READY_FAMILY[kind], labels[:2]
    for c in CONDITIONS:
        blocks[ready].append(
            _series(zip(names[ready][1], (namespace, name, c), strict=True), 1.0 if c == condition else 0.0)
        )
    return _SEP.join("\1".join(lines).encode() for lines in blocks.values())


class ObjectCollector(Collector):
    """The per-certificate and per-issuer gauges, kept as one small entry per object.

    Each entry is its own rendered lines (:func:`_entry`); a scrape joins them without formatting
    anything. The joined text is not kept between scrapes: at 10k certificates it is 5.5 MB held for the
    ~10 ms a join costs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, dict[Key, bytes]] = {kind: {} for kind in _KIND_FAMILIES}

    def put(self, kind: str, key: Key, entry: bytes) -> None:
        with self._lock:
            self._entries[kind][key] = entry

    def drop(self, kind: str, key: Key) -> None:
        with self._lock:
            self._entries[kind].pop(key, None)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    def collect(self) -> Iterator[Metric]:
        """The same families and samples as :meth:`render`, read back from its text."""
        for family in text_string_to_metric_families(self.render().decode()):
            gauge = GaugeMetricFamily(
                family.name, family.documentation, labels=OBJECT_FAMILIES[family.name][1]
            )
            for sample in family.samples:
                gauge.add_metric([sample.labels[n] for n in OBJECT_FAMILIES[family.name][1]], sample.value)
            yield gauge

    def describe(self) -> Iterator[Metric]:
        for name, (doc, labels) in OBJECT_FAMILIES.items():
            yield GaugeMetricFamily(name, doc, labels=list(labels))

    def render(self) -> bytes:
        """The exposition text of every per-object family, from the entries' rendered lines."""
        with self._lock:
            by_kind = {kind: list(entries.values()) for kind, entries in self._entries.items()}
        parts: list[bytes] = []
        for kind, families in _KIND_FAMILIES.items():
            # Every block of every entry in one split (C speed), then family i is every len(families)-th
            # block; each line gets the family name and a newline by one replace over the whole family.
            count = len(families)
            blocks = _SEP.join(by_kind[kind]).split(_SEP) if by_kind[kind] else []
            for i, name in enumerate(families):
                parts.append(_HEADERS[name])
                present = [block for block in blocks[i::count] if block]
                if present:
                    family = name.encode()
                    parts += (family, _LINE.join(present).replace(_LINE, b"\n" + family), b"\n")
        return b"".join(parts)


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
        key: Key | None = None,
    ) -> None:
        """Called after every certificate reconcile with what the Secret holds (None: no valid cert);
        ``keys`` is (algorithm label, notAfter) of each certificate in it, the main one first. ``key``, when
        given, is the caller's (namespace, name) tuple, kept instead of a new one (10k of them)."""
        values = (
            None if not_after is None else not_after.timestamp(),
            None if renewal_time is None else renewal_time.timestamp(),
        )
        key_values = tuple((algorithm, when.timestamp()) for algorithm, when in keys)
        entry = _entry(
            "certificate", (namespace, name, issuer), values, condition_of(ready, reason), key_values
        )
        self.objects.put("certificate", key or (namespace, name), entry)

    def forget_certificate(self, namespace: str, name: str) -> None:
        """The certificate is gone: drop all its series."""
        self.objects.drop("certificate", (namespace, name))

    def observe_issuer(
        self, namespace: str, name: str, *, ca_not_after: datetime | None, ready: bool, reason: str
    ) -> None:
        """Called after every issuer reconcile."""
        values = (None if ca_not_after is None else ca_not_after.timestamp(),)
        entry = _entry("issuer", (namespace, name), values, condition_of(ready, reason))
        self.objects.put("issuer", (namespace, name), entry)

    def forget_issuer(self, namespace: str, name: str) -> None:
        """The issuer is gone: drop all its series."""
        self.objects.drop("issuer", (namespace, name))

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
