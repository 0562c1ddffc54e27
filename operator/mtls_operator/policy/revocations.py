"""The stored revocation list of an issuer, as pure data: the ``<issuer>-revocations`` ConfigMap's
entries (parse, merge, canonical dump, what may leave it), who owns the ConfigMap, and when a new CRL is
due. controllers.revocation_store reads and writes it; controllers.revocation tells the design."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import LABEL_MANAGED_BY, MANAGED_BY_VALUE
from mtls_operator.pki.crl import REASONS, UNSPECIFIED, RevokedEntry

CONFIG_MAP_SUFFIX: Final = "-revocations"
ANN_REVOCATIONS_FOR: Final = "mtls.dev/revocations-for"
ANN_CRL_SIGNER: Final = "mtls.dev/crl-signer"  # sha256 fingerprint of the CA certificate that signed ca.crl
ANN_CRL_THIS_UPDATE: Final = "mtls.dev/crl-this-update"
ANN_CRL_NEXT_UPDATE: Final = "mtls.dev/crl-next-update"
ANN_CRL_LIST_DIGEST: Final = "mtls.dev/crl-list-digest"  # digest of the revoked.json the CRL was built from
KEY_REVOKED: Final = "revoked.json"
KEY_CRL_NUMBER: Final = "crlNumber"
KEY_CRL_PEM: Final = "ca.crl"
KEY_CRL_DER: Final = "ca.crl.der"

# The API server refuses a ConfigMap whose data and binaryData hold more than 1 MiB. Additions stop
# short of it, leaving room for a larger cRLNumber and for entries written by a concurrent writer.
CONFIG_MAP_LIMIT: Final = 1024 * 1024
BUDGET_BYTES: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Revoked:
    """One entry of ``revoked.json``: the serial, when and why it was revoked, the MTLSCertificate, and the
    certificate's notAfter (None: unknown, for entries written before it was recorded)."""

    serial: int
    revoked_at: datetime
    reason: str = UNSPECIFIED
    certificate: str = ""
    not_after: datetime | None = None

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def entry(self) -> RevokedEntry:
        return RevokedEntry(self.serial, self.revoked_at, self.reason)

    def as_json(self) -> dict[str, str]:
        doc = {
            "serial": self.serial_hex,
            "revokedAt": cond.rfc3339(self.revoked_at) or "",
            "reason": self.reason,
            "certificate": self.certificate,
        }
        if self.not_after is not None:
            doc["notAfter"] = cond.rfc3339(self.not_after) or ""
        return doc


def parse_serial(value: Any) -> int | None:
    """A positive serial from hex text (``0a1b``, ``0A:1B``, ``0x0a1b``); None when it is not one."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(":", "")
    text = text.removeprefix("0x")
    if not text or len(text) > 64:
        return None
    try:
        serial = int(text, 16)
    except ValueError:
        return None
    return serial if serial > 0 else None


def normalize_reason(reason: str) -> str:
    """An RFC 5280 reason name a CRL can carry; anything else (``removeFromCRL`` included) is unspecified."""
    if reason in REASONS and reason != "removeFromCRL":
        return reason
    return UNSPECIFIED


def whole_seconds(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def _aware(value: Any) -> datetime | None:
    moment = cond.parse_rfc3339(value)
    return whole_seconds(moment) if moment is not None and moment.tzinfo is not None else None


def parse_revoked_json(text: str | None) -> tuple[tuple[Revoked, ...], list[str]]:
    """The entries of ``revoked.json``, sorted by serial, earliest revocation per serial, and a sentence per
    entry that had to be skipped (the ConfigMap is user-editable: a bad entry must not stop the rest). A
    bad ``notAfter`` reads as unknown (kept longer), never as a reason to drop the entry."""
    if not text:
        return (), []
    try:
        raw = json.loads(text)
    except ValueError:
        return (), [f"{KEY_REVOKED} is not JSON; starting from an empty list."]
    if not isinstance(raw, list):
        return (), [f"{KEY_REVOKED} is not a JSON list; starting from an empty list."]
    problems: list[str] = []
    found: list[Revoked] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            problems.append(f"{KEY_REVOKED}[{index}] is not an object.")
            continue
        serial = parse_serial(item.get("serial"))
        revoked_at = _aware(item.get("revokedAt"))
        if serial is None or revoked_at is None:
            problems.append(f"{KEY_REVOKED}[{index}] needs a hex serial and an RFC 3339 revokedAt.")
            continue
        not_after = _aware(item.get("notAfter"))
        if not_after is None and item.get("notAfter") is not None:
            problems.append(f"{KEY_REVOKED}[{index}].notAfter is not an RFC 3339 time; kept as unknown.")
        reason = str(item.get("reason") or UNSPECIFIED)
        certificate = str(item.get("certificate") or "")
        found.append(Revoked(serial, revoked_at, normalize_reason(reason), certificate, not_after))
    return merge_revoked(found), problems


def merge_revoked(*lists: Iterable[Revoked]) -> tuple[Revoked, ...]:
    """The union of ``lists``, one entry per serial (the earliest revocation wins, and keeps a notAfter
    another entry for the serial knows), sorted by serial."""
    by_serial: dict[int, Revoked] = {}
    for entries in lists:
        for entry in entries:
            seen = by_serial.get(entry.serial)
            if seen is None:
                by_serial[entry.serial] = entry
                continue
            first, other = (entry, seen) if entry.revoked_at < seen.revoked_at else (seen, entry)
            if first.not_after is None and other.not_after is not None:
                first = replace(first, not_after=other.not_after)
            by_serial[entry.serial] = first
    return tuple(by_serial[s] for s in sorted(by_serial))


@functools.lru_cache(maxsize=16384)
def _json_line(entry: Revoked) -> str:
    return json.dumps(entry.as_json(), sort_keys=True)


_last_dump: list[tuple[tuple[Revoked, ...], str]] = []  # the last list dumped: one revoke dumps it 3 times


def dump_revoked_json(entries: Iterable[Revoked]) -> str:
    """Canonical ``revoked.json``: sorted by serial, one entry per line, so diffs read well."""
    if isinstance(entries, tuple) and _last_dump and _last_dump[0][0] is entries:
        return _last_dump[0][1]
    items = [_json_line(e) for e in merge_revoked(entries)]
    text = "[\n" + ",\n".join(items) + "\n]\n" if items else "[]\n"
    if isinstance(entries, tuple):
        _last_dump[:] = [(entries, text)]
    return text


def list_digest(entries: Iterable[Revoked]) -> str:
    return hashlib.sha256(dump_revoked_json(entries).encode()).hexdigest()


EMPTY_DIGEST: Final = hashlib.sha256(b"[]\n").hexdigest()


def keep_until(entry: Revoked, margin: timedelta, ca_not_after: datetime | None) -> datetime | None:
    """When ``entry`` may leave the list: its certificate's notAfter plus ``margin``; for an unknown notAfter
    the CA's notAfter plus ``margin`` (a leaf never outlives its CA); None (keep) when neither is known."""
    end = entry.not_after if entry.not_after is not None else ca_not_after
    return None if end is None else end + margin


def prune(
    entries: Iterable[Revoked], now: datetime, margin: timedelta, ca_not_after: datetime | None
) -> tuple[Revoked, ...]:
    """The entries still owed a place on the list at ``now``."""
    kept = []
    for entry in entries:
        until = keep_until(entry, margin, ca_not_after)
        if until is None or now < until:
            kept.append(entry)
    return tuple(kept)


def ownership_problem(body: Mapping[str, Any], issuer: str) -> str | None:
    """Why the ConfigMap ``body`` is not the operator's list for ``issuer`` (a sentence), or None when it
    carries both marks the operator writes: the managed-by label and ``mtls.dev/revocations-for``."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    missing = []
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY_VALUE:
        missing.append(f"the label {LABEL_MANAGED_BY}={MANAGED_BY_VALUE}")
    owner = annotations.get(ANN_REVOCATIONS_FOR)
    if owner != issuer:
        missing.append(
            f"the annotation {ANN_REVOCATIONS_FOR}={issuer}"
            + (f" (it names {owner!r})" if isinstance(owner, str) else "")
        )
    if not missing:
        return None
    return "it lacks " + " and ".join(missing)


@dataclass(frozen=True, slots=True)
class Stored:
    """The issuer's revocation ConfigMap as read (or as it is about to be written)."""

    resource_version: str | None = None  # None: not in the API server (never written, or deleted)
    revoked: tuple[Revoked, ...] = ()
    crl_number: int = 0
    crl_der: bytes | None = None
    crl_pem: bytes | None = None
    signer: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    crl_list_digest: str | None = None

    def lookup(self) -> dict[int, RevokedEntry]:
        return {r.serial: r.entry() for r in self.revoked}

    def size(self) -> int:
        """The bytes the API server counts against the 1 MiB limit: data values plus decoded binaryData."""
        total = len(dump_revoked_json(self.revoked).encode()) + len(str(self.crl_number))
        if self.crl_der is not None and self.crl_pem is not None:
            total += len(self.crl_der) + len(self.crl_pem)
        return total


def stored_from_config_map(body: Mapping[str, Any]) -> tuple[Stored, list[str]]:
    """Parse the ConfigMap; a corrupt field reads as absent (the next publish repairs it)."""
    meta = body.get("metadata") or {}
    ann = meta.get("annotations") or {}
    data = body.get("data") or {}
    binary = body.get("binaryData") or {}
    revoked, problems = parse_revoked_json(data.get(KEY_REVOKED))
    try:
        number = int(str(data.get(KEY_CRL_NUMBER) or "0"))
    except ValueError:
        number, problems = 0, [*problems, f"{KEY_CRL_NUMBER} is not a number."]
    der: bytes | None = None
    if binary.get(KEY_CRL_DER):
        try:
            der = base64.b64decode(binary[KEY_CRL_DER], validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"binaryData.{KEY_CRL_DER} is not base64.")
    pem = data.get(KEY_CRL_PEM)
    return (
        Stored(
            resource_version=meta.get("resourceVersion"),
            revoked=revoked,
            crl_number=max(number, 0),
            crl_der=der,
            crl_pem=pem.encode() if isinstance(pem, str) and pem and der else None,
            signer=ann.get(ANN_CRL_SIGNER) if der else None,
            this_update=cond.parse_rfc3339(ann.get(ANN_CRL_THIS_UPDATE)),
            next_update=cond.parse_rfc3339(ann.get(ANN_CRL_NEXT_UPDATE)),
            crl_list_digest=ann.get(ANN_CRL_LIST_DIGEST),
        ),
        problems,
    )


def config_map_body(namespace: str, issuer: str, stored: Stored) -> dict[str, Any]:
    annotations = {ANN_REVOCATIONS_FOR: issuer}
    data = {KEY_REVOKED: dump_revoked_json(stored.revoked), KEY_CRL_NUMBER: str(stored.crl_number)}
    binary: dict[str, str] = {}
    if stored.crl_der is not None and stored.crl_pem is not None:
        data[KEY_CRL_PEM] = stored.crl_pem.decode()
        binary[KEY_CRL_DER] = base64.b64encode(stored.crl_der).decode()
        annotations[ANN_CRL_SIGNER] = stored.signer or ""
        annotations[ANN_CRL_THIS_UPDATE] = cond.rfc3339(stored.this_update) or ""
        annotations[ANN_CRL_NEXT_UPDATE] = cond.rfc3339(stored.next_update) or ""
        annotations[ANN_CRL_LIST_DIGEST] = stored.crl_list_digest or ""
    metadata: dict[str, Any] = {
        "name": config_map_name(issuer),
        "namespace": namespace,
        "labels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE},
        "annotations": annotations,
    }
    if stored.resource_version is not None:
        metadata["resourceVersion"] = stored.resource_version
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
    if binary:
        body["binaryData"] = binary
    return body


def config_map_name(issuer: str) -> str:
    return f"{issuer}{CONFIG_MAP_SUFFIX}"


def config_map_path(namespace: str, issuer: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    return f"{path}/{config_map_name(issuer)}" if issuer else path


def publishes_crl(configured: bool, stored: Stored) -> bool:
    """Whether an issuer keeps a CRL: when ``spec.revocation`` is set, once anything was revoked, or once it
    has a ConfigMap. Issuers that never use revocation get no ConfigMap (and no extra API write)."""
    return configured or bool(stored.revoked) or stored.resource_version is not None


def crl_due(stored: Stored, ca_fingerprint: str, now: datetime) -> str | None:
    """Why the issuer needs a new CRL now (a sentence for the log), or None when the published one serves."""
    if stored.crl_der is None or stored.this_update is None or stored.next_update is None:
        return "no CRL has been published yet"
    if stored.signer != ca_fingerprint:
        return "the issuer's CA changed since the last CRL"
    if stored.crl_list_digest != list_digest(stored.revoked):
        return "the revoked list changed since the last CRL"
    validity = stored.next_update - stored.this_update
    if stored.next_update - now <= validity / 3:
        return "the last CRL is within a third of its validity of nextUpdate"
    return None


def der_to_pem(der: bytes, label: str = "X509 CRL") -> bytes:
    body = base64.b64encode(der).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n").encode()
