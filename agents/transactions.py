"""Transactions: raw events in, validated events out to a sink topic per category."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, List

from faust import StreamT
from faust.types import EventT

from app.main import app, settings
from app.topics import dead_letters, declare_outputs, sinks, transactions_in
from domain.dead_letters import dead_letter
from domain.errors import PermanentError
from domain.transactions import decode, to_transaction

log = logging.getLogger(__name__)


def _source_headers(event: EventT) -> List[tuple[str, bytes]]:
    message = event.message
    return [
        ("source-topic", message.topic.encode()),
        ("source-partition", str(message.partition).encode()),
        ("source-offset", str(message.offset).encode()),
    ]


@app.agent(transactions_in, name="transactions")
async def process_transactions(stream: StreamT) -> None:
    """Each batch: decode + validate every event, forward or dead-letter it, then ack all.

    `noack_take` leaves acking to us: an event is acked only after its output is on the
    broker, so a crash or a cancelled batch is consumed again (at-least-once).
    """
    await declare_outputs()
    producer = app.producer
    async for events in stream.noack_take(settings.batch_size, within=settings.batch_wait_s):
        pending: List[Awaitable[Any]] = []
        for event in events:
            message = event.message
            try:
                tx = to_transaction(decode(message.value))
            except PermanentError as err:
                letter = dead_letter(err, topic=message.topic, partition=message.partition,
                                     offset=message.offset, key=message.key, value=message.value)
                log.warning("dead letter %s/%s@%s: %s (%s)", message.topic, message.partition,
                            message.offset, err.reason.value, err.message)
                pending.append(await producer.send(dead_letters.get_topic_name(), message.key,
                                                   letter.dumps(), None, None, _source_headers(event)))
                continue
            pending.append(await producer.send(sinks[tx.category].get_topic_name(),
                                               tx.account_id.encode(), tx.dumps(), None, None,
                                               _source_headers(event)))
        await asyncio.gather(*pending)
        for event in events:
            await stream.ack(event)
