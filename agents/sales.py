"""Sales orders: a batch of orders in, their totals upserted into PostgreSQL, bad ones dead-lettered."""
from __future__ import annotations

import collections
import logging
from datetime import datetime, timezone
from decimal import Decimal
from functools import partial
from typing import Awaitable, Callable, List, Sequence

from faust import StreamT
from faust.types import EventT

from app import batching
from app.batching import stage
from app.main import app, settings
from app.retry import retry_transient
from app.topics import dead_letters, sales_orders
from domain.errors import PermanentError, Stage, internal_error
from domain.parsing import DEFAULT_TIME_RULES, TimeRules
from domain.sales import latest_rows, parse_order_row

log = logging.getLogger(__name__)

AGENT = "sales"
SaveTotals = Callable[[Sequence[tuple[int, Decimal]]], Awaitable[int]]
Rejected = List[tuple[EventT, PermanentError]]
SendDeadLetters = Callable[[Rejected], Awaitable[None]]
WHAT = "PostgreSQL (sales totals)"


@app.agent(sales_orders, name=AGENT)
async def process_sales_orders(stream: StreamT) -> None:
    """Each batch: validate every order, upsert the totals in one statement (retrying while
    PostgreSQL is away), dead-letter the bad orders, and only then ack the batch.

    `noack_take`, not `take`: `take` acks in a `finally`, even when the body raised or was
    cancelled. Here a batch that is not committed is never acked, so a crash, a shutdown
    during an outage or a rebalance replays it, and the upsert makes the replay harmless.
    A batch the database refuses is split by app/batching.py down to the refused order.
    Batches are filled (or time out): the orders go to PostgreSQL in upserts of 100.
    """
    await dead_letters.maybe_declare()
    handle = partial(handle_batch, save=app.resources.postgres.save_order_totals, send=send_dead_letters,
                     rules=settings.time_rules)
    await batching.run(app, AGENT, stream, handle, isolate, size=settings.sales_batch_size,
                       within=settings.sales_batch_wait_s, fill=True)


def parse(event: EventT, rules: TimeRules, now: datetime) -> tuple[int, Decimal] | PermanentError:
    """The order's (order_number, total), or why it is refused."""
    try:
        return parse_order_row(event.message.value, rules=rules, now=now)
    except PermanentError as err:
        return err
    except Exception as exc:  # noqa: BLE001 - isolated to this event, see app/batching.py
        return internal_error(Stage.VALIDATE, exc)


async def handle_batch(events: Sequence[EventT], *, save: SaveTotals, send: SendDeadLetters,
                       rules: TimeRules = DEFAULT_TIME_RULES) -> None:
    """Everything a batch needs before it may be acked. Never raises for bad input; a refusal
    of the database (PermanentError) or an unforeseen error is left to app/batching.py."""
    now = datetime.now(timezone.utc)
    totals: list[tuple[int, Decimal]] = []
    rejected: Rejected = []
    for event in events:
        outcome = parse(event, rules, now)
        if isinstance(outcome, PermanentError):
            rejected.append((event, outcome))
        else:
            totals.append(outcome)
    rows = latest_rows(totals)
    with stage(Stage.STORE):
        await retry_transient(lambda: save(rows), what=WHAT)
    if rejected:
        reasons = collections.Counter(err.reason.value for _, err in rejected)
        log.warning("sales: %d of %d orders dead-lettered: %s", len(rejected), len(events),
                    ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common()))
        with stage(Stage.FORWARD):
            await send(rejected)


async def send_dead_letters(rejected: Rejected) -> None:
    """Dead letters on the broker (the futures awaited), before the batch is acked."""
    outputs = app.resources.outputs
    await outputs.delivered([await outputs.dead_letter(event.message, err, agent=AGENT)
                             for event, err in rejected])


async def isolate(event: EventT, error: PermanentError) -> None:
    await send_dead_letters([(event, error)])
