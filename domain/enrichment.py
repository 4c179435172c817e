"""The account cache's rules (freshness, negative entries) and the enrichment itself."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Optional

from domain.errors import PermanentError, Reason, Stage
from models.transaction import EnrichedTransaction, Transaction

# What the cache keeps per account id: the account's business data (None: PostgreSQL does
# not know the account) and when it was fetched (epoch seconds).
CacheEntry = Mapping[str, Any]
ACCOUNT_FIELDS = ("customer_id", "name", "document", "segment", "risk_score", "status", "opened_at")


def cache_entry(account: Optional[Mapping[str, Any]], now: float) -> dict[str, Any]:
    if account is None:
        return {"account": None, "fetched_at": now}
    data = {k: account.get(k) for k in ACCOUNT_FIELDS}
    if isinstance(data["opened_at"], datetime):
        data["opened_at"] = data["opened_at"].isoformat()
    return {"account": data, "fetched_at": now}


def is_fresh(entry: Optional[CacheEntry], now: float, ttl_s: float, negative_ttl_s: float,
             replayed: bool = False) -> bool:
    """A hit needs no query; unknown accounts are remembered for a shorter time. A replayed
    event never trusts an "unknown" entry: it is replayed because the account was fixed,
    often within the negative TTL, and would otherwise be dead-lettered again."""
    if entry is None:
        return False
    if replayed and entry.get("account") is None:
        return False
    limit = ttl_s if entry.get("account") is not None else negative_ttl_s
    return now - float(entry.get("fetched_at", 0)) < limit


def enrich(tx: Transaction, entry: CacheEntry) -> EnrichedTransaction:
    account = entry.get("account")
    if account is None:
        raise PermanentError(Stage.ENRICH, Reason.UNKNOWN_ACCOUNT,
                             f"account {tx.account_id!r} is not known to PostgreSQL")
    return EnrichedTransaction(
        **tx.asdict(),
        customer_id=account["customer_id"],
        customer_name=account["name"],
        segment=account["segment"],
        risk_score=account["risk_score"],
        account_status=account["status"],
    )
