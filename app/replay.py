"""Choose stored dead letters and send their original bytes back to their source topic.

Shared by the `replay-dead-letters` command and the web action POST /dead-letters/replay.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Optional

from app.adapters.dead_letter_store import DeadLetterStore
from domain.dead_letters import original_bytes, replay_headers
from domain.errors import Reason, Stage

PER_DAY_LIMIT = 100_000      # rows read from one day's partition before filtering


@dataclass(frozen=True)
class Selection:
    """Which dead letters: day partitions (the source event's UTC day), optional filters on
    reason, stage and the time of failure, and at most `limit` of them."""

    days: tuple[date, ...]
    reason: Optional[str] = None
    stage: Optional[str] = None
    since: Optional[datetime] = None
    until: Optional[datetime] = None
    limit: int = 1000

    @classmethod
    def last_days(cls, days: int, **filters: Any) -> "Selection":
        """Today (UTC) and the `days - 1` days before it."""
        today = datetime.now(timezone.utc).date()
        return cls(days=tuple(today - timedelta(days=back) for back in range(days)), **filters)

    @classmethod
    def window(cls, since: datetime, until: datetime, **filters: Any) -> "Selection":
        """Dead letters that failed between `since` and `until` (aware datetimes). A row lives
        in its source event's day, which can be the day before its failure: read one more."""
        first, last = since.date() - timedelta(days=1), until.date()
        days = tuple(last - timedelta(days=n) for n in range((last - first).days + 1))
        return cls(days=days, since=since, until=until, **filters)

    def matches(self, row: Any) -> bool:
        if self.reason is not None and row.reason != self.reason:
            return False
        if self.stage is not None and row.stage != self.stage:
            return False
        if self.since is not None or self.until is not None:
            failed_at = _aware(row.failed_at)
            if failed_at is None:
                return False
            if self.since is not None and failed_at < self.since:
                return False
            if self.until is not None and failed_at > self.until:
                return False
        return True


MAX_WINDOW = timedelta(days=31)
MAX_LIMIT = 10_000


def selection_from(params: Mapping[str, Any], now: datetime, default_limit: int) -> Selection:
    """A Selection from HTTP parameters: reason, stage (known codes), since/until (ISO-8601;
    default: the last 24 hours), limit (1..MAX_LIMIT). Raises ValueError naming the bad one."""
    reason, stage = params.get("reason") or None, params.get("stage") or None
    if reason is not None and reason not in {r.value for r in Reason}:
        raise ValueError(f"reason {reason!r} is not a known reason code")
    if stage is not None and stage not in {s.value for s in Stage}:
        raise ValueError(f"stage {stage!r} is not one of {', '.join(s.value for s in Stage)}")
    until = _timestamp(params, "until") or now
    since = _timestamp(params, "since") or until - timedelta(hours=24)
    if since > until:
        raise ValueError("since must not be after until")
    if until - since > MAX_WINDOW:
        raise ValueError(f"the window must not exceed {MAX_WINDOW.days} days")
    raw_limit = params.get("limit", default_limit)
    try:
        limit = int(raw_limit)
    except (TypeError, ValueError):
        raise ValueError(f"limit {raw_limit!r} is not an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    return Selection.window(since, until, reason=reason, stage=stage, limit=limit)


def _timestamp(params: Mapping[str, Any], name: str) -> Optional[datetime]:
    raw = params.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} {raw!r} is not an ISO-8601 timestamp") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _aware(moment: Optional[datetime]) -> Optional[datetime]:
    """The driver returns CQL timestamps as naive UTC datetimes."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


async def find(store: DeadLetterStore, selection: Selection) -> list[Any]:
    chosen: list[Any] = []
    for day in selection.days:
        for row in await store.dead_letters(day, limit=PER_DAY_LIMIT):
            if selection.matches(row):
                chosen.append(row)
                if len(chosen) >= selection.limit:
                    return chosen
    return chosen


class PayloadMismatch(ValueError):
    """The bytes kept apart for a dead letter do not match the hash its envelope recorded."""


async def original_of(store: Optional[DeadLetterStore], row: Any) -> tuple[Optional[bytes], Optional[bytes]]:
    """The key and value exactly as first consumed: from the row, or, for a letter too large
    for the dead-letter topic (app/outputs.py), from the payload table, checked by SHA-256."""
    key, value = original_bytes(row.key_b64, row.value_b64)
    if row.value_b64 is None and store is not None:
        payload = await store.dead_letter_payload(row.source_topic, row.source_partition, row.source_offset)
        if payload is not None:
            key, value = payload.key, payload.value
            if hashlib.sha256(value or b"").hexdigest() != payload.value_sha256:
                raise PayloadMismatch(f"dead letter {row.source_topic}/{row.source_partition}@"
                                      f"{row.source_offset}: stored bytes do not match their SHA-256")
    return key, value


async def send_back(producer: Any, rows: Iterable[Any], chunk: int = 500,
                    store: Optional[DeadLetterStore] = None) -> int:
    """Send each row's original key and value to its source topic, with replay
    headers naming the original position, attempts and first failure; returns once all are on the broker.
    `store`: where the original bytes of oversized letters are kept (without it they go back empty)."""
    sent, pending = 0, []
    for row in rows:
        key, value = await original_of(store, row)
        origin = f"{row.source_topic}/{row.source_partition}@{row.source_offset}"
        headers = replay_headers(origin, row.attempts or 1, _aware(row.failed_at))
        pending.append(await producer.send(row.source_topic, key, value, None, None, headers))
        if len(pending) >= chunk:
            await asyncio.gather(*pending)
            sent, pending = sent + len(pending), []
    await asyncio.gather(*pending)
    return sent + len(pending)
