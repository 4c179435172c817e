"""Clicks: Confluent-framed Avro in; a log line, a history row and a per-url count each;
undecodable values dead-lettered with their reason."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Awaitable, List, Optional, Sequence, Union

from faust import StreamT
from faust.types import EventT

from app import stalls
from app.main import app, settings
from app.resources import clicks_avro, clicks_store, ready
from app.retry import retry_transient
from app.topics import clicks_in, dead_letters
from domain.avro import schema_id_of
from domain.clicks import Click, count_by_url, log_line, to_click
from domain.dead_letters import dead_letter_of
from domain.errors import PermanentError

log = logging.getLogger(__name__)
click_log = logging.getLogger("clicks")     # one JSON line per click: its own logger, easy to route


@app.agent(clicks_in, name="clicks")
async def process_clicks(stream: StreamT) -> None:
    """A batch is acked only after its rows, counts and dead letters are stored (at-least-once)."""
    await dead_letters.maybe_declare()
    await ready()
    async for events in stalls.batches(app, stream, settings.batch_size, settings.batch_wait_s):
        await process_batch(events)
        for event in events:
            await stream.ack(event)


def parse(value: Optional[bytes]) -> Union[Click, PermanentError]:
    try:
        return to_click(clicks_avro.decode(value))
    except PermanentError as err:
        return err


async def process_batch(events: Sequence[EventT]) -> None:
    # Unknown schema ids of the whole batch in one registry round trip, before any decode.
    values = [event.message.value for event in events]
    await retry_transient(lambda: clicks_avro.prefetch(values), what="Schema Registry")
    outcomes = [parse(value) for value in values]
    processed_at = datetime.now(timezone.utc)
    rows, clicks = [], []
    for event, outcome in zip(events, outcomes, strict=True):
        if isinstance(outcome, Click):
            message = event.message
            click_log.info("%s", log_line(outcome, topic=message.topic, partition=message.partition,
                                          offset=message.offset))
            rows.append(history_row(event, outcome, processed_at))
            clicks.append(outcome)
    await retry_transient(lambda: clicks_store.record_history(rows), what="CQL server (click history)")
    counts = count_by_url(clicks)
    await retry_transient(lambda: clicks_store.add_counts(counts), what="CQL server (click counts)")
    letters = [await send_dead_letter(event, outcome) for event, outcome in zip(events, outcomes, strict=True)
               if isinstance(outcome, PermanentError)]
    await asyncio.gather(*letters)


def history_row(event: EventT, click: Click, processed_at: datetime) -> dict[str, Any]:
    message = event.message
    return {"user_id": click.user_id, "clicked_at": click.clicked_at, "url": click.url,
            "schema_id": schema_id_of(message.value), "source_topic": message.topic,
            "source_partition": message.partition, "source_offset": message.offset,
            "processed_at": processed_at}


async def send_dead_letter(event: EventT, error: PermanentError) -> Awaitable[Any]:
    message = event.message
    letter = dead_letter_of(error, message)
    log.warning("dead letter %s/%s@%s: %s (%s)", message.topic, message.partition, message.offset,
                error.reason.value, error.message)
    headers: List[tuple[str, bytes]] = [("source-topic", message.topic.encode()),
                                        ("source-partition", str(message.partition).encode()),
                                        ("source-offset", str(message.offset).encode())]
    return await app.producer.send(dead_letters.get_topic_name(), message.key, letter.dumps(),
                                   None, None, headers)
