"""kopf's settings for the operator (controllers/handlers.py): what each one buys is measured by the
benchmarks (docs/benchmarks.md); these tests pin that the settings are the ones measured."""

from __future__ import annotations

import kopf

from mtls_operator.api.constants import LABEL_SECRET_ROLE
from mtls_operator.controllers.config import OperatorConfig
from mtls_operator.controllers.handlers import LIST_CHUNK_SIZE, WORKER_IDLE_TIMEOUT, configure_kopf


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
