"""Human renderings of mtlsctl's documents: one function per command, each ``(printer, doc) -> None``."""

from __future__ import annotations

from typing import Any

from mtls_operator.cli.output import Printer


def _ready(out: Printer, value: str | None) -> str:
    if value == "True":
        return out.paint("True", "green")
    if value == "False":
        return out.paint("False", "red")
    return out.paint(str(value or "Unknown"), "yellow")


def certificate_status(out: Printer, doc: dict[str, Any]) -> None:
    out.heading(f"MTLSCertificate {doc['namespace']}/{doc['name']}")
    out.fields(
        [
            ("Ready", _ready(out, doc["ready"])),
            ("Issuer", doc["issuer"]),
            ("Secret", doc["secretName"]),
            ("Algorithm", doc["algorithm"]),
            ("Names", [*([doc["commonName"]] if doc["commonName"] else []), *doc["dnsNames"]]),
            ("Not before", doc["notBefore"]),
            ("Not after", doc["notAfter"]),
            ("Renewal at", doc["renewalTime"]),
            ("Revision", doc["revision"]),
            ("Serial", doc["serialNumber"]),
            ("Fingerprint", doc["fingerprint"]),
            *([("Renew asked", doc["renewRequestedAt"])] if doc["renewRequestedAt"] else []),
        ]
    )
    out.line()
    out.heading("Conditions")
    out.table(
        ["type", "status", "reason", "since", "message"],
        [
            [c["type"], _ready(out, c["status"]), c["reason"], c["lastTransitionTime"], c["message"]]
            for c in doc["conditions"]
        ],
        indent=2,
    )
    out.line()
    out.heading("Events")
    if not doc["events"]:
        out.line("  (none)")
        return
    out.table(
        ["time", "type", "reason", "count", "message"],
        [
            [
                e["time"],
                out.paint(e["type"] or "", "yellow") if e["type"] == "Warning" else e["type"],
                e["reason"],
                e["count"],
                e["message"],
            ]
            for e in doc["events"]
        ],
        indent=2,
    )


def _certificate_fields(out: Printer, cert: dict[str, Any]) -> list[tuple[str, Any]]:
    names = [*cert["dnsNames"], *cert["ipAddresses"], *cert["uris"], *cert["emailAddresses"]]
    return [
        ("Subject", _dn(cert["subject"])),
        ("Issuer", cert["issuer"]),
        ("SANs", names),
        ("Not before", cert["notBefore"]),
        ("Not after", cert["notAfter"]),
        ("Key", cert["keyAlgorithm"]),
        ("Signature", cert["signatureAlgorithm"]),
        ("Usages", ", ".join(cert["usages"])),
        ("CA", "yes" if cert["isCA"] else "no"),
        ("Serial", cert["serialNumber"]),
        ("SHA-256", cert["fingerprintSHA256"]),
        ("Key SHA-256", cert["publicKeySHA256"]),
        ("Issuer SHA-256", cert["issuerFingerprintSHA256"]),
    ]


def _dn(name: str) -> str:
    return name or "(empty subject: the names are in the SANs)"


def _chain_fields(out: Printer, chain: dict[str, Any], *, problems: bool = True) -> list[tuple[str, Any]]:
    verdict = out.ok(chain["verified"], "verified", "NOT verified")
    rows: list[tuple[str, Any]] = [("Chain", f"{verdict} ({chain['length']} in chain)")]
    rows.append(("Chain certs", [_dn(c) for c in chain["certificates"]]))
    rows.append(("Trusted roots", [_dn(c) for c in chain["roots"]]))
    if problems and chain["problems"]:
        rows.append(("Problems", chain["problems"]))
    return rows


def secret(out: Printer, doc: dict[str, Any]) -> None:
    out.heading(f"Secret {doc['namespace']}/{doc['name']} ({doc['type']})")
    out.fields(
        [
            ("Managed by", doc["managedBy"]),
            ("Certificate", doc["ownerCertificate"]),
            ("Issuer", doc["ownerIssuer"]),
            ("Data keys", ", ".join(doc["dataKeys"])),
        ]
    )
    out.line()
    out.heading("Leaf certificate")
    out.fields(_certificate_fields(out, doc["certificate"]))
    out.line()
    out.heading("Checks")
    key = doc["keyMatches"]
    rows = _chain_fields(out, doc["chain"])
    rows.append(("Key match", out.ok(bool(key), "tls.key matches tls.crt", "tls.key does NOT match")))
    if doc.get("keyProblem"):
        rows.append(("Key problem", doc["keyProblem"]))
    out.fields(rows)


def issued(out: Printer, doc: dict[str, Any]) -> None:
    cert = doc["certificate"]
    title = "CA" if cert["isCA"] else "certificate"
    names = [cert["subject"], *cert["dnsNames"], *cert["ipAddresses"], *cert["uris"]]
    out.heading(f"Issued {title} {next((n for n in names if n), '?')} (profile {doc['profile']})")
    out.fields(_certificate_fields(out, cert) + _chain_fields(out, doc["chain"]))
    out.fields([("Written", [f"{k}: {v}" for k, v in doc["files"].items()])])


def verification(out: Printer, doc: dict[str, Any]) -> None:
    verdict = out.ok(doc["ok"], "OK", "FAILED")
    what = []
    if doc["purpose"]:
        what.append(f"as a TLS {doc['purpose']}")
    if doc["dnsName"]:
        what.append(f"for {doc['dnsName']}")
    cert = doc["certificate"]
    names = [cert["subject"], *cert["dnsNames"], *cert["ipAddresses"], *cert["uris"]]
    subject = next((n for n in names if n), "?")
    out.heading(f"verify {subject} {' '.join(what)}".rstrip() + f": {verdict}")
    out.fields(_certificate_fields(out, cert) + _chain_fields(out, doc["chain"], problems=False))
    for problem in doc["problems"]:
        out.line(f"  {out.paint('✗', 'red')} {problem}")


def handshake(out: Printer, doc: dict[str, Any]) -> None:
    target = doc["server"] + (f" ({doc['serverName']})" if doc["serverName"] else "")
    if doc["ok"]:
        out.line(f"{out.ok(True, 'handshake OK')} with {target}")
    else:
        out.line(f"{out.ok(False, 'handshake FAILED', 'handshake FAILED')} with {target}: {doc['error']}")
    if doc["protocol"]:
        out.fields(
            [
                ("protocol", doc["protocol"]),
                ("cipher", doc["cipher"]),
                ("group", out.paint(str(doc["group"]), "cyan")),
                ("peer chain", [_dn(c) for c in doc["peerChain"]]),
                ("peer signature", doc["peerSignatureAlgorithm"]),
                ("peer key", doc["peerKey"]),
                ("server certificate", doc.get("peerKeyAlgorithm")),
                ("server signature", doc.get("peerSignatureScheme")),
                ("client certificate", doc.get("localKeyAlgorithm")),
                ("profile", doc.get("profile")),
            ]
        )


def probe(out: Printer, doc: dict[str, Any]) -> None:
    target = doc["server"] + (f" ({doc['serverName']})" if doc["serverName"] else "")
    chose = doc.get("peerKeyAlgorithm")
    if chose:
        out.line(f"{target} presents {out.paint(str(chose), 'cyan', 'bold')} to a {doc['profile']} client")
    verdict = out.ok(True, "accepted") if doc["ok"] else out.ok(False, "refused", "refused")
    out.fields(
        [
            ("profile", doc["profile"]),
            ("group", out.paint(str(doc["group"]), "cyan") if doc["group"] else None),
            ("server certificate", chose),
            ("server signature", doc.get("peerSignatureScheme")),
            ("server chain", [_dn(c) for c in doc["peerChain"]]),
            ("client certificate", doc.get("localKeyAlgorithm") or "none sent"),
            ("verdict", verdict if doc["ok"] else f"{verdict}: {doc['error']}"),
        ]
    )


def algorithms(out: Printer, doc: dict[str, Any]) -> None:
    rows = [
        [
            r["namespace"],
            r["name"],
            r["secretName"],
            ", ".join(r["held"]) or r.get("problem", "-"),
            _kind(out, r["kind"]),
            out.paint("pending: " + ", ".join(r["wanted"]), "yellow") if r["pending"] else "",
        ]
        for r in doc["certificates"]
    ]
    out.table(["namespace", "certificate", "secret", "keys held", "kind", "spec"], rows)
    out.line()
    summary = doc["summary"]
    parts = [f"{summary[k]} {k}" for k in ("dual", "post-quantum", "classical", "missing")]
    pending = f", {summary['pending']} pending" if summary["pending"] else ""
    out.line(f"{summary['total']} certificates: {', '.join(parts)}{pending}")
    if doc["algorithms"]:
        out.line("keys: " + ", ".join(f"{n} {label}" for label, n in doc["algorithms"].items()))


def _kind(out: Printer, kind: str) -> str:
    colour = {"dual": "green", "post-quantum": "cyan", "classical": "yellow", "missing": "red"}[kind]
    return out.paint(kind, colour)


def listening(out: Printer, doc: dict[str, Any]) -> None:
    out.line(f"mtlsctl serve: listening on {doc['host']}:{doc['port']} ({doc['certificate']})")


def served(out: Printer, doc: dict[str, Any]) -> None:
    if doc["ok"]:
        peer = _dn(doc["peerChain"][0]) if doc["peerChain"] else "?"
        out.line(
            f"{out.ok(True, 'accepted')} {peer}: {doc['protocol']} {doc['group']} "
            f"client signature {doc['peerSignatureAlgorithm']}, client certificate "
            f"{doc.get('peerKeyAlgorithm')}, server certificate {doc.get('localKeyAlgorithm')}"
        )
    else:
        out.line(f"{out.ok(False, 'rejected', 'rejected')}: {doc['error']}")


def renewal(out: Printer, doc: dict[str, Any]) -> None:
    out.line(
        f"Renewal requested for MTLSCertificate {doc['namespace']}/{doc['name']}: "
        f"{doc['annotation']}={doc['value']}"
    )


def rotation(out: Printer, doc: dict[str, Any]) -> None:
    out.line(
        f"CA rotation requested for MTLSIssuer {doc['namespace']}/{doc['name']}: "
        f"{doc['annotation']}={doc['value']}; follow status.rotation.phase"
    )


def health(out: Printer, doc: dict[str, Any]) -> None:
    out.table(
        ["check", "status", "detail"],
        [[c["name"], out.ok(c["ok"], "OK", "FAIL"), c["message"]] for c in doc["checks"]],
    )
    out.line()
    out.line(f"mtls-operator: {out.ok(doc['ok'], 'healthy', 'NOT healthy')}")


def profiles(out: Printer, docs: list[dict[str, Any]]) -> None:
    out.table(
        ["name", "kind", "algorithm", "usages", "duration", "description"],
        [
            [d["name"], d["kind"], d["algorithm"], ", ".join(d["usages"]), d["duration"], d["description"]]
            for d in docs
        ],
    )
