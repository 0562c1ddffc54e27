"""A StatefulSet and a DaemonSet that use a certificate's Secret are restarted when it is renewed: the
operator stamps their pod templates with the content of what they use, once per renewal, and
kube-controller-manager makes a new ControllerRevision of each. A workload that does not use the Secret is
left alone. (tests/integration/test_node_restarts.py shows the same on real pods, with the node.)

Read from the cluster: the workloads' templates and annotations, their ControllerRevisions, and the
operator's patches in the API server's audit log."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from kubernetes import client

from helpers import wait_for
from mtls_objects import (
    GROUP,
    VERSION,
    create_certificate,
    create_issuer,
    get,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)

STAMP = "mtls.dev/tls-stamp"
STAMPED_FOR = "mtls.dev/tls-stamp-for"


def _template(
    app: str, volumes: list[client.V1Volume], env: list[client.V1EnvVar]
) -> client.V1PodTemplateSpec:
    mounts = [client.V1VolumeMount(name=v.name, mount_path=f"/tls/{v.name}") for v in volumes]
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": app}),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="app", image="registry.k8s.io/pause:3.10", volume_mounts=mounts, env=env or None
                )
            ],
            volumes=volumes or None,
        ),
    )


def _statefulset(name: str, template: client.V1PodTemplateSpec) -> client.V1StatefulSet:
    return client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1StatefulSetSpec(
            service_name=name,
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=template,
        ),
    )


def _fingerprint(cluster: Any, namespace: str, secret: str) -> str:
    leaf = x509.load_pem_x509_certificates(secret_data(cluster, namespace, secret)["tls.crt"])[0]
    return hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()


def _stamps(cluster: Any, namespace: str) -> dict[str, tuple[str | None, str | None]]:
    """Workload -> (pod-template stamp, what it was stamped for)."""
    out = {}
    for kind, workload in (
        ("StatefulSet", cluster.apps.read_namespaced_stateful_set("db", namespace)),
        ("DaemonSet", cluster.apps.read_namespaced_daemon_set("agent", namespace)),
        ("StatefulSet/bystander", cluster.apps.read_namespaced_stateful_set("bystander", namespace)),
    ):
        template = (workload.spec.template.metadata.annotations or {}).get(STAMP)
        out[kind] = (template, (workload.metadata.annotations or {}).get(STAMPED_FOR))
    return out


def _revisions(cluster: Any, namespace: str, app: str) -> int:
    found = client.AppsV1Api(cluster.api_client).list_namespaced_controller_revision(
        namespace, label_selector=f"app={app}"
    )
    return len(found.items)


def test_statefulset_and_daemonset_templates_are_stamped_once_per_renewal(
    operator: Any, cluster: Any, namespace: str
) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    wait_issuer_ready(cluster, namespace, "ca")
    create_certificate(
        cluster,
        namespace,
        "db",
        {"secretName": "db-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["db.example"]},
    )
    wait_ready(cluster, namespace, "db")
    # The StatefulSet mounts the Secret through a projected volume, the DaemonSet reads it into its
    # environment (secretKeyRef): two of the ways the operator finds consumers.
    projected = client.V1Volume(
        name="tls",
        projected=client.V1ProjectedVolumeSource(
            sources=[client.V1VolumeProjection(secret=client.V1SecretProjection(name="db-tls"))]
        ),
    )
    from_secret = client.V1EnvVar(
        name="TLS_CRT",
        value_from=client.V1EnvVarSource(
            secret_key_ref=client.V1SecretKeySelector(name="db-tls", key="tls.crt")
        ),
    )
    cluster.apps.create_namespaced_stateful_set(
        namespace, _statefulset("db", _template("db", [projected], []))
    )
    cluster.apps.create_namespaced_daemon_set(
        namespace,
        client.V1DaemonSet(
            metadata=client.V1ObjectMeta(name="agent"),
            spec=client.V1DaemonSetSpec(
                selector=client.V1LabelSelector(match_labels={"app": "agent"}),
                template=_template("agent", [], [from_secret]),
            ),
        ),
    )
    other = client.V1Volume(name="other", secret=client.V1SecretVolumeSource(secret_name="unrelated"))
    cluster.apps.create_namespaced_stateful_set(
        namespace, _statefulset("bystander", _template("bystander", [other], []))
    )
    for app in ("db", "agent", "bystander"):
        wait_for(
            lambda app=app: _revisions(cluster, namespace, app) == 1, timeout=30, message=f"{app}'s revision"
        )
    # Created after the certificate was issued: their pods already run it, nothing to restart.
    assert set(_stamps(cluster, namespace).values()) == {(None, None)}

    seen: list[str] = []
    for renewal in (1, 2):
        mark = cluster.audit.mark()
        cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "mtlscertificates", "db",
            {"metadata": {"annotations": {"mtls.dev/renew-requested-at": f"restart-{uuid.uuid4().hex[:8]}"}}},
        )  # fmt: skip
        wait_for(
            lambda renewal=renewal: (
                get(cluster, namespace, "mtlscertificates", "db")["status"].get("revision") == renewal + 1
            ),
            timeout=30,
            message=f"renewal {renewal}",
        )
        expected_for = f"db-tls={_fingerprint(cluster, namespace, 'db-tls')[:16]}"

        def stamped(expected_for: str = expected_for) -> dict[str, tuple[str | None, str | None]] | None:
            stamps = _stamps(cluster, namespace)
            done = all(stamps[k][1] == expected_for for k in ("StatefulSet", "DaemonSet"))
            return stamps if done else None

        stamps = wait_for(stamped, timeout=30, message=f"both workloads stamped for renewal {renewal}")
        sts_stamp, ds_stamp = stamps["StatefulSet"][0], stamps["DaemonSet"][0]
        assert sts_stamp and ds_stamp and sts_stamp not in seen and ds_stamp not in seen, (stamps, seen)
        seen += [sts_stamp, ds_stamp]
        assert stamps["StatefulSet/bystander"] == (None, None)
        # kube-controller-manager took each new template as a new revision to roll out.
        for app in ("db", "agent"):
            wait_for(
                lambda app=app, renewal=renewal: _revisions(cluster, namespace, app) == renewal + 1,
                timeout=30,
                message=f"{app}'s ControllerRevision {renewal + 1}",
            )
        # One patch per workload per renewal (content-addressed: looking again changes nothing).
        patches = sorted(
            (w.resource, w.name)
            for w in operator.writes(since=mark, namespace=namespace)
            if w.resource in ("statefulsets", "daemonsets", "deployments")
        )
        assert patches == [("daemonsets", "agent"), ("statefulsets", "db")], patches
    assert _revisions(cluster, namespace, "bystander") == 1
