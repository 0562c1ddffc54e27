"""policy.ownership: who may use or write which object. Names alone never prove ownership; the UID the
operator recorded does (or, for objects written before UIDs were recorded, proof from their content)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from mtls_operator.api.constants import (
    ANN_ACCEPT_BUNDLES_FROM,
    ANN_ALLOWED_ISSUERS,
    ANN_CA_FOR_ISSUER,
    ANN_CA_ROLE,
    ANN_CERTIFICATE_NAME,
    ANN_CERTIFICATE_UID,
    ANN_ISSUER_UID,
    ANN_ROLLOUT_TARGET_OF,
    CA_ROLE_NEXT,
    LABEL_MANAGED_BY,
    MANAGED_BY_VALUE,
)
from mtls_operator.policy.ownership import (
    ANN_BUNDLE_FOR,
    ANN_BUNDLE_FOR_UID,
    CASecretAccess,
    ca_secret_access,
    names_in,
    namespace_accepts_bundle,
    owns_bundle,
    owns_leaf_secret,
    owns_staged_ca,
    workload_accepts_target,
)

MANAGED = {LABEL_MANAGED_BY: MANAGED_BY_VALUE}
FOREIGN_LABEL = {LABEL_MANAGED_BY: "helm"}
UID = "uid-1"
OTHER_UID = "uid-2"

# ---------------------------------------------------------------------------------------------------------
# Leaf Secrets


@pytest.mark.parametrize(
    ("labels", "annotations", "expected"),
    [
        pytest.param(
            MANAGED,
            {ANN_CERTIFICATE_NAME: "web", ANN_CERTIFICATE_UID: UID},
            True,
            id="a Secret written for this very certificate object is its own",
        ),
        pytest.param(
            MANAGED,
            {ANN_CERTIFICATE_NAME: "web"},
            False,
            id="a managed Secret naming the certificate without its UID is not its own",
        ),
        pytest.param(
            MANAGED,
            {ANN_CERTIFICATE_NAME: "web", ANN_CERTIFICATE_UID: OTHER_UID},
            False,
            id="a Secret written for an earlier certificate of the same name is not its own",
        ),
        pytest.param(
            MANAGED,
            {ANN_CERTIFICATE_NAME: "api", ANN_CERTIFICATE_UID: UID},
            False,
            id="a Secret written for another certificate is not its own",
        ),
        pytest.param(
            {},
            {ANN_CERTIFICATE_NAME: "web", ANN_CERTIFICATE_UID: UID},
            False,
            id="a Secret without the managed-by label is not its own even with the right annotations",
        ),
        pytest.param(
            FOREIGN_LABEL,
            {ANN_CERTIFICATE_NAME: "web", ANN_CERTIFICATE_UID: UID},
            False,
            id="a Secret managed by another tool is not its own",
        ),
        pytest.param(MANAGED, {}, False, id="a managed Secret with no owner annotations is not its own"),
    ],
)
def test_leaf_secret_ownership(
    labels: Mapping[str, str], annotations: Mapping[str, str], expected: bool
) -> None:
    assert owns_leaf_secret(labels, annotations, "web", UID) is expected


# ---------------------------------------------------------------------------------------------------------
# CA Secrets


def ca_ann(issuer: str | None = "mesh", uid: str | None = UID, **extra: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if issuer is not None:
        out[ANN_CA_FOR_ISSUER] = issuer
    if uid is not None:
        out[ANN_ISSUER_UID] = uid
    out.update(extra)
    return out


ALLOW_MESH = {ANN_ALLOWED_ISSUERS: "other, mesh"}


@pytest.mark.parametrize(
    ("labels", "annotations", "keeps_ca", "proven", "expected"),
    [
        pytest.param(
            MANAGED,
            ca_ann(),
            True,
            False,
            CASecretAccess.OWNED,
            id="a CA written for this issuer object is owned",
        ),
        pytest.param(
            MANAGED,
            ca_ann(),
            False,
            False,
            CASecretAccess.OWNED,
            id="a ca issuer owns a CA written for it too (it still only reads it)",
        ),
        pytest.param(
            MANAGED,
            ca_ann(uid=OTHER_UID),
            True,
            True,
            CASecretAccess.NOT_MANAGED,
            id="a CA written for an earlier issuer of the same name is not managed, even when proven",
        ),
        pytest.param(
            MANAGED,
            ca_ann(uid=OTHER_UID),
            False,
            False,
            CASecretAccess.NOT_ALLOWED,
            id="a ca issuer cannot use a CA written for an earlier issuer of the same name",
        ),
        pytest.param(
            MANAGED,
            ca_ann(issuer="other"),
            True,
            False,
            CASecretAccess.NOT_MANAGED,
            id="a CA written for another issuer is not managed",
        ),
        pytest.param(
            MANAGED,
            ca_ann(uid=None),
            True,
            False,
            CASecretAccess.NOT_MANAGED,
            id="a legacy CA without an issuer UID is not owned without proof",
        ),
        pytest.param(
            MANAGED,
            ca_ann(uid=None),
            True,
            True,
            CASecretAccess.OWNED,
            id="a legacy CA without an issuer UID is adopted when the issuer's status proves its fingerprint",
        ),
        pytest.param(
            {},
            ca_ann(),
            True,
            True,
            CASecretAccess.NOT_MANAGED,
            id="a CA without the managed-by label is never owned",
        ),
        pytest.param(
            MANAGED,
            ca_ann(**{ANN_CA_ROLE: CA_ROLE_NEXT}),
            True,
            True,
            CASecretAccess.NOT_MANAGED,
            id="the staged next CA of a rotation is not the issuer's CA Secret",
        ),
        pytest.param(
            {},
            dict(ALLOW_MESH),
            False,
            False,
            CASecretAccess.ALLOWED,
            id="a bring-your-own CA listing the issuer in allowed-issuers may be used",
        ),
        pytest.param(
            {},
            dict(ALLOW_MESH),
            True,
            False,
            CASecretAccess.ALLOWED,
            id="a CA kept by the operator may also be used when someone else's Secret allows it",
        ),
        pytest.param(
            {},
            {ANN_ALLOWED_ISSUERS: "mesh-2,meshy"},
            False,
            False,
            CASecretAccess.NOT_ALLOWED,
            id="allowed-issuers matches whole names only",
        ),
        pytest.param(
            {},
            {ANN_ALLOWED_ISSUERS: "*"},
            False,
            False,
            CASecretAccess.NOT_ALLOWED,
            id="allowed-issuers has no wildcard",
        ),
        pytest.param(
            {},
            {},
            False,
            False,
            CASecretAccess.NOT_ALLOWED,
            id="a bring-your-own CA without the opt-in is not allowed for a ca issuer",
        ),
        pytest.param(
            {},
            {},
            True,
            False,
            CASecretAccess.NOT_MANAGED,
            id="a foreign Secret where a kept CA should be is not managed",
        ),
        pytest.param(
            MANAGED,
            ca_ann(uid=OTHER_UID, **ALLOW_MESH),
            True,
            False,
            CASecretAccess.ALLOWED,
            id="another issuer's CA that lists this issuer is allowed, not owned",
        ),
    ],
)
def test_ca_secret_access(
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    keeps_ca: bool,
    proven: bool,
    expected: CASecretAccess,
) -> None:
    assert (
        ca_secret_access(labels, annotations, "mesh", UID, keeps_ca=keeps_ca, proven_fingerprint=proven)
        is expected
    )


@pytest.mark.parametrize(
    ("labels", "annotations", "expected"),
    [
        pytest.param(
            MANAGED,
            ca_ann(**{ANN_CA_ROLE: CA_ROLE_NEXT}),
            True,
            id="a staged CA made for this issuer object is its own",
        ),
        pytest.param(MANAGED, ca_ann(), False, id="a CA Secret without the next role is not a staged CA"),
        pytest.param(
            MANAGED,
            ca_ann(uid=OTHER_UID, **{ANN_CA_ROLE: CA_ROLE_NEXT}),
            False,
            id="a staged CA made for an earlier issuer of the same name is not its own",
        ),
        pytest.param(
            MANAGED,
            ca_ann(uid=None, **{ANN_CA_ROLE: CA_ROLE_NEXT}),
            False,
            id="a staged CA without an issuer UID is never adopted",
        ),
        pytest.param(
            MANAGED,
            ca_ann(issuer="other", **{ANN_CA_ROLE: CA_ROLE_NEXT}),
            False,
            id="a staged CA made for another issuer is not its own",
        ),
        pytest.param(
            {},
            ca_ann(**{ANN_CA_ROLE: CA_ROLE_NEXT}),
            False,
            id="a staged CA without the managed-by label is not its own",
        ),
    ],
)
def test_staged_ca_ownership(
    labels: Mapping[str, str], annotations: Mapping[str, str], expected: bool
) -> None:
    assert owns_staged_ca(labels, annotations, "mesh", UID) is expected


# ---------------------------------------------------------------------------------------------------------
# Trust bundles

ISSUER = ("security", "mesh")


def bundle_ann(target: str | None = "security/mesh", uid: str | None = UID) -> dict[str, str]:
    out: dict[str, str] = {}
    if target is not None:
        out[ANN_BUNDLE_FOR] = target
    if uid is not None:
        out[ANN_BUNDLE_FOR_UID] = uid
    return out


@pytest.mark.parametrize(
    ("labels", "annotations", "holds_anchors", "expected"),
    [
        pytest.param(
            MANAGED, bundle_ann(), False, True, id="a bundle written for this issuer object is its own"
        ),
        pytest.param(
            MANAGED,
            bundle_ann(uid=OTHER_UID),
            True,
            False,
            id="a bundle written for an earlier issuer of the same name is not its own, whatever it holds",
        ),
        pytest.param(
            MANAGED,
            bundle_ann(uid=None),
            True,
            True,
            id="a legacy bundle without a UID is adopted when it already holds the issuer's anchors",
        ),
        pytest.param(
            MANAGED,
            bundle_ann(uid=None),
            False,
            False,
            id="a legacy bundle without a UID is not adopted when it holds other anchors",
        ),
        pytest.param(
            MANAGED,
            bundle_ann(target="security/other"),
            True,
            False,
            id="a bundle written for another issuer is not its own",
        ),
        pytest.param(
            MANAGED,
            bundle_ann(target="team-a/mesh"),
            True,
            False,
            id="a bundle written for an issuer of the same name in another namespace is not its own",
        ),
        pytest.param(
            MANAGED,
            bundle_ann(target=None),
            True,
            False,
            id="a managed ConfigMap that names no issuer is not a bundle",
        ),
        pytest.param(
            {}, bundle_ann(), True, False, id="a ConfigMap without the managed-by label is never a bundle"
        ),
    ],
)
def test_bundle_ownership(
    labels: Mapping[str, str], annotations: Mapping[str, str], holds_anchors: bool, expected: bool
) -> None:
    assert owns_bundle(labels, annotations, ISSUER, UID, holds_current_anchors=holds_anchors) is expected


@pytest.mark.parametrize(
    ("target", "annotations", "expected"),
    [
        pytest.param("security", None, True, id="an issuer's own namespace always accepts its bundle"),
        pytest.param(
            "security",
            {ANN_ACCEPT_BUNDLES_FROM: "team-a/other"},
            True,
            id="an issuer's own namespace accepts its bundle whatever the annotation lists",
        ),
        pytest.param(
            "team-a",
            {ANN_ACCEPT_BUNDLES_FROM: "team-b/x, security/mesh"},
            True,
            id="a namespace that lists the issuer accepts its bundle",
        ),
        pytest.param(
            "team-a", {ANN_ACCEPT_BUNDLES_FROM: "*"}, True, id="a namespace that lists * accepts every bundle"
        ),
        pytest.param(
            "team-a",
            {ANN_ACCEPT_BUNDLES_FROM: "security/other"},
            False,
            id="a namespace that lists other issuers refuses the bundle",
        ),
        pytest.param(
            "team-a",
            {ANN_ACCEPT_BUNDLES_FROM: "mesh"},
            False,
            id="a namespace that lists the issuer by name without its namespace refuses the bundle",
        ),
        pytest.param("team-a", {}, False, id="a namespace without the annotation refuses the bundle"),
        pytest.param("team-a", None, False, id="a namespace not known refuses the bundle"),
        pytest.param(
            "team-a",
            {ANN_ACCEPT_BUNDLES_FROM: " , "},
            False,
            id="an annotation of only separators accepts nothing",
        ),
    ],
)
def test_namespace_accepts_bundle(target: str, annotations: Mapping[str, str] | None, expected: bool) -> None:
    assert namespace_accepts_bundle(target, annotations, ISSUER) is expected


# ---------------------------------------------------------------------------------------------------------
# Workloads named as explicit rollout targets


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        pytest.param(
            {ANN_ROLLOUT_TARGET_OF: "web"}, True, id="a workload that lists the certificate accepts it"
        ),
        pytest.param(
            {ANN_ROLLOUT_TARGET_OF: "api, web"},
            True,
            id="a workload that lists several certificates accepts each",
        ),
        pytest.param(
            {ANN_ROLLOUT_TARGET_OF: "*"}, True, id="a workload that lists * accepts every certificate"
        ),
        pytest.param({ANN_ROLLOUT_TARGET_OF: "web-2"}, False, id="a workload matches whole names only"),
        pytest.param({ANN_ROLLOUT_TARGET_OF: ""}, False, id="an empty opt-in accepts nothing"),
        pytest.param({}, False, id="a workload without the opt-in refuses"),
    ],
)
def test_workload_accepts_target(annotations: Mapping[str, str], expected: bool) -> None:
    assert workload_accepts_target(annotations, "web") is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, frozenset(), id="no annotation names nothing"),
        pytest.param("", frozenset(), id="an empty annotation names nothing"),
        pytest.param(" a ,b,, a", frozenset({"a", "b"}), id="names are trimmed and empty parts dropped"),
    ],
)
def test_names_in(value: str | None, expected: frozenset[str]) -> None:
    assert names_in(value) == expected
