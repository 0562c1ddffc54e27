"""`mtlsctl`: the user's command line for mtls-operator.

Cluster commands (``status``, ``inspect``, ``renew``, ``check``, ``algorithms``) read and annotate the
operator's objects; offline commands (``ca init``, ``cert issue``, ``verify``) run the operator's ``pki`` code
on files; ``handshake``, ``serve`` and ``probe`` make real mutual TLS 1.3 connections. Every command prints
for people by default and ``-o json`` / ``-o yaml`` for machines; a failure exits non-zero with a sentence
on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from mtls_operator import __version__
from mtls_operator.cli import render
from mtls_operator.cli.cluster import (
    ClusterError,
    Target,
    certificate_status,
    check_health,
    connect,
    inspect_secret,
    request_ca_rotation,
    request_renewal,
)
from mtls_operator.cli.errors import EXIT_FAILED, EXIT_OK, CommandError
from mtls_operator.cli.migration import key_algorithms
from mtls_operator.cli.offline import (
    PURPOSES,
    OfflineError,
    init_ca,
    issue_certificate,
    verify_certificate,
)
from mtls_operator.cli.output import Format, Printer
from mtls_operator.cli.profiles import ProfileError, builtin_profiles, load_profile
from mtls_operator.cli.revoke import add_revoke_parser, cmd_revoke
from mtls_operator.cli.tls_commands import add_tls_parsers, cmd_handshake, cmd_probe, cmd_serve
from mtls_operator.k8s.api import ApiClient

T = TypeVar("T")


def _common(p: argparse.ArgumentParser, *, cluster: bool = False, top: bool = False) -> None:
    """-o, and for cluster commands -n and --kubeconfig: accepted before the command (``mtlsctl -n demo
    check``) and after it (``mtlsctl check -n demo``); a subcommand's default never hides the global one."""
    default: object = None if top else argparse.SUPPRESS
    p.add_argument(
        "-o",
        "--output",
        choices=[f.value for f in Format],
        default=Format.TEXT.value if top else argparse.SUPPRESS,
        help="output format (default text)",
    )
    if cluster:
        p.add_argument(
            "-n", "--namespace", default=default, help="namespace (default: the kubeconfig's, else default)"
        )
        p.add_argument(
            "--kubeconfig",
            default=default,
            help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtlsctl", description="Work with mtls-operator certificates and PKI.")
    p.add_argument("--version", action="version", version=f"mtlsctl {__version__}")
    _common(p, cluster=True, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    status = sub.add_parser("status", help="show an object's conditions, dates and recent events")
    status_sub = status.add_subparsers(dest="kind", metavar="KIND", required=True)
    status_cert = status_sub.add_parser(
        "certificate", aliases=["mcert", "mtlscertificate"], help="an MTLSCertificate"
    )
    status_cert.add_argument("name")
    status_cert.add_argument("--events", type=int, default=10, help="how many recent events (default 10)")
    _common(status_cert, cluster=True)

    inspect = sub.add_parser("inspect", help="look inside a TLS Secret")
    inspect_sub = inspect.add_subparsers(dest="kind", metavar="KIND", required=True)
    inspect_secret_p = inspect_sub.add_parser("secret", help="a kubernetes.io/tls Secret")
    inspect_secret_p.add_argument("name")
    _common(inspect_secret_p, cluster=True)

    renew = sub.add_parser("renew", help="ask the operator to re-issue an MTLSCertificate now")
    renew.add_argument("name")
    _common(renew, cluster=True)
    add_revoke_parser(sub, _common)
    rotate = sub.add_parser("rotate-ca", help="start a CA rotation with overlap on an MTLSIssuer")
    rotate.add_argument("name")
    _common(rotate, cluster=True)

    check = sub.add_parser("check", help="are the CRDs installed and an operator reconciling?")
    _common(check, cluster=True)

    algorithms = sub.add_parser(
        "algorithms", help="the post-quantum migration: which certificates' Secrets hold which key algorithms"
    )
    algorithms.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    _common(algorithms, cluster=True)

    ca = sub.add_parser("ca", help="offline CA")
    ca_sub = ca.add_subparsers(dest="action", metavar="ACTION", required=True)
    ca_init = ca_sub.add_parser("init", help="create a self-signed CA in a directory (ca.crt, ca.key)")
    ca_init.add_argument("--name", required=True, help="the CA's common name")
    ca_init.add_argument("--profile", default="pqc-ca", help="profile name or YAML file (default pqc-ca)")
    ca_init.add_argument("--dir", required=True, type=Path, help="directory for ca.crt and ca.key")
    ca_init.add_argument("--force", action="store_true", help="replace an existing ca.key")
    _common(ca_init)

    cert = sub.add_parser("cert", help="offline certificates")
    cert_sub = cert.add_subparsers(dest="action", metavar="ACTION", required=True)
    issue = cert_sub.add_parser("issue", help="issue a certificate from an offline CA")
    issue.add_argument("--ca-dir", required=True, type=Path, help="directory made by `mtlsctl ca init`")
    issue.add_argument("--profile", required=True, help="profile name or YAML file, e.g. pqc-server")
    issue.add_argument("--cn", help="subject common name")
    issue.add_argument("--dns", action="append", default=[], help="DNS name (repeatable)")
    issue.add_argument("--ip", action="append", default=[], help="IP address (repeatable)")
    issue.add_argument("--uri", action="append", default=[], help="URI, e.g. spiffe://... (repeatable)")
    issue.add_argument("--duration", help="validity, Go duration syntax (e.g. 24h); default from profile")
    issue.add_argument("--out", required=True, type=Path, help="certificate chain output (PEM)")
    issue.add_argument("--key-out", required=True, type=Path, help="private key output (PEM, mode 0600)")
    issue.add_argument("--ca-out", type=Path, help="also write the root certificate here")
    issue.add_argument("--force", action="store_true", help="replace an existing key file")
    _common(issue)

    profiles = sub.add_parser("profiles", help="list the built-in certificate profiles")
    _common(profiles)

    verify = sub.add_parser("verify", help="verify a certificate against a CA, offline")
    verify.add_argument("--ca", required=True, type=Path, help="trusted root certificate(s), PEM")
    verify.add_argument("--cert", required=True, type=Path, help="certificate chain to verify, PEM")
    verify.add_argument("--purpose", choices=sorted(PURPOSES), help="TLS client or server")
    verify.add_argument("--dns", help="a name the certificate must be valid for")
    _common(verify)

    add_tls_parsers(sub, _common)
    return p


# ---------------------------------------------------------------------------------------------------------
# Commands


def _now() -> datetime:
    return datetime.now(UTC)


def _run_cluster(args: argparse.Namespace, work: Callable[[ApiClient, str], Awaitable[T]]) -> T:
    api, namespace = connect(Target(kubeconfig=args.kubeconfig, namespace=args.namespace))

    async def run() -> T:
        try:
            return await work(api, namespace)
        finally:
            await api.close()

    return asyncio.run(run())


def cmd_status(args: argparse.Namespace, out: Printer) -> int:
    doc = _run_cluster(args, lambda api, ns: certificate_status(api, ns, args.name, events=args.events))
    out.emit(doc, render.certificate_status)
    return EXIT_OK if doc["ready"] == "True" else EXIT_FAILED


def cmd_inspect(args: argparse.Namespace, out: Printer) -> int:
    doc = _run_cluster(args, lambda api, ns: inspect_secret(api, ns, args.name, _now()))
    out.emit(doc, render.secret)
    return EXIT_OK if doc["chain"]["verified"] and doc["keyMatches"] else EXIT_FAILED


def cmd_rotate_ca(args: argparse.Namespace, out: Printer) -> int:
    doc = _run_cluster(args, lambda api, ns: request_ca_rotation(api, ns, args.name, _now()))
    out.emit(doc, render.rotation)
    return 0


def cmd_renew(args: argparse.Namespace, out: Printer) -> int:
    doc = _run_cluster(args, lambda api, ns: request_renewal(api, ns, args.name, _now()))
    out.emit(doc, render.renewal)
    return EXIT_OK


def cmd_algorithms(args: argparse.Namespace, out: Printer) -> int:
    doc = _run_cluster(args, lambda api, ns: key_algorithms(api, None if args.all_namespaces else ns))
    out.emit(doc, render.algorithms)
    return EXIT_OK


def cmd_check(args: argparse.Namespace, out: Printer) -> int:
    doc = _run_cluster(args, check_health)
    out.emit(doc, render.health)
    return EXIT_OK if doc["ok"] else EXIT_FAILED


def cmd_ca(args: argparse.Namespace, out: Printer) -> int:
    doc = init_ca(load_profile(args.profile), args.dir, _now(), name=args.name, force=args.force)
    out.emit(doc, render.issued)
    return EXIT_OK


def cmd_cert(args: argparse.Namespace, out: Printer) -> int:
    doc = issue_certificate(
        load_profile(args.profile),
        args.ca_dir,
        _now(),
        out=args.out,
        key_out=args.key_out,
        ca_out=args.ca_out,
        common_name=args.cn,
        dns_names=args.dns,
        ip_addresses=args.ip,
        uris=args.uri,
        duration=args.duration,
        force=args.force,
    )
    out.emit(doc, render.issued)
    return EXIT_OK


def cmd_profiles(_args: argparse.Namespace, out: Printer) -> int:
    docs = []
    for name in builtin_profiles():
        prof = load_profile(name)
        key = prof.doc.get("privateKey") or {}
        docs.append(
            {
                "name": name,
                "kind": prof.kind,
                "algorithm": f"{key.get('algorithm', 'ECDSA')}-{key.get('size', '')}".rstrip("-"),
                "usages": prof.doc.get("usages") or [],
                "duration": prof.doc.get("duration"),
                "description": prof.description,
            }
        )
    out.emit(docs, render.profiles)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, out: Printer) -> int:
    doc = verify_certificate(args.ca, args.cert, _now(), purpose=args.purpose, dns_name=args.dns)
    out.emit(doc, render.verification)
    return EXIT_OK if doc["ok"] else EXIT_FAILED


COMMANDS: dict[str, Callable[[argparse.Namespace, Printer], int]] = {
    "status": cmd_status,
    "inspect": cmd_inspect,
    "renew": cmd_renew,
    "revoke": cmd_revoke,
    "rotate-ca": cmd_rotate_ca,
    "check": cmd_check,
    "algorithms": cmd_algorithms,
    "probe": cmd_probe,
    "ca": cmd_ca,
    "cert": cmd_cert,
    "profiles": cmd_profiles,
    "verify": cmd_verify,
    "handshake": cmd_handshake,
    "serve": cmd_serve,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    out = Printer(Format(args.output))
    try:
        return COMMANDS[args.command](args, out)
    except (CommandError, ClusterError, OfflineError, ProfileError) as exc:
        sys.stdout.flush()
        print(f"mtlsctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
