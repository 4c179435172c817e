"""Account changes: Debezium's change records of accounts and customers applied to the account cache.

Only with APP_CACHE_CHANGES on. Two streams, both run by the one batch loop (app/batching.py):
 - agent `account-changes` reads the account-keyed topics: Debezium's accounts topic and the
   customers' changes fanned out per account. Both are keyed by account id with the app's
   partition count, like the transactions' input and the accounts-cache table (raw UTF-8 keys,
   murmur2 on both sides), so an account's changes are applied on the worker, and in the table
   partition, that serves its events (faust assigns equal partition numbers of co-subscribed
   topics of one size to one worker).
 - agent `customer-changes` reads Debezium's customers topic (keyed by customer id, so on no
   account's partition), asks PostgreSQL for the customer's accounts and sends the change once
   per account to the fan-out topic. The table is never written from a foreign partition.
Ordering and fetches: domain/changes.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Awaitable, List, MutableMapping, Optional, Protocol, Sequence, Union

from faust import StreamT
from faust.types import EventT

from app import batching, metrics
from app.batching import stage
from app.main import app, settings
from app.outputs import Outputs
from app.retry import retry_transient
from app.tables import accounts_cache
from app.topics import change_topics
from domain.changes import Change, RecentChanges, apply_change, lag_s, parse_change
from domain.errors import PermanentError, Reason, Stage, internal_error

AGENT = "account-changes"
FAN_OUT_AGENT = "customer-changes"
Parsed = Union[Change, PermanentError, None]


class CustomersAccounts(Protocol):
    async def accounts_of_customers(self, customer_ids: Sequence[int]) -> dict[int, list[str]]: ...


@dataclass(frozen=True)
class Collaborators:
    cache: MutableMapping[str, Any]
    accounts: CustomersAccounts
    outputs: Outputs
    fan_out_topic: str
    recent: RecentChanges


def parse(value: Optional[bytes]) -> Parsed:
    try:
        return parse_change(value)
    except Exception as exc:  # noqa: BLE001 - isolated to this record, see app/batching.py
        return internal_error(Stage.DECODE, exc)


def _key(event: EventT) -> Optional[str]:
    key = event.message.key
    try:
        return key.decode() if isinstance(key, bytes) else None
    except UnicodeDecodeError:
        return None


async def apply_batch(events: Sequence[EventT], *, deps: Collaborators) -> None:
    """Apply each change in the order of its partition; bad records are dead-lettered."""
    pending: List[Awaitable[Any]] = []
    for event in events:
        change = parse(event.message.value)
        if change is None:
            metrics.cache_change_applied("unknown", "tombstone")
            continue
        account_id = _key(event)
        if isinstance(change, Change) and account_id is None:
            change = PermanentError(Stage.DECODE, Reason.INVALID_CHANGE, "change record without a UTF-8 key")
        if isinstance(change, PermanentError):
            metrics.cache_change_applied("unknown", "dead_letter")
            with stage(Stage.FORWARD):
                pending.append(await deps.outputs.dead_letter(event.message, change, agent=AGENT))
            continue
        assert account_id is not None
        with stage(Stage.ENRICH):
            now = time.time()
            outcome, entry = apply_change(deps.cache.get(account_id), change, now)
            deps.recent.note(account_id, now)
            if entry is not None:
                deps.cache[account_id] = entry
            elif outcome == "dropped" and account_id in deps.cache:
                del deps.cache[account_id]
        metrics.cache_change_applied(change.table, outcome, lag_s(change, now) if outcome != "stale" else None,
                                     now)
    with stage(Stage.FORWARD):
        await deps.outputs.delivered(pending)


async def fan_out_batch(events: Sequence[EventT], *, deps: Collaborators) -> None:
    """Customer changes, one per account of the customer, in order, onto the account-keyed topic."""
    parsed = [parse(event.message.value) for event in events]
    customers = sorted({c.customer_id for c in parsed if isinstance(c, Change) and c.customer_id is not None})
    with stage(Stage.ENRICH):
        accounts = await retry_transient(lambda: deps.accounts.accounts_of_customers(customers),
                                         what="PostgreSQL (accounts of customers)")
    pending: List[Awaitable[Any]] = []
    with stage(Stage.FORWARD):
        for event, change in zip(events, parsed, strict=True):
            if change is None:
                metrics.cache_change_applied("customers", "tombstone")
            elif isinstance(change, PermanentError):
                metrics.cache_change_applied("customers", "dead_letter")
                pending.append(await deps.outputs.dead_letter(event.message, change, agent=FAN_OUT_AGENT))
            elif change.table != "customers":
                pending.append(await deps.outputs.dead_letter(event.message, PermanentError(
                    Stage.DECODE, Reason.INVALID_CHANGE, f"a {change.table} change on the customers topic"),
                    agent=FAN_OUT_AGENT))
            else:
                for account_id in accounts.get(change.customer_id or -1, []):
                    pending.append(await deps.outputs.forward(event.message, deps.fan_out_topic,
                                                              account_id.encode(), event.message.value or b""))
                metrics.cache_change_applied("customers", "fanned_out")
        await deps.outputs.delivered(pending)



async def dead_letter(event: EventT, error: PermanentError, *, deps: Collaborators, agent: str) -> None:
    await deps.outputs.delivered([await deps.outputs.dead_letter(event.message, error, agent=agent)])


def _collaborators() -> Collaborators:
    return Collaborators(accounts_cache, app.resources.postgres, app.resources.outputs,
                         settings.change_topic("customers") + ".by-account", app.resources.recent_changes)


if change_topics is not None:
    account_keyed, customers_topic = change_topics

    @app.agent(account_keyed, name=AGENT)
    async def apply_account_changes(stream: StreamT) -> None:
        """Acked after the batch's table writes (and dead letters); a replay after a crash
        re-applies changes the positions recognise as repeats."""
        await retry_transient(accounts_cache.changelog_known, what="Kafka (cache changelog metadata)")
        deps = _collaborators()
        await batching.run(app, AGENT, stream, partial(apply_batch, deps=deps),
                           partial(dead_letter, deps=deps, agent=AGENT),
                           size=settings.batch_size, within=settings.batch_wait_s)

    @app.agent(customers_topic, name=FAN_OUT_AGENT)
    async def fan_out_customer_changes(stream: StreamT) -> None:
        deps = _collaborators()
        await batching.run(app, FAN_OUT_AGENT, stream, partial(fan_out_batch, deps=deps),
                           partial(dead_letter, deps=deps, agent=FAN_OUT_AGENT),
                           size=settings.batch_size, within=settings.batch_wait_s)
