"""The worker's adapters: created here (no connection at import), started lazily on first
use, migrated once per worker start, closed when the app stops."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from mode import Service

from app.adapters.clicks import ClickStore
from app.adapters.cql import Cql
from app.adapters.postgres import Postgres
from app.adapters.registry import SchemaRegistry
from app.avro import AvroCodec
from app.batching import Progress
from app.main import app, settings
from app.outputs import Headers, Outputs
from app.retry import retry_transient
from models.avro_schemas import RAW_TRANSACTION, USER_CLICK

log = logging.getLogger(__name__)

postgres = Postgres(settings)
cql = Cql(settings)
clicks_store = ClickStore(cql)
registry = SchemaRegistry(settings)
# Avro codecs, one per schema the app reads; they share the registry's cache of schemas by id.
clicks_avro = AvroCodec(registry, USER_CLICK)
transactions_avro = AvroCodec(registry, RAW_TRANSACTION)



def _send(topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> Any:
    return app.producer.send(topic, key, value, None, None, headers)


# The one output path of every agent, and the batches they have in progress.
outputs = Outputs(_send, dead_letter_topic=settings.topic(settings.dlq_topic),
                  max_bytes=settings.max_output_bytes, payloads=cql)
progress = Progress()

_ready: "asyncio.Future[None] | None" = None


async def ready() -> None:
    """Wait until migrations ran (retrying while a server is down); agents call this first."""
    global _ready
    if _ready is None:
        _ready = asyncio.ensure_future(_migrate())
    await asyncio.shield(_ready)


async def _migrate() -> None:
    if not settings.migrate_on_start:
        return
    await retry_transient(postgres.migrate, what="PostgreSQL (migrations)")
    await retry_transient(cql.migrate, what="CQL server (migrations)")


@app.service
class Resources(Service):
    """Closes the adapters when the worker stops."""

    async def on_stop(self) -> None:
        await postgres.close()
        await cql.close()
        await registry.close()
