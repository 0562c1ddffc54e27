"""Typed verbs on the objects the operator reads and writes: Secrets, status, events."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mtls_operator.api.constants import (
    API_VERSION,
    COMPONENT,
    GROUP,
    LABEL_MANAGED_BY,
    MANAGED_BY_VALUE,
    VERSION,
    Reason,
)
from mtls_operator.k8s.api import JSON, MERGE_PATCH, ApiClient, ApiError, core_path, group_path

logger = logging.getLogger("mtls_operator.k8s")


@dataclass(frozen=True, slots=True)
class SecretObject:
    """A Secret as read: decoded data plus the metadata the operator decides on."""

    namespace: str
    name: str
    resource_version: str
    uid: str
    type: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    data: Mapping[str, bytes]
    owner_refs: tuple[dict[str, Any], ...]

    @property
    def managed(self) -> bool:
        return self.labels.get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE


def decode_secret(body: Mapping[str, Any]) -> SecretObject:
    meta = body.get("metadata") or {}
    data: dict[str, bytes] = {}
    for key, value in (body.get("data") or {}).items():
        try:
            data[key] = base64.b64decode(value or "")
        except (ValueError, TypeError):
            data[key] = b""
    return SecretObject(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        resource_version=meta.get("resourceVersion", ""),
        uid=meta.get("uid", ""),
        type=body.get("type", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        data=data,
        owner_refs=tuple(dict(ref) for ref in meta.get("ownerReferences") or []),
    )


def data_digest(data: Mapping[str, bytes]) -> str:
    """A digest of a Secret's data, to tell whether anything in it changed."""
    h = hashlib.sha256()
    for key in sorted(data):
        h.update(key.encode() + b"\0" + hashlib.sha256(data[key]).digest())
    return h.hexdigest()


def encode_data(data: Mapping[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


async def read_secret(api: ApiClient, namespace: str, name: str) -> SecretObject | None:
    body = await api.get_or_none(core_path(namespace, "secrets", name))
    return None if body is None else decode_secret(body)


async def write_secret(api: ApiClient, body: JSON, *, replace_version: str | None) -> SecretObject:
    """Create the Secret, or replace it guarded by ``replace_version`` (the resourceVersion read).

    Either way the write is atomic: readers see the old complete Secret or the new complete one. A
    concurrent writer makes this raise :class:`ApiError` 409, and the caller decides again.
    """
    meta = body["metadata"]
    if replace_version is None:
        created = await api.request("POST", core_path(meta["namespace"], "secrets"), body=body)
        return decode_secret(created)
    meta["resourceVersion"] = replace_version
    replaced = await api.request("PUT", core_path(meta["namespace"], "secrets", meta["name"]), body=body)
    return decode_secret(replaced)


async def relabel_secret(
    api: ApiClient,
    secret: SecretObject,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> SecretObject:
    """Replace ``secret`` with ``labels`` (and ``annotations``) added and everything else as read, guarded
    by its resourceVersion (a 409 means someone wrote since: the caller decides again)."""
    metadata: JSON = {
        "name": secret.name,
        "namespace": secret.namespace,
        "labels": {**secret.labels, **labels},
        "annotations": {**secret.annotations, **(annotations or {})},
    }
    if secret.owner_refs:
        metadata["ownerReferences"] = [dict(ref) for ref in secret.owner_refs]
    body: JSON = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": secret.type,
        "data": encode_data(secret.data),
    }
    return await write_secret(api, body, replace_version=secret.resource_version)


async def patch_status(api: ApiClient, plural: str, namespace: str, name: str, status: JSON) -> None:
    await api.request(
        "PATCH",
        group_path(GROUP, VERSION, namespace, plural, name, "status"),
        body={"status": status},
        content_type=MERGE_PATCH,
    )


async def get_custom(api: ApiClient, plural: str, namespace: str, name: str) -> JSON | None:
    return await api.get_or_none(group_path(GROUP, VERSION, namespace, plural, name))


async def post_event(
    api: ApiClient,
    *,
    kind: str,
    namespace: str,
    name: str,
    uid: str,
    event_type: str,
    reason: Reason | str,
    message: str,
    now: datetime | None = None,
    api_version: str = API_VERSION,
) -> None:
    """Post a core/v1 Event about an object (of this project's API unless ``api_version`` says otherwise).
    Failures to post are logged and swallowed: events are hints."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "reason": str(reason),
        "message": message[:1024],
        "type": event_type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await api.request("POST", core_path(namespace, "events"), body=body)
    except (ApiError, OSError, TimeoutError) as exc:
        logger.warning("Cannot post the %s event about %s %s/%s: %s", reason, kind, namespace, name, exc)


# ---------------------------------------------------------------------------------------------------------
# ConfigMaps (trust bundles)


@dataclass(frozen=True, slots=True)
class ConfigMapObject:
    namespace: str
    name: str
    resource_version: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    data: Mapping[str, str]


def decode_config_map(body: Mapping[str, Any]) -> ConfigMapObject:
    meta = body.get("metadata") or {}
    return ConfigMapObject(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        resource_version=meta.get("resourceVersion", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        data={str(k): str(v) for k, v in (body.get("data") or {}).items()},
    )


async def read_config_map(api: ApiClient, namespace: str, name: str) -> ConfigMapObject | None:
    body = await api.get_or_none(core_path(namespace, "configmaps", name))
    return None if body is None else decode_config_map(body)


async def write_config_map(api: ApiClient, body: JSON, *, replace_version: str | None) -> ConfigMapObject:
    """Create the ConfigMap, or replace it guarded by ``replace_version``; 409 when someone wrote first."""
    meta = body["metadata"]
    if replace_version is None:
        return decode_config_map(
            await api.request("POST", core_path(meta["namespace"], "configmaps"), body=body)
        )
    meta["resourceVersion"] = replace_version
    path = core_path(meta["namespace"], "configmaps", meta["name"])
    return decode_config_map(await api.request("PUT", path, body=body))


# ---------------------------------------------------------------------------------------------------------
# Secrets: deletion


async def delete_secret(api: ApiClient, namespace: str, name: str, *, resource_version: str) -> bool:
    """Delete the Secret only if it is still the version that was read (a precondition): another writer's
    newer content is never deleted. False when it is already gone or changed meanwhile."""
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"resourceVersion": resource_version},
    }
    try:
        await api.request("DELETE", core_path(namespace, "secrets", name), body=body)
    except ApiError as exc:
        if exc.not_found or exc.conflict:
            return False
        raise
    return True


# ---------------------------------------------------------------------------------------------------------
# Namespaces


@dataclass(frozen=True, slots=True)
class NamespaceObject:
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    terminating: bool


def decode_namespace(body: Mapping[str, Any]) -> NamespaceObject:
    meta = body.get("metadata") or {}
    return NamespaceObject(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        terminating=(body.get("status") or {}).get("phase") == "Terminating"
        or bool(meta.get("deletionTimestamp")),
    )


async def read_namespace(api: ApiClient, name: str) -> NamespaceObject | None:
    body = await api.get_or_none(f"/api/v1/namespaces/{name}")
    return None if body is None else decode_namespace(body)


async def list_namespaces(api: ApiClient, label_selector: str) -> list[NamespaceObject]:
    """Namespaces matching ``label_selector`` (empty: every namespace)."""
    params = {"labelSelector": label_selector} if label_selector else {}
    body = await api.request("GET", "/api/v1/namespaces", params=params)
    return [decode_namespace(item) for item in body.get("items") or ()]


# ---------------------------------------------------------------------------------------------------------
# Workloads and our own objects' metadata

WORKLOAD_PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


async def patch_workload(api: ApiClient, namespace: str, kind: str, name: str, patch: JSON) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/{WORKLOAD_PLURALS[kind]}/{name}"
    await api.request("PATCH", path, body=patch, content_type=MERGE_PATCH)


async def set_finalizers(
    api: ApiClient, plural: str, namespace: str, name: str, finalizers: list[str], *, resource_version: str
) -> None:
    """Replace an object's finalizers, guarded by the resourceVersion they were computed from (409 when
    the object changed meanwhile: decide again)."""
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
    await api.request(
        "PATCH", group_path(GROUP, VERSION, namespace, plural, name), body=patch, content_type=MERGE_PATCH
    )


# ---------------------------------------------------------------------------------------------------------
# Lists for the resync: metadata only, paginated

PARTIAL_METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


@dataclass(frozen=True, slots=True)
class ListedObject:
    namespace: str
    name: str
    uid: str
    resource_version: str


async def list_metadata(
    api: ApiClient, path: str, *, label_selector: str | None = None, page: int = 500
) -> tuple[list[ListedObject], str]:
    """Every object at ``path`` (a collection, cluster-wide or in one namespace) as metadata only, and the
    list's resourceVersion."""
    out: list[ListedObject] = []
    token = ""
    version = ""
    while True:
        params = {"limit": str(page)}
        if token:
            params["continue"] = token
        if label_selector:
            params["labelSelector"] = label_selector
        body = await api.request("GET", path, params=params, accept=PARTIAL_METADATA)
        for item in body.get("items") or ():
            meta = item.get("metadata") or {}
            out.append(
                ListedObject(
                    str(meta.get("namespace", "")),
                    str(meta.get("name", "")),
                    str(meta.get("uid", "")),
                    str(meta.get("resourceVersion", "")),
                )
            )
        meta = body.get("metadata") or {}
        version = str(meta.get("resourceVersion") or version)
        token = str(meta.get("continue") or "")
        if not token:
            return out, version


def custom_collection(plural: str, namespace: str | None = None) -> str:
    return (
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
        if namespace
        else f"/apis/{GROUP}/{VERSION}/{plural}"
    )


def secret_collection(namespace: str | None = None) -> str:
    return core_path(namespace, "secrets") if namespace else "/api/v1/secrets"


# ---------------------------------------------------------------------------------------------------------
# ClusterTrustBundles (certificates.k8s.io/v1beta1)

CTB_PATH = "/apis/certificates.k8s.io/v1beta1/clustertrustbundles"


@dataclass(frozen=True, slots=True)
class ClusterTrustBundleObject:
    name: str
    resource_version: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    signer_name: str
    trust_bundle: str


def decode_cluster_trust_bundle(body: Mapping[str, Any]) -> ClusterTrustBundleObject:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    return ClusterTrustBundleObject(
        name=str(meta.get("name", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        signer_name=str(spec.get("signerName") or ""),
        trust_bundle=str(spec.get("trustBundle") or ""),
    )


async def read_cluster_trust_bundle(api: ApiClient, name: str) -> ClusterTrustBundleObject | None:
    body = await api.get_or_none(f"{CTB_PATH}/{name}")
    return None if body is None else decode_cluster_trust_bundle(body)


async def write_cluster_trust_bundle(
    api: ApiClient, body: JSON, *, replace_version: str | None
) -> ClusterTrustBundleObject:
    """Create the ClusterTrustBundle, or replace it guarded by ``replace_version`` (409 when someone wrote
    first)."""
    if replace_version is None:
        return decode_cluster_trust_bundle(await api.request("POST", CTB_PATH, body=body))
    body["metadata"]["resourceVersion"] = replace_version
    path = f"{CTB_PATH}/{body['metadata']['name']}"
    return decode_cluster_trust_bundle(await api.request("PUT", path, body=body))
