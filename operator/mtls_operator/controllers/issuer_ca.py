"""The CA Secret of each issuer the controller judges: read and judged during gather (whose it is,
:mod:`mtls_operator.policy.ownership`; what it holds, parsed once and cached while the Secret and the
parent's CA are unchanged), written when the plan says so (created, re-signed under a new parent, or given
the additional CAs of a dual CA; only ever one the operator owns), and labelled for the watch.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from mtls_operator.api.constants import (
    ANN_CA_FOR_ISSUER,
    ANN_ISSUER_UID,
    LABEL_MANAGED_BY,
    LABEL_SECRET_ROLE,
    MANAGED_BY_VALUE,
    SECRET_ROLE_CA,
    SECRET_TYPE_TLS,
)
from mtls_operator.api.errors import ReasonedError, Violation
from mtls_operator.api.models import KeyAlgorithm
from mtls_operator.api.objects import Key, ParsedIssuer
from mtls_operator.controllers.context import Context
from mtls_operator.k8s.api import ApiError
from mtls_operator.k8s.resources import SecretObject, encode_data, read_secret, relabel_secret, write_secret
from mtls_operator.pki.ca import CAKeyPair, additional_ca_data, load_ca, self_signed_ca_data
from mtls_operator.pki.intermediate import sign_intermediate
from mtls_operator.policy.issuer import IssuerFacts
from mtls_operator.policy.ownership import CASecretAccess, ca_secret_access

if TYPE_CHECKING:  # issuers.py builds CASecrets; the parent's state is only read here
    from mtls_operator.controllers.issuers import IssuerState

logger = logging.getLogger("mtls_operator.issuers")


class CASecrets:
    def __init__(self, ctx: Context) -> None:
        self.api = ctx.api
        self.issuers = ctx.issuers
        self.secrets = ctx.secrets
        self.in_thread = ctx.in_thread
        # The CA each issuer's Secret held when last parsed: (Secret rv, parent fingerprint, CA with every
        # additional CA its Secret holds), reused while neither changes.
        self._loaded: dict[Key, tuple[str, str | None, CAKeyPair]] = {}

    def forget(self, key: Key) -> None:
        self._loaded.pop(key, None)

    async def label_for_watch(self, issuer: ParsedIssuer, secret: SecretObject) -> None:
        """A CA Secret an older operator wrote lacks ``mtls.dev/secret-role`` (outside the label-selected
        watch) and perhaps the issuer's UID (adopted because the issuer's status proves it used this CA):
        add both once, data unchanged."""
        annotations = {} if ANN_ISSUER_UID in secret.annotations else {ANN_ISSUER_UID: issuer.meta.uid}
        if secret.labels.get(LABEL_SECRET_ROLE) == SECRET_ROLE_CA and not annotations:
            return
        try:
            await relabel_secret(self.api, secret, {LABEL_SECRET_ROLE: SECRET_ROLE_CA}, annotations)
        except ApiError as exc:
            logger.info(
                "CA Secret %s/%s not labelled for the watch yet: %s", secret.namespace, secret.name, exc
            )
            return
        logger.info("Labelled CA Secret %s/%s for the watch.", secret.namespace, secret.name)

    # ------------------------------------------------------------------ gather (reads only)

    async def gather(
        self,
        issuer: ParsedIssuer,
        previous: IssuerState | None,
        parent: IssuerState | None,
        now: datetime,
        *,
        secret: SecretObject | None = None,
    ) -> tuple[IssuerFacts, SecretObject | None, CAKeyPair | None]:
        name = issuer.meta.name
        namespace = self.issuers.home(issuer.key)
        spec = issuer.spec
        base = IssuerFacts(namespace, name, now, spec_error=issuer.error, kind=issuer.kind)
        if spec is None or issuer.error is not None:
            return base, None, None
        facts = replace(
            base,
            keeps_ca=spec.managed_ca is not None,
            intermediate=spec.intermediate is not None,
            parent=issuer.parent,
            parent_ready=parent is not None and parent.view.ready and parent.ca is not None,
            secret_name=spec.ca_secret_name,
        )
        if facts.intermediate and not facts.parent_ready:
            return facts, None, None
        if secret is None:
            secret = await read_secret(self.api, namespace, spec.ca_secret_name)
        self.secrets.observe((namespace, spec.ca_secret_name), secret.resource_version if secret else None)
        if secret is None:
            return facts, None, None
        access = ca_secret_access(
            secret.labels, secret.annotations, name, issuer.meta.uid, keeps_ca=facts.keeps_ca
        )
        if access in (CASecretAccess.NOT_MANAGED, CASecretAccess.NOT_ALLOWED) and not _legacy_own(
            secret, name
        ):
            return replace(facts, secret_exists=True, access=access), secret, None
        parent_ca = parent.ca if parent is not None else None
        parent_fp = parent_ca.facts.fingerprint if parent_ca is not None else None
        ca: CAKeyPair | None = None
        loaded = self._loaded.get(issuer.key)
        if loaded is not None and loaded[:2] == (secret.resource_version, parent_fp):
            ca = loaded[2]  # parsed once, cached while the Secret (and the parent) are unchanged
        if ca is None:
            try:
                ca = await self.in_thread(load_ca, secret.data, now)
            except ReasonedError as exc:
                if access not in (CASecretAccess.OWNED, CASecretAccess.ALLOWED):
                    access = CASecretAccess.NOT_MANAGED if facts.keeps_ca else CASecretAccess.NOT_ALLOWED
                return (
                    replace(facts, secret_exists=True, access=access, ca_error=Violation.of(exc)),
                    secret,
                    None,
                )
        assert ca is not None
        self._loaded[issuer.key] = (secret.resource_version, parent_fp, ca)
        missing: tuple[KeyAlgorithm, ...] = ()
        if spec.managed_ca is not None:
            # A CA the operator keeps signs with the additional CAs its spec asks for (and adds missing ones).
            wanted = [k.algorithm for k in spec.managed_ca.additional_private_keys]
            missing = tuple(a for a in wanted if a not in ca.algorithms)
            ca = ca.only(wanted)
        if access not in (CASecretAccess.OWNED, CASecretAccess.ALLOWED):
            # Written by an older operator, before owner UIDs were recorded: the issuer's own status proves
            # it used this very CA.
            access = ca_secret_access(
                secret.labels,
                secret.annotations,
                name,
                issuer.meta.uid,
                keeps_ca=facts.keeps_ca,
                proven_fingerprint=issuer.status.fingerprint == ca.facts.fingerprint,
            )
            if access not in (CASecretAccess.OWNED, CASecretAccess.ALLOWED):
                return replace(facts, secret_exists=True, access=access), secret, None
        signed_by_parent = True
        if parent_ca is not None:
            signed_by_parent = await self.in_thread(ca.signed_by, parent_ca)
        return (
            replace(
                facts,
                secret_exists=True,
                access=access,
                ca=ca.facts,
                signed_by_parent=signed_by_parent,
                missing_additional=missing,
            ),
            secret,
            ca,
        )

    # ------------------------------------------------------------------ act

    async def write_ca(
        self,
        issuer: ParsedIssuer,
        parent: IssuerState | None,
        existing: SecretObject | None,
        now: datetime,
        *,
        add: tuple[KeyAlgorithm, ...] | None = None,
    ) -> tuple[SecretObject | None, Violation | None]:
        """Create (or, for an intermediate whose parent changed, replace) the CA Secret of an issuer the
        operator keeps; with ``add``, keep the CA and add the additional CAs of those algorithms (a dual
        CA). (written, None); (None, None) when another writer won; (None, why) when the CA cannot be made
        (a parent that may not sign CAs, a bad path length)."""
        spec = issuer.spec
        assert spec is not None and spec.managed_ca is not None
        try:
            if add is not None and existing is not None:
                extra = await self.in_thread(additional_ca_data, spec.managed_ca, now, add)
                data = {**existing.data, **extra}
                crts = [v for k, v in sorted(extra.items()) if k.endswith(".crt")]
                data["ca.crt"] = existing.data.get("ca.crt", existing.data["tls.crt"]) + b"".join(crts)
            elif spec.intermediate is not None:
                assert parent is not None and parent.ca is not None
                inter = spec.intermediate
                key_pem, chain = await self.in_thread(
                    sign_intermediate,
                    inter.ca,
                    parent.ca,
                    now,
                    inter.path_length,
                    inter.permitted_dns,
                    inter.excluded_dns,
                )
                data = {"tls.crt": chain, "tls.key": key_pem, "ca.crt": parent.ca.root_pem}
            else:
                data = await self.in_thread(self_signed_ca_data, spec.managed_ca, now)
        except ReasonedError as exc:
            return None, Violation.of(exc)
        annotations = dict(existing.annotations) if existing is not None else {}
        annotations.update({ANN_CA_FOR_ISSUER: issuer.meta.name, ANN_ISSUER_UID: issuer.meta.uid})
        labels = dict(existing.labels) if existing is not None else {}
        labels.update({LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_SECRET_ROLE: SECRET_ROLE_CA})
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": SECRET_TYPE_TLS,
            "metadata": {
                "name": spec.ca_secret_name,
                "namespace": self.issuers.home(issuer.key),
                "labels": labels,
                "annotations": annotations,
            },
            "data": encode_data(data),
        }
        try:
            written = await write_secret(
                self.api, body, replace_version=existing.resource_version if existing else None
            )
        except ApiError as exc:
            if exc.conflict:
                return None, None
            raise
        self.secrets.observe((self.issuers.home(issuer.key), spec.ca_secret_name), written.resource_version)
        logger.info("Wrote the %s CA for %s %s.", spec.kind, issuer.kind, _named(issuer.key))
        return written, None


def _named(key: Key) -> str:
    return f"{key[0]}/{key[1]}" if key[0] else key[1]


def _legacy_own(secret: SecretObject, issuer: str) -> bool:
    """A CA Secret an older operator wrote for an issuer of this name, before it recorded owner UIDs."""
    return (
        secret.managed
        and secret.annotations.get(ANN_CA_FOR_ISSUER) == issuer
        and ANN_ISSUER_UID not in secret.annotations
    )
