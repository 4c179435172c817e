"""Clicks: Confluent-framed Avro in; a log line, a history row and a per-url count each;
undecodable values dead-lettered with their reason."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Awaitable, List, Optional, Sequence, Union

from faust import StreamT
from faust.types import EventT

from app import batching
from app.adapters.rows import ClickRow
from app.batching import stage
from app.main import app, settings
from app.retry import retry_transient
from app.topics import clicks_in, dead_letters
from domain.avro import schema_id_of
from domain.clicks import Click, count_by_url, log_line, to_click
from domain.errors import PermanentError, Stage, internal_error

AGENT = "clicks"
click_log = logging.getLogger("clicks")     # one JSON line per click: its own logger, easy to route


@app.agent(clicks_in, name=AGENT)
async def process_clicks(stream: StreamT) -> None:
    """A batch is acked only after its rows, counts and dead letters are stored (at-least-once)."""
    await dead_letters.maybe_declare()
    await batching.run(app, AGENT, stream, process_batch, isolate, size=settings.batch_size,
                       within=settings.batch_wait_s)


def parse(value: Optional[bytes], now: datetime) -> Union[Click, PermanentError]:
    try:
        return to_click(app.resources.clicks_avro.decode(value), rules=settings.time_rules, now=now)
    except PermanentError as err:
        return err
    except Exception as exc:  # noqa: BLE001 - isolated to this event, see app/batching.py
        return internal_error(Stage.DECODE, exc)


async def process_batch(events: Sequence[EventT]) -> None:
    # Unknown schema ids of the whole batch in one registry round trip, before any decode.
    values = [event.message.value for event in events]
    with stage(Stage.DECODE):
        await retry_transient(lambda: app.resources.clicks_avro.prefetch(values), what="Schema Registry")
    processed_at = datetime.now(timezone.utc)
    outcomes = [parse(value, processed_at) for value in values]
    rows, clicks = [], []
    for event, outcome in zip(events, outcomes, strict=True):
        if isinstance(outcome, Click):
            message = event.message
            click_log.info("%s", log_line(outcome, topic=message.topic, partition=message.partition,
                                          offset=message.offset))
            rows.append(history_row(event, outcome, processed_at))
            clicks.append(outcome)
    store = app.resources.clicks_store
    with stage(Stage.STORE):
        await retry_transient(lambda: store.record_history(rows), what="CQL server (click history)")
        counts = count_by_url(clicks)
        await retry_transient(lambda: store.add_counts(counts), what="CQL server (click counts)")
    outputs = app.resources.outputs
    with stage(Stage.FORWARD):
        letters: List[Awaitable[Any]] = [await outputs.dead_letter(event.message, outcome, agent=AGENT)
                                         for event, outcome in zip(events, outcomes, strict=True)
                                         if isinstance(outcome, PermanentError)]
        await outputs.delivered(letters)


async def isolate(event: EventT, error: PermanentError) -> None:
    outputs = app.resources.outputs
    await outputs.delivered([await outputs.dead_letter(event.message, error, agent=AGENT)])


def history_row(event: EventT, click: Click, processed_at: datetime) -> ClickRow:
    message = event.message
    return ClickRow(user_id=click.user_id, clicked_at=click.clicked_at, url=click.url,
                    schema_id=schema_id_of(message.value), source_topic=message.topic,
                    source_partition=message.partition, source_offset=message.offset,
                    processed_at=processed_at)
