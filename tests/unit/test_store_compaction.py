"""What the stores keep is compact (controllers/stores.py, controllers/secret_cache.py): equal values are one
object, and an object kept compact is equal, field by field, to the one that was put."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from mtls_operator.api.models import KeyAlgorithm, Usage
from mtls_operator.api.object_parsers import parse_certificate
from mtls_operator.api.objects import ParsedCertificate
from mtls_operator.api.tls import CertFacts, SecretFacts
from mtls_operator.controllers.compact import Interner, compact_certificate
from mtls_operator.controllers.secret_cache import SecretCache, Verdict
from mtls_operator.controllers.stores import CertificateStore
from mtls_operator.policy.certificate import SecretView


def body(name: str, namespace: str = "team-a", **status: Any) -> dict[str, Any]:
    # Decoded from JSON text, as the watch delivers it: every string a new object.
    return json.loads(
        json.dumps(
            {
                "metadata": {
                    "namespace": namespace,
                    "name": name,
                    "uid": f"uid-{name}",
                    "resourceVersion": "7",
                },
                "spec": {
                    "secretName": f"{name}-tls",
                    "issuerRef": {"name": "mesh-ca"},
                    "commonName": name,
                    "dnsNames": [f"{name}.svc"],
                    "privateKey": {"algorithm": "ECDSA", "size": 256},
                },
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "UpToDate",
                            "message": f"{name} is valid",
                            "observedGeneration": 1,
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }
                    ],
                    "algorithm": "ECDSA-P256",
                    "issuerFingerprint": "ab" * 32,
                    **status,
                },
            }
        )
    )


def test_strings_are_interned_and_equal_records_and_tuples_are_one_object() -> None:
    share = Interner()
    a, b = "".join(["mesh", "-ca"]), "".join(["mesh-", "ca"])
    assert a is not b
    assert share(a) is share(b)
    assert share(("x", "y")) is share(tuple(["x", "y"]))
    assert share(frozenset({Usage.SERVER_AUTH})) is share(frozenset([Usage.SERVER_AUTH]))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param((1,), (True,), id="a tuple of bools is never swapped for an equal tuple of ints"),
        pytest.param(
            (Usage.SERVER_AUTH,), ("server auth",), id="a tuple of enums is never swapped for its strings"
        ),
        pytest.param((1, True), (1, 1), id="a tuple of mixed element types is left alone"),
    ],
)
def test_values_equal_but_of_other_types_are_never_swapped(first: Any, second: Any) -> None:
    share = Interner()
    kept = share(first)
    assert share(second) is second
    assert share(first) is kept


def test_the_tables_never_grow_past_their_limits() -> None:
    share = Interner(limit=10, recent=5)
    for i in range(100):
        share((f"name-{i}",))
        share(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i))
    assert len(share._table) <= 10
    assert len(share._recent) <= 5


def test_equal_times_are_shared_but_never_across_time_zones() -> None:
    share = Interner()
    utc = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert share(datetime(2026, 1, 1, 12, tzinfo=UTC)) is share(utc)
    paris = datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))
    assert paris == utc
    assert share(paris) is paris


def test_a_compacted_certificate_is_equal_to_what_was_parsed_and_shares_with_its_peers() -> None:
    share = Interner()
    parsed = [parse_certificate(body(f"c{i}")) for i in range(3)]
    fresh = [parse_certificate(body(f"c{i}")) for i in range(3)]
    hashes = [hash(c.spec) for c in fresh]
    kept = [compact_certificate(share, c) for c in fresh]
    assert kept == parsed
    assert [hash(c.spec) for c in kept] == hashes
    first, second = kept[0], kept[1]
    assert first.meta.namespace is second.meta.namespace
    assert first.spec is not None and second.spec is not None
    assert first.spec.issuer_ref is second.spec.issuer_ref
    assert first.spec.subject is second.spec.subject
    assert first.spec.private_key is second.spec.private_key
    assert first.status.issuer_fingerprint is second.status.issuer_fingerprint
    assert first.status.conditions[0].reason is second.status.conditions[0].reason
    assert first.status.conditions[0].message == "c0 is valid"


def test_the_store_keeps_the_previous_spec_when_only_the_status_changed() -> None:
    store = CertificateStore()
    store.put(parse_certificate(body("c0")))
    before = store.get(("team-a", "c0"))
    store.put(parse_certificate(body("c0", revision=2)))
    after = store.get(("team-a", "c0"))
    assert isinstance(before, ParsedCertificate) and isinstance(after, ParsedCertificate)
    assert after.spec is before.spec
    assert after.status.revision == 2


def test_a_secret_named_by_one_certificate_then_two_then_one_is_indexed_right() -> None:
    store = CertificateStore()
    store.put(parse_certificate(body("c0")))
    other = body("c1")
    other["spec"]["secretName"] = "c0-tls"
    store.put(parse_certificate(other))
    assert store.naming_secret("team-a", "c0-tls") == {"c0", "c1"}
    store.remove(("team-a", "c0"))
    assert store.naming_secret("team-a", "c0-tls") == {"c1"}
    store.remove(("team-a", "c1"))
    assert store.naming_secret("team-a", "c0-tls") == frozenset()


def verdict(name: str) -> Verdict:
    fingerprint = "".join(["ab"] * 32)  # a new string object for each verdict, as parsing makes them
    leaf = CertFacts(
        serial_number=f"{name}01",
        fingerprint=f"{name}ff",
        not_before=datetime(2026, 1, 1, tzinfo=UTC),
        not_after=datetime(2026, 4, 1, tzinfo=UTC),
        common_name="".join([name]),
        dns_names=(f"{name}.svc",),
        ip_addresses=(),
        uris=(),
        email_addresses=(),
        usages=frozenset({Usage.SERVER_AUTH, Usage.CLIENT_AUTH, Usage.DIGITAL_SIGNATURE}),
        is_ca=False,
        key_algorithm=KeyAlgorithm.ECDSA,
        key_size=256,
        issuer_fingerprint=fingerprint,
    )
    facts = SecretFacts(
        leaf=leaf,
        key_matches=True,
        signed_by_current_ca=True,
        ca_bundle_matches=True,
        chain_complete=True,
        has_keystores=False,
        ca_bundle_fingerprints=frozenset({"".join(["ab"] * 32)}),
    )
    view = SecretView(exists=True, owner_certificate="".join([name]), managed=True, facts=facts, owned=True)
    return Verdict(f"{name}-tls", "12", "".join(["ab"] * 32), frozenset({"".join(["ab"] * 32)}), view)


def test_verdicts_kept_by_the_secret_cache_are_equal_and_share_what_they_have_in_common() -> None:
    cache = SecretCache()
    for name in ("c0", "c1"):
        cache.remember(("team-a", name), verdict(name))
    first, second = cache.verdict(("team-a", "c0")), cache.verdict(("team-a", "c1"))
    assert first == verdict("c0") and second == verdict("c1")
    assert first is not None and second is not None
    assert first.anchors is second.anchors
    assert first.ca_fingerprint is second.ca_fingerprint
    assert first.view.facts is not None and second.view.facts is not None
    assert first.view.facts.leaf.usages is second.view.facts.leaf.usages
    assert first.view.facts.leaf.issuer_fingerprint is second.view.facts.leaf.issuer_fingerprint
    assert first.view.facts.ca_bundle_fingerprints is second.view.facts.ca_bundle_fingerprints
    assert first.view.facts.leaf.not_before is second.view.facts.leaf.not_before
