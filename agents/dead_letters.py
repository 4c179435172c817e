"""Dead letters: log each one, keep it in ScyllaDB for inspection and replay, count per reason and stage."""
from __future__ import annotations

import logging
from functools import partial
from datetime import datetime, timezone
from typing import Any, Optional

from faust import StreamT

from app import metrics, resources, stalls
from app.logs import event_fields
from app.main import app, settings
from app.resources import cql
from app.retry import retry_transient, until_done
from app.topics import dead_letters
from domain.dead_letters import original_bytes
from domain.transactions import event_id_of
from models.dead_letter import DeadLetter

log = logging.getLogger(__name__)

# Per-worker tally since start, (reason, stage) -> count, exported as pipeline_dead_letters_total
# and shown by /stats and /status; the durable record is ScyllaDB's.
counts = metrics.dead_letters


@app.agent(dead_letters, name="dead-letters")
async def store_dead_letters(stream: StreamT) -> None:
    await resources.ready()
    async for events in stalls.batches(app, stream, settings.batch_size, settings.batch_wait_s):
        metrics.batch_taken("dead-letters", len(events))
        rows = [row for row in (to_row(e.message.value, e.message) for e in events) if row]
        await until_done(partial(store, rows), what="dead-letters batch")
        for event in events:
            await stream.ack(event)


async def store(rows: list[dict[str, Any]]) -> None:
    await retry_transient(lambda: cql.store_dead_letters(rows), what="CQL server (dead letters)")


def to_row(value: Optional[bytes], message: Any) -> Optional[dict[str, Any]]:
    try:
        if value is None:
            raise ValueError("empty dead-letter record")
        letter = DeadLetter.loads(value, serializer="json")
        day_of = datetime.fromtimestamp(letter.source_timestamp_ms / 1000, tz=timezone.utc)
        failed_at = datetime.fromisoformat(letter.first_failed_at)
    except Exception as exc:  # noqa: BLE001 - a broken envelope must not stop the agent
        # It cannot be dead-lettered again (that would loop): log everything about it.
        counts[("malformed_envelope", "dead_letter")] += 1
        log.error("malformed dead letter at %s/%s@%s (%s): %r", message.topic, message.partition,
                  message.offset, exc, value[:500] if value else value,
                  extra=event_fields(message.topic, message.partition, message.offset))
        return None
    counts[(letter.reason, letter.stage)] += 1
    log.warning("dead letter stored: reason=%s stage=%s source=%s/%s@%s error=%s", letter.reason,
                letter.stage, letter.source_topic, letter.source_partition, letter.source_offset,
                letter.error, extra={**event_fields(letter.source_topic, letter.source_partition,
                                                    letter.source_offset, _event_id(letter.value_b64)),
                                     "reason": letter.reason, "stage": letter.stage})
    return {**letter.asdict(), "day": day_of.date(), "failed_at": failed_at}


def _event_id(value_b64: Optional[str]) -> Optional[str]:
    """The failed event's id for the log line, when its original bytes are readable JSON."""
    return event_id_of(original_bytes(None, value_b64)[1])
