"""The test node's sealed network namespace, and the one door into it: a TCP forwarder to the API server.

The node (containerd, kubelet and every pod) runs in a network namespace that the run creates
(``ip netns add``). It holds only addresses the run gives it: ``lo``, the pod bridge and its gateway, and
the ``kubernetes`` Service's ClusterIP on a dummy link. It has no link to the host's network at all, so
nothing in it can reach any address outside it; even a mistake can only fail, never send traffic out.

The one way out is `Forwarder`: a process that listens *inside* the namespace (on its ``127.0.0.1`` for the
kubelet, and on the ClusterIP:443 for in-cluster clients) and connects, from the host's namespace, to the
API server on the host's ``127.0.0.1``. The listening sockets are made after ``setns(2)`` into the node's
namespace; the process then returns to its own namespace, where every outgoing connection is made.

A second forwarder works the other way, for the API server's calls to the kubelet (logs, exec): it
listens on the host's ``127.0.0.1`` and connects to the kubelet on the namespace's ``127.0.0.1``.

``python -m mtls_operator.testing.netns forward --listen-netns NAME --listen 127.0.0.1:P
--listen 10.0.0.1:443 --to 127.0.0.1:P`` runs one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = ["CLONE_NEWNET", "Forwarder", "enter_netns", "listen_in_netns", "netns_path", "parse_hostport"]

CLONE_NEWNET: Final = 0x40000000
NETNS_DIR: Final = Path("/var/run/netns")
_BUFFER: Final = 65536


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def enter_netns(netns: Path) -> None:
    """Move the calling thread (the whole process, if it has one thread) into the namespace at `netns`."""
    fd = os.open(netns, os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def listen_in_netns(netns: Path | None, addresses: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """Listening TCP sockets bound to `addresses` inside the network namespace at `netns` (None: this one).

    The calling thread enters the namespace only while it makes the sockets and always returns to its
    own; a socket stays in the namespace it was made in.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns if netns is not None else "/proc/thread-self/ns/net", os.O_RDONLY)
    sockets: list[socket.socket] = []
    try:
        _setns(target)
        try:
            for host, port in addresses:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(128)
                sock.setblocking(False)
                sockets.append(sock)
        finally:
            _setns(own)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    finally:
        os.close(own)
        os.close(target)
    return sockets


class Forwarder:
    """Forward every connection accepted on `listeners` to `target` (a loopback address of this host)."""

    def __init__(self, listeners: Sequence[socket.socket], target: tuple[str, int]) -> None:
        if not target[0].startswith("127."):
            raise ValueError(f"the forwarder only connects to loopback addresses, not {target[0]}")
        self.listeners = list(listeners)
        self.target = target

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_BUFFER):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def serve(self, stop: asyncio.Event) -> None:
        servers = [await asyncio.start_server(self._handle, sock=sock) for sock in self.listeners]
        try:
            await stop.wait()
        finally:
            for server in servers:
                server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtls_operator.testing.netns")
    sub = parser.add_subparsers(dest="command", required=True)
    forward = sub.add_parser("forward", help="listen in one network namespace, connect in another")
    forward.add_argument(
        "--listen-netns", help="name (ip netns) of the namespace to listen in; default: this"
    )
    forward.add_argument("--listen", action="append", required=True, help="HOST:PORT to listen on")
    forward.add_argument("--to-netns", help="name of the namespace to connect in; default: this one")
    forward.add_argument("--to", required=True, help="loopback HOST:PORT to connect to")
    args = parser.parse_args(argv)
    listen_ns = netns_path(args.listen_netns) if args.listen_netns else None
    listeners = listen_in_netns(listen_ns, [parse_hostport(a) for a in args.listen])
    if args.to_netns:
        enter_netns(netns_path(args.to_netns))  # before the event loop starts any thread
    forwarder = Forwarder(listeners, parse_hostport(args.to))
    print(
        f"netns: forwarding {', '.join(args.listen)} (netns {args.listen_netns or 'host'}) to {args.to} "
        f"(netns {args.to_netns or 'host'})",
        flush=True,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await forwarder.serve(stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
