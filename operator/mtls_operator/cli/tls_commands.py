"""mtlsctl's TLS commands, which make real mutual TLS 1.3 connections (:mod:`mtls_operator.cli.tlsio`):
``handshake`` (a client handshake with a server), ``probe`` (which certificate a server presents to a
post-quantum or a legacy client) and ``serve`` (an mTLS echo server). Each takes one ``--cert``/``--key``
pair per key type, so a dual certificate's both pairs can be offered.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtls_operator.cli import render
from mtls_operator.cli.errors import EXIT_FAILED, EXIT_OK, CommandError
from mtls_operator.cli.output import Printer
from mtls_operator.cli.tls_results import HandshakeResult
from mtls_operator.cli.tlsio import PROFILES, EchoServer, client_handshake, probe


def add_tls_parsers(sub: Any, common: Callable[..., None]) -> None:
    """Register ``handshake``, ``probe`` and ``serve`` on mtlsctl's subcommands (``common`` adds -o)."""
    shake = sub.add_parser("handshake", help="a real mutual TLS 1.3 handshake with a server")
    shake.add_argument("--connect", required=True, metavar="HOST:PORT")
    _pairs(shake, "client", required=True)
    shake.add_argument("--ca", required=True, type=Path, help="root(s) the server must chain to, PEM")
    shake.add_argument("--servername", help="SNI and the name the server certificate must carry")
    shake.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    _profile(shake)
    common(shake)

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
    common(probe_p)

    serve = sub.add_parser("serve", help="an mTLS echo server that requires client certificates")
    _pairs(serve, "server", required=True)
    serve.add_argument("--ca", required=True, type=Path, help="root(s) client certificates must chain to")
    serve.add_argument("--port", type=int, default=8443, help="port (default 8443; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve.add_argument("--count", type=int, default=0, help="exit after this many connections (0: never)")
    common(serve)


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
