"""Transactions: decode, validate, enrich through the account cache, record the history,
forward per category; every failure becomes a dead letter with its reason."""
from __future__ import annotations

import asyncio
from functools import partial
import logging
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, List, Optional, Sequence, Union

from faust import StreamT
from faust.types import EventT

from app import metrics, resources, stalls
from app.logs import event_fields
from app.main import app, settings
from app.resources import cql, postgres, transactions_avro
from app.retry import retry_transient, until_done
from app.tables import accounts_cache
from app.topics import dead_letters, sinks, transactions_in
from domain.dead_letters import REPLAY_HEADER, dead_letter_of, header_names
from domain.enrichment import cache_entry, enrich, is_fresh
from domain.errors import PermanentError
from domain.transactions import AVRO_MAGIC, AvroDecoder, decode, event_id_of, to_transaction
from models.transaction import EnrichedTransaction, Transaction

log = logging.getLogger(__name__)


@app.agent(transactions_in, name="transactions")
async def process_transactions(stream: StreamT) -> None:
    """`noack_take` leaves acking to us: a batch is acked only after its history rows and
    sends are done, so a crash, an outage or a shutdown mid-batch replays it (at-least-once;
    the history and the sinks are keyed so that a replay is harmless)."""
    await resources.ready()
    async for events in stalls.batches(app, stream, settings.batch_size, settings.batch_wait_s):
        await until_done(partial(process_batch, events), what="transactions batch")
        for event in events:
            await stream.ack(event)


def parse(value: Optional[bytes], avro: Optional[AvroDecoder] = None) -> Union[Transaction, PermanentError]:
    """Decode and validate one raw value; never raises for bad input."""
    try:
        return to_transaction(decode(value, avro=avro))
    except PermanentError as err:
        return err


async def process_batch(events: Sequence[EventT]) -> None:
    values = [event.message.value for event in events]
    if any(value and value[0] == AVRO_MAGIC for value in values):
        # Writer schemas of the batch's Avro values, fetched at most once per id.
        await retry_transient(lambda: transactions_avro.prefetch(values), what="Schema Registry")
    parsed = [parse(value, transactions_avro.decode) for value in values]
    await refresh_cache({tx.account_id for tx in parsed if isinstance(tx, Transaction)},
                        replayed={tx.account_id for event, tx in zip(events, parsed, strict=True)
                                  if isinstance(tx, Transaction) and is_replay(event)})

    outcomes: List[Union[EnrichedTransaction, PermanentError]] = []
    for item in parsed:
        if isinstance(item, Transaction):
            try:
                item = enrich(item, accounts_cache[item.account_id])
            except PermanentError as err:
                item = err
        outcomes.append(item)

    processed_at = datetime.now(timezone.utc)
    rows = [history_row(event, tx, processed_at) for event, tx in zip(events, outcomes, strict=True)
            if isinstance(tx, EnrichedTransaction)]
    await retry_transient(lambda: cql.record_history(rows), what="CQL server (history)")
    await asyncio.gather(*[await send(event, outcome) for event, outcome in zip(events, outcomes, strict=True)])
    metrics.transactions_batch(events, outcomes)


async def refresh_cache(account_ids: set[str], replayed: frozenset[str] | set[str] = frozenset()) -> None:
    """Fetch the accounts the cache lacks or holds stale, in one query for the batch;
    `replayed`: accounts of replayed events, for which "unknown" is asked again."""
    now = time.time()
    missing = sorted(a for a in account_ids
                     if not is_fresh(accounts_cache.get(a), now, settings.cache_ttl_s,
                                     settings.cache_negative_ttl_s, replayed=a in replayed))
    metrics.cache_lookups(hits=len(account_ids) - len(missing), misses=len(missing))
    if not missing:
        return
    found = await retry_transient(lambda: postgres.get_accounts(missing), what="PostgreSQL (accounts)")
    for account_id in missing:
        accounts_cache[account_id] = cache_entry(found.get(account_id), now)


def is_replay(event: EventT) -> bool:
    """Sent back by `replay-dead-letters` (app/replay.py), which adds REPLAY_HEADER."""
    return REPLAY_HEADER in header_names(event.message.headers)


def history_row(event: EventT, tx: EnrichedTransaction, processed_at: datetime) -> dict[str, Any]:
    message = event.message
    return {**tx.asdict(), "source_topic": message.topic, "source_partition": message.partition,
            "source_offset": message.offset, "processed_at": processed_at}


def _source_headers(event: EventT) -> List[tuple[str, bytes]]:
    message = event.message
    return [
        ("source-topic", message.topic.encode()),
        ("source-partition", str(message.partition).encode()),
        ("source-offset", str(message.offset).encode()),
    ]


async def send(event: EventT, outcome: Union[EnrichedTransaction, PermanentError]) -> Awaitable[Any]:
    """Queue the event's output; returns the future of its delivery (awaited per batch)."""
    message = event.message
    if isinstance(outcome, PermanentError):
        letter = dead_letter_of(outcome, message)
        log.warning("dead letter %s/%s@%s: %s (%s)", message.topic, message.partition, message.offset,
                    outcome.reason.value, outcome.message,
                    extra=event_fields(message.topic, message.partition, message.offset, event_id_of(message.value)))
        return await app.producer.send(dead_letters.get_topic_name(), message.key, letter.dumps(),
                                       None, None, _source_headers(event))
    return await app.producer.send(sinks[outcome.category].get_topic_name(),
                                   outcome.account_id.encode(), outcome.dumps(), None, None,
                                   _source_headers(event))
