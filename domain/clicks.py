"""User clicks: validate a decoded click, its log line, per-url counts."""
from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import datetime, timezone
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
