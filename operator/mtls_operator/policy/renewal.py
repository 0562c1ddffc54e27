"""When a certificate is renewed: ``notAfter - renewBefore`` (or a percentage, or 1/3 of the life),
pulled earlier by a small deterministic jitter so certificates created together do not renew together."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

JITTER_FRACTION = 0.05  # at most 5 % of the renewal window, always earlier, never later
DEFAULT_RENEW_FRACTION = 1 / 3  # renew when a third of the lifetime is left, i.e. at 2/3
FLOOR_FRACTION = 0.1  # a certificate is never renewed before a tenth of its life ...
FLOOR_MINIMUM = timedelta(seconds=30)  # ... nor before 30 s (but always by half of its life)


def truncate(moment: datetime) -> datetime:
    """Whole seconds: what is stored in status compares equal after a round trip."""
    return moment.replace(microsecond=0)


def renewal_window(
    not_before: datetime,
    not_after: datetime,
    renew_before: timedelta | None,
    renew_before_percentage: int | None,
) -> timedelta:
    lifetime = not_after - not_before
    if renew_before is not None:
        window = renew_before
    elif renew_before_percentage is not None:
        window = lifetime * (renew_before_percentage / 100)
    else:
        window = lifetime * DEFAULT_RENEW_FRACTION
    # A renewBefore longer than the certificate's actual life (e.g. capped by the CA) would mean
    # "renew at once, forever": fall back to the default fraction instead.
    if window >= lifetime:
        window = lifetime * DEFAULT_RENEW_FRACTION
    return window


def jitter_fraction(uid: str) -> float:
    """A stable number in [0, 1) from the object's UID."""
    digest = hashlib.sha256(uid.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def renewal_time(
    not_before: datetime,
    not_after: datetime,
    renew_before: timedelta | None,
    renew_before_percentage: int | None,
    uid: str,
) -> datetime:
    window = renewal_window(not_before, not_after, renew_before, renew_before_percentage)
    jitter = window * JITTER_FRACTION * jitter_fraction(uid)
    moment = truncate(not_after - window - jitter)
    return max(moment, renewal_floor(not_before, not_after))


def renewal_floor(not_before: datetime, not_after: datetime) -> datetime:
    """The earliest renewal of a certificate valid from ``not_before`` to ``not_after``: notBefore plus a
    tenth of its life, at least 30 s, at most half its life. Whatever renewBefore says, a certificate is
    not renewed in a loop."""
    lifetime = max(not_after - not_before, timedelta(0))
    floor = min(max(lifetime * FLOOR_FRACTION, FLOOR_MINIMUM), lifetime / 2)
    return truncate(not_before + floor)
