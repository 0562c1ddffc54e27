"""The operator is not a confused deputy: each attack of the tenant-safety review, acted out by a tenant
with a real RBAC Role (impersonation) that may only manage MTLSIssuers and MTLSCertificates in its own
namespace. Each attack is refused with a condition (reason and sentence) and a Warning event, and the victim
object is byte-for-byte unchanged (resourceVersion, data, labels, annotations)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from helpers import wait_for
from mtls_objects import (
    admin_ca_pem,
    byo_ca_metadata,
    condition,
    create_certificate,
    create_issuer,
    get,
    self_signed,
    wait_ready,
)
from operator_process import OperatorProcess
from tenancy import snapshot, tenant


def _events(cluster: Any, namespace: str, name: str, reason: str) -> list[Any]:
    items = cluster.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [e for e in items if e.reason == reason and e.type == "Warning"]


def _wait_reason(
    cluster: Any, namespace: str, plural: str, name: str, kind: str, reason: str
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(cluster, namespace, plural, name)
        found = condition(obj, kind)
        return obj if found is not None and found.get("reason") == reason else None

    return wait_for(check, timeout=60, message=f"{plural} {name} condition {kind} reason {reason}")


@pytest.fixture
def victim_namespace(cluster: Any) -> Iterator[str]:
    """A namespace of another team, outside the operator's namespaces, that accepts nothing."""
    name = f"victim-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"team": name}))
    )
    yield name
    cluster.core.delete_namespace(name)


# --------------------------------------------------------------------------------------------------------
# Finding 1: trust bundles cannot overwrite other namespaces' ConfigMaps


def test_a_tenant_cannot_rewrite_a_configmap_of_another_namespace_or_its_own(
    operator: Any, cluster: Any, namespace: str, victim_namespace: str
) -> None:
    victim = cluster.core.create_namespaced_config_map(
        victim_namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="app-config"), data={"settings.yaml": "a: 1\n"}),
    )
    own = cluster.core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="app-config"), data={"settings.yaml": "b: 2\n"}),
    )
    with tenant(cluster, namespace) as attacker:
        attacker.issuer(
            "evil",
            {
                **self_signed("evil"),
                "trustBundle": {
                    "configMapName": "app-config",
                    "namespaceSelector": {"matchLabels": {"team": victim_namespace}},
                },
            },
        )
    issuer = _wait_reason(cluster, namespace, "mtlsissuers", "evil", "TrustBundle", "BundleConflict")
    assert (condition(issuer) or {}).get("status") == "True", "the issuer itself works"
    assert "app-config" in (condition(issuer, "TrustBundle") or {})["message"]
    wait_for(
        lambda: _events(cluster, namespace, "evil", "BundleConflict"), timeout=30, message="a Warning event"
    )
    time.sleep(2)  # a write would have happened by now: the conflict was judged on a read of both
    after_victim = cluster.core.read_namespaced_config_map("app-config", victim_namespace)
    after_own = cluster.core.read_namespaced_config_map("app-config", namespace)
    assert snapshot(after_victim) == snapshot(victim), "the other team's ConfigMap is byte-for-byte unchanged"
    assert snapshot(after_own) == snapshot(own), "a ConfigMap the operator did not write is not adopted"


def test_a_bundle_reaches_another_namespace_only_when_its_admin_accepts_it(
    operator: Any, cluster: Any, namespace: str, victim_namespace: str
) -> None:
    with tenant(cluster, namespace) as attacker:
        attacker.issuer(
            "mesh",
            {
                **self_signed("mesh"),
                "trustBundle": {
                    "configMapName": "mesh-bundle",
                    "namespaceSelector": {"matchLabels": {"team": victim_namespace}},
                },
            },
        )
    issuer = _wait_reason(cluster, namespace, "mtlsissuers", "mesh", "TrustBundle", "BundleNotAccepted")
    assert victim_namespace in (condition(issuer, "TrustBundle") or {})["message"]
    with pytest.raises(ApiException) as missing:
        cluster.core.read_namespaced_config_map("mesh-bundle", victim_namespace)
    assert missing.value.status == 404, "nothing published where it was not accepted"
    cluster.core.read_namespaced_config_map("mesh-bundle", namespace)  # its own namespace has it
    cluster.core.patch_namespace(
        victim_namespace,
        {"metadata": {"annotations": {"mtls.dev/accept-trust-bundles-from": f"{namespace}/mesh"}}},
    )
    wait_for(
        lambda: _exists_config_map(cluster, victim_namespace, "mesh-bundle"),
        timeout=60,
        message="the bundle published once the namespace accepted it",
    )
    _wait_reason(cluster, namespace, "mtlsissuers", "mesh", "TrustBundle", "BundlePublished")


def _exists_config_map(cluster: Any, namespace: str, name: str) -> bool:
    try:
        cluster.core.read_namespaced_config_map(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


# --------------------------------------------------------------------------------------------------------
# Finding 2: a CA Secret the tenant cannot read is neither used nor destroyed


def test_a_tenant_cannot_sign_with_or_rotate_over_an_admins_ca_secret(
    operator: Any, cluster: Any, namespace: str
) -> None:
    crt, key = admin_ca_pem()
    data = {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}
    # The admin's CA, opted in for the admin's own issuer only.
    platform = cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=byo_ca_metadata("platform-root", "platform"), type="kubernetes.io/tls", data=data
        ),
    )
    create_issuer(cluster, namespace, "platform", {"ca": {"secretName": "platform-root"}})
    with tenant(cluster, namespace) as attacker:
        attacker.issuer(
            "grab",
            {"selfSigned": {"secretName": "platform-root", "commonName": "grab"}},
            annotations={"mtls.dev/rotate-requested-at": "now/1"},
        )
        attacker.issuer("sign", {"ca": {"secretName": "platform-root"}})
    grabbed = _wait_reason(cluster, namespace, "mtlsissuers", "grab", "Ready", "CASecretNotManaged")
    assert "mtls.dev/allowed-issuers" in (condition(grabbed) or {})["message"]
    signer = _wait_reason(cluster, namespace, "mtlsissuers", "sign", "Ready", "CASecretNotAllowed")
    assert (condition(signer) or {})["status"] == "False"
    wait_for(lambda: _events(cluster, namespace, "grab", "CASecretNotManaged"), timeout=30, message="event")
    wait_for(lambda: _events(cluster, namespace, "sign", "CASecretNotAllowed"), timeout=30, message="event")
    _wait_reason(
        cluster, namespace, "mtlsissuers", "platform", "Ready", "KeyPairVerified"
    )  # the admin's works
    time.sleep(2)
    after = cluster.core.read_namespaced_secret("platform-root", namespace)
    assert snapshot(after) == snapshot(platform), "the admin's CA Secret is byte-for-byte unchanged"
    names = {s.metadata.name for s in cluster.core.list_namespaced_secret(namespace).items}
    assert "platform-root-next" not in names, "no rotation was staged over it"


def test_a_damaged_ca_secret_a_tenant_names_for_an_intermediate_is_never_signed_over(
    operator: Any, cluster: Any, namespace: str
) -> None:
    """The operator re-signs a damaged intermediate CA Secret only when it is its own for that issuer. A
    tenant's intermediate naming an admin's damaged Secret (not opted in), or one the admin opted in for it,
    is reported, and neither Secret is written."""
    crt, _ = admin_ca_pem()
    _, other_key = admin_ca_pem()  # a key that is not the certificate's: the Secret is damaged
    data = {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(other_key).decode()}
    victims = {
        name: cluster.core.create_namespaced_secret(
            namespace,
            client.V1Secret(metadata=byo_ca_metadata(name, *opted), type="kubernetes.io/tls", data=data),
        )
        for name, opted in (("admin-sub", ("platform",)), ("lent-sub", ("lent",)))
    }
    with tenant(cluster, namespace) as attacker:
        attacker.issuer("troot", {"selfSigned": {"secretName": "troot-ca", "commonName": "tenant root"}})
        for name, secret in (("grab", "admin-sub"), ("lent", "lent-sub")):
            attacker.issuer(
                name,
                {"intermediate": {"issuerRef": {"name": "troot"}, "secretName": secret, "commonName": name}},
            )
    _wait_reason(cluster, namespace, "mtlsissuers", "grab", "Ready", "CASecretNotManaged")
    _wait_reason(cluster, namespace, "mtlsissuers", "lent", "Ready", "CAKeyMismatch")
    for name, before in victims.items():
        after = cluster.core.read_namespaced_secret(name, namespace)
        assert snapshot(after) == snapshot(before), f"{name} is byte-for-byte unchanged"


def test_a_staged_next_ca_the_operator_did_not_create_is_never_used(
    operator: Any, cluster: Any, namespace: str
) -> None:
    crt, key = admin_ca_pem()
    squatter = cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="team-ca-next", labels={"mtls.dev/secret-role": "ca"}),
            type="kubernetes.io/tls",
            data={"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()},
        ),
    )
    with tenant(cluster, namespace) as attacker:
        attacker.issuer("team", self_signed("team"), annotations={"mtls.dev/rotate-requested-at": "t/1"})
    issuer = _wait_reason(cluster, namespace, "mtlsissuers", "team", "CARotation", "CASecretNotManaged")
    assert "team-ca-next" in (condition(issuer, "CARotation") or {})["message"]
    own_ca = cluster.core.read_namespaced_secret("team-ca", namespace)
    time.sleep(2)
    assert snapshot(cluster.core.read_namespaced_secret("team-ca-next", namespace)) == snapshot(squatter)
    assert cluster.core.read_namespaced_secret("team-ca", namespace).metadata.resource_version == (
        own_ca.metadata.resource_version
    ), "the issuer's own CA was not replaced by the squatter's"


# --------------------------------------------------------------------------------------------------------
# Finding 3: no spin


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"duration": "1m", "renewBeforePercentage": 99}, id="renewBeforePercentage 99"),
        pytest.param({"duration": "1m", "renewBefore": "59s"}, id="renewBefore 59s of a minute"),
    ],
)
def test_the_api_server_refuses_a_renewal_window_that_would_spin(
    crds: Any, cluster: Any, namespace: str, spec: dict[str, Any]
) -> None:
    with tenant(cluster, namespace) as attacker, pytest.raises(ApiException) as refused:
        attacker.certificate(
            "spin", {"secretName": "spin-tls", "issuerRef": {"name": "ca"}, "commonName": "x", **spec}
        )
    assert refused.value.status == 422
    assert "so that a certificate lives a while before it is renewed" in refused.value.body or (
        "less than or equal to 90" in refused.value.body
    )


def test_the_shortest_renewal_the_server_allows_is_bounded(
    operator: Any, cluster: Any, namespace: str
) -> None:
    """duration 1m with renewBefore 54s (90 %, the most the server accepts) would renew 6 s after issuance;
    the renewal floor waits at least 30 s: at most 2 renewals in a 45 s window (a spin made thousands)."""
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    with tenant(cluster, namespace) as attacker:
        attacker.certificate(
            "short",
            {
                "secretName": "short-tls",
                "issuerRef": {"name": "ca"},
                "commonName": "short",
                "duration": "1m",
                "renewBefore": "54s",
            },
        )
    wait_ready(cluster, namespace, "short")
    start = time.monotonic()
    first = int(get(cluster, namespace, "mtlscertificates", "short")["status"]["revision"])
    time.sleep(45)  # the measurement window itself: issuances are counted over a fixed time
    revisions = int(get(cluster, namespace, "mtlscertificates", "short")["status"]["revision"]) - first
    elapsed = time.monotonic() - start
    assert 1 <= revisions <= 2, f"{revisions} renewals in {elapsed:.0f}s"


# --------------------------------------------------------------------------------------------------------
# Finding 4: a revocation owed on delete survives the operator being down


def test_a_certificate_deleted_while_the_operator_is_down_is_revoked_after_restart(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    first = OperatorProcess(cluster.kubeconfig, tmp_path / "op1.log", "--namespace", ns).start()
    try:
        create_issuer(cluster, ns, "ca", {**self_signed("ca"), "revocation": {}})
        create_certificate(
            cluster,
            ns,
            "web",
            {
                "secretName": "web-tls",
                "issuerRef": {"name": "ca"},
                "commonName": "web",
                "revocationPolicy": "Revoke",
            },
        )
        cert = wait_for(
            lambda: (
                (o := get(cluster, ns, "mtlscertificates", "web"))
                and (condition(o) or {}).get("status") == "True"
                and "mtls.dev/revoke-on-delete" in (o["metadata"].get("finalizers") or [])
                and o
            ),
            timeout=60,
            message="Ready with the revoke finalizer",
        )
        serial = cert["status"]["serialNumber"]
    finally:
        first.stop()
    cluster.custom.delete_namespaced_custom_object("mtls.dev", "v1alpha1", ns, "mtlscertificates", "web")
    time.sleep(1)
    assert get(cluster, ns, "mtlscertificates", "web")["metadata"].get("deletionTimestamp"), (
        "the deletion waits for the operator"
    )
    second = OperatorProcess(cluster.kubeconfig, tmp_path / "op2.log", "--namespace", ns).start()
    try:

        def revoked() -> bool:
            cm = cluster.core.read_namespaced_config_map("ca-revocations", ns)
            listed = {e["serial"] for e in json.loads((cm.data or {}).get("revoked.json") or "[]")}
            return serial.lstrip("0") in {s.lstrip("0") for s in listed}

        wait_for(revoked, timeout=60, message="the serial on the revocation list", ignore=(ApiException,))

        def gone() -> bool:
            try:
                get(cluster, ns, "mtlscertificates", "web")
            except ApiException as error:
                return error.status == 404
            return False

        wait_for(gone, timeout=30, message="the certificate deleted once its serial is listed")
    finally:
        second.stop()


# --------------------------------------------------------------------------------------------------------
# Low: Secret ownership is by the owning certificate's UID; rollout targets need the workload's consent


def test_a_certificate_recreated_under_the_same_name_does_not_take_over_the_old_secret(
    operator: Any, cluster: Any, namespace: str
) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    spec = {"secretName": "kept-tls", "issuerRef": {"name": "ca"}, "commonName": "kept"}
    create_certificate(cluster, namespace, "kept", spec)
    wait_ready(cluster, namespace, "kept")
    cluster.custom.delete_namespaced_custom_object(
        "mtls.dev", "v1alpha1", namespace, "mtlscertificates", "kept"
    )
    before = cluster.core.read_namespaced_secret("kept-tls", namespace)
    with tenant(cluster, namespace) as attacker:
        wait_for(lambda: _gone(cluster, namespace, "kept"), timeout=30, message="deleted")
        attacker.certificate("kept", {**spec, "commonName": "impostor"})
    refused = _wait_reason(cluster, namespace, "mtlscertificates", "kept", "Ready", "SecretNotManaged")
    assert "UID differs" in (condition(refused) or {})["message"]
    time.sleep(2)
    assert snapshot(cluster.core.read_namespaced_secret("kept-tls", namespace)) == snapshot(before)


def _gone(cluster: Any, namespace: str, name: str) -> bool:
    try:
        get(cluster, namespace, "mtlscertificates", name)
    except ApiException as error:
        return error.status == 404
    return False


def test_rollout_targets_restart_only_workloads_that_agreed(
    operator: Any, cluster: Any, namespace: str
) -> None:
    labels = {"app": "bystander"}
    cluster.apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="bystander"),
            spec=client.V1DeploymentSpec(
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="c", image="registry.invalid/x:1")],
                        volumes=[
                            client.V1Volume(name="cfg", config_map=client.V1ConfigMapVolumeSource(name="x"))
                        ],
                    ),
                ),
            ),
        ),
    )
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    before = cluster.apps.read_namespaced_deployment("bystander", namespace)
    with tenant(cluster, namespace) as attacker:
        attacker.certificate(
            "pusher",
            {
                "secretName": "pusher-tls",
                "issuerRef": {"name": "ca"},
                "commonName": "pusher",
                "rollout": {"targets": [{"kind": "Deployment", "name": "bystander"}]},
            },
            annotations={"mtls.dev/renew-requested-at": "go/1"},
        )
    blocked = _wait_reason(
        cluster, namespace, "mtlscertificates", "pusher", "RolloutBlocked", "RolloutTargetNotOptedIn"
    )
    assert "Deployment bystander" in (condition(blocked, "RolloutBlocked") or {})["message"]
    patch = {"metadata": {"annotations": {"mtls.dev/renew-requested-at": "again/2"}}}
    cluster.custom.patch_namespaced_custom_object(
        "mtls.dev", "v1alpha1", namespace, "mtlscertificates", "pusher", patch
    )
    wait_for(
        lambda: (
            int(get(cluster, namespace, "mtlscertificates", "pusher")["status"].get("revision") or 0) >= 2
        ),
        timeout=60,
        message="renewed",
    )
    time.sleep(5)  # past the rollout coalescing window (2 s in the test operator)
    after = cluster.apps.read_namespaced_deployment("bystander", namespace)
    assert (after.spec.template.metadata.annotations or {}) == (
        before.spec.template.metadata.annotations or {}
    )
    assert after.metadata.generation == before.metadata.generation, "the workload was not restarted"


def test_an_intermediate_under_a_parent_that_may_not_sign_cas_reports_it(
    operator: Any, cluster: Any, namespace: str
) -> None:
    crt, key = admin_ca_pem(path_length=0)
    cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=byo_ca_metadata("leafonly-keypair", "leafonly"),
            type="kubernetes.io/tls",
            data={"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()},
        ),
    )
    create_issuer(cluster, namespace, "leafonly", {"ca": {"secretName": "leafonly-keypair"}})
    create_issuer(
        cluster,
        namespace,
        "sub",
        {"intermediate": {"issuerRef": {"name": "leafonly"}, "secretName": "sub-ca", "commonName": "sub"}},
    )
    issuer = _wait_reason(cluster, namespace, "mtlsissuers", "sub", "Ready", "CANotCA")
    assert "pathLength 0" in (condition(issuer) or {})["message"]
    wait_for(lambda: _events(cluster, namespace, "sub", "CANotCA"), timeout=30, message="a Warning event")


def test_a_second_writer_fighting_the_operator_is_held_by_the_issuance_budget(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    """Whoever keeps breaking a certificate's Secret, the operator re-issues it a bounded number of times,
    then waits with IssuanceBudgetExceeded (condition, Warning event, metric) instead of spinning."""
    ns = own_namespace
    proc = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        "--namespace",
        ns,
        env={"MTLS_ISSUANCE_BURST": "3", "MTLS_ISSUANCE_REFILL": "600"},
    ).start()
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        create_certificate(
            cluster, ns, "web", {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "commonName": "web"}
        )
        wait_ready(cluster, ns, "web")
        garbage = {"tls.key": base64.b64encode(b"not a key").decode()}
        for attempt in range(6):
            cluster.core.patch_namespaced_secret("web-tls", ns, {"data": garbage})
            obj = wait_for(
                lambda wanted=attempt + 2: _reissued_or_throttled(cluster, ns, "web", wanted),
                timeout=30,
                message=f"re-issued or throttled after tamper {attempt + 1}",
            )
            if (condition(obj, "Issuing") or {}).get("reason") == "IssuanceBudgetExceeded":
                break
        revision = int(obj["status"]["revision"])
        assert revision == 3, f"a burst of 3 issuances, then the budget holds (revision {revision})"
        assert "issued too often" in (condition(obj, "Issuing") or {})["message"]
        wait_for(lambda: _events(cluster, ns, "web", "IssuanceBudgetExceeded"), timeout=30, message="event")
        time.sleep(3)
        assert int(get(cluster, ns, "mtlscertificates", "web")["status"]["revision"]) == 3, (
            "no more issuances"
        )
    finally:
        proc.stop()


def _reissued_or_throttled(cluster: Any, namespace: str, name: str, revision: int) -> dict[str, Any] | None:
    obj = get(cluster, namespace, "mtlscertificates", name)
    if (condition(obj, "Issuing") or {}).get("reason") == "IssuanceBudgetExceeded":
        return obj
    ready = (condition(obj) or {}).get("status") == "True"
    return obj if ready and int(obj["status"].get("revision") or 0) >= revision else None
