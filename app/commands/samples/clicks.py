"""Sample clicks (UserClick datums) and the ways a framed value is spoiled that the clicks agent
must dead-letter."""
from __future__ import annotations

import random
import struct
from datetime import datetime, timedelta, timezone
from typing import Any

from domain.errors import Reason
def sample_clicks(count: int, *, users: int = 100, urls: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """`count` UserClick datums over `users` users and `urls` pages (same seed, same data)."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)   # timestamp-millis holds no more
    return [{
        "user_id": f"user-{rng.randrange(users):05d}",
        "url": f"https://example.com/page/{rng.randrange(urls)}",
        "timestamp": now - timedelta(milliseconds=rng.randrange(3_600_000)),
    } for _ in range(count)]


def bad_avro(good: bytes, kind: int) -> tuple[bytes, Reason]:
    """Spoil a framed value in one of the ways the clicks agent must dead-letter."""
    kind %= 3
    if kind == 0:
        return b"\x01" + good[1:], Reason.BAD_MAGIC_BYTE
    if kind == 1:
        return good[:1] + struct.pack(">I", 0x7FFFFFF0) + good[5:], Reason.UNKNOWN_SCHEMA_ID
    return good[:max(6, len(good) // 2)], Reason.TRUNCATED_AVRO
