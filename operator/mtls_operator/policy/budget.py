"""The issuance budget: however a certificate keeps being re-issued (a second writer fighting the operator,
a spec that cannot renew sanely, a bug), it cannot cost more than a bounded number of issuances.

A token bucket per certificate: ``burst`` issuances at once, then one more each refill interval, which is
a tenth of the certificate's lifetime, kept between ``min_refill`` and ``max_refill``. Beyond it the
certificate waits (``IssuanceBudgetExceeded``: a condition, an event, a metric) until a token is back.
The state lives in memory: a restart gives every certificate a full bucket again, which is fine for a
backstop whose job is to stop a spin, not to account.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

EPSILON = 1e-9  # tokens are floats: a bucket refilled "exactly" to one may hold 0.9999...


@dataclass(frozen=True, slots=True)
class IssuanceBudget:
    burst: int = 10
    min_refill: timedelta = timedelta(seconds=30)
    max_refill: timedelta = timedelta(minutes=5)

    def refill_interval(self, lifetime: timedelta) -> timedelta:
        return min(max(lifetime / 10, self.min_refill), max(self.max_refill, self.min_refill))


@dataclass(frozen=True, slots=True)
class BudgetState:
    tokens: float
    at: datetime


def take(
    budget: IssuanceBudget, state: BudgetState | None, lifetime: timedelta, now: datetime
) -> tuple[BudgetState | None, datetime | None]:
    """Spend one issuance. Returns the new state and None when allowed, or the unchanged state and the
    time a token is back when the budget is spent."""
    interval = budget.refill_interval(lifetime).total_seconds()
    if state is None:
        tokens = float(budget.burst)
    else:
        elapsed = max(0.0, (now - state.at).total_seconds())
        tokens = min(float(budget.burst), state.tokens + elapsed / interval)
    if tokens >= 1.0 - EPSILON:
        return BudgetState(max(0.0, tokens - 1.0), now), None
    wait = math.ceil((1.0 - tokens) * interval)  # whole seconds, rounded up: at that time a token is back
    return state, now + timedelta(seconds=max(1, wait))
