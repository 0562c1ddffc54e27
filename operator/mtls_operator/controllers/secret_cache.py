"""What the operator knows of the Secrets its certificates name, without holding their data.

Four facts per Secret, with their invariants in one place:

* the latest resourceVersion seen (from the filtered Secret watch, a read or our own write);
* the Secret as the watch delivered it, until a certificate judges it (``deliver``/``take_delivered``):
  after a restart the watch's initial list is the read, so judging needs no GET per Secret. Held only
  while it is the latest version, within a byte budget, and dropped when nobody took it within a minute
  (a Secret no valid certificate names);
* per certificate, the last verdict on its Secret (the parsed view), valid only while the Secret's
  resourceVersion, the issuer's CA and the trust anchors are those it was judged with;
* per certificate, whether its Secret must be read before deciding (after a conflict), rather than
  assumed missing.

A verdict is kept as long as its certificate, so what verdicts have in common (the CA's fingerprint, the
trust anchors, the usages, names also held by the certificate) is one shared object (``compact_verdict``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mtls_operator.api.objects import Key
from mtls_operator.controllers.compact import SHARED, Interner, share_fields
from mtls_operator.k8s.resources import SecretObject
from mtls_operator.policy.certificate import SecretView

# What delivered-but-not-yet-judged Secrets may hold at once (their data and annotations): after a restart
# into 10k certificates the whole initial list arrives faster than it is judged. Beyond it a Secret is
# read when judged, as before.
DELIVERED_BUDGET_BYTES = 48 * 1024 * 1024
DELIVERED_KEPT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    secret_name: str
    resource_version: str | None  # None: the Secret did not exist
    ca_fingerprint: str | None
    anchors: frozenset[str]  # fingerprints of the trust anchors ca.crt was judged against
    view: SecretView


def compact_verdict(share: Interner, verdict: Verdict) -> Verdict:
    """``verdict`` with its fields given equal, shared objects (its value, equality and hash unchanged)."""
    view = verdict.view
    facts = view.facts
    if facts is not None:
        leaf = facts.leaf
        share_fields(
            leaf,
            serial_number=share(leaf.serial_number),
            fingerprint=share(leaf.fingerprint),
            not_before=share(leaf.not_before),
            not_after=share(leaf.not_after),
            common_name=share(leaf.common_name),
            dns_names=share.strings(leaf.dns_names),
            ip_addresses=share.strings(leaf.ip_addresses),
            uris=share.strings(leaf.uris),
            email_addresses=share.strings(leaf.email_addresses),
            usages=share(leaf.usages),
            issuer_fingerprint=share(leaf.issuer_fingerprint),
        )
        share_fields(facts, ca_bundle_fingerprints=share(facts.ca_bundle_fingerprints))
    share_fields(view, owner_certificate=share(view.owner_certificate))
    share_fields(
        verdict,
        secret_name=share(verdict.secret_name),
        ca_fingerprint=share(verdict.ca_fingerprint),
        anchors=share(verdict.anchors),
    )
    return verdict


class SecretCache:
    def __init__(self) -> None:
        self._rv: dict[Key, str] = {}
        self._watched: set[Key] = set()  # Secrets the filtered watch delivered (labelled ones)
        self._verdicts: dict[Key, Verdict] = {}
        self._must_read: set[Key] = set()
        # Secret -> (as delivered, its bytes, when: monotonic seconds)
        self._delivered: dict[Key, tuple[SecretObject, int, float]] = {}
        self._delivered_bytes = 0
        self._share = SHARED

    # ------------------------------------------------------------------ Secrets

    def observe(self, secret: Key, resource_version: str | None, *, watched: bool = False) -> bool:
        """Record what the watch (``watched``), a read or our own write saw; True when it is news."""
        if watched:
            self._watched.add(secret)
        if resource_version is None:
            self._watched.discard(secret)
            self._undeliver(secret)
            return self._rv.pop(secret, None) is not None
        if self._rv.get(secret) == resource_version:
            return False
        self._rv[secret] = resource_version
        self._undeliver(secret)  # no longer the latest version
        return True

    def deliver(self, secret: SecretObject, now: float) -> None:
        """Keep ``secret`` as the watch delivered it (at monotonic ``now``), if it is the latest version
        seen, until a certificate judges it (``take_delivered``) or it is dropped (``drop_delivered``)."""
        key = (secret.namespace, secret.name)
        if self._rv.get(key) != secret.resource_version:
            return
        size = _size(secret)
        self._undeliver(key)
        if self._delivered_bytes + size > DELIVERED_BUDGET_BYTES:
            return  # judged from a read instead
        self._delivered[key] = (secret, size, now)
        self._delivered_bytes += size

    def take_delivered(self, secret: Key) -> SecretObject | None:
        """The Secret as the watch delivered it, if that is still the latest version seen (once)."""
        found = self._delivered.get(secret)
        if found is None:
            return None
        self._undeliver(secret)
        return found[0] if found[0].resource_version == self._rv.get(secret) else None

    def drop_delivered(self, now: float) -> None:
        """Drop what nobody took within ``DELIVERED_KEPT_SECONDS`` of its delivery: a certificate that
        names it later reads it."""
        stale = []
        for key, (_, _, at) in self._delivered.items():  # in delivery order: the oldest first
            if now - at < DELIVERED_KEPT_SECONDS:
                break
            stale.append(key)
        for key in stale:
            self._undeliver(key)

    @property
    def delivered(self) -> int:
        return len(self._delivered)

    def _undeliver(self, secret: Key) -> None:
        found = self._delivered.pop(secret, None)
        if found is not None:
            self._delivered_bytes -= found[1]

    def resource_version(self, secret: Key) -> str | None:
        return self._rv.get(secret)

    def secrets(self) -> set[Key]:
        return set(self._rv)

    def watched(self) -> set[Key]:
        """The Secrets the filtered watch delivered and that still exist as far as it knows: what a resync
        compares with its list (a Secret only ever read, such as an unlabelled CA, is not listed)."""
        return self._watched & set(self._rv)

    # ------------------------------------------------------------------ verdicts

    def verdict(self, cert: Key) -> Verdict | None:
        return self._verdicts.get(cert)

    def cached_view(
        self, cert: Key, secret_name: str, ca_fingerprint: str | None, anchors: frozenset[str]
    ) -> SecretView | None:
        """The cached view of ``cert``'s Secret if nothing it was judged with has changed since."""
        found = self._verdicts.get(cert)
        if (
            found is None
            or found.secret_name != secret_name
            or found.ca_fingerprint != ca_fingerprint
            or found.anchors != anchors
            or found.resource_version is None
            or found.resource_version != self._rv.get((cert[0], secret_name))
        ):
            return None
        return found.view

    def remember(self, cert: Key, verdict: Verdict) -> None:
        self._verdicts[cert] = compact_verdict(self._share, verdict)
        secret = (cert[0], verdict.secret_name)
        self.observe(secret, verdict.resource_version)
        if verdict.resource_version is not None and self._rv.get(secret) == verdict.resource_version:
            share_fields(verdict, resource_version=self._rv[secret])  # one string for both

    def invalidate(self, cert: Key, *, must_read: bool = False) -> None:
        self._verdicts.pop(cert, None)
        if must_read:
            self._must_read.add(cert)

    def may_assume_missing(self, cert: Key, secret_name: str, ever_issued: bool) -> bool:
        """Whether ``cert``'s Secret can be taken as missing without a read: never issued, never seen by
        the watch, and no conflict since. The create that follows is atomic: if a Secret exists after all
        it fails with 409, which sets ``must_read`` (nothing is ever overwritten)."""
        return (
            not ever_issued
            and cert not in self._verdicts
            and cert not in self._must_read
            and (cert[0], secret_name) not in self._rv
        )

    def must_read(self, cert: Key) -> bool:
        """Whether ``cert``'s Secret must be read (a conflict showed the latest version seen is stale)."""
        return cert in self._must_read

    def read_done(self, cert: Key) -> None:
        self._must_read.discard(cert)

    def forget_certificate(self, cert: Key) -> None:
        self._verdicts.pop(cert, None)
        self._must_read.discard(cert)


def _size(secret: SecretObject) -> int:
    """Roughly what a delivered Secret holds: its data and annotations, plus per-object overhead."""
    return (
        512
        + sum(len(v) + 64 for v in secret.data.values())
        + sum(len(k) + len(v) + 128 for k, v in secret.annotations.items())
    )
