"""`mtlsctl algorithms`: where the post-quantum migration stands, certificate by certificate.

For each MTLSCertificate (in a namespace, or in all), the key algorithms its spec asks for (privateKey and
additionalPrivateKeys) and those its Secret holds (read from tls.crt and every tls-<algorithm>.crt in the
Secret itself, not from the status), classified as *dual* (a post-quantum and a classical key), *post-
quantum* only, *classical* only or *missing* (no readable Secret yet), with a count of each. A
certificate whose Secret does not hold what its spec asks for yet is *pending*.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from mtls_operator.api.certificate_spec import parse_additional_keys, parse_key_spec
from mtls_operator.api.constants import (
    ADDITIONAL_KEY_PREFIX,
    CERTIFICATE_PLURAL,
    GROUP,
    TLS_CRT,
    VERSION,
)
from mtls_operator.api.errors import SpecError
from mtls_operator.api.models import KeySpec
from mtls_operator.cli.cluster import ClusterError
from mtls_operator.k8s.api import ApiClient, ApiError, core_path, group_path
from mtls_operator.k8s.resources import decode_secret
from mtls_operator.pki.certs import parse_certificate_pem
from mtls_operator.pki.keys import UnsupportedKeyError, key_algorithm_of

KINDS = ("dual", "post-quantum", "classical", "missing")


def classify(held: list[str]) -> str:
    """dual, post-quantum, classical or missing, from the labels of the keys a Secret holds."""
    if not held:
        return "missing"
    post_quantum = [label for label in held if label.startswith("ML-DSA")]
    if post_quantum and len(post_quantum) < len(held):
        return "dual"
    return "post-quantum" if post_quantum else "classical"


def held_algorithms(data: Mapping[str, bytes]) -> list[str]:
    """The keys of the certificates in a Secret: tls.crt's first, then tls-<algorithm>.crt's (by name).
    Unreadable entries are left out (the operator re-issues those)."""
    names = [TLS_CRT, *sorted(k for k in data if k.startswith(ADDITIONAL_KEY_PREFIX) and k.endswith(".crt"))]
    out: list[str] = []
    for name in names:
        if not data.get(name):
            continue
        try:
            algorithm, size = key_algorithm_of(parse_certificate_pem(data[name], name=name)[0].public_key())
        except (ValueError, UnsupportedKeyError):
            continue
        out.append(KeySpec(algorithm=algorithm, size=size).label)
    return out


def wanted_algorithms(spec: Mapping[str, Any]) -> list[str]:
    """The labels of the keys a certificate's spec asks for, main first; [] when the spec is unusable."""
    try:
        main = parse_key_spec(spec.get("privateKey"))
        extra = parse_additional_keys(spec.get("additionalPrivateKeys"), "spec.additionalPrivateKeys", main)
    except SpecError:
        return []
    return [k.label for k in (main, *extra)]


async def key_algorithms(api: ApiClient, namespace: str | None) -> dict[str, Any]:
    """The migration table of the certificates in ``namespace`` (None: every namespace)."""
    try:
        listed = await api.get(group_path(GROUP, VERSION, namespace or "", CERTIFICATE_PLURAL))
    except ApiError as exc:
        raise ClusterError(f"Cannot list MTLSCertificates: {exc}.") from None
    except OSError as exc:
        raise ClusterError(f"Cannot reach the API server: {exc}.") from None
    rows: list[dict[str, Any]] = []
    for item in listed.get("items") or []:
        meta, spec = item.get("metadata") or {}, item.get("spec") or {}
        ns, secret_name = str(meta.get("namespace") or ""), spec.get("secretName")
        held: list[str] = []
        problem = None
        if isinstance(secret_name, str) and secret_name:
            try:
                held = held_algorithms(
                    decode_secret(await api.get(core_path(ns, "secrets", secret_name))).data
                )
            except ApiError as exc:
                problem = "no Secret yet" if exc.not_found else f"cannot read the Secret: {exc.reason}"
        wanted = wanted_algorithms(spec)
        rows.append(
            {
                "namespace": ns,
                "name": meta.get("name"),
                "secretName": secret_name,
                "issuer": (spec.get("issuerRef") or {}).get("name"),
                "wanted": wanted,
                "held": held,
                "kind": classify(held),
                "pending": bool(wanted) and sorted(wanted) != sorted(held),
                **({"problem": problem} if problem else {}),
            }
        )
    rows.sort(key=lambda r: (r["namespace"], str(r["name"])))
    counts = Counter(r["kind"] for r in rows)
    summary = {kind: counts.get(kind, 0) for kind in KINDS}
    summary["pending"] = sum(1 for r in rows if r["pending"])
    summary["total"] = len(rows)
    by_algorithm = Counter(label for r in rows for label in r["held"])
    return {
        "namespace": namespace,
        "certificates": rows,
        "summary": summary,
        "algorithms": dict(sorted(by_algorithm.items())),
    }
