"""Renewal times and retry pacing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from mtls_operator.policy.backoff import retry_delay
from mtls_operator.policy.renewal import renewal_time

START = datetime(2026, 1, 1, tzinfo=UTC)


@given(
    lifetime=st.integers(min_value=60, max_value=10 * 365 * 86400),
    before=st.one_of(st.none(), st.integers(min_value=5, max_value=10 * 365 * 86400)),
    pct=st.one_of(st.none(), st.integers(min_value=1, max_value=99)),
    uid=st.text(min_size=1, max_size=40),
)
def test_the_renewal_time_lies_inside_the_validity(
    lifetime: int, before: int | None, pct: int | None, uid: str
) -> None:
    not_after = START + timedelta(seconds=lifetime)
    when = renewal_time(
        START, not_after, timedelta(seconds=before) if before else None, None if before else pct, uid
    )
    assert START <= when < not_after
    assert when.microsecond == 0


def test_default_renewal_is_at_two_thirds_less_a_small_jitter() -> None:
    when = renewal_time(START, START + timedelta(days=90), None, None, "uid")
    assert START + timedelta(days=60) - timedelta(days=30) * 0.05 <= when <= START + timedelta(days=60)


def test_renew_before_is_honoured() -> None:
    when = renewal_time(START, START + timedelta(minutes=3), timedelta(minutes=2), None, "uid")
    assert START + timedelta(seconds=54) <= when <= START + timedelta(minutes=1)


def test_certificates_created_together_do_not_renew_together() -> None:
    times = {renewal_time(START, START + timedelta(days=90), None, None, f"uid-{i}") for i in range(100)}
    assert len(times) > 90


def test_backoff_doubles_from_30s_to_a_one_hour_cap() -> None:
    delays = [retry_delay(n).total_seconds() for n in range(1, 10)]
    assert delays[:4] == [30, 60, 120, 240]
    assert max(delays) == 3600
    assert retry_delay(0) == timedelta(0)
