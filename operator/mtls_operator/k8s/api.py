"""The one small module that talks to the Kubernetes API server (besides kopf's own watches).

It reuses kopf's login (kubeconfig or in-cluster service account) and speaks plain JSON over aiohttp, so
the operator carries no generated client. Every call either returns the decoded JSON body or raises
:class:`ApiError` with the HTTP status; 409 (conflict / already exists) is never retried here: callers
re-read and decide again, which keeps every write level-based.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_pem: bytes | None = None
    insecure: bool = False
    token: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    default_namespace: str | None = None


def _read(path: Any) -> bytes | None:
    if not path:
        return None
    with open(os.fsdecode(path), "rb") as f:
        return f.read()


def _b64(value: str | bytes | None) -> bytes | None:
    if not value:
        return None
    return base64.b64decode(value)


def credentials_from_kopf(info: Any) -> Credentials:
    """Translate kopf's ``ConnectionInfo`` (from its kubeconfig or service-account login)."""
    return Credentials(
        server=str(info.server).rstrip("/"),
        ca_pem=_read(info.ca_path) or _b64(info.ca_data),
        insecure=bool(info.insecure),
        token=info.token,
        client_cert_pem=_read(info.certificate_path) or _b64(info.certificate_data),
        client_key_pem=_read(info.private_key_path) or _b64(info.private_key_data),
        default_namespace=info.default_namespace,
    )


def _ssl_context(creds: Credentials) -> ssl.SSLContext | bool:
    if not creds.server.startswith("https"):
        return False
    ctx = ssl.create_default_context()
    if creds.ca_pem:
        ctx.load_verify_locations(cadata=creds.ca_pem.decode())
    if creds.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if creds.client_cert_pem and creds.client_key_pem:
        # ssl can only load a client certificate from files: write both to a private temporary
        # directory, load, and remove at once (the key stays in memory only).
        with tempfile.TemporaryDirectory(prefix="mtls-client-") as tmp:
            cert_path, key_path = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
            for path, data in ((cert_path, creds.client_cert_pem), (key_path, creds.client_key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            ctx.load_cert_chain(cert_path, key_path)
    return ctx


class ApiClient:
    """A minimal async JSON client for the paths the operator needs."""

    def __init__(self, creds: Credentials, *, timeout: float = 30.0, concurrency: int = 32) -> None:
        self._creds = creds
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._limit = asyncio.Semaphore(concurrency)
        self.writes = 0  # counted for benchmarks and the API-economy tests
        self.reads = 0
        self.on_write: Callable[[str], None] | None = None

    @property
    def default_namespace(self) -> str | None:
        return self._creds.default_namespace

    def _ensure(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": "mtls-operator"}
            if self._creds.token:
                headers["Authorization"] = f"Bearer {self._creds.token}"
            connector = aiohttp.TCPConnector(ssl=_ssl_context(self._creds), limit=64)
            self._session = aiohttp.ClientSession(
                base_url=None, headers=headers, connector=connector, timeout=self._timeout
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | list[Any] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
    ) -> JSON:
        session = self._ensure()
        if method == "GET":
            self.reads += 1
        else:
            self.writes += 1
            if self.on_write is not None:
                self.on_write(method)
        headers = {"Content-Type": content_type} if body is not None else {}
        if accept is not None:
            headers["Accept"] = accept
        attempts = 0
        while True:
            attempts += 1
            try:
                async with (
                    self._limit,
                    session.request(
                        method, self._creds.server + path, json=body, headers=headers, params=params
                    ) as resp,
                ):
                    if (resp.status == 429 or resp.status >= 500) and attempts < 5:
                        delay = float(resp.headers.get("Retry-After", "0") or 0) or 0.2 * attempts
                        await asyncio.sleep(min(delay, 5.0))
                        continue
                    payload: Any
                    try:
                        payload = await resp.json(content_type=None)
                    except (ValueError, aiohttp.ContentTypeError):
                        payload = {"message": (await resp.text())[:500]}
                    if resp.status >= 400:
                        reason = payload.get("reason", "") if isinstance(payload, dict) else ""
                        message = payload.get("message", "") if isinstance(payload, dict) else ""
                        raise ApiError(resp.status, str(reason), str(message))
                    return payload if isinstance(payload, dict) else {"items": payload}
            except (aiohttp.ClientConnectionError, TimeoutError):
                if attempts >= 5:
                    raise
                await asyncio.sleep(0.2 * attempts)

    async def get(self, path: str) -> JSON:
        return await self.request("GET", path)

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise


def core_path(namespace: str, plural: str, name: str | None = None, sub: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def group_path(
    group: str, version: str, namespace: str, plural: str, name: str | None = None, sub: str | None = None
) -> str:
    """The path of a namespaced object, or of a cluster-scoped one when ``namespace`` is empty."""
    scope = f"namespaces/{namespace}/" if namespace else ""
    path = f"/apis/{group}/{version}/{scope}{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path
