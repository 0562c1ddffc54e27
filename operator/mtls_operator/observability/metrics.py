"""Prometheus metrics for mtls-operator (own registry; bounded labels; series removed with their object).

The runtime calls these methods; values come from the Secret bytes and the CA (the runtime's verdicts),
not only from status, so a Secret someone broke shows up here.
"""

from __future__ import annotations

from datetime import datetime


class Metrics:
    """No-op skeleton: the real registry and HTTP server are filled in by the metrics work (issue #5)."""

    def observe_certificate(
        self,
        namespace: str,
        name: str,
        issuer: str,
        *,
        not_after: datetime | None,
        renewal_time: datetime | None,
        ready: bool,
        reason: str,
    ) -> None:
        """Called after every certificate reconcile with what the Secret holds (None: no valid cert)."""

    def forget_certificate(self, namespace: str, name: str) -> None:
        """The certificate is gone: drop all its series."""

    def observe_issuer(
        self, namespace: str, name: str, *, ca_not_after: datetime | None, ready: bool, reason: str
    ) -> None:
        """Called after every issuer reconcile."""

    def forget_issuer(self, namespace: str, name: str) -> None:
        """The issuer is gone: drop all its series."""

    def issuance(self, *, result: str, algorithm: str, seconds: float) -> None:
        """One issuance attempt: result is "success" or "failure"; seconds is the crypto + write time."""

    def rollout_restart(self, *, kind: str) -> None:
        """A workload (Deployment, StatefulSet, DaemonSet) was restarted for a new certificate."""

    def rollout_blocked(self, *, reason: str) -> None:
        """A restart was not made (loop guard, pacing...): reason is a Reason value."""

    def api_write(self, *, verb: str) -> None:
        """The operator made one API write (POST, PUT, PATCH, DELETE)."""
