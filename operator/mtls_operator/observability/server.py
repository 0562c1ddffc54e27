"""The operator's small HTTP server: ``/metrics`` for Prometheus and ``/healthz`` for the liveness probe.

It runs on the operator's event loop, so a loop that stops answering fails the liveness probe too.
"""

from __future__ import annotations

import logging

from aiohttp import web

from mtls_operator.observability.metrics import CONTENT_TYPE, Metrics

logger = logging.getLogger("mtls_operator")

DEFAULT_PORT = 9402


class MetricsServer:
    def __init__(self, metrics: Metrics, *, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> None:  # noqa: S104
        self.metrics = metrics
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0 in tests: the OS picks one)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info("Serving /metrics and /healthz on %s:%d.", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
