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
from app.adapters.registry import SchemaRegistry
from app.avro import AvroCodec
from app.batching import Progress
from app.memo import Memo
from app.outputs import Headers, Outputs
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
        self.outputs = Outputs(self._send, dead_letter_topic=settings.topic(settings.dlq_topic),
                               max_bytes=settings.max_output_bytes, payloads=self.dead_letter_store,
                               send_now=self._send_now)
        self.progress = Progress()
        self.recent_changes = RecentChanges()     # agents/account_changes.py -> refresh_cache
        # Wait until migrations ran (retrying while a server is down); batching.run awaits it first.
        self.ready = Memo(self._migrate)

    def _send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> Any:
        """Straight to the AIOKafkaProducer of faust's producer once it runs: faust's `send` adds
        nothing this path uses (no transactions, headers already a list) but an `isinstance`
        against typing's Mapping per message, a signal and a wrapper of KafkaError, which
        `outputs.as_outage_or_refusal` classifies the same either way."""
        aiokafka_producer = getattr(self.app.producer, "_producer", None)
        if aiokafka_producer is None:        # not started (or not faust's aiokafka driver): its errors
            return self.app.producer.send(topic, key, value, None, None, headers)
        return aiokafka_producer.send(topic, value, key=key, headers=headers)

    def _send_now(self) -> None:
        """What the producer holds is sent without waiting out its linger (`producer_linger`):
        an agent calls this (through `Outputs.delivered`) once its batch's outputs are all
        queued. The linger is there to fill a produce request; after the last output of a batch
        nothing more of it is coming, and its records would wait the linger out for nothing (at
        a trickle, most of their time on the way to the broker). Every open batch of aiokafka's
        accumulator is made due (its linger 0: it stays open, a record queued before the sender
        takes it still joins it) and the sender woken; the sender still sends one request per
        broker at a time. aiokafka internals (the pinned 0.14.0): on a release without them, a
        no-op."""
        accumulator = getattr(getattr(self.app.producer, "_producer", None), "_message_accumulator", None)
        try:
            open_batches = accumulator._batches.values()  # type: ignore[union-attr]
            waiter = accumulator._waiter_future  # type: ignore[union-attr]
        except AttributeError:
            return
        for batches in open_batches:
            for batch in batches:
                batch._linger_time = 0
        if not waiter.done():
            waiter.set_result(None)

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
