"""Fixtures shared by unit tests."""
from __future__ import annotations

import asyncio

import pytest


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff and retry delays of app.retry and app.batching return at once (still yielding)."""
    real = asyncio.sleep

    async def fast(_: float) -> None:
        await real(0)
    monkeypatch.setattr("app.batching.asyncio.sleep", fast)
    monkeypatch.setattr("app.retry.asyncio.sleep", fast)
