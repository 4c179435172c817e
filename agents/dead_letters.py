"""Dead letters: log each one, keep it in ScyllaDB for inspection and replay, count per reason and stage."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

from faust import StreamT
from faust.types import EventT

from app import batching, metrics
from app.adapters.rows import DeadLetterRow
from app.batching import stage
from app.logs import event_fields
from app.main import app, settings
from app.retry import retry_transient
from app.topics import dead_letters
from domain.dead_letters import original_bytes
from domain.errors import PermanentError, Stage
from domain.transactions import event_id_of
from models.dead_letter import DeadLetter

AGENT = "dead-letters"

log = logging.getLogger(__name__)

# Per-worker tally since start, (reason, stage) -> count, exported as pipeline_dead_letters_total
# and shown by /stats and /status; the durable record is ScyllaDB's.
counts = metrics.dead_letters


@app.agent(dead_letters, name=AGENT)
async def store_dead_letters(stream: StreamT) -> None:
    await batching.run(app, AGENT, stream, store_batch, isolate, size=settings.batch_size,
                       within=settings.batch_wait_s)


async def store_batch(events: Sequence[EventT]) -> None:
    parsed = [to_row(e.message.value, e.message) for e in events]
    rows = [row for row in parsed if row]
    store = app.resources.dead_letter_store
    with stage(Stage.STORE):
        await retry_transient(lambda: store.store_dead_letters(rows), what="CQL server (dead letters)")
    # Counted once stored: a batch processed again in halves (app/batching.py) counts once.
    counts.update((row.reason, row.stage) if row else ("malformed_envelope", "dead_letter") for row in parsed)


async def isolate(event: EventT, error: PermanentError) -> None:
    """A letter the store refuses cannot be dead-lettered again (that could loop): it stays on
    the dead-letter topic, and this line says everything about it but its bytes."""
    message = event.message
    log.error("dead letter at %s/%s@%s (%d bytes) could not be stored: %s (%s); it stays on the "
              "topic only", message.topic, message.partition, message.offset, len(message.value or b""),
              error.reason.value, error.message, extra=event_fields(message.topic, message.partition,
                                                                    message.offset))


def to_row(value: Optional[bytes], message: Any) -> Optional[DeadLetterRow]:
    try:
        if value is None:
            raise ValueError("empty dead-letter record")
        letter = DeadLetter.loads(value, serializer="json")
        day_of = datetime.fromtimestamp(letter.source_timestamp_ms / 1000, tz=timezone.utc)
        failed_at = datetime.fromisoformat(letter.first_failed_at)
    except Exception as exc:  # noqa: BLE001 - a broken envelope must not stop the agent
        # It cannot be dead-lettered again (that would loop): log everything about it.
        log.error("malformed dead letter at %s/%s@%s (%s): %r", message.topic, message.partition,
                  message.offset, exc, value[:500] if value else value,
                  extra=event_fields(message.topic, message.partition, message.offset))
        return None
    log.warning("dead letter stored: reason=%s stage=%s source=%s/%s@%s error=%s", letter.reason,
                letter.stage, letter.source_topic, letter.source_partition, letter.source_offset,
                letter.error, extra={**event_fields(letter.source_topic, letter.source_partition,
                                                    letter.source_offset, _event_id(letter.value_b64)),
                                     "reason": letter.reason, "stage": letter.stage})
    if letter.stored_apart:
        log.warning("dead letter of %s/%s@%s: the original %s bytes (sha256 %s) are in the payload table",
                    letter.source_topic, letter.source_partition, letter.source_offset, letter.value_size,
                    letter.value_sha256)
    return DeadLetterRow(day=day_of.date(), source_topic=letter.source_topic,
                         source_partition=letter.source_partition, source_offset=letter.source_offset,
                         failed_at=failed_at, stage=letter.stage, reason=letter.reason, error=letter.error,
                         key_b64=letter.key_b64, value_b64=letter.value_b64, attempts=letter.attempts,
                         worker_id=letter.worker_id)


def _event_id(value_b64: Optional[str]) -> Optional[str]:
    """The failed event's id for the log line, when its original bytes are readable JSON."""
    return event_id_of(original_bytes(None, value_b64)[1])
