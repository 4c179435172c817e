"""Sales orders on the real stack: the `sales` table holds exactly the expected totals after
bad input, a PostgreSQL outage and a worker SIGKILL, and the database itself counts batches
of 100 (pg_stat_statements and the batch timestamp)."""
from __future__ import annotations

import asyncio
import base64
import collections
import subprocess
import time
from decimal import Decimal
from typing import Any, Iterable, Optional

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.kafka_tools import bootstrap, read_all
from devtools import kafka
from app.commands.samples.sales import OrderSample, expected_table, order_samples
from devtools.processes import FAUST, ROOT, wait_until

GRACE_S = 15          # an orchestrator's grace period between SIGTERM and SIGKILL
UPSERT_STATS = (
    "SELECT coalesce(sum(calls), 0)::int AS calls, coalesce(sum(rows), 0)::int AS rows"
    "  FROM pg_stat_statements"
    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    "   AND query LIKE 'INSERT INTO sales %'")


def report(line: str) -> None:
    print(f"\n[sales] {line}", flush=True)


async def sql(settings: Any, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.postgres_dsn, timeout=10)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def sales_table(settings: Any) -> dict[int, Decimal]:
    try:
        rows = await sql(settings, "SELECT order_number, total FROM sales")
    except asyncpg.UndefinedTableError:     # the worker has not migrated yet
        return {}
    return {r["order_number"]: r["total"] for r in rows}


async def rows_per_batch(settings: Any) -> collections.Counter[int]:
    """Batch size -> number of batches: a batch's rows share processed_at (one statement's now())."""
    rows = await sql(settings, "SELECT count(*) AS n FROM sales GROUP BY processed_at")
    return collections.Counter(r["n"] for r in rows)


async def create_topic(settings: Any) -> None:
    """The sales topic as the worker would declare it, for a backlog sent before it starts."""
    await kafka.create_topics(settings.kafka_brokers, [settings.topic(settings.sales_topic)], settings.topic_partitions,
                        settings.topic_replicas)


async def produce(settings: Any, samples: Iterable[OrderSample],
                  pace: Optional[tuple[int, float]] = None) -> list[tuple[int, int]]:
    """Send the orders keyed by order number; their (partition, offset), in order."""
    sent = await kafka.produce(settings.kafka_brokers, settings.topic(settings.sales_topic),
                               ((s.key, s.value) for s in samples), pace=pace)
    return [(m.partition, m.offset) for m in sent]


async def dead_letters(settings: Any) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(settings.kafka_brokers,
                                                          settings.topic(settings.dlq_topic))]


async def wait_for_table(settings: Any, expected: dict[int, Decimal], timeout: float) -> None:
    want_count, want_sum = len(expected), sum(expected.values())
    last: dict[str, Any] = {}

    async def done() -> bool:
        rows = await sql(settings, "SELECT count(*) AS n, coalesce(sum(total), 0) AS s FROM sales")
        last.update(rows[0])
        return bool(rows[0]["n"] == want_count and rows[0]["s"] == want_sum)

    try:
        await wait_until(done, timeout, f"{want_count} orders totalling {want_sum} in `sales`", interval=0.2)
    except TimeoutError:
        raise AssertionError(f"`sales` has {last}, expected {want_count} rows totalling {want_sum}") from None


def check_dead_letters(letters: list[dict[str, Any]], data: list[OrderSample],
                       positions: list[tuple[int, int]], topic: str, exactly_once: bool) -> int:
    """Every bad order, and only those, dead-lettered with its reason; returns duplicates."""
    expected = {pos: s for pos, s in zip(positions, data, strict=True) if s.expected_reason is not None}
    seen = collections.Counter((letter["source_partition"], letter["source_offset"]) for letter in letters)
    assert set(seen) == set(expected), "every malformed order, and only those, is dead-lettered"
    for letter in letters:
        sample = expected[(letter["source_partition"], letter["source_offset"])]
        assert letter["reason"] == sample.expected_reason.value, letter
        assert base64.b64decode(letter["value_b64"]) == sample.value
        assert base64.b64decode(letter["key_b64"]) == sample.key
        assert letter["source_topic"] == topic and letter["error"]
        assert letter["stage"] in ("decode", "validate")
    duplicates = sum(seen.values()) - len(seen)
    if exactly_once:
        assert duplicates == 0
    return duplicates


def enable_statement_stats(settings: Any, event_loop_run: Any) -> None:
    event_loop_run(sql(settings, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))


def stack(*args: str) -> float:
    started = time.monotonic()
    result = subprocess.run([str(ROOT / "scripts" / "stack"), *args], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, f"scripts/stack {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return time.monotonic() - started


def test_10k_orders_with_bad_ones_give_exactly_the_expected_table(workers: Any, settings: Any,
                                                                  event_loop_run: Any) -> None:
    data = order_samples(10_000, bad_ratio=0.05, resend_ratio=0.02, seed=41)
    expected = expected_table(data)
    bad = [s for s in data if s.expected_reason]
    assert len(bad) > 300 and len(expected) + len(bad) < len(data), "the data has bad orders and resends"
    enable_statement_stats(settings, event_loop_run)
    workers().start()

    async def scenario() -> None:
        started = time.monotonic()
        positions = await produce(settings, data)
        produced = time.monotonic() - started
        await wait_for_table(settings, expected, 120)
        elapsed = time.monotonic() - started
        assert await sales_table(settings) == expected

        async def all_letters() -> bool:
            return len(await dead_letters(settings)) >= len(bad)

        await wait_until(all_letters, 30, "every bad order dead-lettered")
        check_dead_letters(await dead_letters(settings), data, positions,
                           settings.topic(settings.sales_topic), exactly_once=True)
        stats = (await sql(settings, UPSERT_STATS))[0]
        reasons = collections.Counter(s.expected_reason.value for s in bad)
        report(f"10k: {len(data)} orders in {elapsed:.1f}s ({len(data) / elapsed:.0f} orders/s; producing "
               f"took {produced:.1f}s) -> {len(expected)} rows, {len(bad)} dead letters {dict(reasons)}; "
               f"upsert calls={stats['calls']} rows={stats['rows']}")

    event_loop_run(scenario())


def test_under_load_the_database_receives_batches_of_100(workers: Any, settings: Any,
                                                          event_loop_run: Any) -> None:
    """A backlog of 5,000 good, distinct orders: 50 upserts of 100 rows, as PostgreSQL counts them."""
    data = order_samples(5_000, seed=42)
    expected = expected_table(data)
    assert len(expected) == 5_000
    enable_statement_stats(settings, event_loop_run)
    event_loop_run(create_topic(settings))
    event_loop_run(produce(settings, data))
    workers().start()

    async def scenario() -> None:
        await wait_for_table(settings, expected, 120)
        assert await sales_table(settings) == expected
        stats = (await sql(settings, UPSERT_STATS))[0]
        sizes = await rows_per_batch(settings)
        report(f"batches: pg_stat_statements upsert calls={stats['calls']} rows={stats['rows']}; "
               f"rows per batch (by processed_at) {dict(sorted(sizes.items()))}")
        # Every upsert carried 100 rows. At-least-once: a batch upserted but not yet acked when
        # the group rebalances is delivered and upserted again (same rows, same totals), so a
        # 51st call of 100 rows is legitimate; a call of fewer rows is not.
        assert stats["rows"] == 100 * stats["calls"], "every upsert statement carries 100 rows"
        assert 50 <= stats["calls"] <= 52
        assert sizes == {100: 50}

    event_loop_run(scenario())


@pytest.mark.disruptive
def test_postgres_stop_and_start_mid_stream_loses_nothing(workers: Any, settings: Any,
                                                          event_loop_run: Any) -> None:
    data = order_samples(6_000, bad_ratio=0.05, resend_ratio=0.02, seed=43)
    expected = expected_table(data)
    topic = settings.topic(settings.sales_topic)
    worker = workers().start()

    async def scenario() -> None:
        positions = await produce(settings, data[:2_000])

        async def some_rows() -> bool:
            return len(await sales_table(settings)) >= 500

        await wait_until(some_rows, 60, "the first orders in `sales`", interval=0.2)
        down_s = stack("down", "postgres")
        outage_started = time.monotonic()
        positions += await produce(settings, data[2_000:])
        await asyncio.sleep(8)          # the worker keeps retrying while PostgreSQL is away
        assert worker.proc is not None and worker.proc.poll() is None, "the worker survives the outage"
        up_s = stack("up", "postgres")
        back = time.monotonic()
        await wait_for_table(settings, expected, 120)
        caught_up = time.monotonic() - back
        assert await sales_table(settings) == expected

        async def all_letters() -> bool:
            return len(await dead_letters(settings)) >= sum(1 for s in data if s.expected_reason)

        await wait_until(all_letters, 30, "every bad order dead-lettered")
        check_dead_letters(await dead_letters(settings), data, positions, topic, exactly_once=True)
        log = worker.log_path.read_text(errors="replace")
        went = [line for line in log.splitlines() if "PostgreSQL (sales totals) unavailable" in line]
        came = [line for line in log.splitlines() if "PostgreSQL (sales totals) available again" in line]
        assert len(went) == 1 and len(came) == 1, "one line per change of state:\n" + "\n".join(went + came)
        report(f"outage: stack down {down_s:.1f}s, outage {back - outage_started:.1f}s, stack up "
               f"{up_s:.1f}s, table complete {caught_up:.1f}s after PostgreSQL was back; "
               f"log: {came[0].split(': ', 1)[-1]}")

    try:
        event_loop_run(scenario())
    finally:
        stack("up", "postgres")          # whatever happened, leave the stack as we found it


@pytest.mark.disruptive
def test_shutdown_while_postgres_is_down_acks_nothing_it_did_not_save(workers: Any, settings: Any,
                                                                      event_loop_run: Any) -> None:
    """SIGTERM while a batch is retrying, then SIGKILL after a grace period as an orchestrator
    does: no offset of an unsaved batch is committed (with `take()` it would be: its
    `finally` acks), so the next worker, once PostgreSQL is back, saves every order.

    faust's default `stream_wait_empty=True` makes the stop wait for that unacked batch,
    i.e. for PostgreSQL; with STREAM_WAIT_EMPTY=false the worker exits at once. Both pass."""
    data = order_samples(3_000, bad_ratio=0.05, seed=45)
    expected = expected_table(data)
    first = workers().start()

    async def scenario() -> None:
        await produce(settings, data[:1_000])
        await wait_for_table(settings, expected_table(data[:1_000]), 60)
        stack("down", "postgres")
        await produce(settings, data[1_000:])
        await wait_until(lambda: "PostgreSQL (sales totals) unavailable" in first.log_path.read_text(), 30,
                         "the worker retrying")
        await asyncio.sleep(2)
        stopping = time.monotonic()
        try:
            how = f"exited with {first.stop(timeout=GRACE_S)}"
        except subprocess.TimeoutExpired:
            how = f"still waiting for its unsaved batch after {GRACE_S}s, SIGKILLed"
        stopped = time.monotonic() - stopping
        stack("up", "postgres")
        workers().start()
        await wait_for_table(settings, expected, 120)
        assert await sales_table(settings) == expected
        report(f"shutdown mid-retry: SIGTERM -> {how} ({stopped:.1f}s); the next worker saved every order")

    try:
        event_loop_run(scenario())
    finally:
        stack("up", "postgres")


def test_worker_sigkill_mid_stream_then_restart_gives_exactly_the_expected_table(
        workers: Any, settings: Any, event_loop_run: Any) -> None:
    data = order_samples(10_000, bad_ratio=0.05, resend_ratio=0.02, seed=44)
    expected = expected_table(data)
    topic = settings.topic(settings.sales_topic)
    enable_statement_stats(settings, event_loop_run)
    event_loop_run(create_topic(settings))
    positions = event_loop_run(produce(settings, data))
    first = workers().start()

    async def scenario() -> None:
        async def mid_stream() -> bool:
            return len(await sales_table(settings)) >= 1_500

        await wait_until(mid_stream, 60, "the worker halfway through", interval=0.05)
        first.kill()
        killed = time.monotonic()
        at_kill = len(await sales_table(settings))
        assert at_kill < len(expected), "killed mid-stream"
        workers().start()
        started = time.monotonic() - killed
        await wait_for_table(settings, expected, 180)
        recovered = time.monotonic() - killed
        assert await sales_table(settings) == expected

        async def all_letters() -> bool:
            letters = await dead_letters(settings)
            distinct = {(d["source_partition"], d["source_offset"]) for d in letters}
            return len(distinct) >= sum(1 for s in data if s.expected_reason)

        await wait_until(all_letters, 30, "every bad order dead-lettered")
        duplicates = check_dead_letters(await dead_letters(settings), data, positions, topic,
                                        exactly_once=False)
        stats = (await sql(settings, UPSERT_STATS))[0]
        report(f"kill: SIGKILL at {at_kill}/{len(expected)} rows; restarted worker ready after "
               f"{started:.1f}s, "
               f"table complete {recovered:.1f}s after the kill; upsert calls={stats['calls']} "
               f"(replayed batches rewrite nothing), dead letters replayed={duplicates}")

    event_loop_run(scenario())


def test_the_sample_file_sent_twice_gives_the_same_100_rows(workers: Any, settings: Any, event_loop_run: Any,
                                                            app_env: dict[str, str]) -> None:
    """`send-orders --file data/sales_sample.json` twice: a redelivered batch changes nothing."""
    from domain.sales import order_total, parse_order

    sample = orjson.loads((ROOT / "data" / "sales_sample.json").read_bytes())
    expected = {o["order_number"]: order_total(parse_order(orjson.dumps(o))) for o in sample}
    worker = workers().start()

    def send_orders() -> None:
        sent = subprocess.run([FAUST, "-A", "app.main", "send-orders", "--file", "data/sales_sample.json"],
                              cwd=ROOT, env={**worker.env, **app_env}, capture_output=True, text=True,
                              timeout=120, check=False)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "100/100" in sent.stderr, "a progress bar"

    async def table_with_times() -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await sql(settings, "SELECT * FROM sales ORDER BY order_number")]

    send_orders()
    event_loop_run(wait_for_table(settings, expected, 60))
    first = event_loop_run(table_with_times())
    send_orders()
    event_loop_run(wait_until(lambda: consumer_lag(settings), 60, "the second copy consumed and committed"))
    assert event_loop_run(sales_table(settings)) == expected
    assert event_loop_run(table_with_times()) == first, "same rows, same processed_at"


async def consumer_lag(settings: Any) -> bool:
    """True when the app's consumer group has committed every offset of the sales topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(settings.kafka_brokers), group_id=settings.id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        topic = settings.topic(settings.sales_topic)
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            if (await consumer.committed(tp) or 0) < ends[tp]:
                return False
        return bool(tps)
    finally:
        await consumer.stop()
