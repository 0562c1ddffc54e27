"""Watches on the bench cluster in background threads, so the bench sees what the operator did
without polling objects.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from control_plane import GROUP, VERSION

if TYPE_CHECKING:
    from control_plane import Cluster


class Watcher:
    """A watch on one namespaced resource in a background thread, calling `on_event(type, obj, t)`.

    `t` is time.monotonic() when the event was read. Starts from the resourceVersion of a list made in
    `start()`, so nothing created after `start()` returns is missed; reconnects from the last version.
    Custom objects arrive as dicts; core and apps objects are asked for as raw JSON and parsed to dicts.
    """

    def __init__(
        self,
        list_fn: Callable[..., Any],
        args: Sequence[Any],
        on_event: Callable[[str, dict[str, Any], float], None],
    ) -> None:
        self.list_fn = list_fn
        self.args = list(args)
        self.on_event = on_event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-watch")
        self._rv = ""
        self.error: BaseException | None = None
        self.events = 0

    def start(self) -> Watcher:
        listed = self._list(limit=1)
        self._rv = listed["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def _list(self, **kwargs: Any) -> dict[str, Any]:
        resp = self.list_fn(*self.args, _preload_content=False, **kwargs)
        try:
            result: dict[str, Any] = json.loads(resp.data)
        finally:
            resp.release_conn()
        return result

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.list_fn(
                    *self.args,
                    watch=True,
                    resource_version=self._rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=60,
                    _preload_content=False,
                    _request_timeout=(10, 90),
                )
                try:
                    buf = b""
                    for chunk in resp.stream(65536, decode_content=False):
                        if self._stop.is_set():
                            return
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        t = time.monotonic()
                        for raw in lines:
                            if raw.strip():
                                self._handle(json.loads(raw), t)
                finally:
                    # Never hand a half-read connection back to the pool the create calls share.
                    resp.close()
                    resp.release_conn()
            except Exception as exc:  # a broken watch is retried; a repeated failure is reported
                if self._stop.is_set():
                    return
                self.error = exc
                time.sleep(0.5)

    def _handle(self, event: dict[str, Any], t: float) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:  # too old: restart from now (no events expected to be lost here)
                self._rv = self._list(limit=1)["metadata"]["resourceVersion"]
            return
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self._rv = rv
        if kind == "BOOKMARK":
            return
        self.events += 1
        self.on_event(str(kind), obj, t)

    def stop(self) -> None:
        self._stop.set()


def watch_custom(c: Cluster, namespace: str, plural: str, on_event: Callable[..., None]) -> Watcher:
    return Watcher(
        c.custom.list_namespaced_custom_object, [GROUP, VERSION, namespace, plural], on_event
    ).start()


def watch_secrets(c: Cluster, namespace: str, on_event: Callable[..., None]) -> Watcher:
    return Watcher(c.core.list_namespaced_secret, [namespace], on_event).start()


def watch_deployments(c: Cluster, namespace: str, on_event: Callable[..., None]) -> Watcher:
    return Watcher(c.apps.list_namespaced_deployment, [namespace], on_event).start()
