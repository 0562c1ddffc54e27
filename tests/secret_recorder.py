"""Every version of every Secret in a namespace, as a watch delivers them: which keys were published for
each revision, and whether each version's key matches its certificate."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tls_checks import key_matches_certificate

REVISION = "mtls.dev/revision"


@dataclass(frozen=True)
class SecretVersion:
    name: str
    revision: str
    resource_version: str
    key_digest: str
    cert_digest: str  # of tls.crt: one issuance
    matches: bool  # tls.key is the key of tls.crt's public key


class SecretRecorder:
    """Watches every Secret write in a namespace from the moment it is made (list, then watch from the
    list's resourceVersion, so nothing after the list is missed). `finish()` fails the test if the watch
    died before it or saw no Secret version at all: a recorder that saw nothing proves nothing."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        from kubernetes import watch

        self.namespace = namespace
        self.versions: list[SecretVersion] = []
        self.published: dict[tuple[str, str], set[str]] = defaultdict(set)  # key digests
        self.issued: dict[tuple[str, str], set[str]] = defaultdict(set)  # certificate digests
        self.failure: str | None = None
        self._stopped = threading.Event()
        self._watch = watch.Watch()
        listed = cluster.core.list_namespaced_secret(namespace)
        self._thread = threading.Thread(
            target=self._run, args=(cluster, listed.metadata.resource_version), daemon=True
        )
        self._thread.start()

    def _run(self, cluster: Any, since: str) -> None:
        try:
            for event in self._watch.stream(
                cluster.core.list_namespaced_secret,
                self.namespace,
                resource_version=since,
                timeout_seconds=1800,
            ):
                if event["type"] == "ERROR":
                    self.failure = f"the watch answered an error: {event['raw_object']}"
                    return
                if event["type"] != "DELETED":
                    self._record(event["object"])
        except Exception as error:
            if not self._stopped.is_set():
                self.failure = f"the watch died: {type(error).__name__}: {error}"
            return
        if not self._stopped.is_set():
            self.failure = "the watch ended before the test stopped it"

    def _record(self, secret: Any) -> None:
        annotations = secret.metadata.annotations or {}
        data = secret.data or {}
        if REVISION not in annotations or "tls.key" not in data or "tls.crt" not in data:
            return
        key_pem = base64.b64decode(data["tls.key"])
        cert_pem = base64.b64decode(data["tls.crt"])
        version = SecretVersion(
            name=secret.metadata.name,
            revision=annotations[REVISION],
            resource_version=secret.metadata.resource_version,
            key_digest=hashlib.sha256(key_pem).hexdigest(),
            cert_digest=hashlib.sha256(cert_pem).hexdigest(),
            matches=key_matches_certificate(cert_pem, key_pem),
        )
        self.versions.append(version)
        self.published[(version.name, version.revision)].add(version.key_digest)
        self.issued[(version.name, version.revision)].add(version.cert_digest)

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()

    def finish(self) -> None:
        """Stop, and fail unless the watch was alive until now and saw at least one Secret version."""
        alive = self._thread.is_alive()
        self.stop()
        assert self.failure is None, f"the Secret recorder of {self.namespace}: {self.failure}"
        assert alive, f"the Secret recorder of {self.namespace} stopped watching before the test ended"
        assert self.versions, f"the Secret recorder of {self.namespace} saw no Secret version"

    def doubles(self) -> dict[tuple[str, str], set[str]]:
        """(Secret, revision) published with more than one key."""
        return {k: v for k, v in self.published.items() if len(v) > 1}

    def reissued_in_place(self) -> dict[tuple[str, str], set[str]]:
        """(Secret, revision) that held more than one certificate: two issuances won one revision."""
        return {k: v for k, v in self.issued.items() if len(v) > 1}

    def mismatched(self) -> list[SecretVersion]:
        """Versions whose tls.key is not the key of their tls.crt."""
        return [v for v in self.versions if not v.matches]
