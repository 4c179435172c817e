"""The adapters with counters the tests assert on (round trips, HTTP requests): kept out of
the production classes."""
from __future__ import annotations

from typing import Any, Optional

from app.adapters.postgres import Postgres
from app.adapters.registry import SchemaRegistry


class CountingPostgres(Postgres):
    """Postgres that counts the connections it runs work on (one per round trip)."""

    queries = 0

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return await super().run(*args, **kwargs)


class CountingRegistry(SchemaRegistry):
    """SchemaRegistry that counts the HTTP requests it sends."""

    requests = 0

    async def _request(self, method: str, path: str, json: Optional[dict[str, Any]] = None) -> tuple[int, Any]:
        self.requests += 1
        return await super()._request(method, path, json)
