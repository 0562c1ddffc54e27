"""The operator's HTTP servers: ``/metrics`` and ``/healthz`` here, CRL and OCSP in controllers.revocation.

Both listen through :func:`serve`, which bounds what an unauthenticated peer can hold (see
:class:`HttpLimits`): a connection must send a complete request head within ``header_timeout`` of
connecting (and within ``idle_timeout`` of its last response when kept alive), a handler (body read
included) must finish within ``request_timeout``, at most ``max_connections`` are open at once, and
request lines, headers and bodies are capped. At the cap a new connection pushes out the oldest one that
has not sent a complete request head yet (so half-open connections cannot lock out a Prometheus scrape
or a liveness probe, which send theirs at once); when every open connection has sent a request, the new
one is closed as soon as it is accepted. Either way a flood can never take the file descriptors the
operator needs for its own API calls. aiohttp alone has none of the first three (keep-alive defaults to
3,630 s, and before 3.10 a connection that never sends a byte is never timed out).

The metrics server runs on the operator's event loop, so a loop that stops answering fails the liveness
probe too.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler

from mtls_operator.observability.heap import HEAP
from mtls_operator.observability.metrics import CONTENT_TYPE, Metrics

logger = logging.getLogger("mtls_operator")

DEFAULT_PORT: Final = 9402
# Loopback unless told otherwise: a process started by hand must not expose itself on every interface.
# The Helm chart passes 0.0.0.0 explicitly (Prometheus and relying parties reach the pod from outside).
DEFAULT_BIND: Final = "127.0.0.1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EVICTION_GRACE: Final = 0.02  # seconds a new connection is safe from eviction (it may not have been read)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one peer may hold of a server. The defaults suit /metrics, CRL and OCSP: small requests,
    answered at once, from clients that open a connection, ask, and go."""

    header_timeout: float = 5.0  # connect -> complete request line and headers
    idle_timeout: float = 5.0  # a kept-alive connection with no request in flight is closed after this
    request_timeout: float = 10.0  # request head received -> response started (body read included)
    max_connections: int = 128  # open connections; see the module docstring for what happens beyond
    max_line_size: int = 4096  # request line, and each header line
    max_headers: int = 32
    max_body: int = 64 * 1024  # request body (Content-Length above it: 413 before the handler runs)
    # Connections the kernel queues before the server accepts them (capped by net.core.somaxconn). Queued,
    # they cost kernel memory and no file; when the queue is full the kernel drops the handshake's last
    # ACK, and the client believes it connected and waits on a connection that no timeout here can close.
    # Go's net.Listen asks for the kernel's maximum too.
    backlog: int = 4096
    # Connections asyncio accepts in one turn of the loop (it takes its accept batch from the backlog it
    # is given, so serve() widens the kernel's queue after). Each is a file until the cap closes it.
    accept_batch: int = 128


@dataclass
class ServerStats:
    """Counters a test (or a log line) can read: connections closed to make room for a new one (the oldest
    that sent no request), refused over the cap (when every open one has sent a request), closed for
    sending no complete request head in time, and requests cut off by ``request_timeout``."""

    evicted: int = 0
    refused: int = 0
    header_timeouts: int = 0
    request_timeouts: int = 0


class _Refuse(asyncio.Protocol):
    """The protocol given to a connection beyond the cap when no open one can make room: close it as soon
    as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class Listening:
    """A server :func:`serve` started; ``port`` is the bound port (the OS picks one for port 0)."""

    def __init__(self, name: str, runner: web.AppRunner, limits: HttpLimits) -> None:
        self.name = name
        self.limits = limits
        self.stats = ServerStats()
        self.port = 0
        self._runner = runner
        self._server: asyncio.Server | None = None
        # The request-head deadline and accept time of each connection that has not sent a request yet,
        # oldest first.
        self._deadlines: dict[RequestHandler, tuple[asyncio.TimerHandle, float]] = {}
        self._warned_at = 0.0

    @property
    def connections(self) -> int:
        """Open connections, as the cap counts them: those aiohttp tracks, and those accepted in this
        burst that it does not track yet (or that never sent a request and have not timed out)."""
        server = self._runner.server
        tracked = server.connections if server is not None else []
        return len(self._deadlines.keys() | set(tracked))

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if self.connections >= self.limits.max_connections and not self._evict_oldest_silent():
            self.stats.refused += 1
            self._warn("closing new connections at once")
            return _Refuse()
        protocol = server()
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(self.limits.header_timeout, self._too_slow, protocol)
        self._deadlines[protocol] = (deadline, time.monotonic())
        return protocol

    def _evict_oldest_silent(self) -> bool:
        """Close the oldest connection that has not sent a complete request head yet, to make room: a peer
        holding half-open connections cannot lock others out, it can only push its own oldest out. Not one
        accepted less than ``EVICTION_GRACE`` ago (it may not have been read yet: a burst of accepts must
        not push out the client that asked first). False when there is none to close."""
        now = time.monotonic()
        while self._deadlines:
            protocol, (deadline, accepted) = next(iter(self._deadlines.items()))
            if protocol.transport is None:  # gone already
                self._deadlines.pop(protocol)
                deadline.cancel()
                continue
            if now - accepted < EVICTION_GRACE:
                return False
            self._deadlines.pop(protocol)
            deadline.cancel()
            protocol.force_close()
            self.stats.evicted += 1
            self._warn("closing the oldest connections that sent no request")
            return True
        return False

    def _warn(self, doing: str) -> None:
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            logger.warning(
                "The %s server has %d connections open (its limit): %s (%d evicted, %d refused so far).",
                self.name,
                self.limits.max_connections,
                doing,
                self.stats.evicted,
                self.stats.refused,
            )

    def _too_slow(self, protocol: RequestHandler) -> None:
        if self._deadlines.pop(protocol, None) is not None and protocol.transport is not None:
            self.stats.header_timeouts += 1
            protocol.force_close()

    def request_arrived(self, protocol: RequestHandler | None) -> None:
        found = self._deadlines.pop(protocol, None) if protocol is not None else None
        if found is not None:
            found[0].cancel()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for deadline, _ in self._deadlines.values():
            deadline.cancel()
        self._deadlines.clear()
        await self._runner.cleanup()


def _guard(listening: Listening) -> Middleware:
    limits = listening.limits

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        listening.request_arrived(request.protocol)
        if request.content_length is not None and request.content_length > limits.max_body:
            raise web.HTTPRequestEntityTooLarge(
                max_size=limits.max_body, actual_size=request.content_length, headers={"Connection": "close"}
            )
        try:
            async with asyncio.timeout(limits.request_timeout):
                return await handler(request)
        except TimeoutError:
            listening.stats.request_timeouts += 1
            raise web.HTTPRequestTimeout(
                text="The request took too long.\n", headers={"Connection": "close"}
            ) from None

    return guard


async def serve(
    name: str,
    routes: Callable[[web.Application], None],
    host: str,
    port: int,
    limits: HttpLimits = HttpLimits(),
) -> Listening:
    """Listen on ``host:port`` with ``limits``; ``routes`` adds the handlers to the application.
    Raises OSError (taken port, address not ours) after releasing what it set up."""
    app = web.Application(client_max_size=limits.max_body)
    routes(app)
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,  # a peer that goes away cancels its handler
        keepalive_timeout=limits.idle_timeout,
        max_line_size=limits.max_line_size,
        max_field_size=limits.max_line_size,
        max_headers=limits.max_headers,
        lingering_time=min(2.0, limits.request_timeout),  # an unread body is drained this long at most
        shutdown_timeout=2.0,
    )
    listening = Listening(name, runner, limits)
    app.middlewares.append(_guard(listening))
    await runner.setup()
    try:
        server = await asyncio.get_running_loop().create_server(
            listening._protocol, host, port, backlog=limits.accept_batch, reuse_address=True
        )
        for listener in server.sockets:  # listen() again on a listening socket sets its queue's length
            with socket.fromfd(listener.fileno(), listener.family, listener.type) as same:
                same.listen(limits.backlog)
    except BaseException:
        await runner.cleanup()
        raise
    listening._server = server
    sockets = server.sockets or ()
    listening.port = int(sockets[0].getsockname()[1]) if sockets else port
    return listening


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard one (what the Go runtime does at start), so that
    the connection caps, not the soft default of 1,024, decide how many peers the servers hold.
    Returns the (soft, hard) limits in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass
    return soft, hard


class MetricsServer:
    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str = DEFAULT_BIND,
        port: int = DEFAULT_PORT,
        limits: HttpLimits = HttpLimits(),
    ) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.limits = limits
        self.listening: Listening | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        HEAP.soon()  # the exposition of 10k certificates is megabytes, freed once the response is sent
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0 in tests: the OS picks one)."""
        self.listening = await serve("metrics", self._routes, self.host, self.port, self.limits)
        self.port = self.listening.port
        logger.info("Serving /metrics and /healthz on %s:%d.", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self.listening is not None:
            await self.listening.stop()
            self.listening = None
