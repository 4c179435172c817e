"""The transactions job written in Quix Streams: a contender of bench/pipeline.py.

Runs in its own virtualenv (bench/quix/.venv, from bench/quix/requirements.txt: no faust).
Same input, same work as txpipe's transactions agent: decode (JSON or base64-wrapped JSON) and
validate with txpipe's domain/ functions, enrich from PostgreSQL through Quix's PostgresLookup
(its TTL cache; the same accounts-JOIN-customers query as app/adapters/postgres.py), forward
per category with the source headers, dead-letter what fails with txpipe's envelope, and write
two history rows per good event (history_by_account, history_by_event: the columns of
app/adapters/cql.py) from a BatchingSink, in UNLOGGED batches of 8 prepared inserts.

Quix works one record at a time through the StreamingDataFrame on confluent-kafka (librdkafka);
at each checkpoint (every BENCH_QUIX_COMMIT_INTERVAL s) it flushes the sinks, then the producer,
then commits: at-least-once, history and outputs idempotent as txpipe's.

    BENCH_BOOTSTRAP=127.0.0.1:19092 BENCH_SRC=... BENCH_SINK_TEMPLATE='p.transactions.{category}.enriched' \\
    BENCH_DLQ=p.pipeline.dlq BENCH_GROUP=... BENCH_POSTGRES_DSN=postgresql://postgres@127.0.0.1:15432/app \\
    BENCH_CQL_HOSTS=127.0.0.1 BENCH_CQL_PORT=19042 BENCH_CQL_KEYSPACE=... \\
    bench/quix/.venv/bin/python -m bench.quix.worker
"""
from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.quix import records  # noqa: E402

records.install()          # before domain/: its record types, without faust

from cassandra import OperationTimedOut, Unavailable, WriteTimeout  # noqa: E402
from cassandra.cluster import Cluster, NoHostAvailable, Session  # noqa: E402
from cassandra.concurrent import execute_concurrent  # noqa: E402
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy  # noqa: E402
from cassandra.query import BatchStatement, BatchType, PreparedStatement  # noqa: E402
from psycopg2.extensions import cursor as PgCursor  # noqa: E402
from quixstreams import Application, message_context  # noqa: E402
from quixstreams.dataframe.joins.lookups.postgresql import PostgresLookup, PostgresLookupQueryField  # noqa: E402
from quixstreams.models import HeadersTuples, Topic  # noqa: E402
from quixstreams.models.serializers import Serializer  # noqa: E402
from quixstreams.sinks.base import BatchingSink, SinkBackpressureError, SinkBatch  # noqa: E402

from domain.dead_letters import dead_letter  # noqa: E402
from domain.enrichment import cache_entry, enrich  # noqa: E402
from domain.errors import PermanentError, Stage, internal_error  # noqa: E402
from domain.parsing import TimeRules  # noqa: E402
from domain.transactions import decode, to_transaction  # noqa: E402

log = logging.getLogger("bench.quix")
CATEGORIES = records.CATEGORIES
# The query of app/adapters/postgres.py's get_accounts, for one account (Quix looks keys up
# one at a time); pg_stat_statements counts it with txpipe's under the same LIKE pattern.
ACCOUNT_QUERY = ("SELECT a.account_id, a.status, a.opened_at, c.customer_id, c.name, c.document,"
                 "       c.segment, c.risk_score"
                 "  FROM accounts a JOIN customers c USING (customer_id)"
                 " WHERE a.account_id = %(account_id)s")
ACCOUNT_COLUMNS = ("account_id", "status", "opened_at", "customer_id", "name", "document", "segment",
                   "risk_score")
HISTORY_BY_ACCOUNT = ("account_id", "occurred_at", "event_id", "category", "amount", "currency", "end_to_end_id",
                      "counterparty_key", "channel", "customer_name", "segment", "risk_score", "source_topic",
                      "source_partition", "source_offset", "processed_at")
HISTORY_BY_EVENT = ("event_id", "account_id", "occurred_at", "category", "amount", "source_topic",
                    "source_partition", "source_offset", "processed_at")
_CQL_OUTAGE = (NoHostAvailable, OperationTimedOut, WriteTimeout, Unavailable, ConnectionError, OSError)


def env(name: str, default: Optional[str] = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"configuration error: {name} is not set")
    return value


# --- enrichment: Quix's lookup join ---------------------------------------------------------

class AccountField(PostgresLookupQueryField):
    """The account and its customer in one query; cached by PostgresLookup as the entry that
    domain.enrichment.enrich reads (None: PostgreSQL does not know the account)."""

    def result(self, cursor: PgCursor) -> Any:
        row = cursor.fetchone()
        return cache_entry(dict(zip(ACCOUNT_COLUMNS, row, strict=True)) if row else None, time.time())


class AccountLookup(PostgresLookup):
    """PostgresLookup for the records that reached enrichment: an event already failed has no
    account to look up (a lookup join on every record is what Quix does otherwise)."""

    def join(self, fields: Mapping[str, Any], on: str, value: dict[str, Any], key: Any, timestamp: int,
             headers: Any) -> None:
        if value["error"] is None:
            super().join(fields, on, value, key, timestamp, headers)


# --- the steps, one record at a time --------------------------------------------------------

RULES = TimeRules()            # txpipe's defaults (APP_TIMESTAMP_EARLIEST, APP_TIMESTAMP_MAX_AHEAD_S)


def parse(value: Optional[bytes], key: Optional[bytes], timestamp: int, headers: Any,
          rules: TimeRules = RULES) -> dict[str, Any]:
    """Decode and validate with txpipe's functions; never raises (the event's error is kept)."""
    out: dict[str, Any] = {"raw": value, "key": key, "tx": None, "error": None, "account_id": None}
    try:
        tx = to_transaction(decode(value), rules=rules)
        out["tx"], out["account_id"] = tx, tx.account_id
    except PermanentError as err:
        out["error"] = err
    except Exception as exc:  # noqa: BLE001 - isolated to this event, as txpipe does
        out["error"] = internal_error(Stage.DECODE, exc)
    return out


def make_route(sink_topics: Mapping[str, Topic], dlq: Topic) -> Any:
    def route(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> dict[str, Any]:
        """Enrich, then the output record: its topic, key and body (txpipe's JSON, or the dead letter)."""
        if value["error"] is None:
            try:
                value["tx"] = enrich(value["tx"], value["account"])
            except PermanentError as err:
                value["error"] = err
            except Exception as exc:  # noqa: BLE001 - isolated to this event
                value["error"] = internal_error(Stage.ENRICH, exc)
        if value["error"] is None:
            tx = value["tx"]
            value["topic"], value["out_key"] = sink_topics[tx.category], tx.account_id.encode()
            value["body"] = tx.dumps()
        else:
            ctx = message_context()
            letter = dead_letter(value["error"], topic=ctx.topic, partition=ctx.partition, offset=ctx.offset,
                                 timestamp=timestamp / 1000, key=value["key"], value=value["raw"])
            value["topic"], value["out_key"], value["body"] = dlq, value["key"], letter.dumps()
        return value
    return route


def source_headers(value: Any, key: Any, timestamp: int, headers: Any) -> HeadersTuples:
    ctx = message_context()
    return [("source-topic", ctx.topic.encode()), ("source-partition", str(ctx.partition).encode()),
            ("source-offset", str(ctx.offset).encode())]


class Body(Serializer):
    """The output's bytes were made by the route step (txpipe's JSON): write them as they are."""

    def __call__(self, value: Any, ctx: Any) -> bytes:
        return bytes(value["body"])


# --- history: a BatchingSink to the CQL server ------------------------------------------------

class CqlHistorySink(BatchingSink):
    """Two rows per good event, flushed at each checkpoint: UNLOGGED batches of `batch_rows`
    prepared inserts per table, `concurrency` requests in flight (APP_CQL_BATCH_ROWS and
    APP_CQL_CONCURRENCY of txpipe). An outage pauses the partitions (backpressure) and the
    checkpoint's records are processed again; a refused write fails the checkpoint."""

    def __init__(self, hosts: Sequence[str], port: int, keyspace: str, batch_rows: int = 8,
                 concurrency: int = 64, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.hosts, self.port, self.keyspace = list(hosts), port, keyspace
        self.batch_rows, self.concurrency, self.timeout_s = batch_rows, concurrency, timeout_s
        self._cluster: Optional[Cluster] = None
        self._session: Optional[Session] = None
        self._by_account: Optional[PreparedStatement] = None
        self._by_event: Optional[PreparedStatement] = None
        self.rows = 0

    def setup(self) -> None:
        if self._session is not None:
            return
        self._cluster = Cluster(self.hosts, port=self.port, protocol_version=4,
                                load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()))
        self._session = self._cluster.connect()
        self._session.default_timeout = self.timeout_s
        self._by_account = self._prepare("history_by_account", HISTORY_BY_ACCOUNT)
        self._by_event = self._prepare("history_by_event", HISTORY_BY_EVENT)

    def _prepare(self, table: str, columns: Sequence[str]) -> PreparedStatement:
        assert self._session is not None
        return self._session.prepare(f"INSERT INTO {self.keyspace}.{table} ({', '.join(columns)})"
                                     f" VALUES ({', '.join('?' * len(columns))})")

    def write(self, batch: SinkBatch) -> None:
        assert self._session is not None and self._by_account is not None and self._by_event is not None
        processed_at = datetime.now(timezone.utc)
        by_account, by_event = [], []
        for item in batch:
            tx = item.value["tx"]
            row = {**tx.asdict(), "source_topic": batch.topic, "source_partition": batch.partition,
                   "source_offset": item.offset, "processed_at": processed_at}
            by_account.append(tuple(row[c] for c in HISTORY_BY_ACCOUNT))
            by_event.append(tuple(row[c] for c in HISTORY_BY_EVENT))
        statements = [(self._unlogged(stmt, params[i:i + self.batch_rows]), ())
                      for stmt, params in ((self._by_account, by_account), (self._by_event, by_event))
                      for i in range(0, len(params), self.batch_rows)]
        try:
            execute_concurrent(self._session, statements, concurrency=self.concurrency, raise_on_first_error=True)
        except _CQL_OUTAGE as exc:
            log.warning("CQL server: %s: %s; pausing for 5 s", type(exc).__name__, exc)
            raise SinkBackpressureError(retry_after=5.0) from exc
        self.rows += len(by_event)

    @staticmethod
    def _unlogged(statement: PreparedStatement, rows: Sequence[Sequence[Any]]) -> BatchStatement:
        unlogged = BatchStatement(batch_type=BatchType.UNLOGGED)
        for row in rows:
            unlogged.add(statement, row)
        return unlogged

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = self._session = None


# --- the application ---------------------------------------------------------------------------

def postgres_args(dsn: str) -> dict[str, Any]:
    url = urlparse(dsn)
    return {"host": url.hostname or "127.0.0.1", "port": url.port or 5432, "dbname": url.path.lstrip("/"),
            "user": unquote(url.username or "postgres"),
            "password": os.environ.get("BENCH_POSTGRES_PASSWORD", unquote(url.password or ""))}


def build(history: CqlHistorySink, prewarm: int = 0) -> Application:
    app = Application(
        broker_address=env("BENCH_BOOTSTRAP"),
        consumer_group=env("BENCH_GROUP"),
        auto_offset_reset="earliest",
        # Each checkpoint flushes the history sink, then the producer, then commits. 1 s rather
        # than Quix's 5: no more CPU per event in 10,000-event runs with 0.5, 1, 2.8 and 5 s, less
        # memory (the sink holds a checkpoint's rows) and history rows sooner.
        commit_interval=float(env("BENCH_QUIX_COMMIT_INTERVAL", "1.0")),
        # librdkafka's consumer already prefetches in large batches on its own thread
        # (queued.min.messages 100000, fetch.max.bytes 50 MB): its defaults are kept. The
        # producer lingers 5 ms and waits for all replicas, as txpipe's faust producer does.
        producer_extra_config={"linger.ms": 5, "acks": "all"},
        loglevel=env("BENCH_QUIX_LOGLEVEL", "WARNING"),
        auto_create_topics=False,            # bench/pipeline.py creates them, 8 partitions
        use_changelog_topics=False,          # no state: the account cache is the lookup's
        state_dir=os.environ.get("BENCH_QUIX_STATE_DIR") or None,
    )
    source = app.topic(env("BENCH_SRC"), value_deserializer="bytes", key_deserializer="bytes")
    body = Body()
    sinks = {c: app.topic(env("BENCH_SINK_TEMPLATE").format(category=c), value_serializer=body,
                          key_serializer="bytes") for c in CATEGORIES}
    dlq = app.topic(env("BENCH_DLQ"), value_serializer=body, key_serializer="bytes")

    lookup = AccountLookup(**postgres_args(env("BENCH_POSTGRES_DSN")), cache_size=100_000)
    accounts = {"account": AccountField(query=ACCOUNT_QUERY, ttl=float(env("BENCH_CACHE_TTL_S", "300")))}
    for n in range(prewarm):        # a warm cache, as in a worker that has run for a while
        account = f"acc-{n:06d}"    # app.commands.samples.transactions.account_id
        lookup.join(accounts, account, {"account_id": account, "error": None}, None, 0, [])

    sdf = app.dataframe(source)
    sdf = sdf.apply(parse, metadata=True)
    sdf = sdf.join_lookup(lookup, accounts, on="account_id")
    sdf = sdf.apply(make_route(sinks, dlq), metadata=True)
    sdf = sdf.set_headers(source_headers)
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: int(time.time() * 1000))
    sdf = sdf.to_topic(lambda value, key, timestamp, headers: value["topic"], key=lambda value: value["out_key"])
    sdf = sdf.filter(lambda value: value["error"] is None)
    sdf.sink(history)
    return app


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    history = CqlHistorySink(env("BENCH_CQL_HOSTS", "127.0.0.1").split(","), int(env("BENCH_CQL_PORT", "19042")),
                             env("BENCH_CQL_KEYSPACE"), batch_rows=int(env("BENCH_CQL_BATCH_ROWS", "8")),
                             concurrency=int(env("BENCH_CQL_CONCURRENCY", "64")))
    history.setup()                  # connected before "ready", as txpipe's worker is
    app = build(history, prewarm=int(env("BENCH_QUIX_PREWARM", "0")))
    print("quix contender: ready", flush=True)
    try:
        app.run()
    finally:
        history.close()


if __name__ == "__main__":
    main()

