"""controllers.intake and controllers.versions: watch events update the stores and queue exactly the keys
that must be looked at again; the rollout manager reads what each managed Secret holds through a read-only
view."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.unit.core_fakes import FakeApi, RecordingWork, leaf_facts, make_context

from mtls_operator.api.constants import ANN_CERTIFICATE_NAME
from mtls_operator.api.objects import Key
from mtls_operator.api.tls import SecretFacts
from mtls_operator.controllers.clock import FakeClock
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.intake import Intake
from mtls_operator.controllers.rollouts import UNKNOWN, RolloutManager
from mtls_operator.controllers.secret_cache import Verdict
from mtls_operator.controllers.trust_bundles import BundleIndex
from mtls_operator.controllers.versions import ManagedVersions, content_fingerprint
from mtls_operator.policy.certificate import SecretView
from mtls_operator.policy.rollout import SecretVersion

NS = "demo"


class Intook:
    """Intake wired to fresh stores, a recording work queue and a rollout manager that is never started."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.work = RecordingWork()
        self.ctx: Context = make_context(clock=self.clock, work=self.work)
        self.rollouts = RolloutManager(self.ctx.api, _NoVersions(), clock=self.clock)
        self.forgotten: list[tuple[str, Key]] = []
        self.intake = Intake(
            self.ctx,
            self.rollouts,
            lambda key: self.forgotten.append(("cert", key)),
            lambda key: self.forgotten.append(("issuer", key)),
        )


class _NoVersions:
    def version(self, namespace: str, ref: str) -> None:
        return None


def cert_body(name: str, secret: str, issuer: str = "mesh", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": NS, "name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"secretName": secret, "issuerRef": {"name": issuer}, "commonName": name, **spec},
    }


def issuer_body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": name, "uid": f"uid-{name}"}, "spec": spec}


ROOT = issuer_body("root", {"selfSigned": {"secretName": "root-ca", "commonName": "Root"}})
TEAM = issuer_body(
    "team", {"intermediate": {"issuerRef": {"name": "root"}, "secretName": "team-ca", "commonName": "Team"}}
)
BYO = issuer_body("byo", {"ca": {"secretName": "byo-ca"}})
BUNDLED = issuer_body(
    "bundled",
    {
        "selfSigned": {"secretName": "bundled-ca", "commonName": "B"},
        "trustBundle": {"configMapName": "bundle"},
    },
)


def secret_body(name: str, rv: str, owner: str | None = None) -> dict[str, Any]:
    annotations = {ANN_CERTIFICATE_NAME: owner} if owner else {}
    return {"metadata": {"namespace": NS, "name": name, "resourceVersion": rv, "annotations": annotations}}


def namespace_body(
    name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations or {}}}


# ---------------------------------------------------------------------------------------------------------
# Certificates and issuers


def test_a_certificate_event_stores_the_parsed_certificate_and_queues_it() -> None:
    t = Intook()
    with t.intake.recording():
        t.intake.certificate_event(
            "ADDED",
            cert_body("web", "web-tls", rollout={"targets": [{"kind": "Deployment", "name": "batch"}]}),
        )
        assert t.intake.heard_since("cert", (NS, "web"), t.clock.monotonic())
    assert not t.intake.heard_since("cert", (NS, "web"), t.clock.monotonic())  # only while recording
    stored = t.ctx.certificates.get((NS, "web"))
    assert stored is not None and stored.spec is not None and stored.meta.uid == "uid-web"
    assert t.work.certificates == [(NS, "web")] and t.work.issuers == []
    assert t.rollouts.explicit[(NS, "Deployment", "batch")] == {("web-tls", "web")}


def test_a_certificate_naming_a_secret_already_named_queues_the_other_too() -> None:
    t = Intook()
    t.intake.certificate_event("ADDED", cert_body("a", "shared"))
    t.work.clear()
    t.intake.certificate_event("ADDED", cert_body("b", "shared"))
    assert sorted(t.work.certificates) == [(NS, "a"), (NS, "b")]


def test_a_deleted_certificate_is_forgotten_and_the_certificates_sharing_its_secret_are_queued() -> None:
    t = Intook()
    t.intake.certificate_event(
        "ADDED", cert_body("a", "shared", rollout={"targets": [{"kind": "Deployment", "name": "batch"}]})
    )
    t.intake.certificate_event("ADDED", cert_body("b", "shared"))
    t.work.clear()
    with t.intake.recording():
        t.intake.certificate_event("DELETED", cert_body("a", "shared"))
        assert not t.intake.heard_since("cert", (NS, "a"), t.clock.monotonic())
    assert t.ctx.certificates.get((NS, "a")) is None
    assert t.forgotten == [("cert", (NS, "a"))]
    assert t.work.certificates == [(NS, "b")]
    assert (NS, "Deployment", "batch") not in t.rollouts.explicit


def test_an_issuer_event_stores_the_parsed_issuer_and_queues_it() -> None:
    t = Intook()
    t.intake.issuer_event("ADDED", TEAM)
    assert t.ctx.issuers.using_secret(NS, "team-ca") == {(NS, "team")}
    assert t.work.issuers == [(NS, "team")] and t.work.certificates == []


def test_a_deleted_issuer_queues_its_certificates_and_its_intermediates() -> None:
    t = Intook()
    t.intake.issuer_event("ADDED", ROOT)
    t.intake.issuer_event("ADDED", TEAM)
    t.intake.certificate_event("ADDED", cert_body("web", "web-tls", issuer="root"))
    t.intake.certificate_event("ADDED", cert_body("api", "api-tls", issuer="team"))
    t.work.clear()
    t.intake.issuer_event("DELETED", ROOT)
    assert t.ctx.issuers.get((NS, "root")) is None and t.forgotten == [("issuer", (NS, "root"))]
    assert t.work.certificates == [(NS, "web")]
    assert t.work.issuers == [(NS, "team")]


# ---------------------------------------------------------------------------------------------------------
# Secrets


@pytest.mark.parametrize(
    ("secret", "owner", "certificates", "issuers"),
    [
        pytest.param("web-tls", None, [(NS, "web")], [], id="a certificate's Secret queues the certificate"),
        pytest.param(
            "orphan-tls",
            "web2",
            [(NS, "web2")],
            [],
            id="a managed Secret queues the certificate its annotation names, even one not known yet",
        ),
        pytest.param("root-ca", None, [], [(NS, "root")], id="a self-signed CA Secret queues its issuer"),
        pytest.param(
            "root-ca-next", None, [], [(NS, "root")], id="the staged next CA of a rotation queues its issuer"
        ),
        pytest.param(
            "team-ca", None, [], [(NS, "team")], id="an intermediate's CA Secret queues the intermediate"
        ),
        pytest.param("byo-ca", None, [], [(NS, "byo")], id="a bring-your-own CA Secret queues its issuer"),
        pytest.param("unrelated", None, [], [], id="a Secret nobody names queues nothing"),
    ],
)
def test_a_secret_event_queues_whoever_reads_the_secret(
    secret: str, owner: str | None, certificates: list[Key], issuers: list[Key]
) -> None:
    t = Intook()
    for body in (ROOT, TEAM, BYO):
        t.intake.issuer_event("ADDED", body)
    t.intake.certificate_event("ADDED", cert_body("web", "web-tls"))
    t.work.clear()
    t.intake.secret_event("ADDED", secret_body(secret, "7", owner))
    assert t.work.certificates == certificates
    assert t.work.issuers == issuers
    assert t.ctx.secrets.resource_version((NS, secret)) == "7"


@pytest.mark.parametrize(
    ("event", "rv", "queued"),
    [
        pytest.param("MODIFIED", "7", False, id="an event that repeats our own write queues nothing"),
        pytest.param("MODIFIED", "8", True, id="an event with a new resourceVersion queues the certificate"),
        pytest.param("DELETED", "7", True, id="a deleted Secret queues the certificate"),
    ],
)
def test_a_secret_event_is_news_only_when_the_secret_changed(event: str, rv: str, queued: bool) -> None:
    t = Intook()
    t.intake.certificate_event("ADDED", cert_body("web", "web-tls"))
    t.ctx.secrets.remember((NS, "web"), Verdict("web-tls", "7", "ca", frozenset(), SecretView(exists=True)))
    t.work.clear()
    t.intake.secret_event(event, secret_body("web-tls", rv, "web"))
    assert t.work.certificates == ([(NS, "web")] if queued else [])


def test_a_deleted_secret_that_was_never_seen_is_no_news() -> None:
    t = Intook()
    t.intake.certificate_event("ADDED", cert_body("web", "web-tls"))
    t.work.clear()
    t.intake.secret_event("DELETED", secret_body("web-tls", "7"))
    assert t.work.nothing


# ---------------------------------------------------------------------------------------------------------
# Namespaces and workloads


def test_namespace_events() -> None:
    t = Intook()
    t.intake.issuer_event("ADDED", BUNDLED)
    t.intake.issuer_event("ADDED", ROOT)
    t.intake.certificate_event("ADDED", cert_body("web", "web-tls"))
    t.work.clear()

    t.intake.namespace_event("ADDED", namespace_body(NS, {"team": "a"}))
    assert t.ctx.namespaces.watched
    assert t.work.issuers == [(NS, "bundled")], "a namespace seen first queues the issuers with a bundle"
    assert t.work.certificates == [], "... and no certificate: they are looked at anyway"

    t.work.clear()
    t.intake.namespace_event("MODIFIED", namespace_body(NS, {"team": "a"}, {"unrelated/annotation": "x"}))
    assert t.work.nothing, "a namespace whose labels and mtls.dev annotations did not change queues nothing"

    t.intake.namespace_event("MODIFIED", namespace_body(NS, {"team": "b"}))
    assert t.work.issuers == [(NS, "bundled")], "a label change queues the bundle issuers"
    assert t.work.certificates == [(NS, "web")], (
        "... and the certificates of that namespace (issuance policy)"
    )

    t.work.clear()
    t.intake.namespace_event(
        "MODIFIED", namespace_body(NS, {"team": "b"}, {"mtls.dev/accept-trust-bundles-from": "*"})
    )
    assert t.work.issuers == [(NS, "bundled")], "an opt-in annotation change queues the bundle issuers"

    t.work.clear()
    t.intake.namespace_event("MODIFIED", namespace_body("elsewhere", {}))
    t.work.clear()
    t.intake.namespace_event("MODIFIED", namespace_body("elsewhere", {"x": "y"}))
    assert t.work.certificates == [], "certificates of other namespaces are not queued"

    t.intake.namespace_event("DELETED", namespace_body(NS, {}))
    assert t.ctx.namespaces.get(NS) is None


def test_a_terminating_namespace_is_recorded() -> None:
    t = Intook()
    body = namespace_body(NS, {})
    body["status"] = {"phase": "Terminating"}
    t.intake.namespace_event("MODIFIED", body)
    info = t.ctx.namespaces.get(NS)
    assert info is not None and info.terminating


def test_workload_events_go_to_the_rollout_manager() -> None:
    t = Intook()
    body = {
        "metadata": {"namespace": NS, "name": "web"},
        "spec": {"template": {"spec": {"volumes": [{"name": "tls", "secret": {"secretName": "web-tls"}}]}}},
    }
    t.intake.workload_event("Deployment", "ADDED", body)
    assert (NS, "Deployment", "web") in t.rollouts.workloads
    assert t.work.nothing


# ---------------------------------------------------------------------------------------------------------
# versions: what each managed Secret holds

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LEAF = leaf_facts(NOW - timedelta(hours=1), NOW + timedelta(days=30))


def facts(anchors: frozenset[str], key_matches: bool = True) -> SecretFacts:
    return SecretFacts(LEAF, key_matches, True, True, True, False, anchors)


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        pytest.param(
            SecretView(exists=True), None, id="a Secret without usable TLS material has no content address"
        ),
        pytest.param(
            SecretView(exists=True, facts=facts(frozenset({"root"}))),
            "leaffp",
            id="a Secret with one trust anchor is addressed by its certificate's fingerprint alone",
        ),
        pytest.param(
            SecretView(exists=True, facts=facts(frozenset())),
            "leaffp",
            id="a Secret without ca.crt anchors is addressed by its certificate's fingerprint",
        ),
    ],
)
def test_content_fingerprint(view: SecretView, expected: str | None) -> None:
    assert content_fingerprint(view) == expected


def test_a_secret_holding_two_anchors_changes_address_with_its_trust_whatever_their_order() -> None:
    two = content_fingerprint(SecretView(exists=True, facts=facts(frozenset({"old", "new"}))))
    assert two is not None and two.startswith("leaffp+") and len(two) == len("leaffp+") + 16
    assert two == content_fingerprint(SecretView(exists=True, facts=facts(frozenset({"new", "old"}))))
    assert two != content_fingerprint(SecretView(exists=True, facts=facts(frozenset({"old", "newer"}))))


class Managed:
    def __init__(self) -> None:
        self.ctx = make_context(FakeApi())
        self.bundles = BundleIndex()
        self.versions = ManagedVersions(self.ctx.certificates, self.ctx.secrets, self.bundles)

    def certificate(self, name: str, secret: str, **spec: Any) -> Key:
        from mtls_operator.api.object_parsers import parse_certificate

        self.ctx.certificates.put(parse_certificate(cert_body(name, secret, **spec)))
        return (NS, name)

    def judge(self, key: Key, secret: str, view: SecretView) -> None:
        self.ctx.secrets.remember(key, Verdict(secret, "5", "ca", frozenset(), view))


GOOD_VIEW = SecretView(exists=True, facts=facts(frozenset({"root"})), revision=4)


def test_a_judged_secret_has_the_version_of_its_content() -> None:
    m = Managed()
    m.judge(m.certificate("web", "web-tls"), "web-tls", GOOD_VIEW)
    assert m.versions.version(NS, "web-tls") == SecretVersion("web-tls", "leaffp", 4, LEAF.not_before)
    since = NOW - timedelta(minutes=5)
    m.judge((NS, "web"), "web-tls", replace(GOOD_VIEW, content_since=since))
    found = m.versions.version(NS, "web-tls")
    assert isinstance(found, SecretVersion) and found.not_before == since


@pytest.mark.parametrize(
    ("rollout", "view", "expected"),
    [
        pytest.param({}, None, UNKNOWN, id="a managed Secret not judged yet is unknown"),
        pytest.param(
            {"policy": "None"},
            GOOD_VIEW,
            None,
            id="a certificate with rollout policy None manages no restart",
        ),
        pytest.param({}, SecretView(exists=False), None, id="a missing Secret has nothing to roll out"),
        pytest.param(
            {},
            SecretView(exists=True, facts=facts(frozenset({"root"}), key_matches=False)),
            None,
            id="a Secret whose key does not match its certificate has nothing to roll out",
        ),
    ],
)
def test_versions_of_managed_secrets_that_cannot_be_rolled_out(
    rollout: dict[str, Any], view: SecretView | None, expected: object
) -> None:
    m = Managed()
    key = m.certificate("web", "web-tls", rollout=rollout)
    if view is not None:
        m.judge(key, "web-tls", view)
    assert m.versions.version(NS, "web-tls") is expected


def test_a_secret_no_certificate_names_is_not_managed() -> None:
    assert Managed().versions.version(NS, "someone-elses") is None


def test_bundle_versions_come_from_the_bundle_index() -> None:
    m = Managed()
    published = SecretVersion("configmap:bundle", "digest", 2, NOW)
    m.bundles.versions[(NS, "bundle")] = published
    m.bundles.targets[(NS, "mesh")] = ("pending", (NS, "team-a"))
    assert m.versions.version(NS, "configmap:bundle") == published
    assert m.versions.version("team-a", "configmap:pending") is UNKNOWN
    assert m.versions.version("team-b", "configmap:pending") is None
    assert m.versions.version(NS, "configmap:not-a-bundle") is None


# ---------------------------------------------------------------------------------------------------------
# Delivered Secrets: the watch's body is judged instead of a read


def leaf_secret_body(name: str, rv: str, owner: str) -> dict[str, Any]:
    body = secret_body(name, rv, owner)
    body["data"] = {"tls.crt": "Y3J0", "tls.key": "a2V5"}
    return body


def test_a_delivered_secret_is_taken_once_by_the_certificate_queued_for_it() -> None:
    t = Intook()
    t.intake.certificate_event("ADDED", cert_body("web", "web-tls"))
    t.intake.secret_event("ADDED", leaf_secret_body("web-tls", "7", "web"))
    taken = t.ctx.secrets.take_delivered((NS, "web-tls"))
    assert taken is not None
    assert (taken.resource_version, taken.data) == ("7", {"tls.crt": b"crt", "tls.key": b"key"})
    assert t.ctx.secrets.take_delivered((NS, "web-tls")) is None


def test_a_secret_delivered_before_its_certificate_is_kept_for_it() -> None:
    t = Intook()
    t.intake.secret_event("ADDED", leaf_secret_body("web-tls", "7", "web"))
    assert t.ctx.secrets.delivered == 1


@pytest.mark.parametrize(
    ("then", "left"),
    [
        pytest.param(
            lambda t: t.intake.secret_event("MODIFIED", leaf_secret_body("web-tls", "8", "web")),
            "8",
            id="a newer version replaces it",
        ),
        pytest.param(
            lambda t: t.ctx.secrets.observe((NS, "web-tls"), "9"),
            None,
            id="a newer version seen elsewhere (our write, a read) drops it",
        ),
        pytest.param(
            lambda t: t.intake.secret_event("DELETED", leaf_secret_body("web-tls", "7", "web")),
            None,
            id="a deletion drops it",
        ),
        pytest.param(
            lambda t: t.ctx.secrets.drop_delivered(t.clock.monotonic() + 59),
            "7",
            id="it is kept for a minute",
        ),
        pytest.param(
            lambda t: t.ctx.secrets.drop_delivered(t.clock.monotonic() + 60), None, id="then dropped"
        ),
    ],
)
def test_only_the_latest_delivered_version_is_ever_taken(then: Any, left: str | None) -> None:
    t = Intook()
    t.intake.certificate_event("ADDED", cert_body("web", "web-tls"))
    t.intake.secret_event("ADDED", leaf_secret_body("web-tls", "7", "web"))
    then(t)
    taken = t.ctx.secrets.take_delivered((NS, "web-tls"))
    assert (taken.resource_version if taken is not None else None) == left


def test_a_repeat_of_a_judged_version_and_an_unnamed_secret_are_not_kept() -> None:
    t = Intook()
    t.intake.certificate_event("ADDED", cert_body("web", "web-tls"))
    t.ctx.secrets.remember((NS, "web"), Verdict("web-tls", "7", "ca", frozenset(), SecretView(exists=True)))
    t.intake.secret_event("MODIFIED", leaf_secret_body("web-tls", "7", "web"))
    t.intake.secret_event("ADDED", secret_body("unrelated", "3"))
    assert t.ctx.secrets.delivered == 0


def test_delivered_secrets_stay_within_their_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mtls_operator.controllers.secret_cache.DELIVERED_BUDGET_BYTES", 2000)
    t = Intook()
    for i in range(10):
        t.intake.secret_event("ADDED", leaf_secret_body(f"s{i}", "1", f"c{i}"))
    assert 0 < t.ctx.secrets.delivered < 10
    kept = t.ctx.secrets.delivered
    t.ctx.secrets.take_delivered((NS, "s0"))
    t.intake.secret_event("ADDED", leaf_secret_body("s-late", "1", "late"))
    assert t.ctx.secrets.delivered == kept  # taking one made room for one


def test_a_secret_delivered_again_is_kept_from_its_latest_delivery() -> None:
    t = Intook()
    t.intake.secret_event("ADDED", leaf_secret_body("a-tls", "1", "a"))
    t.clock.advance(30)
    t.intake.secret_event("ADDED", leaf_secret_body("b-tls", "1", "b"))
    t.intake.secret_event("MODIFIED", leaf_secret_body("a-tls", "2", "a"))
    t.clock.advance(40)
    t.ctx.secrets.drop_delivered(t.clock.monotonic())  # b and a's second delivery are 40 s old
    assert t.ctx.secrets.delivered == 2
    t.clock.advance(20)
    t.ctx.secrets.drop_delivered(t.clock.monotonic())
    assert t.ctx.secrets.delivered == 0
