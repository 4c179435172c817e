"""Kafka Connect's REST API: the account cache's Debezium connector, registered idempotently.

The connector's config is deploy/connect/accounts-cdc.json (in the source checkout: registering
is an admin step, not the worker's), with {{PLACEHOLDERS}} filled from the settings and, for the
password, from the environment (APP_POSTGRES_PASSWORD), never from the file.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

import aiohttp

from app.settings import ROOT, Settings
from domain.errors import TransientError

CONFIG_FILE = ROOT / "deploy" / "connect" / "accounts-cdc.json"
DEFAULT_NAME = "accounts-cdc"


class ConnectError(Exception):
    """Connect refused a request, or the connector failed (the message says which)."""


def connector_config(settings: Settings, *, database: Optional[str] = None, slot: Optional[str] = None,
                     topic_prefix: Optional[str] = None, path: Path = CONFIG_FILE) -> dict[str, str]:
    """The connector config for the settings' database (or `database`), placeholders filled."""
    dsn = urlsplit(settings.postgres_dsn)
    values = {
        "DATABASE_HOST": dsn.hostname or "127.0.0.1",
        "DATABASE_PORT": str(dsn.port or 5432),
        "DATABASE_USER": dsn.username or "postgres",
        "DATABASE_PASSWORD": settings.postgres_password,
        "DATABASE_NAME": database or dsn.path.lstrip("/") or "postgres",
        "TOPIC_PREFIX": topic_prefix or settings.topic(settings.cache_changes_topic_prefix),
        "SLOT_NAME": slot or settings.cache_changes_slot,
        "PARTITIONS": str(settings.topic_partitions),
        "REPLICAS": str(settings.topic_replicas),
    }
    template: dict[str, str] = json.loads(path.read_text())

    def fill(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise ConnectError(f"{path}: unknown placeholder {match.group(0)}")
            return values[match.group(1)]
        return re.sub(r"\{\{([A-Z_]+)\}\}", one, text)

    return {key: fill(value) for key, value in template.items()}


class Connect:
    """One Connect cluster; `async with Connect(url) as c`."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: Optional[aiohttp.ClientSession] = None

    async def __aenter__(self) -> Connect:
        self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self

    async def __aexit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._session is not None, "use Connect as an async context manager"
        try:
            # Connect's resources consume JSON, also where there is no body (pause, resume): 415 without it.
            data = json.dumps(body).encode() if body is not None else None
            async with self._session.request(method, self.url + path, data=data,
                                             headers={"Content-Type": "application/json"}) as answer:
                text = await answer.text()
                if answer.status == 404 and method in ("GET", "DELETE"):
                    return None
                if answer.status == 409:          # a rebalance of the Connect group: ask again
                    raise TransientError(f"Connect {method} {path}: 409 {text[:200]}")
                if answer.status >= 400:
                    raise ConnectError(f"Connect {method} {path}: {answer.status} {text[:500]}")
                return json.loads(text) if text else None
        except aiohttp.ClientError as exc:
            raise TransientError(f"Connect {method} {path}: {exc!r}") from exc

    async def put_config(self, name: str, config: Mapping[str, str]) -> None:
        """Create the connector, or update it to this config (idempotent)."""
        await self._call("PUT", f"/connectors/{name}/config", dict(config))

    async def status(self, name: str) -> Optional[dict[str, Any]]:
        return await self._call("GET", f"/connectors/{name}/status")

    async def wait_running(self, name: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Until the connector and its task are RUNNING; a FAILED task raises with its trace."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.status(name)
            except TransientError:
                last = None
            tasks = (last or {}).get("tasks") or []
            for task in tasks:
                if task.get("state") == "FAILED":
                    raise ConnectError(f"connector {name} task failed: {str(task.get('trace'))[:1500]}")
            if last and last["connector"]["state"] == "RUNNING" and tasks \
                    and all(t["state"] == "RUNNING" for t in tasks):
                return last
            await asyncio.sleep(0.5)
        raise ConnectError(f"connector {name} not RUNNING after {timeout_s:.0f}s: {last}")

    async def register(self, name: str, config: Mapping[str, str], timeout_s: float = 60.0) -> dict[str, Any]:
        await self.put_config(name, config)
        return await self.wait_running(name, timeout_s)

    async def pause(self, name: str) -> None:
        await self._call("PUT", f"/connectors/{name}/pause")

    async def resume(self, name: str) -> None:
        await self._call("PUT", f"/connectors/{name}/resume")

    async def delete(self, name: str) -> None:
        await self._call("DELETE", f"/connectors/{name}")
