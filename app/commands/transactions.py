"""Worker-side commands: `faust -A app.main <command> --help`."""
from __future__ import annotations

import asyncio
import collections
import random
from typing import Any, Iterator, Optional

import orjson
from faust.cli import AppCommand, option
from tqdm import tqdm

from app.assets import MissingAssetError
from app.kafka_security import aiokafka_auth, check_broker_access
from app.commands.producing import send_all
from app.kafka_tools import message_counts, read_all
from app.main import app, settings
from app.topics import dead_letters, sinks, transactions_in
from domain.errors import TransientError
from app.commands.samples.transactions import samples
from domain.transactions import decode
from models.avro_schemas import RAW_TRANSACTION_FIELDS


@app.command(
    option("--count", "-n", type=int, default=1000, show_default=True, help="Events to send."),
    option("--bad-ratio", type=float, default=0.05, show_default=True, help="Share of bad events."),
    option("--avro-ratio", type=float, default=0.0, show_default=True,
           help="Share of good events sent as Avro (Confluent wire format, schema RawTransaction)."),
    option("--accounts", type=int, default=1000, show_default=True, help="Distinct account ids."),
    option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same data)."),
)
async def send_transactions(self: AppCommand, count: int, bad_ratio: float, avro_ratio: float,
                            accounts: int, seed: int) -> None:
    """Send COUNT realistic raw transaction events (45 fields, all categories, some bad)."""
    await check_broker_access(settings)
    await transactions_in.maybe_declare()
    topic = transactions_in.get_topic_name()
    encoder = None
    if avro_ratio > 0:
        from app.adapters.registry import RegistryError
        async with app.resources as resources:
            try:
                encoder = await resources.transactions_avro.use_schema(
                    topic, auto_register=settings.schema_auto_register)
            except (RegistryError, TransientError) as exc:
                raise SystemExit(f"send-transactions: {exc}") from None
    rng = random.Random(seed)

    def messages() -> Iterator[tuple[Optional[bytes], bytes]]:
        for sample in samples(count, bad_ratio=bad_ratio, accounts=accounts, seed=seed):
            value = sample.value
            if encoder is not None and sample.expected_reason is None and rng.random() < avro_ratio:
                event = decode(value)
                value = encoder.encode({k: v for k, v in event.items() if k in RAW_TRANSACTION_FIELDS})
            yield sample.key, value

    await send_all(topic, messages(), desc=f"sending to {topic}", total=count)


@app.command(
    option("--total", is_flag=True, help="Print only the total of forwarded + dead-lettered events."),
    option("--until-total", type=int, default=0, help="First wait until the total reaches this."),
    option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait at most."),
)
async def report(self: AppCommand, total: bool, until_total: int, timeout: float) -> None:
    """Print how many events each sink topic and the dead-letter topic hold, and why."""
    await check_broker_access(settings)
    auth = aiokafka_auth(settings)
    names = [t.get_topic_name() for t in sinks.values()] + [dead_letters.get_topic_name()]
    deadline = asyncio.get_running_loop().time() + timeout
    counts = await message_counts(settings.kafka_brokers, names, **auth)
    while sum(counts.values()) < until_total:
        if asyncio.get_running_loop().time() > deadline:
            raise SystemExit(f"only {sum(counts.values())} of {until_total} events arrived in {timeout}s")
        await asyncio.sleep(0.5)
        counts = await message_counts(settings.kafka_brokers, names, **auth)
    if total:
        print(sum(counts.values()))
        return
    for name in names:
        print(f"{name:45s} {counts[name]:>8d}")
    reasons: collections.Counter[Any] = collections.Counter(
        orjson.loads(r.value)["reason"] for r in await read_all(settings.kafka_brokers, names[-1], **auth)
    )
    for reason, n in reasons.most_common():
        print(f"  dead letters, {reason:30s} {n:>6d}")

    async with app.resources.cql:
        try:
            history = await app.resources.history.count_history()
            print(f"{'ScyllaDB/Cassandra history rows (by event id)':45s} {history:>8d}")
            latest = await read_all(settings.kafka_brokers, names[0], **auth)
            if latest:
                print("\nan enriched payment, as the sink topic holds it:")
                print(orjson.dumps(orjson.loads(latest[-1].value), option=orjson.OPT_INDENT_2).decode())
        except TransientError as exc:
            print(f"(history not readable: {exc})")


@app.command()
async def migrate(self: AppCommand) -> None:
    """Apply the PostgreSQL migrations and create the CQL keyspace and tables."""
    async with app.resources as resources:
        try:
            applied = await resources.postgres.migrate()
            await resources.cql.migrate()
        except TransientError as exc:
            raise SystemExit(f"migrate: {exc} (is the stack up? scripts/stack status)") from None
        except MissingAssetError as exc:
            raise SystemExit(f"migrate: {exc}") from None
    print(f"PostgreSQL: {', '.join(applied) or 'up to date'}; CQL keyspace {settings.cql_keyspace}: ready")


@app.command(
    option("--count", "-n", type=int, default=1000, show_default=True,
           help="Accounts acc-000000 .. acc-<count-1> (the ids send-transactions uses)."),
)
async def seed_accounts(self: AppCommand, count: int) -> None:
    """Insert demo customers and accounts (idempotent: existing ids are left alone)."""
    async with app.resources.postgres as postgres:
        try:
            await postgres.migrate()
            status = await postgres.seed_demo_accounts(count)
        except TransientError as exc:
            raise SystemExit(f"seed-accounts: {exc} (is the stack up? scripts/stack status)") from None
    print(f"accounts: {status}")


@app.command(
    option("--reason", default=None, help="Only dead letters with this reason code."),
    option("--stage", default=None, help="Only dead letters of this stage (decode, validate, enrich)."),
    option("--days", type=int, default=1, show_default=True, help="Look back this many days (UTC)."),
    option("--limit", type=int, default=1000, show_default=True, help="Replay at most this many."),
    option("--dry-run", is_flag=True, help="List what would be replayed, send nothing."),
)
async def replay_dead_letters(self: AppCommand, reason: Optional[str], stage: Optional[str], days: int,
                              limit: int, dry_run: bool) -> None:
    """Send chosen dead letters' original bytes back to their source topic."""
    from app import replay

    store = app.resources.dead_letter_store
    async with app.resources.cql:
        try:
            await app.maybe_start_producer()
            chosen = await replay.find(store, replay.Selection.last_days(days, reason=reason, stage=stage, limit=limit))
            if dry_run:
                for row in chosen:
                    print(f"{row.source_topic}/{row.source_partition}@{row.source_offset} {row.reason}: {row.error}")
            else:
                await replay.send_back(app.producer, tqdm(chosen, desc="replaying", unit="ev"), store=store)
        except TransientError as exc:
            raise SystemExit(f"replay-dead-letters: {exc}") from None
    print(f"{'would replay' if dry_run else 'replayed'} {len(chosen)} dead letters")
