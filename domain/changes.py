"""Change records of accounts and customers (Debezium envelopes) and how they update cache entries.

Ordering. Every entry carries the source position (PostgreSQL LSN) of the last change of each
table it reflects (`positions`: {"accounts": lsn, "customers": lsn}) and when a change was last
applied to it (`changed_at`, epoch s). A row's changes are serialized by PostgreSQL's row
locks, so their LSNs grow: a change whose LSN is not above the entry's position for its table
is older than what the entry holds (or a repeat after a restart) and is skipped. A PostgreSQL
fetch does not know the LSN its snapshot corresponds to, so it is ordered by time instead: a
fetch that started before a change was applied to the entry does not overwrite it
(`fetched_entry`), since its rows may predate that change. The fetch keeps the entry's
positions, so a replayed older change is still recognised as older.

Deletes mark the entry unknown (account None) rather than removing it: a fetch in flight that
read the row before the delete then finds a change newer than its start and does not bring
the account back. The negative TTL then expires it as for any unknown account.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Literal, Mapping, Optional, Union

from domain.errors import PermanentError, Reason, Stage

Table = Literal["accounts", "customers"]
TABLES: tuple[Table, ...] = ("accounts", "customers")
CUSTOMER_FIELDS = ("name", "document", "segment", "risk_score")
ACCOUNT_ROW_FIELDS = ("status", "opened_at")


@dataclass(frozen=True)
class Change:
    table: Table
    op: str                        # c(reate), u(pdate), d(elete), r(ead: snapshot)
    key: str                       # account id, or customer id as text
    row: Optional[dict[str, Any]]  # the row after the change (None: deleted)
    lsn: int
    committed_ms: int              # commit time in PostgreSQL (source.ts_ms), epoch ms

    @property
    def customer_id(self) -> Optional[int]:
        value = (self.row or {}).get("customer_id")
        return int(value) if value is not None else (int(self.key) if self.table == "customers" else None)


def _bad(message: str) -> PermanentError:
    return PermanentError(Stage.DECODE, Reason.INVALID_CHANGE, message)


def parse_change(value: Optional[bytes]) -> Union[Change, PermanentError, None]:
    """One Debezium change record (JSON, no schemas) -> a Change; None for a tombstone (Kafka's
    null value after a delete: nothing to apply, the delete itself came just before)."""
    if value is None:
        return None
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        return _bad(f"not JSON: {exc}"[:300])
    if not isinstance(doc, dict):
        return _bad("not a JSON object")
    if "payload" in doc and "source" not in doc and isinstance(doc["payload"], dict):
        doc = doc["payload"]              # a converter with schemas.enable=true
    source, op = doc.get("source"), doc.get("op")
    if not isinstance(source, dict):
        return _bad("no source block")
    table = source.get("table")
    if table not in TABLES:
        return _bad(f"change of an unexpected table {table!r}")
    if op not in ("c", "u", "d", "r"):
        return _bad(f"unexpected op {op!r}")
    lsn, ts_ms = source.get("lsn"), source.get("ts_ms")
    if not isinstance(lsn, int) or isinstance(lsn, bool) or lsn < 0:
        return _bad(f"source.lsn {lsn!r} is not an LSN")
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool):
        return _bad(f"source.ts_ms {ts_ms!r} is not a time")
    row = doc.get("after") if op != "d" else None
    image = row if op != "d" else doc.get("before")
    if op != "d" and not isinstance(row, dict):
        return _bad(f"op {op!r} without an after image")
    if not isinstance(image, dict):
        return _bad("delete without a before image (REPLICA IDENTITY) or its key")
    key_field = "account_id" if table == "accounts" else "customer_id"
    key = image.get(key_field)
    if key is None or isinstance(key, (dict, list, bool)):
        return _bad(f"no {key_field} in the change")
    if table == "accounts" and row is not None and not isinstance(row.get("customer_id"), int):
        return _bad("account change without an integer customer_id")
    return Change(table=table, op=op, key=str(key), row=row, lsn=lsn, committed_ms=ts_ms)


def _position(entry: Optional[Mapping[str, Any]], table: Table) -> int:
    if not entry:
        return 0
    return int((entry.get("positions") or {}).get(table, 0))


def _opened_at(value: Any) -> Any:
    """Debezium's ZonedTimestamp ("...Z") in the fetch's isoformat, so entries look alike."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()
        except ValueError:
            return value
    return value


# What applying a change did, for the counters.
Outcome = Literal["applied", "stale", "not_cached", "dropped"]


def apply_change(entry: Optional[Mapping[str, Any]], change: Change, now: float
                 ) -> tuple[Outcome, Optional[dict[str, Any]]]:
    """The entry after `change` (of its own account: an account change keyed by the account, or a
    customer change fanned out to one of the customer's accounts). Returns the outcome and the
    new entry; a None entry with "dropped" means: delete the key (fetched again on demand)."""
    if entry is None:
        return "not_cached", None       # the cache fills on demand; nothing to keep fresh
    if change.lsn <= _position(entry, change.table):
        return "stale", None
    positions = {**(entry.get("positions") or {}), change.table: change.lsn}
    account = entry.get("account")
    base = {"fetched_at": entry.get("fetched_at", now), "positions": positions, "changed_at": now}
    if change.table == "accounts":
        if change.row is None:
            return "applied", {**base, "account": None}
        if account is None or account.get("customer_id") != change.row["customer_id"]:
            # created after being cached as unknown, or moved to another customer: the customer's
            # fields are not in the change, so the entry goes and is fetched on demand.
            return "dropped", None
        updated = {**account, **{f: change.row[f] for f in ACCOUNT_ROW_FIELDS if f in change.row}}
        updated["opened_at"] = _opened_at(updated.get("opened_at"))
        return "applied", {**base, "account": updated}
    if account is None or account.get("customer_id") != change.customer_id:
        return "stale", None            # the account was moved away from this customer meanwhile
    if change.row is None:
        return "dropped", None          # customer deleted (its accounts must have gone first)
    return "applied", {**base, "account": {**account, **{f: change.row[f] for f in CUSTOMER_FIELDS
                                                        if f in change.row}}}


def fetched_entry(existing: Optional[Mapping[str, Any]], fresh: dict[str, Any], fetch_started: float
                  ) -> Optional[dict[str, Any]]:
    """The entry a PostgreSQL fetch that started at `fetch_started` may write (`fresh`: from
    domain.enrichment.cache_entry), or None when a change was applied to the entry after the fetch
    started (the fetched rows may predate it: the change wins)."""
    if existing is None:
        return fresh
    if float(existing.get("changed_at", 0.0)) >= fetch_started:
        return None
    if existing.get("positions"):
        return {**fresh, "positions": dict(existing["positions"]), "changed_at": existing.get("changed_at", 0.0)}
    return fresh


def lag_s(change: Change, now: float) -> float:
    """Commit in PostgreSQL -> applied here, in seconds (clocks of one machine or NTP-synced)."""
    return max(0.0, now - change.committed_ms / 1000.0)


class RecentChanges:
    """When a change of an account was last applied, whether or not the cache held it: a fetch in
    flight for an account the cache lacked cannot see such a change in the table, and asks again
    (agents/transactions.refresh_cache). Kept for `window_s`, longer than any fetch."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._at: dict[str, float] = {}

    def note(self, account_id: str, now: float) -> None:
        self._at.pop(account_id, None)
        self._at[account_id] = now          # insertion order = time order: the oldest first
        while self._at:
            oldest, at = next(iter(self._at.items()))
            if now - at <= self.window_s:
                break
            del self._at[oldest]

    def changed_since(self, account_ids: Iterable[str], since: float) -> list[str]:
        return [a for a in account_ids if self._at.get(a, -1.0) >= since]
