"""Confluent-compatible Schema Registry over aiohttp: schemas by id (cached), register, look up."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Optional
from urllib.parse import quote

import aiohttp

from app.adapters import Adapter
from app.settings import Settings
from domain.errors import TransientError


log = logging.getLogger(__name__)
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(Exception):
    """The registry answered, and retrying the same request cannot help; the message says why."""


class SchemaNotRegistered(RegistryError):
    pass


class IncompatibleSchema(RegistryError):
    pass


class SchemaRegistry(Adapter):
    """One aiohttp session per worker, opened on first use and closed with the worker.

    A schema id names immutable content, so `schemas()` asks for each id once per process
    and keeps the answer; concurrent callers asking for the same id share one request.
    Outages (connection refused, timeout, 5xx, 429) raise TransientError.
    """

    def __init__(self, settings: Settings, *, concurrency: int = 8) -> None:
        self.url = settings.schema_registry_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=settings.schema_registry_timeout_s)
        self.auth = (aiohttp.BasicAuth(settings.schema_registry_username, settings.schema_registry_password)
                     if settings.schema_registry_username else None)
        self._session: Optional[aiohttp.ClientSession] = None
        self._by_id: dict[int, str] = {}     # 404s are not kept here: the codec remembers them a while
        self._in_flight: dict[int, asyncio.Future[Optional[str]]] = {}
        self._slots = asyncio.Semaphore(concurrency)

    # --- reading --------------------------------------------------------------------------

    async def schemas(self, ids: Iterable[int]) -> dict[int, Optional[str]]:
        """The schema text for each id, None for ids the registry does not have."""
        wanted = set(ids)
        found: dict[int, Optional[str]] = {i: self._by_id[i] for i in wanted if i in self._by_id}
        todo = sorted(wanted - found.keys())
        if todo:
            results = await asyncio.gather(*(self._fetch_once(i) for i in todo), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                # A consumer cannot dead-letter a value for the registry's fault (refused
                # credentials, odd answers): it waits, with a warning, like for an outage.
                if isinstance(errors[0], RegistryError):
                    raise TransientError(str(errors[0])) from errors[0]
                raise errors[0]
            found.update((i, r) for i, r in zip(todo, results, strict=True) if not isinstance(r, BaseException))
        return found

    async def _fetch_once(self, schema_id: int) -> Optional[str]:
        pending = self._in_flight.get(schema_id)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(schema_id))
            self._in_flight[schema_id] = pending
            pending.add_done_callback(lambda _f: self._in_flight.pop(schema_id, None))
        return await asyncio.shield(pending)

    async def _fetch(self, schema_id: int) -> Optional[str]:
        status, body = await self._request("GET", f"/schemas/ids/{schema_id}")
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict) or "schema" not in body:
            raise RegistryError(f"schema registry: GET /schemas/ids/{schema_id} answered {status}: {body}")
        if body.get("schemaType", "AVRO") != "AVRO":
            raise RegistryError(f"schema id {schema_id} is a {body['schemaType']} schema, not Avro")
        self._by_id[schema_id] = text = str(body["schema"])
        return text

    # --- writing --------------------------------------------------------------------------

    async def register(self, subject: str, schema: str) -> int:
        """Register `schema` under `subject` (idempotent: the same schema keeps its id)."""
        status, body = await self._request("POST", f"/subjects/{quote(subject, safe='')}/versions",
                                           {"schema": schema})
        if status == 200:
            schema_id = int(body["id"])
            self._by_id.setdefault(schema_id, schema)
            return schema_id
        if status == 409:
            raise IncompatibleSchema(
                f"schema registry refused the schema for subject {subject!r}: it is incompatible with the "
                f"version(s) already registered (compatibility {await self.compatibility_level(subject)}): "
                f"{_message(body)}")
        if status == 422:
            raise RegistryError(f"schema registry rejected the schema for subject {subject!r} as invalid: "
                                f"{_message(body)}")
        raise RegistryError(f"schema registry: registering under {subject!r} answered {status}: "
                            f"{_message(body)}")

    async def lookup(self, subject: str, schema: str) -> int:
        """The id of `schema` if it is registered under `subject`; never registers it."""
        status, body = await self._request("POST", f"/subjects/{quote(subject, safe='')}", {"schema": schema})
        if status == 200:
            schema_id = int(body["id"])
            self._by_id.setdefault(schema_id, schema)
            return schema_id
        if status == 404:
            code = body.get("error_code") if isinstance(body, dict) else None
            what = "no subject" if code == 40401 else "this schema is not a registered version of subject"
            raise SchemaNotRegistered(
                f"{what} {subject!r} in the schema registry, and auto-registration is off "
                "(APP_SCHEMA_AUTO_REGISTER=false, the production default): register the schema first")
        raise RegistryError(f"schema registry: looking up {subject!r} answered {status}: {_message(body)}")

    async def compatibility_level(self, subject: str) -> str:
        """The subject's compatibility level, else the registry-wide one ('?' when unknown)."""
        for path in (f"/config/{quote(subject, safe='')}", "/config"):
            try:
                status, body = await self._request("GET", path)
            except TransientError:
                return "?"
            level = body.get("compatibilityLevel") if isinstance(body, dict) and status == 200 else None
            if level and level != "NONE":
                return str(level)
        return "NONE"

    async def delete_subject(self, subject: str) -> None:
        await self._request("DELETE", f"/subjects/{quote(subject, safe='')}")

    async def ping(self) -> None:
        """One cheap request (the registry-wide compatibility level), for readiness probes; raises
        TransientError when the registry is unreachable, RegistryError when it refuses us."""
        status, body = await self._request("GET", "/config")
        if status != 200:
            raise RegistryError(f"schema registry: GET /config answered {status}: {_message(body)}")

    # --- plumbing -------------------------------------------------------------------------

    async def _request(self, method: str, path: str,
                       json: Optional[dict[str, Any]] = None) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout, auth=self.auth,
                                                  headers={"Accept": CONTENT_TYPE})
        try:
            async with self._slots:
                headers = {"Content-Type": CONTENT_TYPE} if json is not None else None
                async with self._session.request(method, self.url + path, json=json, headers=headers) as resp:
                    try:
                        body = await resp.json(content_type=None)
                    except ValueError:
                        body = await resp.text()
                    status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise TransientError(f"schema registry {self.url}: {type(exc).__name__}: {exc}") from exc
        if status >= 500 or status == 429:
            raise TransientError(f"schema registry {self.url}: {method} {path} answered {status}")
        if status in (401, 403):
            raise RegistryError(f"schema registry {self.url} refused the credentials ({status}); check "
                                "APP_SCHEMA_REGISTRY_USERNAME and APP_SCHEMA_REGISTRY_PASSWORD")
        return status, body

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _message(body: Any) -> str:
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)[:500]
