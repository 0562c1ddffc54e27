"""One base for every error that carries a :class:`Reason` and a sentence a user can act on.

Parsers, the PKI layer and the controllers raise these; whoever catches one turns ``reason`` into a
condition reason (and event reason, and metric label) and ``message`` into the condition's message.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtls_operator.api.constants import Reason


class ReasonedError(ValueError):
    """An error with a condition reason and a full sentence."""

    default_reason: Reason = Reason.INVALID_SPEC

    def __init__(self, message: str, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.reason: Reason = reason if reason is not None else self.default_reason
        self.message = message


class SpecError(ReasonedError):
    """A spec the operator cannot act on."""

    default_reason = Reason.INVALID_SPEC


class TLSMaterialError(ReasonedError):
    """The bytes of a Secret are not usable TLS material."""

    default_reason = Reason.SECRET_CORRUPT


class CAError(ReasonedError):
    """A CA key pair that cannot issue: not a CA, no keyCertSign, key mismatch, expired, unsupported."""

    default_reason = Reason.CA_INVALID


class RefError(ReasonedError):
    """An object a spec refers to (a password Secret, a key in it) is missing or unusable."""

    default_reason = Reason.ISSUANCE_FAILED


@dataclass(frozen=True, slots=True)
class Violation:
    """A problem found by a check: the reason a condition shows and a sentence."""

    reason: Reason
    message: str

    @classmethod
    def of(cls, error: ReasonedError) -> Violation:
        return cls(error.reason, error.message)
