"""Retry helpers: transient errors wait (named while they last), cancellation stops."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

import pytest

from app.retry import current_outages, retry_transient
from domain.errors import TransientError

T = TypeVar("T")


def test_retry_transient_logs_once_per_change_of_state(caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    outage, _ = _failing(4, TransientError("down"), 7)
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(retry_transient(outage, what="PostgreSQL")) == 7
    messages = [r.message for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("available again" in m for m in messages) == 1
    assert current_outages() == [], "the outage is over"


def test_an_outage_is_named_while_it_is_waited_out(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    async def down_then_up() -> int:
        seen.append(current_outages())
        if len(seen) < 3:
            raise TransientError("down")
        return 1

    asyncio.run(retry_transient(down_then_up, what="PostgreSQL (accounts)", first_delay=0.001))
    assert seen == [[], ["PostgreSQL (accounts)"], ["PostgreSQL (accounts)"]]


async def _no_sleep(_: float) -> None:
    return None


def _failing(times: int, error: Exception, result: T) -> tuple[Callable[[], Awaitable[T]], list[int]]:
    """A call that raises `error` `times` times, then returns `result`; and its call log."""
    calls: list[int] = []

    async def call() -> T:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    return call, calls
