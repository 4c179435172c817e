"""domain/changes.py: Debezium envelopes parsed, applied in LSN order, fetches that lose to changes."""
from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from domain.changes import Change, RecentChanges, apply_change, fetched_entry, lag_s, parse_change
from domain.enrichment import cache_entry
from domain.errors import PermanentError, Reason

ACCOUNT = {"customer_id": 3, "name": "Cliente 3", "document": "***", "segment": "retail", "risk_score": 111,
           "status": "active", "opened_at": "2020-01-04T00:00:00+00:00"}


def envelope(table: str = "accounts", op: str = "u", lsn: int = 100, after: Optional[dict[str, Any]] = None,
             before: Optional[dict[str, Any]] = None, **extra: Any) -> bytes:
    if after is None and op != "d":
        after = ({"account_id": "acc-000003", "customer_id": 3, "status": "blocked",
                  "opened_at": "2020-01-04T00:00:00.000000Z", "updated_at": "2026-12-02T20:12:45Z"}
                 if table == "accounts" else
                 {"customer_id": 3, "name": "Cliente 3", "document": "***", "segment": "private", "risk_score": 5})
    doc = {"before": before, "after": after if op != "d" else None, "op": op, "ts_ms": 2,
           "source": {"table": table, "lsn": lsn, "ts_ms": 1_796_242_365_887, "db": "app"}, **extra}
    return json.dumps(doc).encode()


def change(**kwargs: Any) -> Change:
    parsed = parse_change(envelope(**kwargs))
    assert isinstance(parsed, Change)
    return parsed


def entry(positions: Optional[dict[str, int]] = None, changed_at: float = 0.0, **account: Any) -> dict[str, Any]:
    e = cache_entry({**ACCOUNT, **account}, 1000.0)
    if positions:
        e.update(positions=positions, changed_at=changed_at)
    return e


def test_parses_an_account_update() -> None:
    c = change()
    assert (c.table, c.op, c.key, c.lsn, c.committed_ms, c.customer_id) == ("accounts", "u", "acc-000003", 100,
                                                                            1_796_242_365_887, 3)


def test_a_new_column_is_carried_and_ignored() -> None:
    after = {"account_id": "acc-000003", "customer_id": 3, "status": "blocked", "opened_at": "2020-01-04T00:00:00Z",
             "nickname": "x"}
    outcome, new = apply_change(entry(), change(after=after), 2000.0)
    assert outcome == "applied" and new is not None
    assert new["account"]["status"] == "blocked" and "nickname" not in new["account"]


def test_tombstones_are_nothing_to_apply() -> None:
    assert parse_change(None) is None


@pytest.mark.parametrize("value", [
    b"not json", b"[1]", b'{"op": "u"}', envelope(table="sales"), envelope(op="t"), envelope(lsn=-1),
    json.dumps({"op": "u", "after": {"account_id": "a", "customer_id": 1},
                "source": {"table": "accounts", "lsn": "12", "ts_ms": 1}}).encode(),
    envelope(after={"customer_id": 3}), envelope(after={"account_id": "a", "customer_id": "3"}),
    envelope(op="d", before=None),
])
def test_bad_records_are_invalid_changes(value: bytes) -> None:
    parsed = parse_change(value)
    assert isinstance(parsed, PermanentError) and parsed.reason is Reason.INVALID_CHANGE


def test_changes_apply_in_lsn_order_and_older_ones_are_skipped() -> None:
    outcome, first = apply_change(entry(), change(lsn=200), 2000.0)
    assert outcome == "applied" and first is not None and first["positions"] == {"accounts": 200}
    older = change(lsn=150, after={"account_id": "acc-000003", "customer_id": 3, "status": "active"})
    assert apply_change(first, older, 2001.0) == ("stale", None)
    assert apply_change(first, change(lsn=200), 2001.0) == ("stale", None)      # a repeat after a restart


def test_a_customer_change_updates_its_fields_with_its_own_position() -> None:
    e = entry(positions={"accounts": 500}, changed_at=1.0)
    outcome, new = apply_change(e, change(table="customers", lsn=300), 2000.0)   # lower than the account's: other table
    assert outcome == "applied" and new is not None
    assert new["account"]["segment"] == "private" and new["account"]["risk_score"] == 5
    assert new["positions"] == {"accounts": 500, "customers": 300}


def test_a_customer_change_of_an_account_moved_away_is_stale() -> None:
    assert apply_change(entry(customer_id=9), change(table="customers"), 2000.0) == ("stale", None)


def test_deletes_mark_the_account_unknown() -> None:
    before = {"account_id": "acc-000003", "customer_id": 0, "status": ""}
    outcome, new = apply_change(entry(), change(op="d", before=before), 2000.0)
    assert outcome == "applied" and new is not None and new["account"] is None


def test_uncached_accounts_are_left_to_fetch_on_demand() -> None:
    assert apply_change(None, change(), 2000.0) == ("not_cached", None)


def test_an_account_created_after_being_cached_unknown_is_dropped() -> None:
    unknown = cache_entry(None, 1000.0)
    assert apply_change(unknown, change(op="c"), 2000.0) == ("dropped", None)


def test_an_account_moved_to_another_customer_is_dropped() -> None:
    moved = {"account_id": "acc-000003", "customer_id": 4, "status": "active"}
    assert apply_change(entry(), change(after=moved), 2000.0) == ("dropped", None)


def test_a_fetch_started_before_a_change_was_applied_does_not_overwrite_it() -> None:
    changed = entry(positions={"accounts": 200}, changed_at=2000.0, status="blocked")
    fresh = cache_entry({**ACCOUNT, "status": "active"}, 1999.0)
    assert fetched_entry(changed, fresh, fetch_started=1999.0) is None
    later = fetched_entry(changed, fresh, fetch_started=2001.0)
    assert later is not None and later["account"]["status"] == "active"
    assert later["positions"] == {"accounts": 200}          # an older change replayed is still older


def test_a_fetch_without_changes_is_written_as_before() -> None:
    fresh = cache_entry(ACCOUNT, 1.0)
    assert fetched_entry(None, fresh, 1.0) == fresh
    assert fetched_entry(cache_entry(ACCOUNT, 0.0), fresh, 1.0) == fresh


def test_recent_changes_remember_a_window() -> None:
    recent = RecentChanges(window_s=10)
    recent.note("a", 100.0)
    recent.note("b", 105.0)
    assert recent.changed_since(["a", "b", "c"], 101.0) == ["b"]
    recent.note("c", 120.0)                  # a is older than the window: forgotten
    assert recent.changed_since(["a", "b", "c"], 0.0) == ["c"]


def test_lag_is_commit_to_applied() -> None:
    assert lag_s(change(), 1_796_242_366.887) == pytest.approx(1.0)
