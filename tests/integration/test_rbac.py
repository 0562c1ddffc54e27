"""The operator runs as the chart's ServiceAccount, with exactly the chart's RBAC, through issue -> renew
-> restart of a consuming Deployment, and never meets a 403.

The chart is installed with `helm install` (namespaced scope: a Role in the test namespace, the
leader-election Role, no cluster-scoped rules); the operator runs as a local process with a kubeconfig
holding a token for that ServiceAccount from the TokenRequest API (kopf and the operator's own client
both log in through it). What the API server refused is read from its audit log, which records every
request of a ServiceAccount: so "never a 403" covers kopf's requests as well as the operator's own."""

from __future__ import annotations

import base64
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from tests.helpers import Cluster, wait_for

from api_audit import show
from mtls_objects import create_certificate, create_issuer, get, self_signed, wait_issuer_ready, wait_ready
from operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mtls-operator"


def token_kubeconfig(cluster: Cluster, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig that authenticates with a TokenRequest token for the ServiceAccount, nothing else."""
    from kubernetes import client

    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = cluster.core.create_namespaced_service_account_token(service_account, namespace, request)
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": service_account, "user": {"token": token.status.token}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": "test", "user": service_account, "namespace": namespace}}
        ],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def service_account_user(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


def assert_never_denied(cluster: Cluster, user: str, since: int) -> None:
    """The API server refused none of `user`'s requests after `since`, and did record some: the audit
    log knows this user (a check that could not fail otherwise)."""
    requests = cluster.audit.requests(since=since, user=user)
    assert any(r.is_write for r in requests), f"no write of {user} in the audit log:\n{show(requests)}"
    denied = [r for r in requests if r.denied]
    assert denied == [], f"{len(denied)} of {len(requests)} requests of {user} refused:\n{show(denied)}"
    print(f"{len(requests)} requests of {user} ({sum(r.is_write for r in requests)} writes), none refused")


def consumer(namespace: str, secret: str) -> dict[str, Any]:
    labels = {"app": "consumer"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "consumer", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.invalid/app:1",
                            "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": True}],
                        }
                    ],
                    "volumes": [{"name": "tls", "secret": {"secretName": secret}}],
                },
            },
        },
    }


def stamp(cluster: Cluster, namespace: str) -> str | None:
    deployment = cluster.apps.read_namespaced_deployment("consumer", namespace)
    annotations = deployment.spec.template.metadata.annotations or {}
    return annotations.get("mtls.dev/tls-stamp")


def test_the_chart_service_account_is_enough_for_issue_renew_and_restart(
    helm: str, cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": str(tmp_path / "helm")}
    installed = subprocess.run(
        [helm, "install", release, str(CHART), "--namespace", ns, "--set", "replicaCount=0",
         "--set", "crds.enabled=false", "--set", f"scope.namespaces={{{ns}}}", "--wait", "--timeout", "60s"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    service_account = f"{release}-mtls-operator"
    kubeconfig = token_kubeconfig(cluster, ns, service_account, tmp_path / "sa.kubeconfig")
    log = tmp_path / "operator.log"
    since = cluster.audit.mark()
    operator = OperatorProcess(
        kubeconfig,
        log,
        "--namespace",
        ns,
        "--leader-elect",
        "--leader-elect-namespace",
        ns,
        "--metrics-port",
        "0",
        env={"MTLS_BACKOFF_BASE": "2"},
    )
    operator.start()
    try:
        from kubernetes import client
        from kubernetes.utils import create_from_dict

        def leads() -> bool:
            lease = client.CoordinationV1Api(cluster.api_client).read_namespaced_lease("mtls-operator", ns)
            assert operator.proc is not None
            return (lease.spec.holder_identity or "").endswith(f"_{operator.proc.pid}")

        # It leads: the Lease names it (host_pid).
        wait_for(leads, timeout=30, message="the Lease held by the operator", ignore=(client.ApiException,))

        create_from_dict(cluster.api_client, consumer(ns, "web-tls"))
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        create_certificate(
            cluster,
            ns,
            "web",
            {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["web.example"]},
        )
        first = wait_ready(cluster, ns, "web")["status"]
        # Renew on request: the annotation must be later than the certificate's notBefore.
        not_before = datetime.fromisoformat(first["notBefore"].replace("Z", "+00:00"))
        time.sleep(max(0.0, (not_before - datetime.now(UTC)).total_seconds()) + 1.1)
        requested = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        cluster.custom.patch_namespaced_custom_object(
            "mtls.dev", "v1alpha1", ns, "mtlscertificates", "web",
            {"metadata": {"annotations": {"mtls.dev/renew-requested-at": requested}}},
        )  # fmt: skip

        def renewed() -> dict[str, Any] | None:
            status = get(cluster, ns, "mtlscertificates", "web").get("status") or {}
            return status if status.get("serialNumber") != first["serialNumber"] else None

        second = wait_for(renewed, timeout=60, message="the certificate renewed on request")
        assert second["revision"] == first["revision"] + 1
        secret = cluster.core.read_namespaced_secret("web-tls", ns)
        assert base64.b64decode(secret.data["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
        # The consuming Deployment is restarted for the renewed certificate (pod-template stamp).
        wait_for(lambda: stamp(cluster, ns), timeout=60, message="the consumer's pod template stamped")
    finally:
        operator.stop()
        subprocess.run(
            [helm, "uninstall", release, "--namespace", ns], capture_output=True, env=env, timeout=120
        )
    assert_never_denied(cluster, service_account_user(ns, service_account), since)


CLUSTER_WIDE_NEEDS = [
    # (verb, group, resource): what kopf and the runtime do in --all-namespaces mode
    ("list", "mtls.dev", "mtlscertificates"),
    ("watch", "mtls.dev", "mtlsissuers"),
    ("patch", "mtls.dev", "mtlscertificates/status"),
    ("list", "", "secrets"),
    ("watch", "", "secrets"),
    ("create", "", "secrets"),
    ("update", "", "secrets"),
    ("create", "", "events"),
    ("watch", "apps", "deployments"),
    ("patch", "apps", "statefulsets"),
    ("delete", "", "secrets"),  # a finished CA rotation's staging Secret
    ("get", "", "configmaps"),  # revocation lists, trust bundles
    ("create", "", "configmaps"),
    ("update", "", "configmaps"),
    ("get", "", "namespaces"),  # issuance policy allowedNamespaces, trust bundles
    ("list", "", "namespaces"),
    ("watch", "", "namespaces"),
    ("patch", "mtls.dev", "mtlscertificates"),  # the revoke-on-delete finalizer
    ("list", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions"),
    # the Pod Certificate signer
    ("list", "certificates.k8s.io", "podcertificaterequests"),
    ("watch", "certificates.k8s.io", "podcertificaterequests"),
    ("patch", "certificates.k8s.io", "podcertificaterequests/status"),
    ("get", "", "pods"),
    ("get", "", "serviceaccounts"),
    ("get", "", "nodes"),
]
NEVER = [
    ("patch", "", "secrets"),
    ("deletecollection", "", "secrets"),
    ("delete", "", "configmaps"),
    ("list", "", "pods"),
    ("watch", "", "pods"),
    ("patch", "", "pods"),
    ("list", "", "nodes"),
    ("update", "certificates.k8s.io", "podcertificaterequests/status"),
    ("delete", "certificates.k8s.io", "podcertificaterequests"),
    ("update", "", "namespaces"),
    ("patch", "mtls.dev", "mtlsissuers"),
    ("delete", "mtls.dev", "mtlsissuers"),
    ("update", "mtls.dev", "mtlscertificates"),
    ("create", "rbac.authorization.k8s.io", "rolebindings"),
    ("impersonate", "", "users"),
]


def test_cluster_wide_rbac_allows_what_the_operator_does_and_nothing_more(
    helm: str, cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    """All-namespaces mode cannot run here next to the suite's other operators (it would act on their
    namespaces), so ask the API server's authorizer instead (SubjectAccessReview as the ServiceAccount)."""
    from kubernetes import client

    ns = own_namespace
    release = f"cw-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": str(tmp_path / "helm")}
    installed = subprocess.run(
        [helm, "install", release, str(CHART), "--namespace", ns, "--set", "replicaCount=0",
         "--set", "crds.enabled=false", "--wait", "--timeout", "60s"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    user = f"system:serviceaccount:{ns}:{release}-mtls-operator"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]
    authz = client.AuthorizationV1Api(cluster.api_client)

    def allowed(verb: str, group: str, resource: str) -> bool:
        plural, _, sub = resource.partition("/")
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                groups=groups,
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb, group=group, resource=plural, subresource=sub or None
                ),
            )
        )
        return bool(authz.create_subject_access_review(review).status.allowed)

    try:
        assert [need for need in CLUSTER_WIDE_NEEDS if not allowed(*need)] == []
        assert [deny for deny in NEVER if allowed(*deny)] == []
    finally:
        subprocess.run(
            [helm, "uninstall", release, "--namespace", ns], capture_output=True, env=env, timeout=120
        )


def test_a_policy_with_allowed_namespaces_works_under_the_cluster_wide_chart_rbac(
    helm: str, cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    """Finding 9: allowedNamespaces reads the namespace's labels; with the chart's cluster-wide RBAC (and
    only that), a certificate in a matching namespace is issued and one in another is denied with a sentence,
    not a 403 loop. The operator runs as the chart's ServiceAccount, scoped by a namespace glob so that it
    does not act on the suite's other namespaces."""
    from kubernetes import client

    ns = own_namespace
    cluster.core.patch_namespace(ns, {"metadata": {"labels": {"mesh": "on"}}})
    release = f"pol-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": str(tmp_path / "helm")}
    installed = subprocess.run(
        [helm, "install", release, str(CHART), "--namespace", ns, "--set", "replicaCount=0",
         "--set", "crds.enabled=false", "--wait", "--timeout", "60s"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    kubeconfig = token_kubeconfig(cluster, ns, f"{release}-mtls-operator", tmp_path / "sa.kubeconfig")
    other = f"{ns}-b"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    log = tmp_path / "operator.log"
    since = cluster.audit.mark()
    operator = OperatorProcess(kubeconfig, log, "--namespace", f"{ns}*", "--metrics-port", "0").start()
    try:
        policy = {
            "allowedNamespaces": {"matchLabels": {"mesh": "on"}},
            "allowedDNSNames": ["*.example"],
        }
        for where in (ns, other):
            create_issuer(cluster, where, "ca", {**self_signed("ca"), "policy": policy})
            create_certificate(
                cluster,
                where,
                "web",
                {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["web.example"]},
            )
        wait_ready(cluster, ns, "web")
        denied = wait_for(
            lambda: (
                (o := get(cluster, other, "mtlscertificates", "web"))
                and ((o.get("status") or {}).get("conditions") or [{}])
                and any(c.get("reason") == "PolicyDenied" for c in o["status"]["conditions"])
                and o
            ),
            timeout=60,
            message="the certificate outside the selector denied",
        )
        ready = next(c for c in denied["status"]["conditions"] if c["type"] == "Ready")
        assert "do not match allowedNamespaces" in ready["message"]
        assert ready["status"] == "False"
    finally:
        operator.stop()
        subprocess.run(
            [helm, "uninstall", release, "--namespace", ns], capture_output=True, env=env, timeout=120
        )
        cluster.core.delete_namespace(other)
    assert_never_denied(cluster, service_account_user(ns, f"{release}-mtls-operator"), since)


def test_the_cluster_wide_chart_rbac_is_enough_to_answer_pod_certificate_requests(
    helm: str, cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    """The Pod Certificate signer as the chart's ServiceAccount (cluster-wide rules, scoped by a namespace
    glob): kube-apiserver lets it write a request's status only with the RBAC verb on
    podcertificaterequests/status and "sign" on the signer name; it reads the pod, ServiceAccount and
    node. A request is issued and another denied, and the audit log records no refusal."""
    from pod_certificates import KubeletIdentity, wait_answered

    ns = own_namespace
    release = f"pcr-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": str(tmp_path / "helm")}
    installed = subprocess.run(
        [helm, "install", release, str(CHART), "--namespace", ns, "--set", "replicaCount=0",
         "--set", "crds.enabled=false", "--wait", "--timeout", "60s"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    kubeconfig = token_kubeconfig(cluster, ns, f"{release}-mtls-operator", tmp_path / "sa.kubeconfig")
    log = tmp_path / "operator.log"
    since = cluster.audit.mark()
    operator = OperatorProcess(kubeconfig, log, "--namespace", f"{ns}*", "--metrics-port", "0").start()
    kubelet = KubeletIdentity.create(cluster)
    try:
        policy = {"allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/default"]}
        create_issuer(cluster, ns, "mesh", {**self_signed("mesh"), "podCertificates": {}, "policy": policy})
        wait_issuer_ready(cluster, ns, "mesh")
        from kubernetes import client

        cluster.core.create_namespaced_service_account(
            ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="other"))
        )
        allowed, _ = kubelet.request(kubelet.bind_pod(ns, "web-0"), f"mtls.dev/{ns}.mesh")
        refused, _ = kubelet.request(kubelet.bind_pod(ns, "web-1", "other"), f"mtls.dev/{ns}.mesh")
        issued = wait_answered(cluster, ns, allowed)["status"]
        assert issued["conditions"][0]["type"] == "Issued" and issued["certificateChain"]
        denied = wait_answered(cluster, ns, refused)["status"]["conditions"][0]
        assert (denied["type"], denied["reason"]) == ("Denied", "PolicyDenied")
        events = wait_for(
            lambda: (
                cluster.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={allowed}").items
            ),
            message="the Issued event (posted after the answer)",
        )
        assert [e.reason for e in events] == ["Issued"], "the Event was posted"
    finally:
        kubelet.close()
        operator.stop()
        subprocess.run(
            [helm, "uninstall", release, "--namespace", ns], capture_output=True, env=env, timeout=120
        )
    assert_never_denied(cluster, service_account_user(ns, f"{release}-mtls-operator"), since)
