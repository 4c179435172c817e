"""Transactions: decode, validate, enrich through the account cache, record the history,
forward per category; every failure becomes a dead letter with its reason."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, Awaitable, Callable, List, Mapping, MutableMapping, Optional, Protocol, Sequence, Union

from faust import StreamT
from faust.types import EventT

from app import batching, metrics
from app.adapters.rows import HistoryRow
from app.batching import stage
from app.main import app, settings
from app.outputs import Outputs
from app.retry import retry_transient
from app.settings import Settings
from app.tables import accounts_cache
from app.topics import transactions_in
from domain.changes import RecentChanges, fetched_entry
from domain.dead_letters import REPLAY_HEADER, header_names
from domain.enrichment import cache_entry, enrich, is_fresh
from domain.errors import PermanentError, Stage, internal_error
from domain.parsing import DEFAULT_TIME_RULES, TimeRules
from domain.transactions import AVRO_MAGIC, AvroDecoder, decode, to_transaction
from models.transaction import EnrichedTransaction, Transaction

AGENT = "transactions"
Outcome = Union[EnrichedTransaction, PermanentError]


class Accounts(Protocol):
    async def get_accounts(self, account_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


class History(Protocol):
    async def record_history(self, rows: Sequence[HistoryRow]) -> None: ...


class Avro(Protocol):
    async def prefetch(self, values: Sequence[Optional[bytes]]) -> None: ...
    def decode(self, raw: bytes) -> Any: ...


@dataclass(frozen=True)
class Collaborators:
    """What a batch needs: the worker passes its own (below); tests pass theirs."""
    cache: MutableMapping[str, Any]      # the accounts-cache table
    accounts: Accounts                   # PostgreSQL
    history: History                     # the CQL history tables (app/adapters/history.py)
    avro: Avro                           # the registry-backed decoder of Avro values
    outputs: Outputs
    settings: Settings
    sink_topic: Callable[[str], str]     # category -> topic name
    recent_changes: Optional[RecentChanges] = None   # with APP_CACHE_CHANGES (app.resources.recent_changes)


@app.agent(transactions_in, name=AGENT)
async def process_transactions(stream: StreamT) -> None:
    """`batching.batches` leaves acking to us (as faust's `noack_take`): a batch is acked only
    after its history rows and sends are done, so a crash, an outage or a shutdown mid-batch
    replays it (at-least-once; the history and the sinks are keyed so that a replay is harmless)."""
    resources = app.resources
    await retry_transient(accounts_cache.changelog_known, what="Kafka (cache changelog metadata)")
    deps = Collaborators(accounts_cache, resources.postgres, resources.history, resources.transactions_avro,
                         resources.outputs, settings, settings.sink_topic, resources.recent_changes)
    await batching.run(app, AGENT, stream, partial(process_batch, deps=deps), partial(dead_letter, deps=deps),
                       size=settings.batch_size, within=settings.batch_wait_s)


def parse(value: Optional[bytes], avro: Optional[AvroDecoder] = None, *, rules: TimeRules = DEFAULT_TIME_RULES,
          now: Optional[datetime] = None) -> Union[Transaction, PermanentError]:
    """Decode and validate one raw value; never raises (an unforeseen error is the event's)."""
    try:
        return to_transaction(decode(value, avro=avro), rules=rules, now=now)
    except PermanentError as err:
        return err
    except Exception as exc:  # noqa: BLE001 - isolated to this event, see app/batching.py
        return internal_error(Stage.DECODE, exc)


def _enriched(tx: Transaction, entries: Mapping[str, Any]) -> Outcome:
    try:
        entry = entries.get(tx.account_id)
        if entry is None:              # not even a negative entry: the cache could not be written
            raise KeyError(tx.account_id)
        if isinstance(entry, _Unreadable):
            raise entry.error
        return enrich(tx, entry)
    except PermanentError as err:
        return err
    except Exception as exc:  # noqa: BLE001 - isolated to this event
        return internal_error(Stage.ENRICH, exc)


async def process_batch(events: Sequence[EventT], *, deps: Collaborators) -> None:
    """Everything a batch needs before it may be acked: outputs and dead letters on the broker,
    history rows stored. A failure that is not an outage leaves it for app/batching.py to isolate."""
    now = datetime.now(timezone.utc)
    values = [event.message.value for event in events]
    if any(value and value[0] == AVRO_MAGIC for value in values):
        with stage(Stage.DECODE):      # writer schemas of the batch's Avro values, at most once per id
            await retry_transient(lambda: deps.avro.prefetch(values), what="Schema Registry")
    rules = deps.settings.time_rules
    parsed = [parse(value, deps.avro.decode, rules=rules, now=now) for value in values]
    with stage(Stage.ENRICH):
        entries = await refresh_cache(deps, {tx.account_id for tx in parsed if isinstance(tx, Transaction)},
                                      replayed={tx.account_id for event, tx in zip(events, parsed, strict=True)
                                                if isinstance(tx, Transaction) and is_replay(event)})
    outcomes: List[Outcome] = [_enriched(item, entries) if isinstance(item, Transaction) else item
                               for item in parsed]
    bodies = [_serialized(event, outcome, deps.outputs) for event, outcome in zip(events, outcomes, strict=True)]
    outcomes = [body if isinstance(body, PermanentError) else outcome for outcome, body in zip(outcomes, bodies,
                                                                                                strict=True)]

    processed_at = datetime.now(timezone.utc)
    rows = [history_row(event, tx, processed_at) for event, tx in zip(events, outcomes, strict=True)
            if isinstance(tx, EnrichedTransaction)]
    with stage(Stage.STORE):
        await retry_transient(lambda: deps.history.record_history(rows), what="CQL server (history)")
    with stage(Stage.FORWARD):
        pending: List[Awaitable[Any]] = []
        topics: dict[str, str] = {}              # category -> sink topic, named once per batch
        for event, outcome, body in zip(events, outcomes, bodies, strict=True):
            if isinstance(outcome, PermanentError):
                pending.append(await deps.outputs.dead_letter(event.message, outcome, agent=AGENT))
                continue
            topic = topics.get(outcome.category)
            if topic is None:
                topic = topics[outcome.category] = deps.sink_topic(outcome.category)
            pending.append(await deps.outputs.forward(event.message, topic, outcome.account_id.encode(),
                                                      body))  # type: ignore[arg-type]
        await deps.outputs.delivered(pending)
    metrics.transactions_batch(events, outcomes)


def _serialized(event: EventT, outcome: Outcome, outputs: Outputs) -> Union[bytes, PermanentError]:
    """The sink record of an enriched event, or why it cannot be one (too large for the broker)."""
    if isinstance(outcome, PermanentError):
        return outcome
    try:
        body = outcome.dumps()
        outputs.check_fits(event.message, outcome.account_id.encode(), body)
        return body
    except PermanentError as err:
        return err
    except Exception as exc:  # noqa: BLE001 - isolated to this event
        return internal_error(Stage.FORWARD, exc)


async def dead_letter(event: EventT, error: PermanentError, *, deps: Collaborators) -> None:
    """An event isolated by app/batching.py: its dead letter, on the broker."""
    await deps.outputs.delivered([await deps.outputs.dead_letter(event.message, error, agent=AGENT)])


async def refresh_cache(deps: Collaborators, account_ids: set[str],
                        replayed: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """Fetch the accounts the cache lacks or holds stale, in one query for the batch;
    `replayed`: accounts of replayed events, for which "unknown" is asked again. Returns each
    account's cache entry as it is now (None: none): the table is read once per account and
    batch (a read of a faust Table goes through its sensors, and with RocksDB decodes the
    stored JSON each time), not once per event."""
    now = time.time()
    settings_ = deps.settings
    entries = _entries(deps.cache, account_ids)
    missing = sorted(a for a, entry in entries.items()
                     if not isinstance(entry, _Unreadable)
                     and not is_fresh(entry, now, settings_.cache_ttl_s, settings_.cache_negative_ttl_s,
                                      replayed=a in replayed))
    metrics.cache_lookups(hits=len(account_ids) - len(missing), misses=len(missing))
    if not missing:
        return entries
    found = await retry_transient(lambda: deps.accounts.get_accounts(missing), what="PostgreSQL (accounts)")
    changed = deps.recent_changes.changed_since(missing, now) if deps.recent_changes else []
    if changed:       # changed while we fetched, and maybe not in the rows we got: once more
        again = time.time()
        found.update(await retry_transient(lambda: deps.accounts.get_accounts(changed), what="PostgreSQL (accounts)"))
        for account_id in changed:
            entry = fetched_entry(deps.cache.get(account_id), cache_entry(found.get(account_id), again), again)
            if entry is not None:
                deps.cache[account_id] = entry
        missing = [a for a in missing if a not in set(changed)]
    for account_id in missing:
        # `now` is when the fetch started: a change applied to the entry since then wins
        # (agents/account_changes.py; domain/changes.py says why).
        entry = fetched_entry(deps.cache.get(account_id), cache_entry(found.get(account_id), now), now)
        if entry is not None:
            deps.cache[account_id] = entry
    # read again after the awaits: a change (agents/account_changes.py) may have come meanwhile
    return _entries(deps.cache, account_ids)


@dataclass(frozen=True)
class _Unreadable:
    error: Exception


def _entries(cache: MutableMapping[str, Any], account_ids: set[str]) -> dict[str, Any]:
    """Each account's cache entry (None: none); one that cannot be read (a stored value that no
    longer decodes) is its events' fault, as `_Unreadable`, not the batch's."""
    entries: dict[str, Any] = {}
    for account_id in account_ids:
        try:
            entries[account_id] = cache.get(account_id)
        except Exception as exc:  # noqa: BLE001 - isolated to this account's events (_enriched)
            entries[account_id] = _Unreadable(exc)
    return entries


def is_replay(event: EventT) -> bool:
    """Sent back by `replay-dead-letters` (app/replay.py), which adds REPLAY_HEADER."""
    return REPLAY_HEADER in header_names(event.message.headers)


def history_row(event: EventT, tx: EnrichedTransaction, processed_at: datetime) -> HistoryRow:
    message = event.message
    return HistoryRow(event_id=tx.event_id, account_id=tx.account_id, occurred_at=tx.occurred_at,
                      category=tx.category, amount=tx.amount, currency=tx.currency,
                      end_to_end_id=tx.end_to_end_id, counterparty_key=tx.counterparty_key, channel=tx.channel,
                      customer_name=tx.customer_name, segment=tx.segment, risk_score=tx.risk_score,
                      source_topic=message.topic, source_partition=message.partition,
                      source_offset=message.offset, processed_at=processed_at)
