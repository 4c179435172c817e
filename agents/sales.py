"""Sales orders: a batch of orders in, their totals upserted into PostgreSQL, bad ones dead-lettered."""
from __future__ import annotations

import asyncio
import collections
import logging
from decimal import Decimal
from typing import Any, Awaitable, Callable, List, Sequence

from faust import StreamT
from faust.types import EventT

from app import stalls
from app.main import app, settings
from app.resources import postgres, ready
from app.retry import retry_transient
from app.topics import dead_letters, sales_orders
from domain.dead_letters import dead_letter_of
from domain.errors import PermanentError
from domain.sales import order_totals, parse_order
from models.sales_order import SalesOrder

log = logging.getLogger(__name__)

SaveTotals = Callable[[Sequence[tuple[int, Decimal]]], Awaitable[int]]
Rejected = List[tuple[EventT, PermanentError]]
SendDeadLetters = Callable[[Rejected], Awaitable[None]]
WHAT = "PostgreSQL (sales totals)"


@app.agent(sales_orders, name="sales")
async def process_sales_orders(stream: StreamT) -> None:
    """Each batch: validate every order, upsert the totals in one statement (retrying while
    PostgreSQL is away), dead-letter the bad orders, and only then ack the batch.

    `noack_take`, not `take`: `take` acks in a `finally`, even when the body raised or was
    cancelled. Here a batch that is not committed is never acked, so a crash, a shutdown
    during an outage or a rebalance replays it, and the upsert makes the replay harmless.
    """
    await dead_letters.maybe_declare()
    await ready()
    async for events in stalls.batches(app, stream, settings.sales_batch_size, settings.sales_batch_wait_s):
        await handle_batch(events, postgres.save_order_totals, send_dead_letters)
        for event in events:
            await stream.ack(event)


async def handle_batch(events: Sequence[EventT], save: SaveTotals, send: SendDeadLetters) -> None:
    """Everything a batch needs before it may be acked. Never raises for bad input;
    raises only CancelledError (the batch then stays unacked)."""
    orders: list[tuple[EventT, SalesOrder]] = []
    rejected: Rejected = []
    for event in events:
        try:
            orders.append((event, parse_order(event.message.value)))
        except PermanentError as err:
            rejected.append((event, err))
    rows = order_totals(order for _, order in orders)
    try:
        await retry_transient(lambda: save(rows), what=WHAT)
    except PermanentError as err:
        log.warning("%s refused a batch of %d totals (%s); saving them one by one", WHAT, len(rows), err)
        rejected.extend(await _save_one_by_one(orders, rows, save))
    if rejected:
        reasons = collections.Counter(err.reason.value for _, err in rejected)
        log.warning("sales: %d of %d orders dead-lettered: %s", len(rejected), len(events),
                    ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common()))
        await send(rejected)


async def _save_one_by_one(orders: Sequence[tuple[EventT, SalesOrder]],
                           rows: Sequence[tuple[int, Decimal]], save: SaveTotals) -> Rejected:
    """The rare path after the database refused a batch's data: find the refused order(s)."""
    refused: Rejected = []
    for row in rows:
        try:
            await retry_transient(lambda row=row: save([row]), what=WHAT)  # type: ignore[misc]
        except PermanentError as err:
            refused.extend((event, err) for event, order in orders if order.order_number == row[0])
    return refused


async def send_dead_letters(rejected: Rejected) -> None:
    """Dead letters on the broker (the futures awaited), before the batch is acked."""
    producer = app.producer
    topic = dead_letters.get_topic_name()
    pending: List[Awaitable[Any]] = []
    for event, err in rejected:
        m = event.message
        letter = dead_letter_of(err, m)
        pending.append(await producer.send(topic, m.key, letter.dumps(), None, None, None))
    await asyncio.gather(*pending)
