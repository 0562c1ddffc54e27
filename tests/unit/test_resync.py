"""controllers.resync with a scripted API: the periodic comparison of the stores with a fresh list forgets
what vanished (unless intake heard of it after the list began), re-reads what changed, repairs managed
Secrets that vanished, and changes nothing when nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tests.unit.core_fakes import FakeApi, RecordingWork, make_context, run

from mtls_operator.api.constants import (
    ANN_CERTIFICATE_NAME,
    CERTIFICATE_PLURAL,
    CLUSTER_ISSUER_PLURAL,
    ISSUER_PLURAL,
    LABEL_SECRET_ROLE,
)
from mtls_operator.api.objects import Key
from mtls_operator.controllers.clock import FakeClock
from mtls_operator.controllers.config import OperatorConfig
from mtls_operator.controllers.intake import Intake
from mtls_operator.controllers.resync import Resync, ResyncReport
from mtls_operator.controllers.rollouts import RolloutManager
from mtls_operator.k8s.resources import PARTIAL_METADATA

NS = "demo"
JSON = dict[str, Any]
GROUP_PREFIX = "/apis/mtls.dev/v1alpha1"


class Cluster:
    """What the API server holds, answered the way list_metadata and get_custom ask: lists page by page
    (one item per page, to exercise continue tokens), label selectors of the form "key exists"."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[Key, JSON]] = {
            CERTIFICATE_PLURAL: {},
            ISSUER_PLURAL: {},
            CLUSTER_ISSUER_PLURAL: {},
            "secrets": {},
        }
        self.rv = 100
        self.on_list: Callable[[str], None] | None = None  # runs while a list is "in flight"

    def put(self, plural: str, body: JSON) -> JSON:
        self.rv += 1
        meta = body["metadata"]
        meta["resourceVersion"] = str(self.rv)
        self.objects[plural][(meta.get("namespace", ""), meta["name"])] = body
        return body

    def answer(self, method: str, path: str, kwargs: dict[str, Any]) -> JSON | None:
        assert method == "GET", f"the resync never writes, but sent {method} {path}"
        plural, namespace, name = parse(path)
        if name is not None:
            return self.objects[plural].get((namespace, name))
        assert kwargs.get("accept") == PARTIAL_METADATA
        if self.on_list is not None:
            self.on_list(plural)
        params = kwargs.get("params") or {}
        selector = params.get("labelSelector")
        items = [
            {"metadata": {k: v for k, v in body["metadata"].items() if k != "annotations"}}
            for (ns, _), body in sorted(self.objects[plural].items())
            if (namespace is None or ns == namespace)
            and (selector is None or selector in (body["metadata"].get("labels") or {}))
        ]
        start = int(params.get("continue") or 0)
        page = items[start : start + 1]
        more = start + 1 < len(items)
        return {
            "items": page,
            "metadata": {"resourceVersion": str(self.rv), "continue": str(start + 1) if more else ""},
        }


def parse(path: str) -> tuple[str, str | None, str | None]:
    """(plural, namespace, name) of a collection or object path."""
    parts = path.strip("/").split("/")
    # /api/v1[/namespaces/<ns>]/secrets[/<name>], /apis/<group>/<version>[/namespaces/<ns>]/<plural>[/<name>]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    namespace = None
    if rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    return rest[0], namespace, rest[1] if len(rest) > 1 else None


def cert(name: str, secret: str, uid: str | None = None, common_name: str | None = None) -> JSON:
    return {
        "metadata": {"namespace": NS, "name": name, "uid": uid or f"uid-{name}"},
        "spec": {"secretName": secret, "issuerRef": {"name": "mesh"}, "commonName": common_name or name},
    }


def issuer(name: str, secret: str) -> JSON:
    return {
        "metadata": {"namespace": NS, "name": name, "uid": f"uid-{name}"},
        "spec": {"ca": {"secretName": secret}},
    }


def secret(name: str, *, labelled: bool = True, owner: str | None = None) -> JSON:
    return {
        "metadata": {
            "namespace": NS,
            "name": name,
            "uid": f"uid-{name}",
            "labels": {LABEL_SECRET_ROLE: "certificate"} if labelled else {},
            "annotations": {ANN_CERTIFICATE_NAME: owner} if owner else {},
        }
    }


class Operator:
    """Stores, intake and resync over a scripted cluster; ``sync()`` replays the cluster as watch events."""

    def __init__(self, cluster: Cluster, config: OperatorConfig | None = None) -> None:
        self.cluster = cluster
        self.clock = FakeClock()
        self.api = FakeApi(cluster.answer)
        self.work = RecordingWork()
        self.ctx = make_context(self.api, clock=self.clock, work=self.work, config=config)
        self.forgotten: list[tuple[str, Key]] = []
        self.intake = Intake(
            self.ctx,
            RolloutManager(self.ctx.api, _NoVersions(), clock=self.clock),
            lambda key: self.forgotten.append(("cert", key)),
            lambda key: self.forgotten.append(("issuer", key)),
        )
        self.resync = Resync(self.ctx, self.intake)

    def sync(self) -> None:
        """The watches deliver everything the cluster holds; then the queue is emptied."""
        for body in self.cluster.objects[CERTIFICATE_PLURAL].values():
            self.intake.certificate_event("ADDED", body)
        for body in self.cluster.objects[ISSUER_PLURAL].values():
            self.intake.issuer_event("ADDED", body)
        for body in self.cluster.objects["secrets"].values():
            if LABEL_SECRET_ROLE in body["metadata"]["labels"]:
                self.intake.secret_event("ADDED", body)
        self.work.clear()
        self.clock.advance(60)

    def run(self) -> ResyncReport:
        self.api.calls.clear()
        report: ResyncReport = run(self.resync.run())
        return report

    def individual_reads(self) -> list[str]:
        return [c.path for c in self.api.calls if "params" not in c.kwargs]


class _NoVersions:
    def version(self, namespace: str, ref: str) -> None:
        return None


def small_cluster() -> Cluster:
    cluster = Cluster()
    for name in ("web", "api", "db"):
        cluster.put(CERTIFICATE_PLURAL, cert(name, f"{name}-tls"))
        cluster.put("secrets", secret(f"{name}-tls", owner=name))
    cluster.put(ISSUER_PLURAL, issuer("mesh", "mesh-ca"))
    return cluster


def counts(report: ResyncReport) -> tuple[int, int, int]:
    return report.forgotten, report.refreshed, report.secrets_changed


# ---------------------------------------------------------------------------------------------------------


def test_a_resync_that_finds_nothing_changes_nothing() -> None:
    op = Operator(small_cluster())
    op.sync()
    report = op.run()
    assert counts(report) == (0, 0, 0)
    assert op.work.nothing and op.forgotten == []
    assert op.individual_reads() == []  # lists only, no object read again
    assert {parse(c.path)[0] for c in op.api.calls} == {
        CERTIFICATE_PLURAL,
        ISSUER_PLURAL,
        CLUSTER_ISSUER_PLURAL,
        "secrets",
    }
    assert op.api.writes == 0
    assert len(op.ctx.certificates) == 3 and len(op.ctx.issuers) == 1


def test_objects_that_vanished_during_a_gap_are_forgotten() -> None:
    cluster = small_cluster()
    cluster.put(CERTIFICATE_PLURAL, cert("twin", "web-tls"))
    op = Operator(cluster)
    op.sync()
    del cluster.objects[CERTIFICATE_PLURAL][(NS, "twin")]
    del cluster.objects[ISSUER_PLURAL][(NS, "mesh")]
    report = op.run()
    assert counts(report) == (2, 0, 0)
    assert sorted(op.forgotten) == [("cert", (NS, "twin")), ("issuer", (NS, "mesh"))]
    assert op.ctx.certificates.get((NS, "twin")) is None and op.ctx.issuers.get((NS, "mesh")) is None
    assert (NS, "web") in op.work.certificates  # it shared a secretName with the one that vanished


def test_an_object_deleted_and_recreated_during_a_gap_is_forgotten_and_read_again() -> None:
    cluster = small_cluster()
    op = Operator(cluster)
    op.sync()
    cluster.put(CERTIFICATE_PLURAL, cert("web", "web-tls", uid="uid-web-2"))
    report = op.run()
    assert counts(report) == (1, 1, 0)
    assert op.forgotten == [("cert", (NS, "web"))]
    stored = op.ctx.certificates.get((NS, "web"))
    assert stored is not None and stored.meta.uid == "uid-web-2"
    assert op.individual_reads() == [f"{GROUP_PREFIX}/namespaces/{NS}/{CERTIFICATE_PLURAL}/web"]


def test_changed_and_missed_objects_are_read_again_and_fed_to_intake() -> None:
    cluster = small_cluster()
    op = Operator(cluster)
    op.sync()
    cluster.put(CERTIFICATE_PLURAL, cert("web", "web-tls", common_name="changed"))  # update missed
    cluster.put(CERTIFICATE_PLURAL, cert("new", "new-tls"))  # creation missed
    report = op.run()
    assert counts(report) == (0, 2, 0)
    web = op.ctx.certificates.get((NS, "web"))
    assert web is not None and web.spec is not None and web.spec.common_name == "changed"
    assert op.ctx.certificates.get((NS, "new")) is not None
    assert sorted(op.work.certificates) == [(NS, "new"), (NS, "web")]
    assert sorted(op.individual_reads()) == [
        f"{GROUP_PREFIX}/namespaces/{NS}/{CERTIFICATE_PLURAL}/new",
        f"{GROUP_PREFIX}/namespaces/{NS}/{CERTIFICATE_PLURAL}/web",
    ]


def test_an_object_that_vanishes_between_the_list_and_the_read_is_forgotten() -> None:
    cluster = small_cluster()
    op = Operator(cluster)
    op.sync()
    cluster.put(CERTIFICATE_PLURAL, cert("web", "web-tls", common_name="changed"))
    cluster.on_list = lambda plural: None

    def vanish(method: str, path: str, kwargs: dict[str, Any]) -> JSON | None:
        if path.endswith("/web"):
            return None
        return cluster.answer(method, path, kwargs)

    op.api.answer = vanish
    report = op.run()
    assert report.refreshed == 1 and op.forgotten == [("cert", (NS, "web"))]
    assert op.ctx.certificates.get((NS, "web")) is None


def test_an_object_that_cannot_be_read_is_left_for_the_next_resync() -> None:
    cluster = small_cluster()
    op = Operator(cluster)
    op.sync()
    cluster.put(CERTIFICATE_PLURAL, cert("web", "web-tls", common_name="changed"))
    op.api.fail("GET", f"{GROUP_PREFIX}/namespaces/{NS}/{CERTIFICATE_PLURAL}/web", 500, "InternalError")
    report = op.run()
    assert counts(report) == (0, 0, 0) and op.forgotten == []
    web = op.ctx.certificates.get((NS, "web"))
    assert web is not None and web.spec is not None and web.spec.common_name == "web"


def test_an_object_intake_heard_of_after_the_list_began_is_not_forgotten() -> None:
    cluster = small_cluster()
    op = Operator(cluster)
    op.sync()

    def created_meanwhile(plural: str) -> None:
        if plural == CERTIFICATE_PLURAL:  # the watch delivers a creation the list is too old to show
            op.clock.advance(0.5)
            op.intake.certificate_event("ADDED", cert("fresh", "fresh-tls"))
            cluster.on_list = None

    cluster.on_list = created_meanwhile
    report = op.run()
    assert report.forgotten == 0 and op.forgotten == []
    assert op.ctx.certificates.get((NS, "fresh")) is not None


def test_an_object_heard_of_before_the_list_began_and_not_listed_is_forgotten() -> None:
    cluster = small_cluster()
    op = Operator(cluster)
    op.sync()
    op.intake.certificate_event("ADDED", cert("ghost", "ghost-tls"))  # its DELETED event was missed
    op.clock.advance(1)
    report = op.run()
    assert report.forgotten == 1 and op.forgotten == [("cert", (NS, "ghost"))]


# ---------------------------------------------------------------------------------------------------------
# Managed Secrets


def test_a_managed_secret_that_vanished_unseen_queues_its_certificate() -> None:
    cluster = small_cluster()
    op = Operator(cluster)
    op.sync()
    del cluster.objects["secrets"][(NS, "web-tls")]
    report = op.run()
    assert counts(report) == (0, 0, 1)
    assert op.work.certificates == [(NS, "web")]
    assert op.ctx.secrets.resource_version((NS, "web-tls")) is None


def test_a_managed_secret_changed_unseen_queues_its_certificate() -> None:
    cluster = small_cluster()
    op = Operator(cluster)
    op.sync()
    cluster.put("secrets", secret("web-tls", owner="web"))
    report = op.run()
    assert counts(report) == (0, 0, 1)
    assert op.work.certificates == [(NS, "web")]
    assert op.ctx.secrets.resource_version((NS, "web-tls")) == str(cluster.rv)


def test_a_listed_secret_the_operator_never_saw_is_left_to_the_watch() -> None:
    cluster = small_cluster()
    op = Operator(cluster)
    op.sync()
    cluster.put("secrets", secret("stranger-tls"))
    assert counts(op.run()) == (0, 0, 0) and op.work.nothing


def test_an_unlabelled_secret_the_operator_reads_is_not_taken_as_vanished() -> None:
    cluster = small_cluster()
    cluster.put(ISSUER_PLURAL, issuer("byo", "byo-ca"))
    cluster.put("secrets", secret("byo-ca", labelled=False))
    op = Operator(cluster)
    op.sync()
    op.ctx.secrets.observe(
        (NS, "byo-ca"), cluster.objects["secrets"][(NS, "byo-ca")]["metadata"]["resourceVersion"]
    )
    report = op.run()
    assert counts(report) == (0, 0, 0)
    assert op.work.nothing


def test_a_secret_written_while_the_list_was_in_flight_is_not_taken_as_vanished() -> None:
    cluster = small_cluster()
    op = Operator(cluster)
    op.sync()

    def issued_meanwhile(plural: str) -> None:
        if plural == "secrets":
            op.clock.advance(0.5)
            op.ctx.secrets.observe((NS, "late-tls"), "999")  # our own write, after the list's snapshot
            cluster.on_list = None

    cluster.on_list = issued_meanwhile
    report = op.run()
    assert report.secrets_changed == 0
    assert op.ctx.secrets.resource_version((NS, "late-tls")) == "999"


# ---------------------------------------------------------------------------------------------------------
# Scope


def test_exact_namespaces_are_listed_one_by_one() -> None:
    cluster = small_cluster()
    op = Operator(cluster, replace(OperatorConfig(), namespaces=(NS, "prod")))
    op.sync()
    assert counts(op.run()) == (0, 0, 0)
    namespaces = {parse(c.path)[1] for c in op.api.calls}
    assert namespaces == {NS, "prod"}


def test_with_a_glob_the_cluster_is_listed_once_and_other_namespaces_are_ignored() -> None:
    cluster = small_cluster()
    outside = cert("intruder", "x-tls")
    outside["metadata"]["namespace"] = "kube-system"
    cluster.put(CERTIFICATE_PLURAL, outside)
    op = Operator(cluster, replace(OperatorConfig(), namespaces=("de*",)))
    for body in list(cluster.objects[CERTIFICATE_PLURAL].values()):
        if body["metadata"]["namespace"] == NS:
            op.intake.certificate_event("ADDED", body)
    for body in cluster.objects[ISSUER_PLURAL].values():
        op.intake.issuer_event("ADDED", body)
    op.work.clear()
    report = op.run()
    assert counts(report) == (0, 0, 0)
    assert {parse(c.path)[1] for c in op.api.calls if "params" in c.kwargs} == {None}
    assert op.ctx.certificates.get(("kube-system", "intruder")) is None
