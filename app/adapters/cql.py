"""ScyllaDB / Cassandra through scylla-driver: async execution, bounded concurrency, schema."""
from __future__ import annotations

import asyncio
import logging
import re
from importlib.resources.abc import Traversable
from typing import Any, Iterable, Optional, Sequence

from cassandra import DriverException, InvalidRequest, OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable, ResponseFuture, Session
from cassandra.policies import ConstantReconnectionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import PreparedStatement

from app import assets
from app.adapters import Adapter
from app.settings import Settings
from domain.errors import PermanentError, Reason, Stage, TransientError


log = logging.getLogger(__name__)
_TRANSIENT = (NoHostAvailable, OperationTimedOut, ReadTimeout, WriteTimeout, Unavailable,
              ConnectionError, OSError)


class Cql(Adapter):
    """One driver session per worker. Connects lazily in a thread (the driver's connect is
    blocking), never blocks the event loop afterwards: statements run with execute_async
    and complete through call_soon_threadsafe; a semaphore bounds what is in flight."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keyspace = settings.cql_keyspace
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", self.keyspace):
            raise ValueError(f"APP_CQL_KEYSPACE={self.keyspace!r} is not a valid keyspace name")
        self._cluster: Optional[Cluster] = None
        self._session: Optional[Session] = None
        self._lock = asyncio.Lock()
        self._prepared: dict[str, PreparedStatement] = {}
        self._slots = asyncio.Semaphore(settings.cql_concurrency)

    async def session(self) -> Session:
        if self._session is None:
            async with self._lock:
                if self._session is None:
                    self._session = await asyncio.get_running_loop().run_in_executor(None, self._connect)
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

    async def execute_all(self, calls: Iterable[tuple[Any, Sequence[Any]]]) -> None:
        """Run (statement, params) pairs concurrently (bounded by the semaphore); all succeed
        or one exception is raised, a transient one first (the caller retries them all).

        The driver's futures are awaited as they are, no task or coroutine per statement (the
        history's writes are a quarter of a request per event): a slot is taken before each
        submission and given back when its future is settled."""
        try:
            session = await self.session()
        except _TRANSIENT as exc:
            raise _classified(exc) from exc
        pending: list[asyncio.Future[list[Any]]] = []
        failed: Optional[BaseException] = None
        try:
            for statement, params in calls:
                await self._slots.acquire()
                try:
                    future = self._submit(session, statement, params)
                except BaseException:
                    self._slots.release()
                    raise
                future.add_done_callback(self._release)
                pending.append(future)
        except (*_TRANSIENT, InvalidRequest) as exc:    # refused at submission: wait for the rest first
            failed = exc
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        results = await asyncio.gather(*pending, return_exceptions=True)
        errors = [_classified(r) if isinstance(r, (*_TRANSIENT, InvalidRequest)) else r
                  for r in (*results, *((failed,) if failed else ())) if isinstance(r, BaseException)]
        if errors:
            transient = [e for e in errors if isinstance(e, TransientError)]
            raise transient[0] if transient else errors[0]

    def _release(self, _: "asyncio.Future[list[Any]]") -> None:
        self._slots.release()

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
