"""A coroutine's result shared by concurrent callers: computed once, or again once it is older
than `max_age_s` (and the previous round has finished)."""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class Memo(Generic[T]):
    def __init__(self, compute: Callable[[], Awaitable[T]], max_age_s: Optional[float] = None) -> None:
        self.compute = compute
        self.max_age_s = max_age_s
        self._round: Optional[tuple[float, "asyncio.Future[T]"]] = None

    async def __call__(self) -> T:
        now = time.monotonic()
        if self._round is None or (self.max_age_s is not None and now - self._round[0] > self.max_age_s
                                   and self._round[1].done()):
            self._round = (now, asyncio.ensure_future(self.compute()))
        return await asyncio.shield(self._round[1])
