"""Fixtures shared by unit tests."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import settings

# Properties, not timings: a first example that pays for a cold import on a loaded machine
# (362 ms once in CI against hypothesis's 200 ms default) is no failure of the property.
settings.register_profile("txpipe", deadline=None)
settings.load_profile("txpipe")


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff and retry delays of app.retry and app.batching return at once (still yielding)."""
    real = asyncio.sleep

    async def fast(_: float) -> None:
        await real(0)
    monkeypatch.setattr("app.batching.asyncio.sleep", fast)
    monkeypatch.setattr("app.retry.asyncio.sleep", fast)
