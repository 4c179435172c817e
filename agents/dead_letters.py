"""Dead letters: log each one, keep it in ScyllaDB for inspection and replay, count per reason."""
from __future__ import annotations

import collections
import logging
from datetime import datetime, timezone
from typing import Any, Optional

from faust import StreamT

from app import resources
from app.main import app, settings
from app.resources import cql
from app.retry import retry_transient
from app.topics import dead_letters
from models.dead_letter import DeadLetter

log = logging.getLogger(__name__)

# Per-worker tally since start (exported as a metric); the durable record is ScyllaDB's.
counts: collections.Counter[str] = collections.Counter()


@app.agent(dead_letters, name="dead-letters")
async def store_dead_letters(stream: StreamT) -> None:
    await resources.ready()
    async for events in stream.noack_take(settings.batch_size, within=settings.batch_wait_s):
        rows = [row for row in (to_row(e.message.value, e.message) for e in events) if row]
        await retry_transient(lambda: cql.store_dead_letters(rows), what="CQL server (dead letters)")
        for event in events:
            await stream.ack(event)


def to_row(value: Optional[bytes], message: Any) -> Optional[dict[str, Any]]:
    try:
        letter = DeadLetter.loads(value, serializer="json")
        day_of = datetime.fromtimestamp(letter.source_timestamp_ms / 1000, tz=timezone.utc)
        failed_at = datetime.fromisoformat(letter.first_failed_at)
    except Exception as exc:  # noqa: BLE001 - a broken envelope must not stop the agent
        # It cannot be dead-lettered again (that would loop): log everything about it.
        counts["malformed_envelope"] += 1
        log.error("malformed dead letter at %s/%s@%s (%s): %r", message.topic, message.partition,
                  message.offset, exc, value[:500] if value else value)
        return None
    counts[letter.reason] += 1
    log.warning("dead letter stored: reason=%s stage=%s source=%s/%s@%s error=%s", letter.reason,
                letter.stage, letter.source_topic, letter.source_partition, letter.source_offset,
                letter.error)
    return {**letter.asdict(), "day": day_of.date(), "failed_at": failed_at}
