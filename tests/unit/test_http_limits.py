"""observability.server.serve on a real loopback socket: what a peer that sends nothing, too little, too
slowly or too much gets, and that connections beyond the cap are closed at once (never held)."""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from mtls_operator.observability.metrics import Metrics
from mtls_operator.observability.server import (
    HttpLimits,
    Listening,
    MetricsServer,
    raise_open_files_limit,
    serve,
)

FAST = HttpLimits(
    header_timeout=1.0,
    idle_timeout=1.0,
    request_timeout=1.0,
    max_connections=8,
    max_line_size=256,
    max_headers=8,
    max_body=1024,
)
SLACK = 1.5  # scheduling on a busy machine


async def _echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


async def _hello(_: web.Request) -> web.Response:
    return web.Response(text="hello\n")


def _routes(app: web.Application) -> None:
    app.router.add_post("/echo", _echo)
    app.router.add_get("/hello", _hello)


def _run(test: Callable[[Listening], Awaitable[Any]], limits: HttpLimits = FAST) -> Any:
    async def run() -> Any:
        listening = await serve("test", _routes, "127.0.0.1", 0, limits)
        try:
            return await test(listening)
        finally:
            await listening.stop()

    return asyncio.run(run())


async def _open(listening: Listening) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", listening.port)


async def _closed_after(
    reader: asyncio.StreamReader, started: float, wait: float = 10
) -> tuple[float, bytes]:
    """Seconds from ``started`` until the server closed the connection, and what it sent before."""
    data = await asyncio.wait_for(reader.read(), wait)
    return time.monotonic() - started, data


async def _ask(listening: Listening, raw: bytes) -> bytes:
    reader, writer = await _open(listening)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param(FAST, id="short idle timeout"),
        pytest.param(replace(FAST, idle_timeout=30), id="long idle timeout"),
    ],
)
def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(limits: HttpLimits) -> None:
    async def test(listening: Listening) -> float:
        started = time.monotonic()
        reader, _ = await _open(listening)
        held, data = await _closed_after(reader, started)
        assert data == b""
        return held

    held = _run(test, limits)
    assert FAST.header_timeout - 0.1 <= held <= FAST.header_timeout + SLACK


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param(FAST, id="short idle timeout"),
        pytest.param(replace(FAST, idle_timeout=30), id="long idle timeout"),
    ],
)
def test_a_request_head_trickled_byte_by_byte_is_cut_off_at_the_header_timeout(limits: HttpLimits) -> None:
    async def test(listening: Listening) -> tuple[float, int]:
        started = time.monotonic()
        reader, writer = await _open(listening)
        head = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        sent = 0
        for byte in head:
            if reader.at_eof():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.sleep(0.05)
        return time.monotonic() - started, sent

    held, sent = _run(test, limits)
    assert held <= FAST.header_timeout + SLACK and sent < 120, "cut off before the head was complete"


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() -> None:
    async def test(listening: Listening) -> tuple[bytes, float]:
        reader, writer = await _open(listening)
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"hello\n")
        held, _ = await _closed_after(reader, time.monotonic())
        return head, held

    head, held = _run(test)
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
    assert held <= FAST.idle_timeout + SLACK


def test_at_the_cap_a_new_connection_pushes_out_the_oldest_that_sent_nothing() -> None:
    cap = FAST.max_connections

    async def test(listening: Listening) -> dict[str, Any]:
        started = time.monotonic()
        oldest = [await _open(listening) for _ in range(cap)]
        await asyncio.sleep(0.2)  # past the eviction grace
        newest = [await _open(listening) for _ in range(cap)]
        pushed = [(await _closed_after(reader, started, wait=2))[0] for reader, _ in oldest]
        # Within the grace nothing is pushed out: a burst is refused instead.
        burst = [await _open(listening) for _ in range(4)]
        refused = [(await _closed_after(reader, started, wait=2))[0] for reader, _ in burst]
        await asyncio.sleep(0.2)
        # A client that asks at once gets in while the cap is full of half-open connections.
        asked = time.monotonic()
        answer = await _ask(listening, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answered = time.monotonic() - asked
        held = [(await _closed_after(reader, started))[0] for reader, _ in newest]
        return {
            "pushed": pushed,
            "refused": refused,
            "held": held,
            "answer": answer,
            "answered": answered,
            "stats": listening.stats,
            "open": listening.connections,
        }

    out = _run(test)
    assert max(out["pushed"]) < FAST.header_timeout, f"the oldest were pushed out at once: {out['pushed']}"
    assert max(out["refused"]) < FAST.header_timeout
    assert out["answer"].startswith(b"HTTP/1.1 200") and out["answer"].endswith(b"hello\n")
    assert out["answered"] < FAST.header_timeout
    early = [h for h in out["held"] if h < FAST.header_timeout]
    assert len(early) == 1, (
        f"only the oldest of the newest made room for the client that asked: {out['held']}"
    )
    assert (out["stats"].evicted, out["stats"].refused) == (cap + 1, 4)


def test_when_every_connection_has_asked_a_new_one_is_closed_at_once() -> None:
    async def test(listening: Listening) -> tuple[float, bytes, int]:
        kept = []
        for _ in range(FAST.max_connections):
            reader, writer = await _open(listening)
            writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")  # kept alive afterwards
            await writer.drain()
            await reader.readuntil(b"hello\n")
            kept.append((reader, writer))
        started = time.monotonic()
        reader, _ = await _open(listening)
        closed, _ = await _closed_after(reader, started, wait=2)
        await asyncio.gather(*(_closed_after(r, started) for r, _ in kept))  # idle timeout
        answer = await _ask(listening, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return closed, answer, listening.stats.refused

    closed, answer, refused = _run(test)
    assert closed < FAST.idle_timeout and refused == 1
    assert answer.startswith(b"HTTP/1.1 200"), "served again once the idle ones timed out"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(
            b"GET /" + b"a" * 400 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"400", id="a request line too long"
        ),
        pytest.param(
            b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 400 + b"\r\n\r\n",
            b"400",
            id="a header too long",
        ),
        pytest.param(
            b"GET /hello HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(20)) + b"\r\n",
            b"400",
            id="too many headers",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n",
            b"413",
            id="a body declared too large",
        ),
        pytest.param(
            b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n",
            b"413",
            id="a body too large on a route that takes none",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n"
            + b"a" * 2048
            + b"\r\n0\r\n\r\n",
            b"413",
            id="a chunked body that grows too large",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            b"200",
            id="a small body is fine",
        ),
    ],
)
def test_request_size_limits(raw: bytes, status: bytes) -> None:
    answer = _run(lambda listening: _ask(listening, raw))
    assert answer.split(b" ", 2)[1] == status, answer[:200]


def test_a_body_sent_too_slowly_gets_408_within_the_request_timeout() -> None:
    async def test(listening: Listening) -> tuple[bytes, float, int]:
        reader, writer = await _open(listening)
        started = time.monotonic()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        await writer.drain()
        held, data = await _closed_after(reader, started)
        return data, held, listening.stats.request_timeouts

    data, held, timeouts = _run(test)
    assert data.startswith(b"HTTP/1.1 408") and timeouts == 1
    assert held <= FAST.request_timeout + SLACK


def test_the_metrics_server_is_hardened_and_binds_loopback_by_default() -> None:
    server = MetricsServer(Metrics(), port=0, limits=FAST)
    assert server.host == "127.0.0.1"

    async def run() -> tuple[bytes, float]:
        port = await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            ok = await reader.readuntil(b"ok\n")
            held, _ = await _closed_after(reader, time.monotonic())
            return ok, held
        finally:
            await server.stop()

    ok, held = asyncio.run(run())
    assert ok.startswith(b"HTTP/1.1 200") and held <= FAST.idle_timeout + SLACK


def test_the_open_files_soft_limit_is_raised_to_the_hard_one() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if before[1] != resource.RLIM_INFINITY and before[1] > 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, before[1]))
        soft, hard = raise_open_files_limit()
        assert soft == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_while_the_loop_is_busy_the_kernel_queues_more_connections_than_one_accept_batch() -> None:
    """A loop busy for a moment (signing, a resync) accepts nothing: the kernel's queue holds the
    handshakes meanwhile. With a queue only as long as the accept batch it would drop the rest, and a client
    would wait on a connection the server never sees (and its timeouts never close)."""
    limits = replace(FAST, accept_batch=16, backlog=1024, max_connections=512)

    async def test(listening: Listening) -> tuple[int, int]:
        opened: list[socket.socket] = []
        try:
            for _ in range(400):  # the loop runs nothing meanwhile: none of these is accepted yet
                opened.append(socket.create_connection(("127.0.0.1", listening.port), timeout=0.5))
        except TimeoutError:
            pass
        queued = len(opened)
        await asyncio.sleep(0.5)  # now the server accepts them, accept_batch a turn
        for sock in opened:
            sock.close()
        return queued, listening.connections

    queued, accepted = _run(test, limits)
    assert queued == 400, f"the kernel refused handshakes after {queued}: its queue is not the backlog"
    assert accepted == 400
