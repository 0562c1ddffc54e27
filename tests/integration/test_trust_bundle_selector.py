"""A trust bundle's namespaceSelector: the bundle is published in the issuer's namespace and in every
namespace the selector matches whose admin accepted bundles from that issuer (the namespace annotation
mtls.dev/accept-trust-bundles-from: <namespace>/<issuer>, or *); not in a selected namespace that did not
accept, nor in one that accepted another issuer, nor in an accepting one the selector does not match.
Read from the cluster: the ConfigMaps, the issuer's TrustBundle condition, and the operator's writes in
the API server's audit log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client
from kubernetes.client.rest import ApiException

from helpers import wait_for
from mtls_objects import condition, create_issuer, get, secret_data, self_signed, wait_issuer_ready

ACCEPT = "mtls.dev/accept-trust-bundles-from"
BUNDLE = "mesh-bundle"


@pytest.fixture
def neighbours(cluster: Any, namespace: str) -> Iterator[dict[str, str]]:
    """Namespaces around the issuer's (in the shared operator's t-* scope): role -> name."""
    suffix = uuid.uuid4().hex[:6]
    label = {"mesh": f"m-{suffix}"}
    roles: dict[str, tuple[dict[str, str], dict[str, str]]] = {
        # role: (labels, annotations)
        "accepts": (label, {ACCEPT: f"{namespace}/ca"}),
        "accepts-any": (label, {ACCEPT: "*"}),
        "silent": (label, {}),
        "accepts-another": (label, {ACCEPT: f"{namespace}/other"}),
        "not-selected": ({"mesh": "elsewhere"}, {ACCEPT: f"{namespace}/ca"}),
    }
    names = {}
    for role, (labels, notes) in roles.items():
        name = f"t-bundle-{role}-{suffix}"
        cluster.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=notes))
        )
        names[role] = name
    names["selector"] = label["mesh"]
    yield names
    for role, name in names.items():
        if role != "selector":
            cluster.core.delete_namespace(name)


def _bundle(cluster: Any, namespace: str) -> list[x509.Certificate] | None:
    try:
        found = cluster.core.read_namespaced_config_map(BUNDLE, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return x509.load_pem_x509_certificates((found.data or {})["ca.crt"].encode())


def test_a_bundle_goes_to_the_selected_namespaces_that_accepted_it_and_nowhere_else(
    operator: Any, cluster: Any, namespace: str, neighbours: dict[str, str]
) -> None:
    mark = cluster.audit.mark()
    create_issuer(
        cluster,
        namespace,
        "ca",
        {
            **self_signed("ca"),
            "trustBundle": {
                "configMapName": BUNDLE,
                "namespaceSelector": {"matchLabels": {"mesh": neighbours["selector"]}},
            },
        },
    )
    wait_issuer_ready(cluster, namespace, "ca")
    root = x509.load_pem_x509_certificate(secret_data(cluster, namespace, "ca-ca")["tls.crt"])
    published = [namespace, neighbours["accepts"], neighbours["accepts-any"]]
    for where in published:
        wait_for(lambda where=where: _bundle(cluster, where), timeout=30, message=f"the bundle in {where}")
        assert _bundle(cluster, where) == [root], where

    refused = sorted([neighbours["silent"], neighbours["accepts-another"]])

    def not_accepted() -> dict[str, Any] | None:
        found = condition(get(cluster, namespace, "mtlsissuers", "ca"), "TrustBundle")
        return found if found and found["reason"] == "BundleNotAccepted" else None

    trust = wait_for(not_accepted, timeout=30, message="the TrustBundle condition naming the refusals")
    for where in refused:
        assert where in trust["message"], trust
    assert neighbours["not-selected"] not in trust["message"], trust
    for where in [*refused, neighbours["not-selected"]]:
        assert _bundle(cluster, where) is None, f"a bundle in {where}"
    # The operator wrote ConfigMaps in the accepted namespaces only.
    written = {
        w.namespace for w in operator.writes(since=mark) if w.resource == "configmaps" and w.name == BUNDLE
    }
    assert written == set(published), written

    # Its admin accepts it later: the bundle follows, without touching the issuer.
    cluster.core.patch_namespace(
        neighbours["silent"], {"metadata": {"annotations": {ACCEPT: f"{namespace}/ca"}}}
    )
    wait_for(
        lambda: _bundle(cluster, neighbours["silent"]) == [root],
        timeout=30,
        message="the bundle in the namespace that accepted it later",
    )
    trust = wait_for(
        lambda: (
            (found := condition(get(cluster, namespace, "mtlsissuers", "ca"), "TrustBundle"))
            and neighbours["silent"] not in found["message"]
            and found
        ),
        timeout=30,
        message="the TrustBundle condition without the namespace that accepted",
    )
    assert neighbours["accepts-another"] in trust["message"], trust
