"""controllers.revocation without a cluster: entries leave the list after their certificate's notAfter, the
list has a size budget, the ConfigMap is written only when it is the operator's, and revoke() says whether
the serial is durably listed. Time comes from an injected clock."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from cryptography import x509
from tests.unit.pki_factory import ECDSA_P256, self_signed_ca
from tests.unit.test_revocation_store import CM_PATH, DAY, ISSUER, NS, T0, WITH_CRL, Clock, FakeApi, _store

from mtls_operator.api.constants import Reason
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.policy import revocations as rev
from mtls_operator.policy.revocations import Revoked, Stored

CA = self_signed_ca(ECDSA_P256)  # valid from NOW for 365 days
ISSUER_PATH = f"/apis/mtls.dev/v1alpha1/namespaces/{NS}/mtlsissuers/{ISSUER}"


def _serials(api: FakeApi) -> list[int]:
    body = api.objects[CM_PATH]
    crl = x509.load_der_x509_crl(base64.b64decode(body["binaryData"]["ca.crl.der"]))
    return sorted(r.serial_number for r in crl)


def _listed(api: FakeApi) -> list[str]:
    return [e["serial"] for e in json.loads(api.objects[CM_PATH]["data"]["revoked.json"])]


# ---------------------------------------------------------------------------------------------------------
# What may leave the list, and when


@pytest.mark.parametrize(
    ("entry", "ca_not_after", "expected"),
    [
        pytest.param(
            Revoked(1, T0, not_after=T0 + DAY), T0 + 300 * DAY, T0 + 2 * DAY, id="notAfter plus the margin"
        ),
        pytest.param(
            Revoked(1, T0), T0 + 300 * DAY, T0 + 301 * DAY, id="unknown notAfter: the CA's notAfter plus it"
        ),
        pytest.param(Revoked(1, T0), None, None, id="unknown notAfter and no CA known: kept"),
    ],
)
def test_keep_until(entry: Revoked, ca_not_after: datetime | None, expected: datetime | None) -> None:
    assert rev.keep_until(entry, DAY, ca_not_after) == expected


def test_prune_drops_only_entries_past_their_keep_until() -> None:
    entries = (
        Revoked(1, T0, not_after=T0 + DAY),
        Revoked(2, T0, not_after=T0 + 5 * DAY),
        Revoked(3, T0),
    )
    assert rev.prune(entries, T0 + 2 * DAY - timedelta(seconds=1), DAY, None) == entries
    assert [e.serial for e in rev.prune(entries, T0 + 2 * DAY, DAY, None)] == [2, 3]
    assert [e.serial for e in rev.prune(entries, T0 + 10 * DAY, DAY, T0 + 9 * DAY)] == []


def test_revoked_json_keeps_not_after_and_still_reads_entries_without_it() -> None:
    old = '[{"serial": "a", "revokedAt": "2026-03-01T12:00:00Z", "reason": "superseded", "certificate": "w"}]'
    parsed, problems = rev.parse_revoked_json(old)
    assert problems == [] and parsed == (Revoked(0xA, T0, "superseded", "w"),)
    assert (
        rev.dump_revoked_json(parsed) == "[\n" + json.dumps(json.loads(old)[0], sort_keys=True) + "\n]\n"
    ), "an old entry is written back as it was: no notAfter invented"
    new = rev.dump_revoked_json([Revoked(0xB, T0, not_after=T0 + DAY)])
    assert json.loads(new)[0]["notAfter"] == "2026-03-02T12:00:00Z"
    assert rev.parse_revoked_json(new)[0] == (Revoked(0xB, T0, not_after=T0 + DAY),)
    bad, problems = rev.parse_revoked_json(
        '[{"serial": "0c", "revokedAt": "2026-03-01T12:00:00Z", "notAfter": "soon"}]'
    )
    assert bad == (Revoked(0xC, T0),) and problems == [
        "revoked.json[0].notAfter is not an RFC 3339 time; kept as unknown."
    ]


def test_merging_keeps_the_earliest_revocation_and_a_known_not_after() -> None:
    merged = rev.merge_revoked([Revoked(5, T0 - DAY, "keyCompromise")], [Revoked(5, T0, not_after=T0 + DAY)])
    assert merged == (Revoked(5, T0 - DAY, "keyCompromise", not_after=T0 + DAY),)


def test_an_entry_leaves_the_list_and_the_crl_one_crl_validity_after_its_certificate_expires() -> None:
    api = FakeApi()
    store, clock = _store(api)

    async def run() -> None:
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        assert await store.revoke(NS, ISSUER, "a1", "keyCompromise", "web", not_after=T0 + timedelta(hours=1))
        assert await store.revoke(NS, ISSUER, "b2", "keyCompromise", "db", not_after=T0 + 30 * DAY)
        assert _serials(api) == [0xA1, 0xB2]
        assert (
            json.loads(api.objects[CM_PATH]["data"]["revoked.json"])[0]["notAfter"] == "2026-03-01T13:00:00Z"
        )
        clock.now = T0 + timedelta(hours=1) + DAY - timedelta(seconds=1)
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        assert _serials(api) == [0xA1, 0xB2], "still within the margin"
        clock.now = T0 + timedelta(hours=1) + DAY
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)

    asyncio.run(run())
    assert _serials(api) == [0xB2] and _listed(api) == ["b2"]
    assert not store.is_revoked(NS, ISSUER, "a1") and store.is_revoked(NS, ISSUER, "b2")


def test_the_refresh_task_prunes_too() -> None:
    api = FakeApi()
    store, clock = _store(api)
    store.refresh_interval = 0.01

    async def run() -> None:
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        await store.revoke(NS, ISSUER, "a1", "unspecified", "web", not_after=T0 + DAY)
        clock.now = T0 + 2 * DAY
        task = asyncio.create_task(store._refresh_loop())
        try:
            for _ in range(200):
                await asyncio.sleep(0.01)
                if _listed(api) == []:
                    break
        finally:
            task.cancel()

    asyncio.run(run())
    assert _listed(api) == [] and _serials(api) == []


def test_an_entry_without_not_after_stays_until_the_ca_expires() -> None:
    api = FakeApi()
    old = Stored(revoked=(Revoked(0x77, T0, "superseded", "legacy"),))
    api.put_object(CM_PATH, rev.config_map_body(NS, ISSUER, old))
    store, clock = _store(api)
    ca_end = CA.facts.not_after

    async def run() -> None:
        clock.now = ca_end + DAY - timedelta(seconds=1)
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        assert _listed(api) == ["77"]
        clock.now = ca_end + DAY
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)

    asyncio.run(run())
    assert _listed(api) == []


def test_revoking_a_long_expired_certificate_needs_no_entry() -> None:
    api = FakeApi()
    store, _ = _store(api)
    done = asyncio.run(store.revoke(NS, ISSUER, "c3", "keyCompromise", "old", not_after=T0 - DAY))
    assert done is True and api.writes == 0 and CM_PATH not in api.objects


# ---------------------------------------------------------------------------------------------------------
# The size budget


def test_a_full_list_refuses_the_revocation_says_why_and_loses_nothing() -> None:
    def size_with(*serials: str) -> int:
        scratch = FakeApi()
        store, _ = _store(scratch)

        async def fill() -> None:
            await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
            for serial in serials:
                await store.revoke(NS, ISSUER, serial, "unspecified", "x", not_after=T0 + 5 * DAY)

        asyncio.run(fill())
        return rev.stored_from_config_map(scratch.objects[CM_PATH])[0].size()

    room_for_two = size_with("1", "2") + 8  # not for a third (about 150 bytes more)
    assert size_with("1", "2", "3") > room_for_two
    api = FakeApi()
    store, clock = _store(api, budget=room_for_two)
    api.objects[ISSUER_PATH] = {"metadata": {"name": ISSUER, "namespace": NS, "uid": "issuer-uid"}}

    async def run() -> list[Any]:
        out: list[Any] = []
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        out.append(await store.revoke(NS, ISSUER, "1", "unspecified", "a", not_after=T0 + DAY))
        out.append(await store.revoke(NS, ISSUER, "2", "unspecified", "b", not_after=T0 + 5 * DAY))
        out.append(await store.revoke(NS, ISSUER, "3", "unspecified", "c", not_after=T0 + 5 * DAY))
        out.append(store.problem(NS, ISSUER))
        out.append(list(_listed(api)))
        out.append(await store.revoke(NS, ISSUER, "3", "unspecified", "c", not_after=T0 + 5 * DAY))
        clock.now = T0 + 2 * DAY  # the first entry may leave now
        out.append(await store.revoke(NS, ISSUER, "3", "unspecified", "c", not_after=T0 + 5 * DAY))
        out.append(store.problem(NS, ISSUER))
        return out

    first, second, third, problem, listed, retried, later, cleared = asyncio.run(run())
    assert (first, second, third, retried) == (True, True, False, False)
    assert problem is not None and problem[0] is Reason.REVOCATIONS_FULL
    assert "Serial 3 (MTLSCertificate team-a/c) cannot be revoked yet" in problem[1]
    assert listed == ["1", "2"], "nothing already listed was dropped to make room"
    assert later is True and cleared is None
    assert _listed(api) == ["2", "3"]
    warnings = [(e["reason"], e["type"], e["involvedObject"]["uid"]) for e in api.events]
    assert warnings == [("RevocationsFull", "Warning", "issuer-uid")], "one event per problem, not per retry"


def test_an_api_server_that_refuses_the_config_map_is_reported_as_full() -> None:
    api = FakeApi()
    store, _ = _store(api)

    async def run() -> bool:
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        api.fail_writes = ApiError(
            422, "Invalid", "ConfigMap is invalid: []: Too long: must have at most 1048576 bytes"
        )
        return bool(await store.revoke(NS, ISSUER, "5", "unspecified", "web"))

    assert asyncio.run(run()) is False
    problem = store.problem(NS, ISSUER)
    assert problem is not None and problem[0] is Reason.REVOCATIONS_FULL and "1048576" in problem[1]


# ---------------------------------------------------------------------------------------------------------
# Ownership of <issuer>-revocations


def _foreign(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{ISSUER}-revocations", "namespace": NS, **meta},
        "data": {"settings.yaml": "keep: me\n"},
    }


OURS = {
    "labels": {"app.kubernetes.io/managed-by": "mtls-operator"},
    "annotations": {"mtls.dev/revocations-for": ISSUER},
}


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        pytest.param(OURS, None, id="both marks: the operator's"),
        pytest.param(
            {}, "lacks the label app.kubernetes.io/managed-by=mtls-operator and the annotation", id="no marks"
        ),
        pytest.param(
            {
                "labels": {"app.kubernetes.io/managed-by": "Helm"},
                "annotations": {"mtls.dev/revocations-for": ISSUER},
            },
            "lacks the label",
            id="managed by someone else",
        ),
        pytest.param(
            {"labels": OURS["labels"]},
            "lacks the annotation mtls.dev/revocations-for=mesh-ca",
            id="no annotation",
        ),
        pytest.param(
            {**OURS, "annotations": {"mtls.dev/revocations-for": "other"}},
            "(it names 'other')",
            id="the list of another issuer",
        ),
    ],
)
def test_ownership_problem(meta: dict[str, Any], expected: str | None) -> None:
    found = rev.ownership_problem(_foreign(**meta), ISSUER)
    if expected is None:
        assert found is None
    else:
        assert found is not None and expected in found


def test_a_config_map_that_is_not_the_operators_is_never_written_nor_read() -> None:
    api = FakeApi()
    victim = api.put_object(CM_PATH, _foreign())
    api.objects[ISSUER_PATH] = {"metadata": {"name": ISSUER, "namespace": NS, "uid": "u-1"}}
    store, _ = _store(api)

    async def run() -> bool:
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        done = await store.revoke(NS, ISSUER, "5", "keyCompromise", "web")
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        return bool(done)

    assert asyncio.run(run()) is False
    assert api.writes == 0 and api.objects[CM_PATH] == victim, "byte for byte what its owner wrote"
    problem = store.problem(NS, ISSUER)
    assert problem is not None and problem[0] is Reason.REVOCATIONS_CONFLICT
    assert "ConfigMap team-a/mesh-ca-revocations exists and is not the operator's" in problem[1]
    served = store.lookup(NS, ISSUER)
    assert served is not None and served.unavailable is not None and served.crl_der is None
    assert [e["reason"] for e in api.events] == ["RevocationsConflict"]

    # Its owner deletes it: the operator creates its own and the problem is gone.
    del api.objects[CM_PATH]
    asyncio.run(store.sync_issuer(NS, ISSUER, WITH_CRL, CA))
    assert store.problem(NS, ISSUER) is None
    assert api.objects[CM_PATH]["metadata"]["annotations"]["mtls.dev/revocations-for"] == ISSUER


def test_a_config_map_replaced_by_someone_elses_between_read_and_write_is_left_alone() -> None:
    api = FakeApi()
    store, _ = _store(api)
    swapped: dict[str, Any] = {}

    def replace_with_foreign() -> None:
        del api.objects[CM_PATH]
        swapped.update(api.put_object(CM_PATH, _foreign()))

    async def run() -> bool:
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        api.before_write = replace_with_foreign
        return bool(await store.revoke(NS, ISSUER, "5", "keyCompromise", "web"))

    assert asyncio.run(run()) is False
    assert api.objects[CM_PATH] == swapped
    problem = store.problem(NS, ISSUER)
    assert problem is not None and problem[0] is Reason.REVOCATIONS_CONFLICT


# ---------------------------------------------------------------------------------------------------------
# Durability and the clock


def test_revoke_is_true_only_once_the_serial_is_in_the_config_map() -> None:
    api = FakeApi()
    store, _ = _store(api)

    async def run() -> list[bool]:
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        api.fail_writes = ApiError(500, "InternalError", "etcd is down")
        failed = bool(await store.revoke(NS, ISSUER, "5", "keyCompromise", "web"))
        api.fail_writes = None
        listed = bool(await store.revoke(NS, ISSUER, "5", "keyCompromise", "web"))
        again = bool(await store.revoke(NS, ISSUER, "5", "keyCompromise", "web"))
        return [failed, listed, again]

    assert asyncio.run(run()) == [False, True, True]
    assert _listed(api) == ["5"]


def test_a_serial_only_in_memory_is_written_again_before_revoke_says_true() -> None:
    api = FakeApi()
    store, _ = _store(api)

    async def run() -> bool:
        await store.revoke(NS, ISSUER, "5", "keyCompromise", "web")
        del api.objects[CM_PATH]  # someone deleted the list; this process still knows the serial
        assert store.is_revoked(NS, ISSUER, "5")
        return bool(await store.revoke(NS, ISSUER, "5", "keyCompromise", "web"))

    assert asyncio.run(run()) is True
    assert _listed(api) == ["5"]


def test_a_bad_serial_is_an_error_not_a_silent_no() -> None:
    store, _ = _store(FakeApi())
    with pytest.raises(ValueError, match="not a hex certificate serial"):
        asyncio.run(store.revoke(NS, ISSUER, "zz", "keyCompromise", "web"))


def test_the_clock_is_the_one_passed_in() -> None:
    api = FakeApi()
    store = Revocations(cast(ApiClient, api), clock=Clock(T0 + timedelta(days=3, microseconds=7)))
    asyncio.run(store.revoke(NS, ISSUER, "5", "keyCompromise", "web"))
    entry = json.loads(api.objects[CM_PATH]["data"]["revoked.json"])[0]
    assert entry["revokedAt"] == "2026-03-04T12:00:00Z"


def test_stored_size_is_what_the_api_server_counts() -> None:
    api = FakeApi()
    store, _ = _store(api)

    async def run() -> None:
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        await store.revoke(NS, ISSUER, "5", "keyCompromise", "web", not_after=T0 + DAY)

    asyncio.run(run())
    body = copy.deepcopy(api.objects[CM_PATH])
    counted = sum(len(v.encode()) for v in body["data"].values()) + sum(
        len(base64.b64decode(v)) for v in body["binaryData"].values()
    )
    assert rev.stored_from_config_map(body)[0].size() == counted


def test_the_refresh_task_takes_the_list_over_once_the_foreign_config_map_is_gone() -> None:
    api = FakeApi()
    api.put_object(CM_PATH, _foreign())
    store, _ = _store(api, events=False)
    store.refresh_interval = 0.01

    async def run() -> None:
        await store.sync_issuer(NS, ISSUER, WITH_CRL, CA)
        assert store.problem(NS, ISSUER) is not None
        del api.objects[CM_PATH]
        task = asyncio.create_task(store._refresh_loop())
        try:
            for _ in range(200):
                await asyncio.sleep(0.01)
                if CM_PATH in api.objects:
                    break
        finally:
            task.cancel()

    asyncio.run(run())
    assert api.objects[CM_PATH]["metadata"]["annotations"]["mtls.dev/revocations-for"] == ISSUER
    assert store.problem(NS, ISSUER) is None and api.events == []
