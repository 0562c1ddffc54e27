"""policy.podcert, podcert_request and podcert_routing: who signs a PodCertificateRequest, whether it may,
the times it gets, and each node's rate. Pure decisions with the time passed in."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtls_operator.api.constants import CLUSTER_ISSUER_KIND, ISSUER_KIND, Reason
from mtls_operator.api.issuer_policy import IssuerPolicy, parse_issuer_policy
from mtls_operator.api.models import KeyAlgorithm
from mtls_operator.policy.podcert import (
    ANN_REFRESH_BEFORE,
    BACKDATE,
    MIN_LIFETIME,
    REFRESH_MARGIN,
    PodCertInput,
    Recorded,
    begin_refresh_at,
    decide,
)
from mtls_operator.policy.podcert_request import (
    Decision,
    Outcome,
    PodCertRequest,
    parse_pod_certificate_request,
)
from mtls_operator.policy.podcert_routing import (
    ISSUER_GRACE,
    NodeRate,
    SignerIssuer,
    choose_signer,
    in_scope,
    reserve,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)
NS = "team-a"
REQUEST = PodCertRequest(
    namespace=NS,
    name="req-x1",
    uid="uid-req",
    resource_version="7",
    signer_name="mtls.dev/mesh",
    pod_name="web-0",
    pod_uid="uid-pod",
    service_account="web",
    service_account_uid="uid-sa",
    node_name="node-1",
    node_uid="uid-node",
    max_expiration=timedelta(hours=24),
    created=NOW - timedelta(seconds=1),
)
MATCHING = Recorded(
    pod_uid="uid-pod",
    pod_node="node-1",
    pod_service_account="web",
    service_account_uid="uid-sa",
    node_uid="uid-node",
)
MESH = parse_issuer_policy(
    {
        "allowedNamespaces": {"matchLabels": {"mesh": "on"}},
        "allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/web"],
        "allowedAlgorithms": [{"algorithm": "ECDSA", "minSize": 256}],
    }
)
CLUSTER = SignerIssuer(CLUSTER_ISSUER_KIND, "", "mesh", judged=True, ready=True, policy=MESH)


def given_input(**changes: Any) -> PodCertInput:
    fields: dict[str, Any] = {
        "request": REQUEST,
        "signer": CLUSTER,
        "recorded": MATCHING,
        "key": (KeyAlgorithm.ECDSA, 256),
        "key_problem": None,
        "namespace_labels": {"mesh": "on"},
        "now": NOW,
    }
    fields.update(changes)
    return PodCertInput(**fields)


def policy(**changes: Any) -> IssuerPolicy:
    return replace(MESH, **changes)


def request(**changes: Any) -> PodCertRequest:
    return replace(REQUEST, **changes)


def signer(**changes: Any) -> SignerIssuer:
    return replace(CLUSTER, **changes)


# ---------------------------------------------------------------------------------------------------------
# Who signs


NAMESPACED = SignerIssuer(ISSUER_KIND, NS, "mesh", judged=True, ready=True)
ELSEWHERE = SignerIssuer(ISSUER_KIND, "team-b", "mesh", judged=True, ready=True)


def test_only_cluster_issuers_and_issuers_of_the_requests_namespace_are_in_scope() -> None:
    assert in_scope(NS, [ELSEWHERE, NAMESPACED, CLUSTER]) == (CLUSTER, NAMESPACED)
    assert in_scope("team-b", [NAMESPACED]) == ()


@pytest.mark.parametrize(
    ("claimants", "created", "expected"),
    [
        pytest.param((), NOW, (None, "NoIssuer"), id="waits while no issuer declares the signer name"),
        pytest.param(
            (NAMESPACED, CLUSTER),
            NOW,
            (Outcome.FAILED, Reason.SIGNER_CONFLICT),
            id="fails when two issuers claim the signer name in the namespace",
        ),
        pytest.param(
            (signer(judged=False, ready=False),),
            NOW - timedelta(hours=1),
            (None, Reason.ISSUER_NOT_READY),
            id="waits for an issuer the operator has not judged yet, however old the request",
        ),
        pytest.param(
            (signer(ready=False, message="its CA Secret is missing."),),
            NOW - ISSUER_GRACE + timedelta(seconds=1),
            (None, Reason.ISSUER_NOT_READY),
            id="waits for a not-ready issuer while the request is younger than the grace",
        ),
        pytest.param(
            (signer(ready=False, message="its CA Secret is missing."),),
            NOW - ISSUER_GRACE,
            (Outcome.FAILED, Reason.ISSUER_NOT_READY),
            id="fails once the grace has passed and the issuer is still not ready",
        ),
    ],
)
def test_choosing_the_signer(
    claimants: tuple[SignerIssuer, ...], created: datetime, expected: tuple[Outcome | None, str]
) -> None:
    chosen = choose_signer(request(created=created), claimants, NOW)
    assert isinstance(chosen, Decision)
    assert (chosen.outcome, chosen.reason) == expected
    if chosen.waits:
        assert chosen.retry_at is not None and chosen.retry_at > NOW
    if chosen.reason == Reason.SIGNER_CONFLICT:
        assert "MTLSIssuer team-a/mesh" in chosen.message and "MTLSClusterIssuer mesh" in chosen.message
    if chosen.outcome is Outcome.FAILED and chosen.reason == Reason.ISSUER_NOT_READY:
        assert "its CA Secret is missing." in chosen.message


def test_the_one_ready_issuer_signs() -> None:
    assert choose_signer(REQUEST, (CLUSTER,), NOW) is CLUSTER


# ---------------------------------------------------------------------------------------------------------
# Whether it may sign


CASES: list[Any] = [
    pytest.param(
        {},
        Outcome.ISSUED,
        Reason.ISSUED,
        "spiffe://cluster.local/ns/team-a/sa/web",
        id="issues a request that matches pod, account, node and policy",
    ),
    pytest.param(
        {"signer": signer(policy=None)},
        Outcome.ISSUED,
        Reason.ISSUED,
        "spiffe://cluster.local/ns/team-a/sa/web",
        id="issues anything for an issuer without a policy",
    ),
    pytest.param(
        {"namespace_labels": {}},
        Outcome.DENIED,
        Reason.POLICY_DENIED,
        "allowedNamespaces",
        id="denies a namespace the cluster issuer's policy does not admit",
    ),
    pytest.param(
        {"namespace_labels": None},
        Outcome.DENIED,
        Reason.POLICY_DENIED,
        "cannot be read",
        id="denies when the policy limits namespaces and the labels cannot be read",
    ),
    pytest.param(
        {"recorded": Recorded()},
        Outcome.DENIED,
        Reason.POD_MISMATCH,
        "does not exist any more",
        id="denies a request whose pod is gone",
    ),
    pytest.param(
        {"recorded": replace(MATCHING, pod_uid="uid-other")},
        Outcome.DENIED,
        Reason.POD_MISMATCH,
        "re-created",
        id="denies a request for a pod re-created under the same name",
    ),
    pytest.param(
        {"recorded": replace(MATCHING, pod_node="node-2")},
        Outcome.DENIED,
        Reason.POD_MISMATCH,
        "bound to node node-2",
        id="denies a request from a node the pod is not bound to",
    ),
    pytest.param(
        {"recorded": replace(MATCHING, pod_service_account="admin")},
        Outcome.DENIED,
        Reason.POD_MISMATCH,
        "runs as ServiceAccount admin",
        id="denies a request naming another ServiceAccount than the pod's",
    ),
    pytest.param(
        {"recorded": replace(MATCHING, service_account_uid=None)},
        Outcome.DENIED,
        Reason.POD_MISMATCH,
        "ServiceAccount team-a/web does not exist",
        id="denies a request whose ServiceAccount is gone",
    ),
    pytest.param(
        {"recorded": replace(MATCHING, service_account_uid="uid-new")},
        Outcome.DENIED,
        Reason.POD_MISMATCH,
        "has UID uid-new",
        id="denies a request whose ServiceAccount was re-created",
    ),
    pytest.param(
        {"recorded": replace(MATCHING, node_uid=None)},
        Outcome.DENIED,
        Reason.POD_MISMATCH,
        "Node node-1 does not exist",
        id="denies a request whose node is gone",
    ),
    pytest.param(
        {"recorded": replace(MATCHING, node_uid="uid-node-2")},
        Outcome.DENIED,
        Reason.POD_MISMATCH,
        "Node node-1 has UID uid-node-2",
        id="denies a request whose node was re-created",
    ),
    pytest.param(
        {"request": request(user_annotations=(("example.com/x", "1"),))},
        Outcome.DENIED,
        Reason.INVALID_USER_ANNOTATIONS,
        "example.com/x",
        id="denies a user annotation the signer does not understand",
    ),
    pytest.param(
        {"request": request(user_annotations=((ANN_REFRESH_BEFORE, "soon"),))},
        Outcome.DENIED,
        Reason.INVALID_USER_ANNOTATIONS,
        "'soon' is not a duration",
        id="denies a refresh-before that is not a duration",
    ),
    pytest.param(
        {"key": None, "key_problem": "The request's key is an ECDSA key on curve secp256k1."},
        Outcome.DENIED,
        Reason.UNSUPPORTED_KEY_TYPE,
        "secp256k1",
        id="denies a key the operator cannot certify",
    ),
    pytest.param(
        {"key": (KeyAlgorithm.ED25519, 0)},
        Outcome.DENIED,
        Reason.UNSUPPORTED_KEY_TYPE,
        "Use keyType ECDSAP256 or ECDSAP384 or ECDSAP521",
        id="denies a key type allowedAlgorithms refuses and names the kubelet key types it allows",
    ),
    pytest.param(
        {"signer": signer(policy=policy(max_duration=timedelta(minutes=30)))},
        Outcome.DENIED,
        Reason.POLICY_DENIED,
        "maxDuration 30m, shorter than the 1h",
        id="denies when the policy's maxDuration is below the one-hour minimum",
    ),
    pytest.param(
        {"signer": signer(ca_not_after=NOW + timedelta(minutes=50))},
        Outcome.FAILED,
        Reason.CA_EXPIRES_TOO_SOON,
        "expires at 2026-03-01T12:50:00Z, less than 1h from now",
        id="fails when the CA expires before a one-hour certificate would",
    ),
    pytest.param(
        {
            "request": request(service_account="intruder"),
            "recorded": replace(MATCHING, pod_service_account="intruder"),
        },
        Outcome.DENIED,
        Reason.POLICY_DENIED,
        "spiffe://cluster.local/ns/team-a/sa/intruder is not allowed",
        id="denies a SPIFFE ID the policy's allowedURIs do not match",
    ),
    pytest.param(
        {"signer": signer(policy=policy(allowed_uris=None))},
        Outcome.DENIED,
        Reason.POLICY_DENIED,
        "the policy sets no allowedURIs",
        id="denies by default when the policy lists no allowedURIs",
    ),
    pytest.param(
        {"signer": signer(policy=policy(allowed_usages=()))},
        Outcome.DENIED,
        Reason.POLICY_DENIED,
        "usages entry server auth",
        id="denies when the policy allows neither server nor client auth",
    ),
    pytest.param(
        {"signer": signer(policy=policy(trust_domain="prod.example"))},
        Outcome.ISSUED,
        Reason.ISSUED,
        "spiffe://prod.example/ns/team-a/sa/web",
        id="issues in the policy's trust domain",
    ),
]


@pytest.mark.parametrize(("changes", "outcome", "reason", "named"), CASES)
def test_deciding(changes: dict[str, Any], outcome: Outcome, reason: Reason, named: str) -> None:
    decision = decide(given_input(**changes))
    assert (decision.outcome, decision.reason) == (outcome, reason), decision.message
    if outcome is Outcome.ISSUED:
        assert decision.issuance is not None and decision.issuance.spiffe_id == named
        assert decision.issuance.spec.uris == (named,)
    else:
        assert decision.issuance is None and named in decision.message, decision.message


# ---------------------------------------------------------------------------------------------------------
# The times


def issued(inp: PodCertInput) -> Any:
    decision = decide(inp)
    assert decision.issuance is not None, decision.message
    return decision.issuance


@pytest.mark.parametrize(
    ("changes", "lifetime"),
    [
        pytest.param({}, timedelta(hours=24), id="lasts maxExpirationSeconds when nothing shortens it"),
        pytest.param(
            {"request": request(max_expiration=timedelta(hours=2))},
            timedelta(hours=2),
            id="honours a shorter maxExpirationSeconds",
        ),
        pytest.param(
            {"signer": signer(policy=policy(max_duration=timedelta(hours=3)))},
            timedelta(hours=3),
            id="is cut to the policy's maxDuration",
        ),
        pytest.param(
            {"request": request(max_expiration=timedelta(days=400))},
            timedelta(days=91),
            id="never exceeds the 91 days the API allows",
        ),
        pytest.param(
            {"signer": signer(ca_not_after=NOW + timedelta(hours=5))},
            timedelta(hours=5, minutes=3),
            id="ends with the CA when the CA ends first",
        ),
    ],
)
def test_the_lifetime(changes: dict[str, Any], lifetime: timedelta) -> None:
    issuance = issued(given_input(**changes))
    assert issuance.not_after - issuance.not_before == lifetime
    assert issuance.spec.duration == lifetime


def test_not_before_is_backdated_a_little_and_truncated_to_seconds() -> None:
    issuance = issued(given_input())
    assert issuance.not_before == (NOW - BACKDATE).replace(microsecond=0)
    assert NOW - issuance.not_before < timedelta(minutes=5), "kube-apiserver wants it within 5 minutes"


@pytest.mark.parametrize(
    ("refresh_before", "expected"),
    [
        pytest.param(None, timedelta(hours=16), id="refreshes at two thirds of the lifetime by default"),
        pytest.param("8h", timedelta(hours=16), id="refreshes refresh-before ahead of notAfter"),
        pytest.param("30m", timedelta(hours=23, minutes=30), id="honours a short refresh-before"),
        pytest.param(
            "1m", timedelta(hours=24) - REFRESH_MARGIN, id="refreshes no later than 10 minutes before expiry"
        ),
        pytest.param("48h", REFRESH_MARGIN, id="refreshes no sooner than 10 minutes after notBefore"),
    ],
)
def test_begin_refresh_at(refresh_before: str | None, expected: timedelta) -> None:
    annotations = ((ANN_REFRESH_BEFORE, refresh_before),) if refresh_before else ()
    issuance = issued(given_input(request=request(user_annotations=annotations)))
    assert issuance.begin_refresh_at - issuance.not_before == expected


@given(
    lifetime=st.integers(min_value=int(MIN_LIFETIME.total_seconds()), max_value=7862400),
    refresh_before=st.one_of(st.none(), st.integers(min_value=1, max_value=10**8)),
    micros=st.integers(min_value=0, max_value=999_999),
)
def test_begin_refresh_at_always_lies_where_the_api_server_accepts_it(
    lifetime: int, refresh_before: int | None, micros: int
) -> None:
    not_before = NOW.replace(microsecond=0)
    not_after = not_before + timedelta(seconds=lifetime)
    before = timedelta(seconds=refresh_before, microseconds=micros) if refresh_before else None
    at = begin_refresh_at(not_before, not_after, before)
    assert not_before + REFRESH_MARGIN <= at <= not_after - REFRESH_MARGIN
    assert at.microsecond == 0


# ---------------------------------------------------------------------------------------------------------
# Each node's rate


def served_at(rate: NodeRate, arrivals: list[datetime]) -> list[datetime]:
    theoretical: datetime | None = None
    out = []
    for now in arrivals:
        theoretical, allowed = reserve(rate, theoretical, now)
        out.append(allowed or now)
    return out


def test_a_node_gets_its_burst_at_once_then_one_request_per_interval_each_in_its_own_slot() -> None:
    rate = NodeRate(burst=3, per_second=2.0)
    times = served_at(rate, [NOW] * 6)
    assert times[:3] == [NOW] * 3
    assert [t - NOW for t in times[3:]] == [timedelta(seconds=s) for s in (0.5, 1.0, 1.5)]


def test_a_quiet_node_has_its_whole_burst_again() -> None:
    rate = NodeRate(burst=3, per_second=2.0)
    theoretical, _ = reserve(rate, None, NOW)
    for _ in range(10):
        theoretical, _ = reserve(rate, theoretical, NOW)
    later = NOW + timedelta(minutes=1)
    assert served_at(rate, [later] * 3) == [later] * 3


# ---------------------------------------------------------------------------------------------------------
# Parsing


def body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": NS,
            "name": "req-x1",
            "uid": "uid-req",
            "resourceVersion": "7",
            "creationTimestamp": "2026-03-01T12:00:00Z",
        },
        "spec": {
            "signerName": "mtls.dev/mesh",
            "podName": "web-0",
            "podUID": "uid-pod",
            "serviceAccountName": "web",
            "serviceAccountUID": "uid-sa",
            "nodeName": "node-1",
            "nodeUID": "uid-node",
            "maxExpirationSeconds": 3600,
            "stubPKCS10Request": base64.b64encode(b"csr").decode(),
            "unverifiedUserAnnotations": {ANN_REFRESH_BEFORE: "30m"},
            **spec,
        },
    }


def test_a_request_is_parsed_once_with_its_bytes_decoded() -> None:
    parsed = parse_pod_certificate_request(body())
    assert parsed.key == (NS, "req-x1") and parsed.ours and parsed.answered is None
    assert parsed.stub_pkcs10 == b"csr" and parsed.pkix_public_key == b""
    assert parsed.max_expiration == timedelta(hours=1)
    assert parsed.user_annotations == ((ANN_REFRESH_BEFORE, "30m"),)
    assert parsed.created == datetime(2026, 3, 1, 12, tzinfo=UTC)


Mutation = Callable[[dict[str, Any]], None]


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        pytest.param(
            lambda b: b["spec"].update(signerName="example.com/other"),
            lambda r: not r.ours,
            id="a signer name outside mtls.dev is not ours",
        ),
        pytest.param(
            lambda b: b.update(status={"conditions": [{"type": "Denied", "status": "True"}]}),
            lambda r: r.answered is Outcome.DENIED,
            id="a request already denied is answered",
        ),
        pytest.param(
            lambda b: b["spec"].update(stubPKCS10Request="not base64!"),
            lambda r: r.stub_pkcs10 == b"",
            id="unreadable bytes read as empty (the key check then denies)",
        ),
        pytest.param(
            lambda b: b["spec"].update(maxExpirationSeconds="3600"),
            lambda r: r.max_expiration == timedelta(hours=24),
            id="a maxExpirationSeconds that is not a number reads as the API default",
        ),
        pytest.param(
            lambda b: b.pop("spec"), lambda r: r.signer_name == "" and not r.ours, id="never raises"
        ),
    ],
)
def test_parsing_odd_requests(mutate: Mutation, check: Callable[[PodCertRequest], bool]) -> None:
    raw = body()
    mutate(raw)
    assert check(parse_pod_certificate_request(raw))
