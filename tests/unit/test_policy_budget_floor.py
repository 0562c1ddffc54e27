"""policy.budget (the issuance token bucket) and policy.renewal's floor: the invariants that keep a
certificate from being issued in a loop, as properties."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mtls_operator.policy.budget import BudgetState, IssuanceBudget, take
from mtls_operator.policy.renewal import renewal_floor, renewal_time

START = datetime(2026, 1, 1, tzinfo=UTC)
SECONDS_10Y = 10 * 365 * 86400

# ---------------------------------------------------------------------------------------------------------
# The renewal floor

lifetimes = st.integers(min_value=0, max_value=SECONDS_10Y)


@given(
    lifetime=st.integers(min_value=1, max_value=SECONDS_10Y),
    before=st.one_of(st.none(), st.integers(min_value=0, max_value=2 * SECONDS_10Y)),
    pct=st.one_of(st.none(), st.integers(min_value=0, max_value=100)),
    start_offset=st.integers(min_value=0, max_value=SECONDS_10Y),
    uid=st.text(max_size=40),
)
def test_the_renewal_time_lies_between_the_floor_and_not_after(
    lifetime: int, before: int | None, pct: int | None, start_offset: int, uid: str
) -> None:
    not_before = START + timedelta(seconds=start_offset)
    not_after = not_before + timedelta(seconds=lifetime)
    when = renewal_time(
        not_before, not_after, None if before is None else timedelta(seconds=before), pct, uid
    )
    floor = renewal_floor(not_before, not_after)
    assert not_before <= floor <= when <= not_after
    assert when.microsecond == 0 and floor.microsecond == 0


@given(lifetime=lifetimes, start_offset=st.integers(min_value=0, max_value=SECONDS_10Y))
def test_the_floor_is_at_least_30_seconds_or_half_the_life_and_at_most_half_the_life(
    lifetime: int, start_offset: int
) -> None:
    not_before = START + timedelta(seconds=start_offset)
    life = timedelta(seconds=lifetime)
    floor = renewal_floor(not_before, not_before + life) - not_before
    # Stored times are whole seconds, so the floor may fall short of its bound by less than one second.
    assert min(timedelta(seconds=30), life / 2) - timedelta(seconds=1) < floor <= life / 2


@pytest.mark.parametrize(
    "not_after",
    [
        pytest.param(START, id="a certificate valid for no time at all has its floor at notBefore"),
        pytest.param(
            START - timedelta(hours=1), id="a certificate ending before it starts has its floor at notBefore"
        ),
    ],
)
def test_the_floor_of_a_certificate_without_a_life_is_its_not_before(not_after: datetime) -> None:
    assert renewal_floor(START, not_after) == START


@pytest.mark.parametrize(
    ("lifetime", "floor"),
    [
        pytest.param(
            timedelta(seconds=20), timedelta(seconds=10), id="a 20 s certificate renews at half its life"
        ),
        pytest.param(timedelta(minutes=2), timedelta(seconds=30), id="a 2 min certificate renews after 30 s"),
        pytest.param(
            timedelta(hours=1), timedelta(minutes=6), id="a 1 h certificate renews after a tenth of its life"
        ),
    ],
)
def test_floor_examples(lifetime: timedelta, floor: timedelta) -> None:
    assert renewal_floor(START, START + lifetime) == START + floor


def test_renew_before_longer_than_the_life_is_held_at_the_floor_not_renewed_at_once() -> None:
    not_after = START + timedelta(minutes=10)
    when = renewal_time(START, not_after, timedelta(minutes=9, seconds=59), None, "uid")
    assert when == renewal_floor(START, not_after) == START + timedelta(minutes=1)


# ---------------------------------------------------------------------------------------------------------
# The issuance budget

budgets = st.builds(
    IssuanceBudget,
    burst=st.integers(min_value=1, max_value=20),
    min_refill=st.integers(min_value=1, max_value=600).map(lambda s: timedelta(seconds=s)),
    max_refill=st.integers(min_value=1, max_value=3600).map(lambda s: timedelta(seconds=s)),
)
steps = st.lists(st.floats(min_value=0, max_value=3600, allow_nan=False), min_size=1, max_size=80)


@given(budget=budgets, lifetime=st.integers(min_value=1, max_value=SECONDS_10Y), gaps=steps)
def test_a_budget_never_allows_more_than_burst_plus_what_refilled(
    budget: IssuanceBudget, lifetime: int, gaps: list[float]
) -> None:
    life = timedelta(seconds=lifetime)
    interval = budget.refill_interval(life).total_seconds()
    state: BudgetState | None = None
    now = START
    allowed = 0
    for gap in gaps:
        now += timedelta(seconds=gap)
        new_state, retry_at = take(budget, state, life, now)
        if retry_at is None:
            allowed += 1
            assert new_state is not None and new_state.at == now
        else:
            assert new_state == state  # a refusal spends nothing
            assert retry_at > now
        state = new_state
        elapsed = (now - START).total_seconds()
        assert allowed <= budget.burst + elapsed / interval + 1e-9


@given(budget=budgets, lifetime=st.integers(min_value=1, max_value=SECONDS_10Y))
def test_a_fresh_budget_allows_exactly_burst_issuances_at_once(budget: IssuanceBudget, lifetime: int) -> None:
    state: BudgetState | None = None
    life = timedelta(seconds=lifetime)
    for _ in range(budget.burst):
        state, retry_at = take(budget, state, life, START)
        assert retry_at is None
    _, retry_at = take(budget, state, life, START)
    assert retry_at == START + timedelta(seconds=math.ceil(budget.refill_interval(life).total_seconds()))


def test_a_certificate_refused_by_the_budget_is_allowed_at_the_time_it_was_told() -> None:
    budget, life = IssuanceBudget(burst=2), timedelta(hours=1)  # one token back every 5 minutes
    state, _ = take(budget, None, life, START)
    state, _ = take(budget, state, life, START + timedelta(seconds=2))
    _, retry_at = take(budget, state, life, START + timedelta(seconds=2))
    assert retry_at == START + timedelta(minutes=5)
    _, again = take(budget, state, life, retry_at)
    assert again is None, f"refused again at {retry_at} and told {again}"


@example(budget=IssuanceBudget(burst=2), lifetime=3600, gaps=[0.0, 2.0, 0.0])
@given(budget=budgets, lifetime=st.integers(min_value=1, max_value=SECONDS_10Y), gaps=steps)
def test_a_refused_issuance_is_allowed_at_the_time_it_was_told(
    budget: IssuanceBudget, lifetime: int, gaps: list[float]
) -> None:
    life = timedelta(seconds=lifetime)
    state: BudgetState | None = None
    now = START
    for gap in gaps:
        now += timedelta(seconds=gap)
        new_state, retry_at = take(budget, state, life, now)
        if retry_at is not None:
            _, again = take(budget, state, life, retry_at)
            assert again is None, f"refused at {now}, told {retry_at}, refused again (then told {again})"
        state = new_state


@pytest.mark.parametrize(
    ("lifetime", "interval"),
    [
        pytest.param(
            timedelta(minutes=1), timedelta(seconds=30), id="a short life refills no faster than min_refill"
        ),
        pytest.param(timedelta(minutes=20), timedelta(minutes=2), id="a refill takes a tenth of the life"),
        pytest.param(
            timedelta(days=90), timedelta(minutes=5), id="a long life refills no slower than max_refill"
        ),
    ],
)
def test_refill_interval(lifetime: timedelta, interval: timedelta) -> None:
    assert IssuanceBudget().refill_interval(lifetime) == interval


def test_a_max_refill_below_min_refill_uses_min_refill() -> None:
    budget = IssuanceBudget(min_refill=timedelta(minutes=2), max_refill=timedelta(minutes=1))
    assert budget.refill_interval(timedelta(days=1)) == timedelta(minutes=2)
