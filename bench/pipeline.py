"""The whole transactions pipeline against the passthrough ceiling and the seeds-style baseline,
on the real local stack, in one run (issue 7).

    scripts/stack up
    make bench                         # = .venv/bin/python -m bench.pipeline
    .venv/bin/python -m bench.pipeline --events 20000 --baseline-events 2000   # quicker

One run: a fresh PostgreSQL database (1,000 demo accounts, pg_stat_statements), CQL keyspace
and topic prefix. N sample events (app.commands.samples.transactions, 1,000 accounts of which 20 blocked: their
events are enriched with the account's status, not dead-lettered; `--bad-ratio` adds bad
ones) are produced ONCE into an 8-partition input topic; every contender then consumes that
same topic from the beginning with its own consumer group and its own output topics:

  passthrough  raw aiokafka getmany -> send (futures gathered per batch), no processing
  baseline     the seeds' style: per event decode+validate, one PostgreSQL query, one
               synchronous CQL insert (session.execute), producer.send_and_wait
               (time-boxed to --baseline-events: it is slow)
  faust        bench/faust_ceiling.py: the pipeline's faust worker machinery (same tuning,
               noack_take batches, gathered sends, acks) forwarding raw bytes, no processing
  pipeline     `faust -A app.main worker` subprocesses: 1 worker cold cache, the same app
               restarted (cache recovered from its changelog: warm) with 1 worker, then 2
               workers (warm); the input offsets of the group are rewound between passes.
  quix         bench/quix/worker.py, the same job in Quix Streams, in its own virtualenv
               (`make bench-quix`): one process, cold cache, then warm (accounts looked up
               before it is ready); its own topics, consumer group and history keyspace.

`--only` picks contenders (passthrough, baseline, faust, txpipe = the 1-worker cold and warm
passes, quix, extras = latency, profile, sales, 2 workers, the other loop, Avro); `--bad-ratio`
mixes bad events into the input; `--results` writes elsewhere than bench/results. Every txpipe
and Quix pass is checked (Bench.check): each input out exactly once, with the expected dead-letter
reason for a bad one, one row per good event in each history table, Quix's sink records equal to
txpipe's.

Throughput of every contender is computed the same way, from the timestamps of its output
messages: events between the 5th and the 95th percentile of output timestamps divided by
that time span (start-up and rebalance at the edges left out). CPU per event is the CPU
(utime+stime, /proc/<pid>/stat) of the process(es) doing the work over the pass, divided by
the events. Latency: with the warm worker running, events are produced at half the warm
1-worker rate into a second input topic; end-to-end = sink message timestamp (CreateTime set
by the worker's producer) minus the input message's timestamp (CreateTime set by our
producer), joined on the source-topic/-partition/-offset headers. Then the worker is profiled
with py-spy (--nonblocking) at full load, on extra events sent to that second input topic.
The CPU used meanwhile by the stack's servers (Kafka, Cassandra, PostgreSQL with its backends)
and by the whole machine is reported per event too: on one shared 2-core machine it is what
bounds the pipeline. The run holds the stack's test lock shared, as integration tests do.
Sales: orders produced to the sales topic, rows counted in PostgreSQL (processed_at is per
batch). Avro: bench/avro_codecs.py's functions.

Results: bench/results/pipeline.md, pipeline.json, pipeline.png, profile.md, profile.raw.txt
(py-spy's collapsed stacks: any flame-graph tool reads them). Re-render: python -m bench.report
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import signal
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from app.kafka_tools import bootstrap  # noqa: E402
from devtools import kafka, processes, stores  # noqa: E402
from devtools.kafka import delete_topics  # noqa: E402
from devtools.processes import free_port, stack_env  # noqa: E402,F401 - the other benchmarks import them from here
from app.settings import Settings  # noqa: E402
from models.transaction import CATEGORIES  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TICKS = os.sysconf("SC_CLK_TCK")
PARTITIONS = 8
QUIX_PYTHON = ROOT / "bench" / "quix" / ".venv" / "bin" / "python"      # `make bench-quix`
CONTENDERS = ("passthrough", "baseline", "faust", "txpipe", "quix", "extras", "profile", "latency")
PYSPY = str(ROOT / ".venv" / "bin" / "py-spy")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- processes ------------------------------------------------------------------------------

def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS       # utime + stime, seconds


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])                      # kB
    return 0


def stack_cpu() -> dict[str, float]:
    """CPU seconds so far of the stack's servers (their pid files; PostgreSQL with its
    backends), and of the whole machine (busy, all cores)."""
    out: dict[str, float] = {}
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    for name in ("kafka", "cassandra", "postgres"):
        try:
            root = int((ROOT / ".stack" / "run" / f"{name}.pid").read_text().split()[0])
            out[name] = sum(proc_cpu(pid) for pid in [root, *children.get(root, [])]
                            if Path(f"/proc/{pid}").exists())
        except (OSError, ValueError):
            out[name] = float("nan")
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    out["machine_busy"] = (sum(fields) - fields[3] - fields[4]) / TICKS
    return out


def stack_delta(before: dict[str, float], events: int) -> dict[str, float]:
    after = stack_cpu()
    return {f"{k}_cpu_us": (after[k] - before[k]) / events * 1e6 for k in before}


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Worker(processes.Worker):
    """The harness's worker, as the benchmark drives it: `start()` only launches (then
    `await wait_ready()`), the default loop is asyncio's, and a stop never raises."""

    def __init__(self, env: dict[str, str], log: Path, loop: str = "aio", module: str = "app.main",
                 argv: Optional[list[str]] = None, ready: bytes = processes.READY) -> None:
        super().__init__(env, log, loop, module, argv, ready)

    def start(self, timeout: float = 0) -> "Worker":
        return self.launch()

    def stop(self, timeout: float = 40) -> int:
        try:
            return super().stop(timeout)
        except subprocess.TimeoutExpired:
            return -9


# --- Kafka helpers --------------------------------------------------------------------------

async def create_topics(brokers: str, names: Iterable[str]) -> None:
    await kafka.create_topics(brokers, names, PARTITIONS)


_OFFSETS: dict[str, AIOKafkaConsumer] = {}


async def end_offsets(brokers: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """End offsets through one long-lived client (polled often: it must stay cheap)."""
    consumer = _OFFSETS.get(brokers)
    if consumer is None:
        consumer = _OFFSETS[brokers] = AIOKafkaConsumer(bootstrap_servers=bootstrap(brokers),
                                                        enable_auto_commit=False)
        await consumer.start()
    if any(len(consumer.partitions_for_topic(t) or ()) < PARTITIONS for t in topics):
        await consumer._client.force_metadata_update()
    tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
    return dict(await consumer.end_offsets(tps)) if tps else {}


async def close_offsets() -> None:
    for consumer in _OFFSETS.values():
        await consumer.stop()
    _OFFSETS.clear()


class CommitWatch:
    """When each offset of `topic` was committed by `group`: polled (every 0.1 s) while a pass
    runs. For Quix, an event is done at the checkpoint that wrote its history row and committed
    it, not when its output reached the broker (it does so before its history is written)."""

    def __init__(self, brokers: str, group: str, topic: str) -> None:
        self.group, self.topic = group, topic
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(brokers))
        self.polls: list[tuple[int, dict[int, int]]] = []      # (epoch ms, partition -> committed)
        self._series: Optional[dict[int, tuple[list[int], list[int]]]] = None

    async def __aenter__(self) -> "CommitWatch":
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.admin.close()

    async def poll(self) -> int:
        """The committed offsets now, summed over the partitions (recorded with the time)."""
        offsets = await self.admin.list_consumer_group_offsets(self.group)
        now = {tp.partition: max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == self.topic}
        self.polls.append((int(time.time() * 1000), now))
        return sum(now.values())

    def done_at(self, partition: int, offset: int) -> Optional[int]:
        """The time of the first poll that saw `offset` committed (committed offset > offset)."""
        if self._series is None:       # per partition: committed offsets (never decreasing), times
            self._series = {}
            for ms, committed in self.polls:
                for p, n in committed.items():
                    offsets, times = self._series.setdefault(p, ([], []))
                    offsets.append(max(n, offsets[-1] if offsets else 0))
                    times.append(ms)
        offsets, times = self._series.get(partition, ([], []))
        i = bisect.bisect_right(offsets, offset)
        return times[i] if i < len(times) else None


def total_since(ends: dict[TopicPartition, int], since: dict[TopicPartition, int]) -> int:
    return sum(end - since.get(tp, 0) for tp, end in ends.items())


def distinct_sources(records: list[Any], topic: str) -> int:
    """How many input records of `topic` these sink records come from (source headers)."""
    src = topic.encode()
    return len({(h.get("source-partition"), h.get("source-offset"))
                for h in (dict(r.headers) for r in records) if h.get("source-topic") == src})


async def read_since(brokers: str, since: dict[TopicPartition, int],
                     until: dict[TopicPartition, int]) -> list[Any]:
    """Records from `since` (default 0) up to `until`, on the partitions of `until`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(brokers), enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        remaining = {tp for tp, end in until.items() if end > since.get(tp, 0)}
        consumer.assign(list(remaining) or list(until))
        for tp in remaining:
            consumer.seek(tp, since.get(tp, 0))
        out: list[Any] = []
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=10_000, max_records=10_000)
            if not batch:
                raise TimeoutError(f"no data, still expecting {remaining}")
            for tp, records in batch.items():
                out.extend(r for r in records if r.offset < until[tp])
                if records and records[-1].offset + 1 >= until[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def produce(brokers: str, topic: str, items: Sequence[tuple[bytes, bytes]],
                  rate: Optional[float] = None) -> None:
    """Send (key, value) pairs; `rate`: events/s, paced in steps of 10 ms."""
    await kafka.produce(brokers, topic, items, rate=rate, max_batch_size=256 * 1024)


async def rewind_group(brokers: str, group: str, topic: str) -> None:
    """Commit offset 0 for every partition of `topic` in `group` (its members are stopped)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(brokers), group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        for attempt in range(30):
            try:
                await consumer.commit({tp: 0 for tp in tps})
                return
            except Exception as exc:  # noqa: BLE001 - group still rebalancing after the stop
                if attempt == 29:
                    raise
                say(f"  rewind {group}: {type(exc).__name__}, retrying")
                await asyncio.sleep(1)
    finally:
        await consumer.stop()


def steady_rate(timestamps_ms: Sequence[int]) -> tuple[float, float]:
    """(events/s between the 5th and 95th percentile of output timestamps, whole span s)."""
    ts = sorted(timestamps_ms)
    n = len(ts)
    lo, hi = int(n * 0.05), int(n * 0.95) - 1
    span = (ts[hi] - ts[lo]) / 1000
    return ((hi - lo) / span if span > 0 else float("inf")), (ts[-1] - ts[0]) / 1000


def utc_now() -> datetime:
    """Now as the CQL driver returns timestamps: naive UTC, milliseconds."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- the contenders -------------------------------------------------------------------------

async def passthrough(brokers: str, src: str, dst: str, events: int, group: str) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap(brokers), group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_poll_records=1000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(brokers), linger_ms=5,
                                max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    cpu0, wall0 = self_cpu(), time.monotonic()
    done = 0
    try:
        while done < events:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            futures = []
            for records in batch.values():
                for r in records:
                    futures.append(await producer.send(dst, r.value, key=r.key, headers=r.headers))
            await asyncio.gather(*futures)
            if batch:
                await consumer.commit()
            done += len(futures)
        cpu = self_cpu() - cpu0
    finally:
        await consumer.stop()
        await producer.stop()
    return {"events": done, "cpu_s": cpu, "wall_s": time.monotonic() - wall0}


async def baseline(settings: Settings, src: str, dst: str, events: int, group: str) -> dict[str, Any]:
    """The seeds' loop: per event decode+validate, one query, one synchronous insert, one
    send_and_wait. The CQL call blocks the event loop, as the seeds' code does."""
    from cassandra.cluster import Cluster
    from domain.errors import PermanentError
    from domain.transactions import decode, to_transaction

    cluster = Cluster(list(settings.cql_hosts), port=settings.cql_port, protocol_version=4)
    session = cluster.connect()
    session.execute(f"CREATE TABLE IF NOT EXISTS {settings.cql_keyspace}.baseline_history ("
                    "event_id text PRIMARY KEY, account_id text, occurred_at timestamp, category text,"
                    " amount decimal, customer_name text, segment text, processed_at timestamp)", timeout=60)
    insert = session.prepare(f"INSERT INTO {settings.cql_keyspace}.baseline_history (event_id, account_id,"
                             " occurred_at, category, amount, customer_name, segment, processed_at)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
    pg = await asyncpg.connect(settings.postgres_dsn)
    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap(settings.kafka_brokers), group_id=group,
                                enable_auto_commit=True, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(settings.kafka_brokers))
    await consumer.start()
    await producer.start()
    cpu0, wall0 = self_cpu(), time.monotonic()
    done = failed = 0
    try:
        async for msg in consumer:
            try:
                tx = to_transaction(decode(msg.value))
                row = await pg.fetchrow(
                    "SELECT a.account_id, a.status, c.name, c.segment, c.risk_score"
                    "  FROM accounts a JOIN customers c USING (customer_id) WHERE a.account_id = $1",
                    tx.account_id)
                if row is None or row["status"] != "active":
                    raise ValueError("unknown or blocked account")
                session.execute(insert, (tx.event_id, tx.account_id, tx.occurred_at, tx.category,
                                         tx.amount, row["name"], row["segment"], datetime.now(timezone.utc)))
                out = {**tx.asdict(), "customer_name": row["name"], "segment": row["segment"],
                       "risk_score": row["risk_score"]}
                await producer.send_and_wait(dst, json.dumps(out, default=str).encode(), key=msg.key,
                                             headers=[("source-offset", str(msg.offset).encode())])
            except (PermanentError, ValueError):
                failed += 1
                await producer.send_and_wait(dst, msg.value, key=msg.key)
            done += 1
            if done >= events:
                break
        cpu = self_cpu() - cpu0
    finally:
        await consumer.stop()
        await producer.stop()
        await pg.close()
        cluster.shutdown()
    return {"events": done, "rejected": failed, "cpu_s": cpu, "wall_s": time.monotonic() - wall0}


# --- the run --------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run = uuid.uuid4().hex[:8]
        self.base = stack_env()
        self.prefix = f"b{self.run}."
        self.app_id = f"bench-{self.run}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{self.run}-"))
        admin = self.base["APP_POSTGRES_DSN"].rsplit("/", 1)[0]
        self.admin_dsn, self.db = admin + "/postgres", f"bench_{self.run}"
        self.env = {**os.environ, **self.base, "APP_POSTGRES_DSN": f"{admin}/{self.db}", "APP_ENV": "test",
                    "APP_ID": self.app_id, "APP_TOPIC_PREFIX": self.prefix, "APP_CQL_KEYSPACE": f"b{self.run}",
                    "APP_INPUT_TOPICS": "transactions.raw,latency.raw", "APP_DATA_DIR": str(self.tmp / "data"),
                    # The passes of one run last longer than the default 300 s TTL: keep the
                    # warm cache warm for the whole run (expiry is not what is measured here).
                    "APP_CACHE_TTL_S": "3600"}
        if args.batch_wait is not None:
            self.env["APP_BATCH_WAIT_S"] = str(args.batch_wait)
        self.settings = Settings.load(self.env)
        self.brokers = self.settings.kafka_brokers
        self.src = self.settings.topic("transactions.raw")
        self.lat = self.settings.topic("latency.raw")
        self.sinks = [self.settings.sink_topic(c) for c in CATEGORIES] + [self.settings.topic(self.settings.dlq_topic)]
        self.r: dict[str, Any] = {"run": self.run, "events": args.events, "partitions": PARTITIONS,
                                  "python": platform.python_version(), "cpus": os.cpu_count()}
        self.workers: list[Worker] = []
        self.results: Path = args.results
        # The Quix contender writes its history to a keyspace of its own, so that each
        # contender's rows are counted apart.
        self.quix_settings = Settings.load({**self.env, "APP_CQL_KEYSPACE": f"b{self.run}q"})
        self.inputs: dict[tuple[int, int], Any] = {}       # (partition, offset) -> samples.transactions.Sample
        self.reference: dict[tuple[int, int], Any] = {}    # txpipe's sink records, decoded

    # setup / teardown
    async def setup(self) -> None:
        await stores.create_database(self.base["APP_POSTGRES_DSN"], self.db)
        await stores.seed_accounts(self.settings, 1000, migrate=True, count_queries=True)
        from app.adapters.cql import Cql
        for settings in (self.settings, self.quix_settings):
            cql = Cql(settings)
            try:
                await cql.migrate()
            finally:
                await cql.close()
        await create_topics(self.brokers, [self.src, self.lat, self.prefix + "pass.out", self.prefix + "base.out"])

    async def teardown(self) -> None:
        for w in self.workers:
            w.stop()
        try:
            await stores.drop_database(self.settings.postgres_dsn)
        except Exception as exc:  # noqa: BLE001
            say(f"drop database: {exc}")
        try:
            for settings in (self.settings, self.quix_settings):
                stores.drop_keyspace(settings)
        except Exception as exc:  # noqa: BLE001
            say(f"drop keyspace: {exc}")
        try:
            n = await delete_topics(self.brokers, [self.prefix, self.app_id + "-"])
            say(f"cleaned up: database {self.db}, keyspaces b{self.run} and b{self.run}q, {n} topics")
        except Exception as exc:  # noqa: BLE001
            say(f"delete topics: {exc}")
        shutil.rmtree(self.tmp / "data", ignore_errors=True)
        await close_offsets()

    async def account_queries(self) -> int:
        return await stores.enrichment_query_calls(self.settings)

    # phases
    async def produce_input(self) -> None:
        from app.commands.samples.transactions import samples
        t0 = time.monotonic()
        data = samples(self.args.events, bad_ratio=self.args.bad_ratio, accounts=1000, seed=11)
        self.sizes = statistics.mean(len(s.value) for s in data)
        t1 = time.monotonic()
        await produce(self.brokers, self.src, [(s.key, s.value) for s in data])
        say(f"produced {len(data):,} events (mean {self.sizes:.0f} B) into {self.src} "
            f"(generate {t1 - t0:.1f}s, produce {time.monotonic() - t1:.1f}s)")
        self.r["mean_event_bytes"] = round(self.sizes)
        self.r["bad_ratio"] = self.args.bad_ratio
        # Where each sample landed, for the checks: the same bytes are the same sample (a few
        # kinds of bad event have constant bytes, and then the same expected reason).
        by_value = {s.value: s for s in data}
        for r in await read_since(self.brokers, {}, await end_offsets(self.brokers, [self.src])):
            self.inputs[(r.partition, r.offset)] = by_value[r.value]
        self.r["bad_events"] = sum(1 for s in self.inputs.values() if s.expected_reason is not None)

    async def check(self, label: str, records: Sequence[Any], dlq: str, settings: Settings,
                    started: datetime) -> dict[str, Any]:
        """The correctness of a pass: every input event out exactly once (a sink record for a
        good one, carrying its event, a dead letter with the expected reason for a bad one),
        and exactly one history row per good event in each history table, written during
        this pass (processed_at after `started`: a later pass overwrites the rows of an earlier)."""
        from app.adapters.cql import Cql
        src = self.src.encode()
        seen: dict[tuple[int, int], int] = {}
        wrong = 0
        bodies: dict[tuple[int, int], Any] = {}
        for r in records:
            h = dict(r.headers)
            if h.get("source-topic") != src:
                continue
            pos = (int(h["source-partition"]), int(h["source-offset"]))
            seen[pos] = seen.get(pos, 0) + 1
            sample = self.inputs.get(pos)
            body = json.loads(r.value)
            if sample is None:
                wrong += 1
            elif r.topic == dlq:
                wrong += sample.expected_reason is None or body.get("reason") != sample.expected_reason.value
            else:
                wrong += sample.expected_reason is not None or body.get("event_id") != sample.event_id
                bodies[pos] = body
        good = {s.event_id for s in self.inputs.values() if s.expected_reason is None}
        cql = Cql(settings)
        try:
            by_event = [row.event_id for row in await cql.execute(
                f"SELECT event_id, processed_at FROM {settings.cql_keyspace}.history_by_event")
                if row.processed_at >= started]
            by_account = [row.event_id for row in await cql.execute(
                f"SELECT event_id, processed_at FROM {settings.cql_keyspace}.history_by_account")
                if row.processed_at >= started]
        finally:
            await cql.close()
        # Only this run's input counts: the latency and profile phases add events of their own.
        rows_event = sum(1 for e in by_event if e in good)
        rows_account = sum(1 for e in by_account if e in good)
        out = {"inputs": len(self.inputs), "missing": len(set(self.inputs) - set(seen)),
               "duplicates": sum(n - 1 for n in seen.values()), "wrong": wrong,
               "good": len(good), "history_by_event": rows_event, "history_by_account": rows_account}
        if self.reference and bodies is not self.reference:
            out["differs_from_txpipe"] = sum(1 for pos, body in bodies.items()
                                             if pos in self.reference and self.reference[pos] != body)
        out["ok"] = (not out["missing"] and not out["duplicates"] and not wrong and rows_event == len(good)
                     and rows_account == len(good) and not out.get("differs_from_txpipe"))
        if not self.reference and label.startswith("cold_1w"):
            self.reference = bodies
        say(f"{label} checks: {'OK' if out['ok'] else 'FAILED'}: " + ", ".join(
            f"{k} {v:,}" for k, v in out.items() if k != "ok"))
        return out

    async def contender(self, name: str, coro: Any, dst: str) -> None:
        stack0 = stack_cpu()
        res = await coro
        res.update(stack_delta(stack0, res["events"]))
        ends = await end_offsets(self.brokers, [dst])
        records = await read_since(self.brokers, {}, ends)
        rate, span = steady_rate([r.timestamp for r in records])
        res.update(rate=rate, span_s=span, cpu_us=res["cpu_s"] / res["events"] * 1e6)
        self.r[name] = res
        say(f"{name}: {res['events']:,} events, {rate:,.0f} events/s, {res['cpu_us']:.0f} CPU µs/event")

    async def faust_ceiling(self, take: str = "noack_take") -> None:
        """`take`: faust's noack_take, or "batches" (app.batching's, as the pipeline's agents take)."""
        name = "faust_ceiling" if take == "noack_take" else f"faust_ceiling_{take}"
        dst = self.prefix + name + ".out"
        await create_topics(self.brokers, [dst])
        env = {**os.environ, "BENCH_BROKERS": self.brokers, "BENCH_SRC": self.src, "BENCH_DST": dst,
               "BENCH_APP_ID": f"{self.app_id}-{name}", "BENCH_DATA_DIR": str(self.tmp / f"{name}-data"),
               "BENCH_BATCH_WAIT_S": str(self.settings.batch_wait_s), "BENCH_TAKE": take}
        w = Worker(env, self.tmp / f"{name}.log", self.args.loop, module="bench.faust_ceiling").start()
        self.workers.append(w)
        spy: Optional[subprocess.Popen[bytes]] = None
        try:
            await w.wait_ready()
            cpu0, stack0, t0 = proc_cpu(w.pid), stack_cpu(), time.monotonic()
            if "profile" in self.args.only and take == "noack_take":     # the whole pass; SIGINT: py-spy writes
                spy = subprocess.Popen([PYSPY, "record", "--pid", str(w.pid), "--rate", "97", "--nonblocking",
                                        "--format", "raw", "-o", str(self.results / "profile-faust.raw.txt")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while (got := total_since(await end_offsets(self.brokers, [dst]), {})) < self.args.events:
                if w.proc is not None and w.proc.poll() is not None:
                    raise RuntimeError(f"faust ceiling: the worker exited; see {w.log_path}")
                if time.monotonic() - t0 > self.args.pass_timeout:
                    raise TimeoutError(f"faust ceiling: {got:,} of {self.args.events:,}")
                await asyncio.sleep(0.5)
            res = {"events": got, "cpu_s": proc_cpu(w.pid) - cpu0, "loop": self.args.loop,
                   **stack_delta(stack0, got)}
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=30)
            w.stop()
        records = await read_since(self.brokers, {}, await end_offsets(self.brokers, [dst]))
        rate, span = steady_rate([r.timestamp for r in records])
        res.update(rate=rate, span_s=span, cpu_us=res["cpu_s"] / res["events"] * 1e6)
        self.r[name] = res
        say(f"{name}: {res['events']:,} events, {rate:,.0f} events/s, {res['cpu_us']:.0f} CPU µs/event")

    async def quix_pass(self, label: str, warm: bool) -> None:
        """bench/quix/worker.py in its own virtualenv: the same input from the beginning, its own
        consumer group, sink topics, dead-letter topic and history keyspace; one process. Its
        lookup cache lives in the process: cold, or `warm` (the 1,000 accounts looked up before
        "ready"). Measured as txpipe's passes are: CPU of the process from "ready" until every
        input event is out and committed, rate from the output timestamps."""
        prefix = self.prefix + "quix."
        template = prefix + self.settings.sink_topic_template
        sinks = [template.format(category=c) for c in CATEGORIES]
        dlq = prefix + self.settings.dlq_topic
        group = f"{self.app_id}-quix"
        if warm:
            await rewind_group(self.brokers, group, self.src)
        else:
            await create_topics(self.brokers, [*sinks, dlq])
        since = await end_offsets(self.brokers, [*sinks, dlq])
        env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap(self.brokers), "BENCH_SRC": self.src,
               "BENCH_SINK_TEMPLATE": template, "BENCH_DLQ": dlq, "BENCH_GROUP": group,
               "BENCH_POSTGRES_DSN": self.settings.postgres_dsn,
               "BENCH_POSTGRES_PASSWORD": self.settings.postgres_password,
               "BENCH_CQL_HOSTS": ",".join(self.settings.cql_hosts), "BENCH_CQL_PORT": str(self.settings.cql_port),
               "BENCH_CQL_KEYSPACE": self.quix_settings.cql_keyspace,
               "BENCH_CQL_BATCH_ROWS": str(self.settings.cql_batch_rows),
               "BENCH_CQL_CONCURRENCY": str(self.settings.cql_concurrency),
               "BENCH_CACHE_TTL_S": str(self.settings.cache_ttl_s),
               "BENCH_QUIX_COMMIT_INTERVAL": str(self.args.quix_commit_interval),
               "BENCH_QUIX_STATE_DIR": str(self.tmp / "quix-state"), "BENCH_QUIX_PREWARM": "1000" if warm else "0"}
        started = utc_now()
        w = Worker(env, self.tmp / f"{label}.log", argv=[str(QUIX_PYTHON), "-m", "bench.quix.worker"],
                   ready=b"quix contender: ready").start()
        self.workers.append(w)
        inputs = total_since(await end_offsets(self.brokers, [self.src]), {})
        try:
            async with CommitWatch(self.brokers, group, self.src) as commits:
                await w.wait_ready()
                q0 = await self.account_queries()     # after the warm-up's queries, if any
                cpu0, stack0, t0 = proc_cpu(w.pid), stack_cpu(), time.monotonic()
                # Out on the broker is not yet done: the history rows are written at the next
                # checkpoint (sinks flushed, then the producer, then the commit). txpipe writes
                # them before its outputs: so the pass ends when Quix has committed every offset.
                while (done := await commits.poll()) < inputs:
                    if w.proc is not None and w.proc.poll() is not None:
                        raise RuntimeError(f"quix: the worker exited; see {w.log_path}")
                    if time.monotonic() - t0 > self.args.pass_timeout:
                        raise TimeoutError(f"quix: {done:,} of {inputs:,} committed")
                    await asyncio.sleep(0.1)
                cpu = proc_cpu(w.pid) - cpu0
                stack = stack_delta(stack0, inputs)
                vmhwm = round(proc_status(w.pid, "VmHWM") / 1024)
        finally:
            w.stop()
        queries = await self.account_queries() - q0
        records = await read_since(self.brokers, since, await end_offsets(self.brokers, [*sinks, dlq]))
        src = self.src.encode()
        stamps, done_ms = [], []
        for r in records:
            h = dict(r.headers)
            if h.get("source-topic") == src:
                stamps.append(r.timestamp)
                at = commits.done_at(int(h["source-partition"]), int(h["source-offset"]))
                done_ms.append(max(r.timestamp, at if at is not None else commits.polls[-1][0]))
        # The rate as for the others, by output timestamps: the checkpoints' history writes pause
        # the outputs, so they are inside the 5th-95th percentile window, except the last
        # checkpoint's. Conservative beside it: done (output out, history stored, offset
        # committed) over the whole span, first output to last commit, which also counts the wait
        # for the last checkpoint (up to the commit interval plus a poll timeout). Done times come
        # in steps, one per checkpoint: percentiles of them would mislead.
        rate, span = steady_rate(stamps)
        done_span = (max(done_ms) - min(stamps)) / 1000
        rate_done = len(stamps) / done_span
        checks = await self.check(label, records, dlq, self.quix_settings, started)
        res = {"events": len(stamps), "workers": 1, "rate": rate, "rate_done_whole_span": rate_done,
               "span_s": span, "done_span_s": done_span, "cpu_s": cpu,
               "cpu_us": cpu / len(stamps) * 1e6, "pg_queries": queries,
               "pg_queries_per_1000": queries / len(stamps) * 1000, "vmhwm_mb": [vmhwm],
               "commit_interval_s": self.args.quix_commit_interval, "warm": warm, "checks": checks, **stack}
        self.r[label] = res
        say(f"{label}: {len(stamps):,} events, {rate:,.0f} events/s ({rate_done:,.0f}/s done, over the whole "
            f"span), {res['cpu_us']:.0f} CPU µs/event, {queries} account queries, VmHWM {vmhwm} MB; "
            "per event: Cassandra "
            f"{stack['cassandra_cpu_us']:.0f}, Kafka {stack['kafka_cpu_us']:.0f}, PostgreSQL "
            f"{stack['postgres_cpu_us']:.0f}, whole machine {stack['machine_busy_cpu_us']:.0f} CPU µs")

    async def start_workers(self, n: int, label: str, loop: str) -> list[Worker]:
        ws = [Worker({**self.env, "APP_WEB_PORT": str(free_port())}, self.tmp / f"{label}-{i}.log", loop).start()
              for i in range(n)]
        self.workers.extend(ws)
        for w in ws:
            await w.wait_ready()
        return ws

    def stop_workers(self, ws: list[Worker]) -> None:
        for w in ws:
            w.stop()

    async def pipeline_pass(self, label: str, nworkers: int, rewind: bool, loop: str = "") -> list[Worker]:
        loop = loop or self.args.loop
        if rewind:
            await rewind_group(self.brokers, self.app_id, self.src)
        since = await end_offsets(self.brokers, self.sinks)
        q0 = await self.account_queries()
        started = utc_now()
        t0 = time.monotonic()
        ws = await self.start_workers(nworkers, label, loop)
        cpu0 = {w.pid: proc_cpu(w.pid) for w in ws}
        stack0 = stack_cpu()
        say(f"{label}: {nworkers} worker(s) ready after {time.monotonic() - t0:.1f}s")
        while True:
            ends = await end_offsets(self.brokers, self.sinks)
            got = total_since(ends, since)
            # Done when every input is out, not at as many outputs as inputs: a repeat would
            # otherwise end the pass early and count the inputs still on their way as missing.
            if got >= self.args.events and distinct_sources(await read_since(self.brokers, since, ends),
                                                            self.src) >= self.args.events:
                break
            if any(w.proc is not None and w.proc.poll() is not None for w in ws):
                raise RuntimeError(f"{label}: a worker exited; logs in {self.tmp}")
            if time.monotonic() - t0 > self.args.pass_timeout:
                raise TimeoutError(f"{label}: {got:,} of {self.args.events:,} after {self.args.pass_timeout}s")
            await asyncio.sleep(1.0)
        cpu = sum(proc_cpu(w.pid) - cpu0[w.pid] for w in ws)
        stack = stack_delta(stack0, self.args.events)
        records = await read_since(self.brokers, since, ends)
        src = self.src.encode()
        stamps = [r.timestamp for r in records if dict(r.headers).get("source-topic") == src]
        rate, span = steady_rate(stamps)
        queries = await self.account_queries() - q0
        checks = await self.check(label, records, self.settings.topic(self.settings.dlq_topic), self.settings,
                                   started)
        res = {"events": len(stamps), "workers": nworkers, "checks": checks, "loop": loop, "rate": rate,
               "span_s": span, "cpu_s": cpu,
               "cpu_us": cpu / len(stamps) * 1e6, "pg_queries": queries,
               "pg_queries_per_1000": queries / len(stamps) * 1000,
               "vmhwm_mb": [round(proc_status(w.pid, "VmHWM") / 1024) for w in ws],
               "vmrss_mb": [round(proc_status(w.pid, "VmRSS") / 1024) for w in ws],
               "stall_recoveries": sum(w.log_path.read_bytes()[w.offset:].count(b"seeking back to") for w in ws),
               **stack}
        self.r[label] = res
        say(f"{label}: {len(stamps):,} events, {rate:,.0f} events/s, {res['cpu_us']:.0f} CPU µs/event, "
            f"{queries} account queries, VmHWM {res['vmhwm_mb']} MB; per event: Cassandra "
            f"{stack['cassandra_cpu_us']:.0f}, Kafka {stack['kafka_cpu_us']:.0f}, PostgreSQL "
            f"{stack['postgres_cpu_us']:.0f}, whole machine {stack['machine_busy_cpu_us']:.0f} CPU µs")
        return ws

    async def latency(self, ws: list[Worker], rate: float) -> None:
        from app.commands.samples.transactions import samples
        count = min(self.args.events, max(1000, int(rate * self.args.latency_s)))
        data = samples(count, bad_ratio=0, accounts=1000, seed=12)
        since = await end_offsets(self.brokers, self.sinks)
        t0 = time.monotonic()
        await produce(self.brokers, self.lat, [(s.key, s.value) for s in data], rate=rate)
        produce_s = time.monotonic() - t0
        while total_since(await end_offsets(self.brokers, self.sinks), since) < count:
            if time.monotonic() - t0 > 300:
                raise TimeoutError("latency phase")
            await asyncio.sleep(0.5)
        ends = await end_offsets(self.brokers, self.sinks)
        out = await read_since(self.brokers, since, ends)
        src_ends = await end_offsets(self.brokers, [self.lat])
        produced = {(r.partition, r.offset): r.timestamp for r in await read_since(self.brokers, {}, src_ends)}
        lat = []
        for r in out:
            h = dict(r.headers)
            if h.get("source-topic") == self.lat.encode():
                lat.append(r.timestamp - produced[(int(h["source-partition"]), int(h["source-offset"]))])
        self.r["latency"] = {"target_rate": rate, "achieved_rate": count / produce_s, "events": len(lat),
                             "p50_ms": percentile(lat, 0.50), "p99_ms": percentile(lat, 0.99),
                             "max_ms": max(lat), "ts_type": out[0].timestamp_type if out else None,
                             "load_avg_1m": os.getloadavg()[0]}
        say(f"latency at {rate:,.0f} events/s: p50 {self.r['latency']['p50_ms']} ms, "
            f"p99 {self.r['latency']['p99_ms']} ms ({len(lat):,} events; load average "
            f"{self.r['latency']['load_avg_1m']:.2f})")

    async def profile(self, ws: list[Worker]) -> None:
        """py-spy on the worker at full load: events produced unpaced into the second input."""
        from app.commands.samples.transactions import samples
        data = samples(min(self.args.events, 30_000), bad_ratio=0, accounts=1000, seed=14)
        since = await end_offsets(self.brokers, self.sinks)
        await produce(self.brokers, self.lat, [(s.key, s.value) for s in data])
        spy = subprocess.run([PYSPY, "record", "--pid", str(ws[0].pid), "--rate", "97", "--nonblocking",
                              "--format", "raw", "-o", str(self.results / "profile.raw.txt"),
                              "--duration", str(self.args.profile_s)], capture_output=True, text=True)
        if spy.returncode:
            say(f"py-spy: rc {spy.returncode}: {spy.stderr[-300:]}")
        while total_since(await end_offsets(self.brokers, self.sinks), since) < len(data):
            await asyncio.sleep(1.0)
        say(f"profiled the worker for {self.args.profile_s}s at full load ({len(data):,} events)")

    async def sales(self) -> None:
        from app.commands.samples.sales import order_samples
        orders = order_samples(self.args.orders, bad_ratio=0, seed=13)
        expected = len({o.order_number for o in orders})
        conn = await asyncpg.connect(self.settings.postgres_dsn)
        try:
            t0 = time.monotonic()
            await produce(self.brokers, self.settings.topic(self.settings.sales_topic),
                          [(o.key, o.value) for o in orders])
            while (n := await conn.fetchval("SELECT count(*) FROM sales")) < expected:
                if time.monotonic() - t0 > 300:
                    raise TimeoutError(f"sales: {n} of {expected} rows")
                await asyncio.sleep(0.2)
            wall = time.monotonic() - t0
            batches = await conn.fetch("SELECT processed_at, count(*) AS n FROM sales GROUP BY 1 ORDER BY 1")
        finally:
            await conn.close()
        first, last = batches[0]["processed_at"], batches[-1]["processed_at"]
        span = (last - first).total_seconds()
        rows_after_first = expected - batches[0]["n"]
        self.r["sales"] = {"orders": len(orders), "rows": expected, "wall_s": wall,
                           "orders_per_s": len(orders) / wall,
                           "rows_per_s": rows_after_first / span if span > 0 else float("inf"),
                           "upserts": len(batches), "rows_per_upsert": expected / len(batches)}
        say(f"sales: {len(orders):,} orders, {self.r['sales']['orders_per_s']:,.0f} orders/s end to end, "
            f"{self.r['sales']['rows_per_s']:,.0f} rows/s between first and last upsert, "
            f"{len(batches)} upserts")

    def avro(self) -> None:
        from bench.avro_codecs import cases, measure
        from domain.avro import AvroDecoder, AvroEncoder
        name, writer, reader, datums = cases(self.args.avro_events)[2]
        framed = [AvroEncoder(1, writer).encode(d) for d in datums]
        out = {}
        for backend in ("fastavro", "avro"):
            decoder = AvroDecoder(reader, backend=backend)
            decoder.add(1, writer)

            def run(decode: Any = decoder.decode) -> None:
                for raw in framed:
                    decode(raw)
            rate, cpu = measure(run, len(framed), 3)
            out[backend] = {"rate": rate, "cpu_us": cpu}
        self.r["avro"] = {"case": name, **out}
        say(f"avro decode ({name}): fastavro {out['fastavro']['rate']:,.0f}/s, avro {out['avro']['rate']:,.0f}/s")

    async def main(self) -> None:
        a = self.args
        self.results.mkdir(parents=True, exist_ok=True)
        say(f"run {self.run}: {a.events:,} events, {PARTITIONS} partitions, logs in {self.tmp}")
        await self.setup()
        try:
            await self.produce_input()
            if "passthrough" in a.only:
                await self.contender("passthrough", passthrough(self.brokers, self.src, self.prefix + "pass.out",
                                                                a.events, f"{self.app_id}-pass"),
                                     self.prefix + "pass.out")
            if "baseline" in a.only:
                await self.contender("baseline", baseline(self.settings, self.src, self.prefix + "base.out",
                                                          min(a.events, a.baseline_events), f"{self.app_id}-base"),
                                     self.prefix + "base.out")
            if "faust" in a.only:
                await self.faust_ceiling()
                await self.faust_ceiling("batches")
            if "txpipe" in a.only:
                ws = await self.pipeline_pass("cold_1w", 1, rewind=False)
                self.stop_workers(ws)
            if "quix" in a.only:
                await self.quix_pass("quix_1w", warm=False)
                await self.quix_pass("quix_warm_1w", warm=True)
            if "txpipe" in a.only:
                ws = await self.pipeline_pass("warm_1w", 1, rewind=True)
                if "extras" in a.only:
                    await self.extras(ws)
                elif "latency" in a.only:
                    await self.latency_runs(ws)
                    self.stop_workers(ws)
                else:
                    self.stop_workers(ws)
        finally:
            await self.teardown()
        from bench.report import write_all
        write_all(self.r, self.results)

    async def latency_runs(self, ws: list[Worker]) -> None:
        """`--latency-runs` latency phases at `--latency-rate` (default: half the warm 1-worker rate)."""
        runs = []
        for _ in range(self.args.latency_runs):
            await self.latency(ws, self.args.latency_rate or self.r["warm_1w"]["rate"] / 2)
            runs.append(self.r["latency"])
        self.r["latency_runs"] = runs
        self.r["latency"] = sorted(runs, key=lambda x: x["p50_ms"])[len(runs) // 2]   # the median run

    async def extras(self, ws: list[Worker]) -> None:
        """With the warm 1-worker pipeline running: latency, profile, sales; then 2 workers,
        the other event loop, Avro decoding."""
        a = self.args
        await self.latency_runs(ws)
        await self.profile(ws)
        await self.sales()
        self.r["warm_1w"]["vmhwm_after_all_mb"] = round(proc_status(ws[0].pid, "VmHWM") / 1024)
        self.stop_workers(ws)
        ws = await self.pipeline_pass("warm_2w", 2, rewind=True)
        self.stop_workers(ws)
        other = "aio" if a.loop == "uvloop" else "uvloop"
        ws = await self.pipeline_pass("warm_1w_other_loop", 1, rewind=True, loop=other)
        self.stop_workers(ws)
        self.avro()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="events per pipeline pass (default 100,000)")
    p.add_argument("--baseline-events", type=int, default=3_000,
                   help="events the (slow) baseline processes; its rate is measured on these")
    p.add_argument("--orders", type=int, default=20_000, help="sales orders")
    p.add_argument("--latency-s", type=float, default=30, help="length of the fixed-load latency phase")
    p.add_argument("--latency-runs", type=int, default=3, help="latency phases, one after the other (the "
                   "median run's figures are the result; every run is printed)")
    p.add_argument("--latency-rate", type=float, default=None,
                   help="events/s of the latency phases (default: half the warm 1-worker rate)")
    p.add_argument("--avro-events", type=int, default=20_000)
    p.add_argument("--batch-wait", type=float, default=None, help="APP_BATCH_WAIT_S (default: app/config/test.yaml)")
    p.add_argument("--loop", choices=("aio", "uvloop"), default="uvloop",
                   help="the workers' event loop (faust -L); one extra pass runs with the other")
    p.add_argument("--profile-s", type=int, default=12, help="py-spy recording at full load")
    p.add_argument("--pass-timeout", type=float, default=600)
    p.add_argument("--only", default=",".join(CONTENDERS),
                   help=f"comma-separated contenders to run, of {', '.join(CONTENDERS)} (default: all); txpipe is "
                        "its 1-worker cold and warm passes, extras the rest (latency, profile, sales, 2 workers, "
                        "the other loop, Avro: they need txpipe), latency the latency phases alone (with txpipe), "
                        "profile a py-spy recording of the faust "
                        "ceiling's whole pass (bench/results/profile-faust.md)")
    p.add_argument("--bad-ratio", type=float, default=0.0,
                   help="share of bad events in the input (app.commands.samples), to exercise the dead letters")
    p.add_argument("--results", type=Path, default=RESULTS, help=f"where the results go (default {RESULTS})")
    p.add_argument("--quix-commit-interval", type=float, default=1.0,
                   help="the Quix contender's commit_interval, in s (default 1; Quix's own default is 5)")
    args = p.parse_args(argv)
    args.only = {name.strip() for name in args.only.split(",") if name.strip()}
    if unknown := args.only - set(CONTENDERS):
        p.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(CONTENDERS)}")
    if args.only & {"extras", "latency"}:
        args.only.add("txpipe")
    if "quix" in args.only and not QUIX_PYTHON.exists():
        p.error(f"--only quix needs {QUIX_PYTHON}: run `make bench-quix`")
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    # Like the integration tests: hold the stack's test lock shared, so that a disruptive
    # test (exclusive) does not stop a server in the middle of a measurement.
    say("waiting for the stack lock (shared; disruptive tests hold it exclusively)")
    with processes.stack_lock():
        up = subprocess.run([str(ROOT / "scripts" / "stack"), "status"], capture_output=True, text=True)
        if " down " in up.stdout:
            raise SystemExit(f"a server of the stack is down:\n{up.stdout}run: scripts/stack up")
        asyncio.run(Bench(args).main())


if __name__ == "__main__":
    main()
