"""controllers.stores and controllers.secret_cache: each store keeps its indexes true on every put and
remove; the Secret cache trusts a verdict only while what it was judged with is unchanged."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtls_operator.api.object_parsers import parse_certificate, parse_issuer
from mtls_operator.api.objects import CertificateStatus, IssuerStatus, Key, ParsedCertificate, ParsedIssuer
from mtls_operator.controllers.secret_cache import SecretCache, Verdict
from mtls_operator.controllers.stores import CertificateStore, IssuerStore, NamespaceInfo, NamespaceStore
from mtls_operator.policy.certificate import SecretView


def cert(
    name: str, secret: str | None, issuer: str | None = "mesh", namespace: str = "demo"
) -> ParsedCertificate:
    spec: dict[str, Any] = {"commonName": name}
    if secret is not None:
        spec["secretName"] = secret
    if issuer is not None:
        spec["issuerRef"] = {"name": issuer}
    return parse_certificate(
        {"metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}"}, "spec": spec}
    )


def issuer(
    name: str, kind: str, secret: str, parent: str | None = None, namespace: str = "demo"
) -> ParsedIssuer:
    spec: dict[str, Any]
    if kind == "selfSigned":
        spec = {"selfSigned": {"secretName": secret, "commonName": name}}
    elif kind == "intermediate":
        spec = {"intermediate": {"issuerRef": {"name": parent}, "secretName": secret, "commonName": name}}
    elif kind == "ca":
        spec = {"ca": {"secretName": secret}}
    else:
        spec = {"ca": {}}  # an unusable spec
    return parse_issuer(
        {"metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}"}, "spec": spec}
    )


# ---------------------------------------------------------------------------------------------------------
# CertificateStore


def test_a_certificate_is_found_by_its_secret_and_its_issuer() -> None:
    store = CertificateStore()
    assert store.put(cert("web", "web-tls")) == set()
    assert store.naming_secret("demo", "web-tls") == {"web"}
    assert store.of_issuer(("demo", "mesh")) == {("demo", "web")}
    assert store.naming_secret("other", "web-tls") == frozenset()
    assert len(store) == 1 and [c.key for c in store] == [("demo", "web")]


@pytest.mark.parametrize(
    ("before", "update", "touched"),
    [
        pytest.param(
            [cert("a", "shared")],
            cert("b", "shared"),
            {"a"},
            id="a second certificate naming a Secret touches the first",
        ),
        pytest.param(
            [cert("a", "shared"), cert("b", "shared")],
            cert("b", "own"),
            {"a"},
            id="a certificate that leaves a shared Secret touches the one left behind",
        ),
        pytest.param(
            [cert("a", "shared"), cert("b", "shared"), cert("c", "other")],
            cert("b", "other"),
            {"a", "c"},
            id="moving from one shared Secret to another touches both groups",
        ),
        pytest.param(
            [cert("a", "shared"), cert("b", "shared")],
            cert("b", "shared", issuer="other"),
            {"a"},
            id="an update that keeps a shared Secret touches the others again",
        ),
        pytest.param(
            [cert("a", "a-tls")], cert("a", "a-tls"), set(), id="a certificate never touches itself"
        ),
        pytest.param(
            [cert("a", "shared")],
            cert("b", None),
            set(),
            id="a certificate that names no Secret touches nobody",
        ),
        pytest.param(
            [cert("a", "shared", namespace="other")],
            cert("b", "shared"),
            set(),
            id="a Secret of the same name in another namespace is another Secret",
        ),
    ],
)
def test_put_returns_the_certificates_whose_duplicate_verdict_may_change(
    before: list[ParsedCertificate], update: ParsedCertificate, touched: set[str]
) -> None:
    store = CertificateStore()
    for c in before:
        store.put(c)
    assert store.put(update) == touched


def test_remove_returns_the_certificate_and_those_left_naming_its_secret() -> None:
    store = CertificateStore()
    for c in (cert("a", "shared"), cert("b", "shared"), cert("c", "own")):
        store.put(c)
    old, others = store.remove(("demo", "a"))
    assert old is not None and old.key == ("demo", "a")
    assert others == {"b"}
    assert store.naming_secret("demo", "shared") == {"b"}
    assert store.of_issuer(("demo", "mesh")) == {("demo", "b"), ("demo", "c")}
    assert store.remove(("demo", "a")) == (None, set())


def test_update_status_keeps_the_indexes_and_ignores_unknown_keys() -> None:
    store = CertificateStore()
    store.put(cert("a", "a-tls"))
    status = CertificateStatus(fingerprint="fp", revision=2)
    store.update_status(("demo", "a"), status)
    store.update_status(("demo", "gone"), status)
    found = store.get(("demo", "a"))
    assert found is not None and found.status == status
    assert store.naming_secret("demo", "a-tls") == {"a"} and store.get(("demo", "gone")) is None


def test_iterating_a_store_sees_a_snapshot_so_removing_meanwhile_is_safe() -> None:
    store = CertificateStore()
    for name in "abc":
        store.put(cert(name, f"{name}-tls"))
    for c in store:
        store.remove(c.key)
    assert len(store) == 0


NAMES = st.sampled_from(["a", "b", "c", "d"])
REFS = st.one_of(st.none(), st.sampled_from(["s1", "s2", "s3"]))
CERT_OPS = st.lists(
    st.tuples(st.sampled_from(["put", "remove"]), st.sampled_from(["demo", "prod"]), NAMES, REFS, REFS),
    max_size=40,
)


@given(ops=CERT_OPS)
def test_certificate_indexes_always_match_the_stored_objects(
    ops: list[tuple[str, str, str, Any, Any]],
) -> None:
    store = CertificateStore()
    for op, namespace, name, secret, issuer_name in ops:
        if op == "put":
            previous = store.get((namespace, name))
            before = {c.key: c.secret_name for c in store}
            touched = store.put(cert(name, secret, issuer_name, namespace))
            expected = {
                k[1]
                for k, s in before.items()
                if k[0] == namespace
                and k[1] != name
                and s is not None
                and (s == secret or (previous is not None and s == previous.secret_name != secret))
            }
            assert touched == expected
        else:
            store.remove((namespace, name))
        by_secret: dict[Key, set[str]] = defaultdict(set)
        by_issuer: dict[Key, set[str]] = defaultdict(set)
        for c in store:
            if c.secret_name:
                by_secret[(c.meta.namespace, c.secret_name)].add(c.meta.name)
            if c.issuer_name:
                by_issuer[(c.meta.namespace, c.issuer_name)].add(c.meta.name)
        for namespace_ in ("demo", "prod"):
            for ref in ("s1", "s2", "s3"):
                assert store.naming_secret(namespace_, ref) == by_secret.get((namespace_, ref), set())
                assert store.of_issuer((namespace_, ref)) == {
                    (namespace_, n) for n in by_issuer.get((namespace_, ref), set())
                }


# ---------------------------------------------------------------------------------------------------------
# IssuerStore


@pytest.mark.parametrize(
    ("parsed", "secrets"),
    [
        pytest.param(
            issuer("root", "selfSigned", "root-ca"),
            {"root-ca", "root-ca-next"},
            id="a self-signed issuer is found by its CA Secret and its staged next CA",
        ),
        pytest.param(
            issuer("team", "intermediate", "team-ca", parent="root"),
            {"team-ca", "team-ca-next"},
            id="an intermediate is found by its own CA Secret and its staged next CA",
        ),
        pytest.param(
            issuer("byo", "ca", "byo-ca"), {"byo-ca"}, id="a ca issuer is found by its CA Secret only"
        ),
        pytest.param(
            issuer("bad", "invalid", ""), set(), id="an issuer with an unusable spec is found by no Secret"
        ),
    ],
)
def test_an_issuer_is_found_by_every_secret_it_reads(parsed: ParsedIssuer, secrets: set[str]) -> None:
    store = IssuerStore()
    store.put(parsed)
    candidates = {"root-ca", "root-ca-next", "team-ca", "team-ca-next", "byo-ca", "byo-ca-next"}
    assert {s for s in candidates if store.using_secret("demo", s) == {parsed.key}} == secrets
    assert {s for s in candidates if store.using_secret("demo", s)} == secrets


def test_an_intermediate_is_a_child_of_its_parent_until_it_changes_parent_or_goes() -> None:
    store = IssuerStore()
    store.put(issuer("root", "selfSigned", "root-ca"))
    store.put(issuer("team", "intermediate", "team-ca", parent="root"))
    assert store.children(("demo", "root")) == {("demo", "team")}
    old = store.put(issuer("team", "intermediate", "team-ca-2", parent="other-root"))
    assert old is not None and old.parent == "root"
    assert store.children(("demo", "root")) == frozenset()
    assert store.children(("demo", "other-root")) == {("demo", "team")}
    assert store.using_secret("demo", "team-ca") == frozenset()
    assert store.using_secret("demo", "team-ca-2") == {("demo", "team")}
    store.remove(("demo", "team"))
    assert store.children(("demo", "other-root")) == frozenset()
    assert store.using_secret("demo", "team-ca-2") == frozenset()
    assert store.remove(("demo", "team")) is None


def test_two_issuers_sharing_a_ca_secret_are_both_found() -> None:
    store = IssuerStore()
    store.put(issuer("a", "ca", "shared-ca"))
    store.put(issuer("b", "ca", "shared-ca"))
    assert store.using_secret("demo", "shared-ca") == {("demo", "a"), ("demo", "b")}
    store.remove(("demo", "a"))
    assert store.using_secret("demo", "shared-ca") == {("demo", "b")}


def test_issuer_status_update_keeps_the_indexes() -> None:
    store = IssuerStore()
    store.put(issuer("root", "selfSigned", "root-ca"))
    store.update_status(("demo", "root"), IssuerStatus(fingerprint="fp"))
    store.update_status(("demo", "gone"), IssuerStatus(fingerprint="fp"))
    found = store.get(("demo", "root"))
    assert found is not None and found.status.fingerprint == "fp"
    assert store.using_secret("demo", "root-ca-next") == {("demo", "root")} and len(store) == 1


ISSUER_OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "remove"]),
        NAMES,
        st.sampled_from(["selfSigned", "intermediate", "ca", "invalid"]),
        st.sampled_from(["s1", "s2"]),
        NAMES,
    ),
    max_size=40,
)


@given(ops=ISSUER_OPS)
def test_issuer_indexes_always_match_the_stored_objects(ops: list[tuple[str, str, str, str, str]]) -> None:
    store = IssuerStore()
    for op, name, kind, secret, parent in ops:
        if op == "put":
            store.put(issuer(name, kind, secret, parent))
        else:
            store.remove(("demo", name))
        by_secret: dict[str, set[str]] = defaultdict(set)
        children: dict[str, set[str]] = defaultdict(set)
        for i in store:
            for s in i.ca_secret_names:
                by_secret[s].add(i.meta.name)
            if i.parent:
                children[i.parent].add(i.meta.name)
        for s in ("s1", "s2", "s1-next", "s2-next"):
            assert store.using_secret("demo", s) == {("demo", n) for n in by_secret.get(s, set())}
        for p in ("a", "b", "c", "d"):
            assert store.children(("demo", p)) == {("demo", n) for n in children.get(p, set())}


def test_a_namespace_store_returns_what_it_replaced() -> None:
    store = NamespaceStore()
    first = NamespaceInfo({"team": "a"}, {})
    assert store.put("team-a", first) is None
    assert store.put("team-a", NamespaceInfo({"team": "b"}, {})) == first
    store.remove("team-a")
    store.remove("team-a")
    assert store.get("team-a") is None and list(store) == []


# ---------------------------------------------------------------------------------------------------------
# SecretCache

CERT: Key = ("demo", "web")
SECRET: Key = ("demo", "web-tls")
VIEW = SecretView(exists=True, revision=3)
ANCHORS = frozenset({"root"})


def verdict(
    rv: str | None = "10", ca: str | None = "ca1", anchors: frozenset[str] = ANCHORS, name: str = "web-tls"
) -> Verdict:
    return Verdict(name, rv, ca, anchors, VIEW)


@pytest.mark.parametrize(
    ("known", "seen", "news"),
    [
        pytest.param(None, "10", True, id="a first resourceVersion is news"),
        pytest.param("10", "10", False, id="the same resourceVersion again is not news (our own write)"),
        pytest.param("10", "11", True, id="a new resourceVersion is news"),
        pytest.param("10", None, True, id="a known Secret deleted is news"),
        pytest.param(None, None, False, id="an unknown Secret deleted is not news"),
    ],
)
def test_observe(known: str | None, seen: str | None, news: bool) -> None:
    cache = SecretCache()
    if known is not None:
        cache.observe(SECRET, known)
    assert cache.observe(SECRET, seen) is news
    assert cache.resource_version(SECRET) == seen
    assert cache.secrets() == ({SECRET} if seen is not None else set())


def test_remember_records_the_secret_version_it_was_judged_at() -> None:
    cache = SecretCache()
    cache.remember(CERT, verdict(rv="10"))
    assert cache.resource_version(SECRET) == "10"
    assert cache.verdict(CERT) == verdict(rv="10")
    assert cache.observe(SECRET, "10") is False  # the watch echoing our own read or write is not news


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        pytest.param(lambda cache: None, True, id="a verdict is reused while nothing changed"),
        pytest.param(
            lambda cache: cache.observe(SECRET, "11"), False, id="a new Secret version voids the verdict"
        ),
        pytest.param(
            lambda cache: cache.observe(SECRET, None), False, id="a deleted Secret voids the verdict"
        ),
        pytest.param(
            lambda cache: cache.observe(SECRET, "10"),
            True,
            id="a repeat of the same version keeps the verdict",
        ),
        pytest.param(
            lambda cache: cache.observe(("demo", "other-tls"), "99"),
            True,
            id="another Secret changing keeps the verdict",
        ),
        pytest.param(lambda cache: cache.invalidate(CERT), False, id="an invalidated verdict is not reused"),
        pytest.param(
            lambda cache: cache.forget_certificate(CERT), False, id="a forgotten certificate has no verdict"
        ),
    ],
)
def test_a_verdict_is_valid_only_while_its_secret_version_is_current(change: Any, valid: bool) -> None:
    cache = SecretCache()
    cache.remember(CERT, verdict())
    change(cache)
    assert (cache.cached_view(CERT, "web-tls", "ca1", ANCHORS) is not None) is valid


@pytest.mark.parametrize(
    ("name", "ca", "anchors"),
    [
        pytest.param("other-tls", "ca1", ANCHORS, id="a verdict on another secretName is not reused"),
        pytest.param("web-tls", "ca2", ANCHORS, id="a verdict judged against another CA is not reused"),
        pytest.param("web-tls", None, ANCHORS, id="a verdict judged against a CA is not reused without one"),
        pytest.param(
            "web-tls",
            "ca1",
            frozenset({"root", "new-root"}),
            id="a verdict judged with other trust anchors is not reused",
        ),
    ],
)
def test_a_verdict_is_valid_only_for_what_it_was_judged_with(
    name: str, ca: str | None, anchors: frozenset[str]
) -> None:
    cache = SecretCache()
    cache.remember(CERT, verdict())
    assert cache.cached_view(CERT, name, ca, anchors) is None


def test_a_verdict_that_the_secret_did_not_exist_is_never_reused() -> None:
    cache = SecretCache()
    cache.remember(CERT, verdict(rv=None))
    assert cache.cached_view(CERT, "web-tls", "ca1", ANCHORS) is None
    assert cache.resource_version(SECRET) is None


@pytest.mark.parametrize(
    ("setup", "ever_issued", "expected"),
    [
        pytest.param(
            lambda cache: None,
            False,
            True,
            id="a never-issued certificate whose Secret was never seen may assume it missing",
        ),
        pytest.param(lambda cache: None, True, False, id="a certificate issued before must read its Secret"),
        pytest.param(
            lambda cache: cache.observe(SECRET, "5"),
            False,
            False,
            id="a Secret the watch has seen is not assumed missing",
        ),
        pytest.param(
            lambda cache: cache.remember(CERT, verdict(rv=None)),
            False,
            False,
            id="a certificate with a verdict is not assumed missing",
        ),
        pytest.param(
            lambda cache: cache.invalidate(CERT, must_read=True),
            False,
            False,
            id="after a conflict the Secret must be read",
        ),
        pytest.param(
            lambda cache: (cache.invalidate(CERT, must_read=True), cache.read_done(CERT)),
            False,
            True,
            id="a read clears the must-read mark",
        ),
        pytest.param(
            lambda cache: (cache.invalidate(CERT, must_read=True), cache.forget_certificate(CERT)),
            False,
            True,
            id="forgetting a certificate clears its must-read mark",
        ),
        pytest.param(
            lambda cache: (cache.observe(SECRET, "5"), cache.observe(SECRET, None)),
            False,
            True,
            id="a Secret seen and then deleted may be assumed missing again",
        ),
    ],
)
def test_may_assume_missing(setup: Any, ever_issued: bool, expected: bool) -> None:
    cache = SecretCache()
    setup(cache)
    assert cache.may_assume_missing(CERT, "web-tls", ever_issued) is expected


def test_invalidate_without_must_read_only_drops_the_verdict() -> None:
    cache = SecretCache()
    cache.remember(CERT, verdict())
    cache.invalidate(CERT)
    assert cache.verdict(CERT) is None
    assert cache.resource_version(SECRET) == "10"
    assert cache.may_assume_missing(CERT, "web-tls", False) is False  # the Secret is still known to exist


def test_a_verdict_judged_again_replaces_the_old_one() -> None:
    cache = SecretCache()
    cache.remember(CERT, verdict())
    newer = replace(verdict(rv="11"), view=SecretView(exists=True, revision=4))
    cache.remember(CERT, newer)
    assert cache.cached_view(CERT, "web-tls", "ca1", ANCHORS) == newer.view
