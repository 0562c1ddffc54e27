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
import signal
import sys
import threading
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
from mtls_operator.cli.tlsio import PROFILES, EchoServer, HandshakeResult, client_handshake, probe
from mtls_operator.k8s.api import ApiClient

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1  # the thing checked is not fine: handshake refused, verification failed, unhealthy
EXIT_USAGE = 2  # argparse's own code for bad flags


class CommandError(Exception):
    """A command that cannot run; its message is printed as ``mtlsctl: <message>``."""


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

    shake = sub.add_parser("handshake", help="a real mutual TLS 1.3 handshake with a server")
    shake.add_argument("--connect", required=True, metavar="HOST:PORT")
    _pairs(shake, "client", required=True)
    shake.add_argument("--ca", required=True, type=Path, help="root(s) the server must chain to, PEM")
    shake.add_argument("--servername", help="SNI and the name the server certificate must carry")
    shake.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    _profile(shake)
    _common(shake)

    probe_p = sub.add_parser(
        "probe", help="which certificate a server presents to a post-quantum or a legacy client"
    )
    probe_p.add_argument("target", metavar="HOST:PORT")
    _profile(probe_p)
    _pairs(probe_p, "client", required=False)
    probe_p.add_argument("--ca", type=Path, help="root(s) the server must chain to (default: verify nothing)")
    probe_p.add_argument(
        "--servername", help="SNI (and, with --ca, the name the server certificate must carry)"
    )
    probe_p.add_argument("--wait", type=float, default=1.0, help="seconds to wait for the server's verdict")
    probe_p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    _common(probe_p)

    serve = sub.add_parser("serve", help="an mTLS echo server that requires client certificates")
    _pairs(serve, "server", required=True)
    serve.add_argument("--ca", required=True, type=Path, help="root(s) client certificates must chain to")
    serve.add_argument("--port", type=int, default=8443, help="port (default 8443; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve.add_argument("--count", type=int, default=0, help="exit after this many connections (0: never)")
    _common(serve)
    return p


def _pairs(p: argparse.ArgumentParser, who: str, *, required: bool) -> None:
    """--cert/--key, repeatable: one pair per key type (a dual certificate's tls.crt and tls-ecdsa.crt)."""
    p.add_argument(
        "--cert",
        action="append",
        type=Path,
        required=required,
        help=f"{who} certificate chain, PEM (repeat with --key for each key type, e.g. ML-DSA and ECDSA)",
    )
    p.add_argument("--key", action="append", type=Path, required=required, help=f"{who} private key, PEM")


def _profile(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="pqc",
        help="what the client offers: pqc (ML-DSA and X25519MLKEM768 too, the default) or legacy (the "
        "classical signature schemes and groups of a pre-PQC stack such as OpenSSL 3.0)",
    )


def _certificate_pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    certs, keys = args.cert or [], args.key or []
    if len(certs) != len(keys):
        raise CommandError(f"Give one --key for each --cert ({len(certs)} --cert, {len(keys)} --key).")
    for cert, key in zip(certs, keys, strict=True):
        for flag, path in (("--cert", cert), ("--key", key)):
            if not path.is_file():
                raise CommandError(f"{flag} {path}: no such file.")
    return list(zip(certs, keys, strict=True))


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


def cmd_probe(args: argparse.Namespace, out: Printer) -> int:
    host, port = _host_port(args.target, "The probe's target")
    pairs = _certificate_pairs(args)
    if args.ca is not None and not args.ca.is_file():
        raise CommandError(f"--ca {args.ca}: no such file.")
    result = probe(
        host,
        port,
        profile=args.profile,
        cert=pairs[0][0] if pairs else None,
        key=pairs[0][1] if pairs else None,
        extra=tuple(pairs[1:]),
        ca=args.ca,
        server_name=args.servername,
        timeout=args.timeout,
        wait=args.wait,
    )
    doc = {"server": args.target, "serverName": args.servername, "profile": args.profile, **result.as_dict()}
    out.emit(doc, render.probe)
    return EXIT_OK if result.ok else EXIT_FAILED


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


def _host_port(text: str, what: str = "--connect") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise CommandError(f"{what} {text!r} must be HOST:PORT, e.g. 127.0.0.1:8443.")
    return host.strip("[]"), int(port)


def cmd_handshake(args: argparse.Namespace, out: Printer) -> int:
    host, port = _host_port(args.connect)
    (cert, key), *extra = _certificate_pairs(args)
    if not args.ca.is_file():
        raise CommandError(f"--ca {args.ca}: no such file.")
    result = client_handshake(
        host,
        port,
        cert=cert,
        key=key,
        ca=args.ca,
        server_name=args.servername,
        timeout=args.timeout,
        profile=args.profile,
        extra=tuple(extra),
    )
    doc = {"server": args.connect, "serverName": args.servername, "profile": args.profile, **result.as_dict()}
    out.emit(doc, render.handshake)
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_serve(args: argparse.Namespace, out: Printer) -> int:
    (cert, key), *extra = _certificate_pairs(args)
    if not args.ca.is_file():
        raise CommandError(f"--ca {args.ca}: no such file.")
    lock = threading.Lock()
    done = threading.Event()
    served = 0

    def report(result: HandshakeResult) -> None:
        nonlocal served
        with lock:
            out.emit({"event": "connection", **result.as_dict()}, render.served, compact=True)
            served += 1
            if args.count and served >= args.count:
                done.set()

    try:
        server = EchoServer(
            cert, key, args.ca, host=args.host, port=args.port, on_result=report, extra=tuple(extra)
        )
    except OSError as exc:
        raise CommandError(f"Cannot listen on {args.host}:{args.port}: {exc.strerror}.") from None
    except Exception as exc:  # pyOpenSSL reports bad credentials as OpenSSL.SSL.Error
        raise CommandError(f"Cannot load the server credentials: {exc}.") from None
    out.emit(
        {
            "event": "listening",
            "host": args.host,
            "port": server.port,
            "certificate": ", ".join(str(c) for c, _ in [(cert, key), *extra]),
        },
        render.listening,
        compact=True,
    )
    server.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()
    return EXIT_OK


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
