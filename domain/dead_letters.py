"""Build dead-letter envelopes: the reason and everything needed to replay the event."""
from __future__ import annotations

import base64
import os
import socket
from datetime import datetime, timezone
from typing import Optional

from domain.errors import PermanentError
from models.dead_letter import DeadLetter

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
# The header a replayed message carries: the source position of the dead letter it replays.
REPLAY_HEADER = "replay-of"


def _b64(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else base64.b64encode(data).decode("ascii")


def dead_letter(error: PermanentError, *, topic: str, partition: int, offset: int, timestamp: float,
                key: Optional[bytes], value: Optional[bytes], attempts: int = 1,
                first_failed_at: Optional[datetime] = None) -> DeadLetter:
    return DeadLetter(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        source_timestamp_ms=int(timestamp * 1000),
        key_b64=_b64(key),
        value_b64=_b64(value),
        stage=error.stage.value,
        reason=error.reason.value,
        error=error.message,
        first_failed_at=(first_failed_at or datetime.now(timezone.utc)).isoformat(),
        attempts=attempts,
        worker_id=WORKER_ID,
    )


def original_bytes(key_b64: Optional[str], value_b64: Optional[str]) -> tuple[Optional[bytes], Optional[bytes]]:
    """The key and value exactly as first consumed, for a replay."""
    key = None if key_b64 is None else base64.b64decode(key_b64)
    value = None if value_b64 is None else base64.b64decode(value_b64)
    return key, value
