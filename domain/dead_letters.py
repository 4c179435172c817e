"""Build dead-letter envelopes: the reason and everything needed to replay the event."""
from __future__ import annotations

import base64
import os
import socket
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Optional, Union

from domain.errors import PermanentError
from models.dead_letter import DeadLetter

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
# Headers of a replayed message: the source position of the dead letter it replays, and
# that letter's attempt count and first failure, so that failing again counts on from them.
REPLAY_HEADER = "replay-of"
ATTEMPTS_HEADER = "dead-letter-attempts"
FIRST_FAILED_HEADER = "dead-letter-first-failed-at"

MAX_ERROR = 2000          # characters of the error message kept in a letter

Headers = Union[Mapping[str, bytes], Iterable[tuple[str, bytes]], None]


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
        error=error.message[:MAX_ERROR],
        first_failed_at=(first_failed_at or datetime.now(timezone.utc)).isoformat(),
        attempts=attempts,
        worker_id=WORKER_ID,
    )


def dead_letter_of(error: PermanentError, message: Any) -> DeadLetter:
    """The envelope for a consumed message (faust's Message: topic, partition, offset,
    timestamp, key, value, headers). A replayed message that fails again is attempt n+1 of
    the same failure: attempts and first failure time come from its replay headers."""
    attempts, first_failed_at = prior_failure(message.headers)
    return dead_letter(error, topic=message.topic, partition=message.partition, offset=message.offset,
                       timestamp=message.timestamp, key=message.key, value=message.value,
                       attempts=attempts + 1, first_failed_at=first_failed_at)


def replay_headers(origin: str, attempts: int, first_failed_at: Optional[datetime]) -> list[tuple[str, bytes]]:
    headers = [(REPLAY_HEADER, origin.encode()), (ATTEMPTS_HEADER, str(attempts).encode())]
    if first_failed_at is not None:
        headers.append((FIRST_FAILED_HEADER, first_failed_at.isoformat().encode()))
    return headers


def _as_dict(headers: Headers) -> dict[str, bytes]:
    """aiokafka gives headers as (name, value) pairs; accept a mapping too."""
    if not headers:
        return {}
    return dict(headers.items() if isinstance(headers, Mapping) else headers)


def header_names(headers: Headers) -> set[str]:
    return set(_as_dict(headers))


def prior_failure(headers: Headers) -> tuple[int, Optional[datetime]]:
    """(attempts so far, first failure) from a replayed message's headers; (0, None) for a
    message that was never dead-lettered, or whose headers are unreadable."""
    found = _as_dict(headers)
    try:
        attempts = max(0, int(found.get(ATTEMPTS_HEADER, b"0")))
    except ValueError:
        attempts = 0
    first = None
    if raw := found.get(FIRST_FAILED_HEADER):
        try:
            first = datetime.fromisoformat(raw.decode())
        except (ValueError, UnicodeDecodeError):
            first = None
        if first is not None and first.tzinfo is None:
            first = first.replace(tzinfo=timezone.utc)
    return attempts, first


def original_bytes(key_b64: Optional[str], value_b64: Optional[str]) -> tuple[Optional[bytes], Optional[bytes]]:
    """The key and value exactly as first consumed, for a replay."""
    key = None if key_b64 is None else base64.b64decode(key_b64)
    value = None if value_b64 is None else base64.b64decode(value_b64)
    return key, value
