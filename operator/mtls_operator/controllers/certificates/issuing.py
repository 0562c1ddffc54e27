"""Writing a certificate's Secret: a new certificate (and key), or a ca.crt brought in line with the issuer's
trust anchors. One atomic write each: a create, or a replace guarded by the resourceVersion read, so a
concurrent writer gets 409 and the operator decides again from what is there; a crash leaves the old
complete Secret or the new complete one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import (
    ANN_CERTIFICATE_NAME,
    ANN_CERTIFICATE_UID,
    ANN_COMMON_NAME,
    ANN_CONTENT_SINCE,
    ANN_DNS_NAMES,
    ANN_EMAILS,
    ANN_FINGERPRINT,
    ANN_FULFILLED_RENEW,
    ANN_FULFILLED_REVOKE,
    ANN_IP_ADDRESSES,
    ANN_ISSUER_KIND,
    ANN_ISSUER_NAME,
    ANN_NOT_AFTER,
    ANN_REVISION,
    ANN_SERIAL,
    ANN_SPEC_HASH,
    ANN_URIS,
    API_VERSION,
    CA_CRT,
    CERTIFICATE_KIND,
    LABEL_MANAGED_BY,
    LABEL_SECRET_ROLE,
    MANAGED_BY_VALUE,
    SECRET_ROLE_CERTIFICATE,
    SECRET_TYPE_TLS,
    TLS_KEY,
    Reason,
    additional_secret_keys,
)
from mtls_operator.api.errors import ReasonedError, RefError
from mtls_operator.api.models import CertificateSpec, CleanupPolicy
from mtls_operator.api.objects import ParsedCertificate
from mtls_operator.api.tls import SecretFacts
from mtls_operator.controllers.issuers import IssuerState
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.controllers.stores import IssuerStore
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.k8s.resources import SecretObject, encode_data, read_secret, write_secret
from mtls_operator.pki.issuance import issue_tls_material
from mtls_operator.pki.material import inspect_tls_secret
from mtls_operator.policy.certificate import Plan

logger = logging.getLogger("mtls_operator.issuing")
InThread = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Written:
    """What a successful Secret write left in the cluster."""

    secret: SecretObject
    facts: SecretFacts
    revision: int


class ConflictError(Exception):
    """Someone else wrote the Secret first (409), or it vanished: decide again from what is there."""


class Issuer:
    """Writes certificate Secrets."""

    def __init__(
        self, api: ApiClient, revocations: Revocations, issuers: IssuerStore, in_thread: InThread
    ) -> None:
        self.api = api
        self.revocations = revocations
        self.issuers = issuers
        self.in_thread = in_thread

    async def issue(
        self,
        cert: ParsedCertificate,
        spec: CertificateSpec,
        state: IssuerState,
        plan: Plan,
        secret: SecretObject | None,
        judged_version: str | None,
        revision: int,
        now: datetime,
    ) -> Written:
        """Issue a new certificate into the Secret. Raises :class:`Conflict` (decide again) or
        :class:`ReasonedError` (a failed attempt, with the reason).

        The write is guarded by ``judged_version``, the resourceVersion the decision judged: a Secret
        judged from the cache is read for its data, and if it is no longer that version (another writer
        came first) nothing is written and the certificate is decided again."""
        namespace, name = cert.key
        assert state.ca is not None and state.anchors is not None
        secret = await self._judged(namespace, spec.secret_name, secret, judged_version)
        if plan.revoke_serial is not None:
            await self._revoke(cert, spec, plan.revoke_serial, secret, now)
        existing_key = secret.data.get(TLS_KEY) if (plan.reuse_key and secret is not None) else None
        held = secret.data if secret is not None else {}
        kept = {a: pem for a in plan.reuse_additional if (pem := held.get(additional_secret_keys(a)[1]))}
        password = await self._pkcs12_password(namespace, spec) if spec.pkcs12.create else None
        crl_url, ocsp_url = self.revocations.leaf_urls(*self._revocation_ref(cert))
        material = await self.in_thread(
            issue_tls_material,
            spec,
            state.ca,
            now,
            existing_key_pem=existing_key,
            pkcs12_password=password,
            friendly_name=name,
            crl_url=crl_url,
            ocsp_url=ocsp_url,
            trust_anchors_pem=state.anchors.pem,
            existing_additional_keys=kept,
        )
        body = secret_body(cert, spec, material.data, material.facts, revision, secret, plan, now)
        written = await self._write(body, secret, spec.secret_name)
        return Written(written, material.facts, revision)

    async def refresh_trust(
        self,
        cert: ParsedCertificate,
        spec: CertificateSpec,
        state: IssuerState,
        plan: Plan,
        secret: SecretObject | None,
        judged_version: str | None,
        revision: int,
        now: datetime,
    ) -> Written:
        """Rewrite only ca.crt with the issuer's trust anchors (a CA rotation's overlap, or its end), on
        the Secret version the decision judged."""
        assert state.ca is not None and state.anchors is not None
        secret = await self._judged(cert.meta.namespace, spec.secret_name, secret, judged_version)
        if secret is None:
            raise ConflictError()
        data = {**secret.data, CA_CRT: state.anchors.pem}
        facts = await self.in_thread(inspect_tls_secret, data, state.ca)
        body = secret_body(cert, spec, data, facts, revision, secret, plan, now)
        written = await self._write(body, secret, spec.secret_name)
        return Written(written, facts, revision)

    async def _judged(
        self, namespace: str, name: str, secret: SecretObject | None, judged_version: str | None
    ) -> SecretObject | None:
        """The Secret exactly as the decision judged it: ``secret`` when it was read for the decision,
        else (judged from the cache) a fresh read that must still be ``judged_version``; None when the
        decision judged it missing. Raises :class:`ConflictError` when it changed since."""
        if secret is not None or judged_version is None:
            return secret
        fresh = await read_secret(self.api, namespace, name)
        if fresh is None or fresh.resource_version != judged_version:
            raise ConflictError()
        return fresh

    async def _write(
        self, body: dict[str, Any], secret: SecretObject | None, secret_name: str
    ) -> SecretObject:
        try:
            return await write_secret(
                self.api, body, replace_version=secret.resource_version if secret else None
            )
        except ApiError as exc:
            if exc.conflict:
                raise ConflictError() from None
            if exc.status in (403, 422):
                raise ReasonedError(
                    f"Writing Secret {secret_name} failed: {exc.message}", Reason.ISSUANCE_FAILED
                ) from None
            raise

    async def _revoke(
        self,
        cert: ParsedCertificate,
        spec: CertificateSpec,
        serial: str,
        secret: SecretObject | None,
        now: datetime,
    ) -> None:
        """Revoke the current serial, durably, before its replacement is written."""
        del now
        not_after = cond.parse_rfc3339((secret.annotations if secret else {}).get(ANN_NOT_AFTER))
        ok = await self.revocations.revoke(
            *self._revocation_ref(cert),
            serial,
            cert.requests.revoke_reason,
            cert.meta.name,
            not_after=not_after,
        )
        if ok is False:
            raise ReasonedError(
                f"Serial {serial} could not be put on the revocation list yet; retrying before re-issuing.",
                Reason.REVOCATION_PENDING,
            )

    def _revocation_ref(self, cert: ParsedCertificate) -> tuple[str, str]:
        issuer = cert.issuer_key
        assert issuer is not None
        return self.issuers.revocation_ref(issuer)

    async def _pkcs12_password(self, namespace: str, spec: CertificateSpec) -> bytes:
        ref = spec.pkcs12.password_secret_ref
        if ref is None:
            return b""
        secret = await read_secret(self.api, namespace, ref.name)
        if secret is None or ref.key not in secret.data:
            raise RefError(
                f"The PKCS#12 password Secret {ref.name} (key {ref.key}) does not exist in {namespace}."
            )
        return secret.data[ref.key]


def secret_body(
    cert: ParsedCertificate,
    spec: CertificateSpec,
    data: dict[str, bytes],
    facts: SecretFacts,
    revision: int,
    existing: SecretObject | None,
    plan: Plan,
    now: datetime,
) -> dict[str, Any]:
    """The complete Secret: the user's template, then the operator's labels and annotations (which the
    template cannot override), the data, and an owner reference under cleanupPolicy Delete."""
    namespace, name = cert.key
    leaf = facts.leaf
    labels = dict(spec.secret_template.labels)
    labels.update({LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_SECRET_ROLE: SECRET_ROLE_CERTIFICATE})
    annotations = dict(spec.secret_template.annotations)
    annotations.update(
        {
            ANN_CERTIFICATE_NAME: name,
            ANN_CERTIFICATE_UID: cert.meta.uid,
            ANN_ISSUER_NAME: spec.issuer_ref.name,
            ANN_ISSUER_KIND: spec.issuer_ref.kind,
            ANN_COMMON_NAME: spec.common_name or "",
            ANN_DNS_NAMES: ",".join(spec.dns_names),
            ANN_IP_ADDRESSES: ",".join(spec.ip_addresses),
            ANN_URIS: ",".join(spec.uris),
            ANN_EMAILS: ",".join(spec.email_addresses),
            ANN_SERIAL: leaf.serial_number,
            ANN_NOT_AFTER: cond.rfc3339(leaf.not_after) or "",
            ANN_FINGERPRINT: leaf.fingerprint,
            ANN_REVISION: str(revision),
            ANN_SPEC_HASH: spec.identity_hash(),
            ANN_CONTENT_SINCE: cond.rfc3339(now) or "",
        }
    )
    for annotation, token in (
        (ANN_FULFILLED_RENEW, plan.fulfils_renew),
        (ANN_FULFILLED_REVOKE, plan.fulfils_revoke),
    ):
        if token:
            annotations[annotation] = token
        elif existing is not None and existing.annotations.get(annotation):
            annotations[annotation] = existing.annotations[annotation]
    metadata: dict[str, Any] = {
        "name": spec.secret_name,
        "namespace": namespace,
        "labels": labels,
        "annotations": annotations,
    }
    if spec.cleanup_policy is CleanupPolicy.DELETE:
        metadata["ownerReferences"] = [
            {
                "apiVersion": API_VERSION,
                "kind": CERTIFICATE_KIND,
                "name": name,
                "uid": cert.meta.uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    elif existing is not None:
        # Keep owner references that others set; drop ours if the policy changed to Retain.
        refs = [r for r in existing.owner_refs if r.get("uid") != cert.meta.uid]
        if refs:
            metadata["ownerReferences"] = refs
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE_TLS,
        "metadata": metadata,
        "data": encode_data(data),
    }
