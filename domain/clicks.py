"""User clicks: validate a decoded click, its log line, per-url counts, and sample data."""
from __future__ import annotations

import collections
import random
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Optional

import orjson

from domain.errors import PermanentError, Reason, Stage
from domain.parsing import DEFAULT_TIME_RULES, TimeRules, check_plausible, from_epoch_millis, text

MAX_URL = 2048


@dataclass(frozen=True)
class Click:
    user_id: str
    url: str
    clicked_at: datetime      # timezone-aware UTC (Avro timestamp-millis, or a long of epoch millis)


def to_click(decoded: Mapping[str, Any], *, rules: TimeRules = DEFAULT_TIME_RULES,
             now: Optional[datetime] = None) -> Click:
    """The Avro schema fixes the types; what is left to check is emptiness, size, control
    characters (user_id is a CQL partition key) and the time (domain/parsing.py's rules)."""
    user_id, url, clicked_at = decoded.get("user_id"), decoded.get("url"), decoded.get("timestamp")
    if not user_id:
        raise PermanentError(Stage.VALIDATE, Reason.MISSING_FIELD, "user_id is empty")
    if not url:
        raise PermanentError(Stage.VALIDATE, Reason.MISSING_FIELD, "url is empty")
    return Click(text(user_id, "user_id"), text(url, "url", max_length=MAX_URL),
                 check_plausible(_clicked_at(clicked_at, rules, now), "timestamp", rules=rules, now=now))


def _clicked_at(value: Any, rules: TimeRules, now: Optional[datetime]) -> datetime:
    """The click's `timestamp` as an aware UTC datetime; PermanentError(invalid_timestamp)
    for anything else. The one place that converts it (a plausibility check goes here).

    A datetime is what a writer schema with the logical type inside the field's type gives
    (ours). A plain long is what the seed's schema gives: it puts "logicalType" beside
    "type", where Avro ignores it, but the field is still the click's timestamp, so the
    long is epoch milliseconds. A naive datetime (local-timestamp-millis) is taken as UTC,
    never as the worker's local time.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        try:
            return value.astimezone(timezone.utc)
        except (OverflowError, OSError, ValueError, TypeError) as exc:   # TypeError: a tzinfo's bad offset
            raise PermanentError(Stage.VALIDATE, Reason.TIMESTAMP_OUT_OF_RANGE,
                                 f"timestamp {value!r} cannot be converted to UTC ({exc})") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return from_epoch_millis(value, "timestamp", rules=rules, now=now)
    raise PermanentError(Stage.VALIDATE, Reason.INVALID_TIMESTAMP,
                         f"timestamp {value!r} is neither a timestamp-millis nor a long of epoch milliseconds")


def log_line(click: Click, *, topic: str, partition: int, offset: int) -> str:
    """One JSON object per click, for log search (CloudWatch, Loki, ...)."""
    return orjson.dumps({
        "event": "click", "user_id": click.user_id, "url": click.url,
        "timestamp": click.clicked_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "topic": topic, "partition": partition, "offset": offset,
    }).decode()


def count_by_url(clicks: Iterable[Click]) -> dict[str, int]:
    return dict(collections.Counter(click.url for click in clicks))


# --- sample data -------------------------------------------------------------------------

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
