"""The envelope of a dead letter: why an event failed and everything needed to replay it."""
from __future__ import annotations

from typing import Optional

import faust


class DeadLetter(faust.Record, serializer="json"):
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp_ms: int      # the record's Kafka timestamp: stable across replays
    key_b64: Optional[str]        # original key bytes, base64 (None when the record had none)
    value_b64: Optional[str]      # original value bytes, base64, exactly as consumed
    stage: str                    # decode | validate | enrich | ...
    reason: str                   # a code from domain.errors.Reason
    error: str                    # human-readable message
    first_failed_at: str          # ISO-8601 UTC
    attempts: int
    worker_id: str
    # When the letter with the original bytes would be too large for the topic: the bytes are
    # in the dead-letter store's payload table instead (key_b64/value_b64 are then None).
    stored_apart: bool = False
    value_size: Optional[int] = None
    value_sha256: Optional[str] = None
