"""The worker's adapters and what its agents share, owned by one Service of the App
(`app.resources`): created with the App without connecting, connected by each adapter on first
use, migrated once per start (`ready`), closed when the App stops. The App starts it before
its agents and stops it after them (app/main.py)."""
from __future__ import annotations

import logging
from typing import Any

from mode import Service

from app.adapters.clicks import ClickStore
from app.adapters.cql import Cql
from app.adapters.dead_letter_store import DeadLetterStore
from app.adapters.history import HistoryStore
from app.adapters.postgres import Postgres
from app.adapters.producer import Producer
from app.adapters.registry import SchemaRegistry
from app.avro import AvroCodec
from app.batching import Progress
from app.memo import Memo
from app.outputs import Outputs
from app.retry import retry_transient
from app.settings import Settings
from domain.changes import RecentChanges
from models.avro_schemas import RAW_TRANSACTION, USER_CLICK

log = logging.getLogger(__name__)


class Resources(Service):
    def __init__(self, app: Any, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.settings = settings
        self.postgres = Postgres(settings)
        self.cql = Cql(settings)
        # One store per group of tables, all on the one CQL session.
        self.history = HistoryStore(self.cql)
        self.dead_letter_store = DeadLetterStore(self.cql)
        self.clicks_store = ClickStore(self.cql)
        self.registry = SchemaRegistry(settings)
        # Avro codecs, one per schema the app reads; they share the registry's cache of schemas by id.
        self.clicks_avro = AvroCodec(self.registry, USER_CLICK)
        self.transactions_avro = AvroCodec(self.registry, RAW_TRANSACTION)
        # The one output path of every agent, and the batches they have in progress.
        self.producer = Producer(app)
        self.outputs = Outputs(self.producer.send, dead_letter_topic=settings.topic(settings.dlq_topic),
                               max_bytes=settings.max_output_bytes, payloads=self.dead_letter_store,
                               send_now=self.producer.send_now)
        self.progress = Progress()
        self.recent_changes = RecentChanges()     # agents/account_changes.py -> refresh_cache
        # Wait until migrations ran (retrying while a server is down); batching.run awaits it first.
        self.ready = Memo(self._migrate)

    async def _migrate(self) -> None:
        if not self.settings.migrate_on_start:
            return
        await retry_transient(self.postgres.migrate, what="PostgreSQL (migrations)")
        await retry_transient(self.cql.migrate, what="CQL server (migrations)")

    async def __aenter__(self) -> Resources:     # a command's `async with app.resources as r`
        await super().__aenter__()
        return self

    async def on_stop(self) -> None:
        await self.postgres.close()
        await self.cql.close()
        await self.registry.close()
