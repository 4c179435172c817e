"""One adapter per outside system, each with a lifecycle and speaking domain words.

Every adapter connects on first use (the server may be down when the worker starts) and is
closed by `close()` or by leaving `async with adapter:`."""
from __future__ import annotations

from typing import Any, TypeVar

A = TypeVar("A", bound="Adapter")


class Adapter:
    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: A) -> A:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
