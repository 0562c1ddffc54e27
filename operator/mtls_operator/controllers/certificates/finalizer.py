"""Revoke-on-delete: the ``mtls.dev/revoke-on-delete`` finalizer of MTLSCertificates.

A certificate with ``revocationPolicy: Revoke`` carries the finalizer, and no other certificate does (it is
added or removed by a write of ``metadata.finalizers`` guarded by the resourceVersion). When such a
certificate is deleted, its serials (the one in its status, and the one in its own Secret) go on the
issuer's revocation list, durably, however long the operator was down; only then does the finalizer go and
Kubernetes delete the object. A certificate deleted with its namespace is not revoked: its CA goes too.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from mtls_operator.api.constants import CERTIFICATE_PLURAL, FINALIZER_REVOKE
from mtls_operator.api.objects import Key, ParsedCertificate
from mtls_operator.api.trust_lifecycle import RevocationPolicy
from mtls_operator.controllers.certificates.gather import Gatherer
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.k8s.api import ApiError
from mtls_operator.k8s.resources import read_namespace, read_secret, set_finalizers
from mtls_operator.policy.ownership import owns_leaf_secret

logger = logging.getLogger("mtls_operator.certificates")
RETRY_FINALIZE = timedelta(seconds=10)


class RevokeOnDelete:
    """Keeps the finalizer on the certificates that need it, and revokes a deleted one's serials."""

    def __init__(self, ctx: Context, gatherer: Gatherer, revocations: Revocations) -> None:
        self.ctx = ctx
        self.api = ctx.api
        self.clock = ctx.clock
        self.certificates = ctx.certificates
        self.namespaces = ctx.namespaces
        self.gatherer = gatherer
        self.revocations = revocations

    async def keep(self, key: Key) -> None:
        """Revoke-on-delete needs the finalizer; nothing else does."""
        cert = self.certificates.get(key)
        if cert is None or cert.meta.deleting:
            return
        wanted = cert.revocation_policy is RevocationPolicy.REVOKE
        has = FINALIZER_REVOKE in cert.meta.finalizers
        if wanted == has:
            return
        finalizers = [f for f in cert.meta.finalizers if f != FINALIZER_REVOKE]
        if wanted:
            finalizers.append(FINALIZER_REVOKE)
        await self._set_finalizers(cert, finalizers)

    async def _set_finalizers(self, cert: ParsedCertificate, finalizers: list[str]) -> None:
        try:
            await set_finalizers(
                self.api,
                CERTIFICATE_PLURAL,
                *cert.key,
                finalizers,
                resource_version=cert.meta.resource_version,
            )
        except ApiError as exc:
            if exc.conflict:
                self.ctx.work.add_certificate(cert.key)  # changed meanwhile: the watch brings the new version
                return
            if not exc.not_found:
                raise

    async def finalize(self, cert: ParsedCertificate) -> None:
        """A deleted certificate with the revoke finalizer: its serials go on the revocation list, durably,
        then the finalizer goes and Kubernetes deletes the object."""
        key = cert.key
        if FINALIZER_REVOKE not in cert.meta.finalizers:
            return
        now = self.clock.now()
        serials: dict[str, datetime | None] = {}
        if cert.status.serial_number:
            serials[cert.status.serial_number] = cert.status.not_after
        if cert.spec is not None:
            secret = await read_secret(self.api, key[0], cert.spec.secret_name)
            if secret is not None and owns_leaf_secret(
                secret.labels, secret.annotations, cert.meta.name, cert.meta.uid
            ):
                view = await self.gatherer.judge(cert, secret, None)
                if view.facts is not None:
                    serials[view.facts.leaf.serial_number] = view.facts.leaf.not_after
        issuer = cert.issuer_key
        done = True
        if issuer is not None and serials:
            where = self.ctx.issuers.revocation_ref(issuer)
            for serial, not_after in sorted(serials.items()):
                if not_after is not None and not_after <= now:
                    continue  # expired: nothing left to revoke
                try:
                    ok = await self.revocations.revoke(
                        *where, serial, "cessationOfOperation", cert.meta.name, not_after=not_after
                    )
                except ApiError as exc:
                    logger.warning("Cannot revoke serial %s of %s/%s yet: %s", serial, *key, exc)
                    ok = False
                done = done and ok is not False
        if not done and await self._namespace_terminating(key[0]):
            logger.warning(
                "Namespace %s is being deleted with MTLSCertificate %s: its CA goes too; not revoking.", *key
            )
            done = True
        if not done:
            self.ctx.work.schedule_certificate(key, now + RETRY_FINALIZE)
            return
        await self._set_finalizers(cert, [f for f in cert.meta.finalizers if f != FINALIZER_REVOKE])

    async def _namespace_terminating(self, namespace: str) -> bool:
        info = self.namespaces.get(namespace)
        if info is not None:
            return info.terminating
        try:
            found = await read_namespace(self.api, namespace)
        except ApiError:
            return False
        return found is None or found.terminating
