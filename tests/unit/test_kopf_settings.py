"""kopf's settings for the operator (controllers/handlers.py): what each one buys is measured by the
benchmarks (docs/benchmarks.md); these tests pin that the settings are the ones measured."""

from __future__ import annotations

import asyncio

import kopf

from mtls_operator.api.constants import LABEL_SECRET_ROLE
from mtls_operator.controllers.config import OperatorConfig
from mtls_operator.controllers.handlers import (
    LIST_CHUNK_SIZE,
    WORKER_IDLE_TIMEOUT,
    WatchOnlyDiffBase,
    WatchOnlyMemories,
    configure_kopf,
)


def configured() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorConfig())
    return settings


def test_secrets_are_listed_and_watched_with_the_server_side_label_selector() -> None:
    assert configured().watching.label_selectors["v1", "secrets"] == LABEL_SECRET_ROLE


def test_initial_lists_come_in_pages_not_as_one_response() -> None:
    assert configured().watching.chunk_size == LIST_CHUNK_SIZE
    assert 0 < LIST_CHUNK_SIZE <= 1000


def test_a_per_object_worker_does_not_outlive_its_events_by_seconds() -> None:
    settings = configured()
    assert settings.queueing.idle_timeout == WORKER_IDLE_TIMEOUT
    assert kopf.OperatorSettings().queueing.idle_timeout > WORKER_IDLE_TIMEOUT


def test_no_diff_base_is_built_or_read_for_the_watch_only_handlers() -> None:
    storage = configured().persistence.diffbase_storage
    assert isinstance(storage, WatchOnlyDiffBase)
    annotated = kopf.Body(
        {
            "metadata": {
                "name": "s",
                "annotations": {"kopf.mtls.dev/last-handled-configuration": '{"spec": {}}'},
            },
            "data": {"tls.crt": "QUJD"},
        }
    )
    assert storage.build(body=annotated) == {}
    assert storage.fetch(body=annotated) is None


def test_no_memory_is_kept_per_object_and_each_event_still_gets_the_memo() -> None:
    memories = WatchOnlyMemories()
    body = kopf.RawBody({"metadata": {"uid": "u-1", "name": "c", "namespace": "ns"}})
    memo = kopf.Memo(runtime="the runtime")
    first = asyncio.run(memories.recall(body, memobase=memo, noticed_by_listing=True))
    second = asyncio.run(memories.recall(body, memobase=memo))
    assert first is not second
    assert first.memo.runtime == "the runtime"
    assert list(memories.iter_all_memories()) == []
