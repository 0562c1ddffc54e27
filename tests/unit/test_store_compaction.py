"""What the stores keep is compact (controllers/stores.py, controllers/secret_cache.py): equal values are one
object, and an object kept compact is equal, field by field, to the one that was put."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mtls_operator.api.models import Usage
from mtls_operator.api.objects import ParsedCertificate, parse_certificate
from mtls_operator.controllers.stores import CertificateStore, Interner, compact_certificate


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


def test_the_table_never_grows_past_its_limit() -> None:
    share = Interner(limit=10)
    for i in range(100):
        share((f"name-{i}",))
    assert len(share._table) <= 10


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
