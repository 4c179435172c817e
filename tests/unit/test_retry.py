"""Retry helpers: transient errors wait, unforeseen ones retry the batch, cancellation stops."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

import pytest

from app.retry import retry_transient, until_done
from domain.errors import TransientError

T = TypeVar("T")


def test_until_done_retries_an_unforeseen_error_and_logs_it(caplog: pytest.LogCaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    flaky, calls = _failing(2, KeyError("boom"), "ok")
    with caplog.at_level(logging.ERROR):
        assert asyncio.run(until_done(flaky, what="batch")) == "ok"
    assert len(calls) == 3
    assert sum("batch failed unexpectedly" in r.message for r in caplog.records) == 2


def test_until_done_lets_cancellation_through() -> None:
    async def scenario() -> None:
        task = asyncio.ensure_future(until_done(lambda: asyncio.sleep(10), what="batch"))
        await asyncio.sleep(0)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scenario())


def test_retry_transient_logs_once_per_change_of_state(caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    outage, _ = _failing(4, TransientError("down"), 7)
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(retry_transient(outage, what="PostgreSQL")) == 7
    messages = [r.message for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("available again" in m for m in messages) == 1


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
