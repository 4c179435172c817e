"""ScyllaDB / Cassandra through scylla-driver: async execution, bounded concurrency, schema."""
from __future__ import annotations

import asyncio
import logging
import re
import threading
from importlib.resources.abc import Traversable
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import cassandra
from cassandra import (DriverException, InvalidRequest, OperationTimedOut, ProtocolVersion, ReadTimeout, Unavailable,
                       WriteTimeout)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable, ResponseFuture, Session
from cassandra.connection import ConnectionException
from cassandra.policies import ConstantReconnectionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.pool import NoConnectionsAvailable
from cassandra.marshal import int32_pack, uint16_pack
from cassandra.protocol import (_PROTOCOL_TIMESTAMP_FLAG, _WITH_SERIAL_CONSISTENCY_FLAG, ErrorMessage,
                                IsBootstrappingErrorMessage, OverloadedErrorMessage, PreparedQueryNotFound,
                                ResultMessage, _MessageType, write_byte, write_consistency_level, write_int,
                                write_long, write_short)
from cassandra.query import BatchType, PreparedStatement

from app import assets
from app.adapters import Adapter
from app.settings import Settings
from domain.errors import PermanentError, Reason, Stage, TransientError


log = logging.getLogger(__name__)
# A connection lost or full, a server overloaded or bootstrapping: outages. Not a ServerError
# (an internal error of the server, which one value can cause): the event's fault until the
# isolation of app/batching.py shows otherwise, never retried without bound.
_CONNECTION_FAILURES = (ConnectionException, NoConnectionsAvailable, OSError)
_TRANSIENT = (NoHostAvailable, OperationTimedOut, ReadTimeout, WriteTimeout, Unavailable,
              ConnectionError, *_CONNECTION_FAILURES, OverloadedErrorMessage, IsBootstrappingErrorMessage,
              PreparedQueryNotFound)


class Cql(Adapter):
    """One driver session per worker. Connects lazily in a thread (the driver's connect is
    blocking), never blocks the event loop afterwards: statements run with execute_async
    and complete through call_soon_threadsafe; a semaphore bounds single statements in flight,
    the window of one round at a time the writes of `execute_all`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keyspace = settings.cql_keyspace
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", self.keyspace):
            raise ValueError(f"APP_CQL_KEYSPACE={self.keyspace!r} is not a valid keyspace name")
        self._cluster: Optional[Cluster] = None
        self._session: Optional[Session] = None
        self._direct: Optional[_Direct] = None
        self._lock = asyncio.Lock()
        self._prepared: dict[str, PreparedStatement] = {}
        self._slots = asyncio.Semaphore(settings.cql_concurrency)
        self._rounds = asyncio.Lock()

    async def session(self) -> Session:
        if self._session is None:
            async with self._lock:
                if self._session is None:
                    session = await asyncio.get_running_loop().run_in_executor(None, self._connect)
                    self._direct = _Direct.for_session(session, self.settings.cql_direct_writes)
                    self._session = session
        return self._session

    def _connect(self) -> Session:
        auth = None
        if self.settings.cql_username:
            auth = PlainTextAuthProvider(self.settings.cql_username, self.settings.cql_password)
        cluster = Cluster(list(self.settings.cql_hosts), port=self.settings.cql_port, auth_provider=auth,
                          connect_timeout=self.settings.cql_timeout_s, protocol_version=4,
                          load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
                          reconnection_policy=ConstantReconnectionPolicy(1.0, None))
        try:
            session = cluster.connect()
        except _TRANSIENT:
            cluster.shutdown()
            raise
        session.default_timeout = self.settings.cql_timeout_s
        self._cluster = cluster
        return session

    async def execute(self, statement: Any, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement (CQL text or a prepared statement); outages raise TransientError."""
        try:
            session = await self.session()
            async with self._slots:
                return await self._submit(session, statement, params)
        except (*_TRANSIENT, InvalidRequest) as exc:
            raise _classified(exc) from exc

    async def execute_many(self, statement: PreparedStatement, rows: Iterable[Sequence[Any]]) -> None:
        """Run a prepared statement for each row concurrently (bounded), all or an exception."""
        await self.execute_all((statement, row) for row in rows)

    @property
    def sends_encoded_batches(self) -> bool:
        """Whether `execute_all` takes EncodedBatch statements (the session connected, with the
        direct writes on); otherwise only what the driver's `execute_async` takes."""
        return self._direct is not None

    async def execute_all(self, calls: Iterable[tuple[Any, Sequence[Any]]]) -> None:
        """Run (statement, params) pairs concurrently, at most `cql_concurrency` in flight; all
        succeed or one exception is raised, a transient one first (the caller retries them all).
        Results are not read: this is for writes.

        A `_Round` of the driver's own: each statement sent without a request timeout (the
        driver then arms no libev timer per request, which wakes its I/O thread), the next one
        sent from the driver's callback of the last (as cassandra.concurrent does), and the
        event loop woken once, when all are settled; an EncodedBatch (the history rows, when
        `sends_encoded_batches`) goes straight to a pooled connection (`_Direct`). The timeout is kept per round: no
        answer to any of its statements for `cql_timeout_s` is an outage (OperationTimedOut), as
        a request's own timeout was. A statement the server no longer knows (PreparedQueryNotFound:
        a server restarted without its prepared cache) is an outage after which the statements
        are prepared again."""
        try:
            session = await self.session()
        except _TRANSIENT as exc:
            raise _classified(exc) from exc
        async with self._rounds:           # one round at a time per worker: its window is the bound
            # a list: the driver's thread takes the next call from it, and nothing of ours runs there
            round_ = _Round(session, list(calls), self.settings.cql_concurrency, asyncio.get_running_loop(),
                            self._direct)
            errors = await round_.run(self.settings.cql_timeout_s)
        if any(isinstance(e, PreparedQueryNotFound) for e in errors):
            log.warning("the CQL server no longer knows a prepared statement (restarted?): preparing them again")
            self._prepared.clear()
        if errors:
            classified = [_classified(e) if isinstance(e, (*_TRANSIENT, InvalidRequest)) else e for e in errors]
            transient = [e for e in classified if isinstance(e, TransientError)]
            raise transient[0] if transient else classified[0]

    async def prepare(self, cql: str) -> PreparedStatement:
        if cql not in self._prepared:
            session = await self.session()
            loop = asyncio.get_running_loop()
            try:
                self._prepared[cql] = await loop.run_in_executor(None, session.prepare, cql)
            except _TRANSIENT as exc:
                raise TransientError(f"CQL prepare: {exc}") from exc
        return self._prepared[cql]

    @staticmethod
    def _submit(session: Session, statement: Any, params: Sequence[Any]) -> "asyncio.Future[list[Any]]":
        """The statement sent; a future of every row of its result, all pages (the driver
        calls back once per page, on its own thread)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Any]] = loop.create_future()
        future: ResponseFuture = session.execute_async(statement, params)
        rows: list[Any] = []

        def settle(result: Optional[list[Any]], exc: Optional[BaseException]) -> None:
            if done.done():
                return
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(result or [])

        def ok(page: Any) -> None:
            try:
                rows.extend(page or ())
                if future.has_more_pages:
                    future.start_fetching_next_page()   # calls ok (or failed) again, on a driver thread
                    return
            except Exception as exc:  # noqa: BLE001 - the driver swallows callback errors: hand it over
                loop.call_soon_threadsafe(settle, None, exc)
                return
            loop.call_soon_threadsafe(settle, rows, None)

        def failed(exc: BaseException) -> None:
            loop.call_soon_threadsafe(settle, None, exc)

        future.add_callbacks(ok, failed)
        return done

    async def migrate(self) -> None:
        """Create the keyspace and apply app/migrations/cql/*.cql (idempotent statements)."""
        files = assets.migrations("cql")      # before connecting: a broken install is no outage
        await self.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {self.settings.cql_replication_factor}}}")
        for path in files:
            for statement in _statements(path):
                await self.execute(statement.replace("{keyspace}", self.keyspace))

    async def close(self) -> None:
        if self._cluster is not None:
            cluster, self._cluster, self._session = self._cluster, None, None
            await asyncio.get_running_loop().run_in_executor(None, cluster.shutdown)


class _Round:
    """Statements run by the driver, `window` of them in flight: each one settled on the
    driver's I/O thread sends the next, and the last one settled wakes the event loop, once.
    Stops sending at the first error (the caller retries the whole round anyway)."""

    def __init__(self, session: Session, calls: Iterable[tuple[Any, Sequence[Any]]], window: int,
                 loop: asyncio.AbstractEventLoop, direct: Optional["_Direct"] = None) -> None:
        self._session = session
        self._direct = direct
        self._calls: Iterator[tuple[Any, Sequence[Any]]] = iter(calls)
        self._window = window
        self._loop = loop
        self._lock = threading.Lock()
        self._unsettled = 0              # sent, not answered yet
        self._sent: list[Any] = []    # ResponseFutures and _Requests, for the timeout only
        self._stopped = False            # no more sends: all sent, an error, or timed out
        self._woken = False
        self._settled = 0                # statements answered so far (progress, for the timeout)
        self.errors: list[BaseException] = []
        self._done: asyncio.Future[None] = loop.create_future()

    async def run(self, timeout: float) -> list[BaseException]:
        for _ in range(self._window):
            if not self._send_next():
                break
        self._maybe_done()
        try:
            await self._wait(timeout)
        except asyncio.CancelledError:
            with self._lock:
                self._stopped = True     # what is in flight is answered into the void
            raise
        return self.errors

    async def _wait(self, timeout: float) -> None:
        seen = -1
        while not self._done.done():
            if self._settled == seen:    # nothing answered for `timeout` seconds
                self._time_out(timeout)
                break
            seen = self._settled
            try:
                await asyncio.wait_for(asyncio.shield(self._done), timeout or None)
            except asyncio.TimeoutError:
                continue

    def _send_next(self) -> bool:
        """Send the next statement; False when there is none (or sending stopped)."""
        with self._lock:
            if self._stopped:
                return False
            call = next(self._calls, None)
            if call is None:
                self._stopped = True
                return False
            self._unsettled += 1
        statement, params = call
        try:
            if type(statement) is EncodedBatch:
                if self._direct is None:
                    raise RuntimeError("an EncodedBatch needs the direct writes (Cql.sends_encoded_batches)")
                self._sent.append(self._direct.send(statement, self._ok, self._failed))
                return True
            future: ResponseFuture = self._session.execute_async(statement, params, timeout=None)
        except BaseException as exc:  # noqa: BLE001 - refused at submission: the round's error
            self._failed(exc, None)
            return False
        self._sent.append(future)
        future.add_callbacks(self._ok, self._failed, errback_args=(future,))
        return True

    def _ok(self, _rows: Any) -> None:
        with self._lock:
            self._unsettled -= 1
            self._settled += 1
        self._send_next()
        self._maybe_done()

    def _failed(self, exc: BaseException, _future: Optional[ResponseFuture]) -> None:
        with self._lock:
            self._unsettled -= 1
            self._settled += 1
            self._stopped = True
            self.errors.append(exc)
        self._maybe_done()

    def _maybe_done(self) -> None:
        with self._lock:
            if self._woken or not self._stopped or self._unsettled:
                return
            self._woken = True
        self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _time_out(self, timeout: float) -> None:
        """What the driver's own request timeout does, for each statement still unanswered (on
        its I/O thread, which keeps the stream id until a late answer comes); the round ends."""
        with self._lock:
            self._stopped = True
            self._woken = True
        pending = [f for f in self._sent if not (f.settled if isinstance(f, _Request) else f._event.is_set())]
        self.errors.insert(0, OperationTimedOut(f"no answer to {len(pending)} CQL request(s) in {timeout:g} s"))
        for future in pending:
            if isinstance(future, _Request):
                self._session.cluster.connection_class.create_timer(0, future.time_out)
                continue
            future.timeout = timeout
            self._session.cluster.connection_class.create_timer(0, future._on_timeout)


NULL_VALUE = int32_pack(-1)            # a value of a BATCH message: its length, -1 for null
value_length = int32_pack              # ... then the value's bytes (protocol v4/v5, [bytes])


def statement_head(statement: PreparedStatement, values: int) -> bytes:
    """How a BATCH message starts one of its statements: prepared (kind 1), its query id, its
    count of values; the values follow, each `value_length(len(v)) + v` or NULL_VALUE."""
    query_id = statement.query_id
    return b"\x01" + uint16_pack(len(query_id)) + query_id + uint16_pack(values)


class EncodedBatch:
    """An UNLOGGED batch of one table's rows, each already in a BATCH message's form
    (`statement_head` + its values): what `_Direct` sends as it is, with no BatchStatement,
    BoundStatement or value list in between. Routed as the driver routes a batch: by its first
    row's partition key (the attributes the load-balancing policy reads are here)."""

    __slots__ = ("statements", "count", "routing_key", "keyspace", "table")
    consistency_level = None           # the session's default, as for the driver's batches
    serial_consistency_level = None

    def __init__(self, statements: bytes, count: int, routing_key: Optional[bytes], keyspace: str,
                 table: str) -> None:
        self.statements, self.count = statements, count
        self.routing_key, self.keyspace, self.table = routing_key, keyspace, table

    @staticmethod
    def is_lwt() -> bool:
        return False


class _EncodedBatchMessage(_MessageType):
    """The BATCH request of an EncodedBatch, written as the driver's BatchMessage writes its body
    (tests/unit/test_history.py compares the two to the byte). Its name starts with `_` so that
    the driver does not register it in place of its own BatchMessage."""

    opcode = 0x0D
    name = "BATCH"

    def __init__(self, batch: EncodedBatch, consistency: int, serial: Optional[int],
                 timestamp: Optional[int]) -> None:
        self.batch, self.consistency, self.serial, self.timestamp = batch, consistency, serial, timestamp

    def send_body(self, f: Any, protocol_version: int, protocol_features: Any = None) -> None:
        write_byte(f, BatchType.UNLOGGED.value)
        write_short(f, self.batch.count)
        f.write(self.batch.statements)
        write_consistency_level(f, self.consistency)
        flags = ((_WITH_SERIAL_CONSISTENCY_FLAG if self.serial else 0)
                 | (_PROTOCOL_TIMESTAMP_FLAG if self.timestamp is not None else 0))
        (write_int if ProtocolVersion.uses_int_query_flags(protocol_version) else write_byte)(f, flags)
        if self.serial:
            write_consistency_level(f, self.serial)
        if self.timestamp is not None:
            write_long(f, self.timestamp)


class _Direct:
    """An EncodedBatch (the history rows) sent as the driver sends a request, without its
    ResponseFuture per request (events, locks, retry and paging machinery: most of a write's
    client CPU, bench/results/cql-send.txt): the message as `Session._create_response_future`
    would make it (consistency, serial consistency, client timestamp), the host from the
    session's own load-balancing policy (token-aware), a connection and stream id from that
    host's pool (shard-aware on ScyllaDB), the answer taken by `_Request`. A connection that
    fails moves the write to the next host, as the driver does; when none takes it,
    NoHostAvailable is the round's error, an outage to the caller, which retries the whole
    round. Any other exception (the message itself) is raised as it is: the batch's fault, for
    its isolation."""

    WRITTEN_FOR = "3.29.12"      # the scylla-driver whose internals this uses (its pool, connection, messages)

    @classmethod
    def for_session(cls, session: Session, enabled: bool, version: str = cassandra.__version__
                    ) -> Optional["_Direct"]:
        """None (the writes go through `execute_async`) when off, or for another driver release:
        its internals may have changed, and a silent misuse of them would be worse than the CPU."""
        if not enabled:
            return None
        if version != cls.WRITTEN_FOR:
            log.warning("scylla-driver %s, not %s: history writes go through execute_async (APP_CQL_DIRECT_WRITES "
                        "needs the release it was written for)", version, cls.WRITTEN_FOR)
            return None
        return cls(session)

    def __init__(self, session: Session) -> None:
        cluster = session.cluster
        self._session = session
        self._policy = cluster.load_balancing_policy          # the Cluster is built with legacy parameters
        self._consistency = session.default_consistency_level
        self._serial = session.default_serial_consistency_level
        self._timestamps = cluster.timestamp_generator if session.use_client_timestamp else None
        self._handler = session.client_protocol_handler
        self._metadata = cluster.metadata

    def send(self, batch: EncodedBatch, ok: Callable[[Any], None],
             failed: Callable[[BaseException, Any], None]) -> "_Request":
        """Sent on the first host of the query plan that takes it; raises NoHostAvailable."""
        message = _EncodedBatchMessage(batch, self._consistency, self._serial,
                                       self._timestamps() if self._timestamps is not None else None)
        routing_key, token = batch.routing_key, None
        if routing_key is not None:
            token_map = self._metadata.token_map
            if token_map is not None and self._metadata.can_support_partitioner():
                token = token_map.token_class.from_key(routing_key)
        errors: dict[Any, BaseException] = {}
        for host in self._policy.make_query_plan(self._session.keyspace, batch):
            pool = self._session._pools.get(host)
            if pool is None or pool.is_shutdown:
                continue
            try:
                connection, request_id = pool.borrow_connection(
                    timeout=2.0, routing_key=routing_key, keyspace=batch.keyspace, table=batch.table,
                    routing_token=token)
            except _CONNECTION_FAILURES as exc:      # this host is full or down: the next
                errors[host] = exc
                continue
            request = _Request(pool, connection, request_id, ok, failed)
            try:
                connection.send_msg(message, request_id, cb=request.answer, encoder=self._handler.encode_message,
                                    decoder=self._handler.decode_message, result_metadata=None)
            except BaseException as exc:
                request.settled = True
                pool.return_connection(connection)
                if not isinstance(exc, _CONNECTION_FAILURES):
                    raise                          # not the connection's: the same on every host
                errors[host] = exc
                continue
            return request
        raise NoHostAvailable("no CQL host could take the write", errors)


class _Request:
    """One write `_Direct` sent: its answer (on the driver's I/O thread) returns the stream to
    the pool and settles it once, as ResponseFuture._set_result does for a write; `time_out`
    (also on that thread) gives the stream up as ResponseFuture._on_timeout does: orphaned
    until a late answer comes."""

    def __init__(self, pool: Any, connection: Any, request_id: int, ok: Callable[[Any], None],
                 failed: Callable[[BaseException, Any], None]) -> None:
        self.pool, self.connection, self.request_id = pool, connection, request_id
        self.ok, self.failed = ok, failed
        self.settled = False

    def answer(self, response: Any) -> None:
        if self.settled:
            return
        self.settled = True
        if not self.pool.is_shutdown:
            self.pool.return_connection(self.connection)
        if isinstance(response, ResultMessage):
            self.ok(None)
        elif isinstance(response, ErrorMessage):
            try:
                error = response.to_exception()
            except Exception as exc:  # noqa: BLE001 - nothing may escape to the driver's thread: it would drop it
                error = exc
            self.failed(error, None)
        elif isinstance(response, BaseException):      # the connection closed or failed
            self.failed(response, None)
        else:
            self.failed(DriverException(f"unexpected answer to a CQL write: {type(response).__name__}"), None)

    def time_out(self) -> None:
        if self.settled:
            return
        self.settled = True
        connection = self.connection
        try:
            connection._requests.pop(self.request_id)
        except KeyError:
            return        # the connection was closed meanwhile: it took its streams along
        if not self.pool.is_shutdown:
            with connection.lock:
                connection.orphaned_request_ids.add(self.request_id)
                if len(connection.orphaned_request_ids) >= connection.orphaned_threshold:
                    connection.orphaned_threshold_reached = True
            self.pool.return_connection(connection, stream_was_orphaned=True)


def _classified(exc: BaseException) -> Exception:
    """A driver error as the pipeline's error model sees it."""
    classified: Exception
    if isinstance(exc, InvalidRequest):
        # The server refused the data itself (a value or batch too large, a bad value):
        # the event's fault, never an outage (app/batching.py finds which event).
        classified = PermanentError(Stage.STORE, Reason.REJECTED_BY_DATABASE,
                                    f"the CQL server refused the write: {exc}"[:1000])
    else:
        classified = TransientError(f"CQL: {type(exc).__name__}: {exc}")
    classified.__cause__ = exc
    return classified


def _statements(path: Traversable) -> list[str]:
    text = "\n".join(line for line in path.read_text().splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


__all__ = ["Cql", "DriverException"]
