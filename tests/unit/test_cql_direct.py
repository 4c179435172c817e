"""The history writes' own request path (app/adapters/cql.py `_Direct`, `_Request`) against a
fake driver session, pool and connection: routing to the first host that takes the write, one
settlement per request, the stream given back on an answer and orphaned on a timeout, and each
kind of answer classified as the pipeline's error model needs."""
from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any, Optional

import pytest
from cassandra import InvalidRequest, Unauthorized
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionShutdown
from cassandra.pool import NoConnectionsAvailable
from cassandra.protocol import (RESULT_KIND_VOID, InvalidRequestException, OverloadedErrorMessage,
                                PreparedQueryNotFound, ResultMessage, ServerError, UnauthorizedErrorMessage,
                                WriteTimeoutErrorMessage)
from app.adapters import cql as cql_module
from app.adapters.cql import Cql, EncodedBatch, _classified, _Direct, _Round
from app.settings import Settings
from domain.errors import PermanentError, TransientError


class Connection:
    def __init__(self) -> None:
        self._requests: dict[int, Any] = {}
        self.sent: list[Any] = []
        self.lock = threading.Lock()
        self.orphaned_request_ids: set[int] = set()
        self.orphaned_threshold = 2
        self.orphaned_threshold_reached = False
        self.refuse: Optional[Exception] = None

    def send_msg(self, message: Any, request_id: int, cb: Any, encoder: Any, decoder: Any,
                 result_metadata: Any) -> int:
        if self.refuse is not None:
            raise self.refuse
        self._requests[request_id] = (cb, decoder, result_metadata)
        self.sent.append((message, request_id))
        return 100

    def answer(self, request_id: int, response: Any) -> None:
        """As the driver's Connection.process_msg: the callback of that stream, once."""
        entry = self._requests.pop(request_id, None)
        if entry is None:
            if request_id in self.orphaned_request_ids:
                self.orphaned_request_ids.remove(request_id)
            return
        entry[0](response)


class Pool:
    def __init__(self, full: bool = False) -> None:
        self.connection = Connection()
        self.full = full
        self.is_shutdown = False
        self.borrowed = 0
        self.returned: list[tuple[Any, bool]] = []
        self.routing: list[dict[str, Any]] = []

    def borrow_connection(self, timeout: float, **routing: Any) -> tuple[Connection, int]:
        if self.full:
            raise NoConnectionsAvailable("all in use")
        self.borrowed += 1
        self.routing.append(routing)
        return self.connection, self.borrowed

    def return_connection(self, connection: Any, stream_was_orphaned: bool = False) -> None:
        self.returned.append((connection, stream_was_orphaned))


def session(pools: dict[str, Pool]) -> Any:
    cluster = SimpleNamespace(
        load_balancing_policy=SimpleNamespace(make_query_plan=lambda keyspace, query: list(pools)),
        timestamp_generator=lambda: 1234, metadata=SimpleNamespace(token_map=None))
    handler = SimpleNamespace(encode_message=object(), decode_message=object())
    return SimpleNamespace(cluster=cluster, _pools=pools, keyspace=None, default_consistency_level=1,
                           default_serial_consistency_level=None, use_client_timestamp=True,
                           client_protocol_handler=handler)


def batch() -> EncodedBatch:
    return EncodedBatch(b"<two statements>", 2, b"a", "ks", "history_by_event")


class Outcome:
    def __init__(self) -> None:
        self.oks: list[Any] = []
        self.errors: list[BaseException] = []

    def ok(self, rows: Any) -> None:
        self.oks.append(rows)

    def failed(self, exc: BaseException, _future: Any) -> None:
        self.errors.append(exc)


def test_an_encoded_batch_without_the_direct_path_is_the_rounds_error_not_a_driver_call() -> None:
    loop = asyncio.new_event_loop()
    try:
        round_ = _Round(object(), [(batch(), ())], 4, loop, direct=None)      # type: ignore[arg-type]
        assert round_._send_next() is False
        assert [type(e) for e in round_.errors] == [RuntimeError]
    finally:
        loop.close()


def test_a_write_goes_to_the_first_host_that_takes_it_and_its_answer_gives_the_stream_back_once() -> None:
    full, free = Pool(full=True), Pool()
    outcome = Outcome()
    batch_ = batch()
    request = _Direct(session({"a": full, "b": free})).send(batch_, outcome.ok, outcome.failed)
    (message, request_id), = free.connection.sent
    assert (message.batch, message.consistency, message.serial, message.timestamp) == (batch_, 1, None, 1234)
    assert free.routing == [{"routing_key": b"a", "keyspace": "ks", "table": "history_by_event", "routing_token": None}]
    free.connection.answer(request_id, ResultMessage(RESULT_KIND_VOID))
    request.answer(ResultMessage(RESULT_KIND_VOID))          # a second settlement changes nothing
    assert outcome.oks == [None] and outcome.errors == []
    assert free.returned == [(free.connection, False)]


def test_no_host_that_takes_the_write_is_no_host_available_an_outage() -> None:
    outcome = Outcome()
    refusing = Pool()
    refusing.connection.refuse = ConnectionShutdown("closed")
    with pytest.raises(NoHostAvailable) as caught:
        _Direct(session({"a": Pool(full=True), "b": refusing})).send(batch(), outcome.ok, outcome.failed)
    assert set(caught.value.errors) == {"a", "b"}
    assert refusing.returned == [(refusing.connection, False)], "the stream of the failed send given back"
    assert isinstance(_classified(caught.value), TransientError)


@pytest.mark.parametrize(("response", "kind"), [
    (WriteTimeoutErrorMessage(0x1100, "wt", {"consistency": 1, "required_responses": 1, "received_responses": 0,
                                             "write_type": 1}), TransientError),
    (OverloadedErrorMessage(0x1001, "overloaded", None), TransientError),
    (PreparedQueryNotFound(0x2500, "unprepared", b"qid"), TransientError),
    (ConnectionShutdown("connection closed"), TransientError),
    (InvalidRequestException(0x2200, "Batch too large", None), PermanentError),
])
def test_each_answer_is_an_outage_or_the_events_fault(response: Any, kind: type) -> None:
    pool, outcome = Pool(), Outcome()
    request = _Direct(session({"a": pool})).send(batch(), outcome.ok, outcome.failed)
    pool.connection.answer(request.request_id, response)
    (error,) = outcome.errors
    assert isinstance(_classified(error), kind)
    assert pool.returned == [(pool.connection, False)]


@pytest.mark.parametrize("response", [ServerError(0x0000, "java.lang.AssertionError", None),
                                      UnauthorizedErrorMessage(0x2100, "no", None)])
def test_a_server_error_is_left_to_the_batch_isolation_never_retried_as_an_outage(response: Any) -> None:
    pool, outcome = Pool(), Outcome()
    request = _Direct(session({"a": pool})).send(batch(), outcome.ok, outcome.failed)
    pool.connection.answer(request.request_id, response)
    (error,) = outcome.errors
    assert not isinstance(error, (*cql_module._TRANSIENT, InvalidRequest))


def test_a_message_that_cannot_be_sent_is_raised_as_it_is_not_taken_for_an_outage() -> None:
    pool = Pool()
    pool.connection.refuse = TypeError("an int where bytes belong")
    outcome = Outcome()
    with pytest.raises(TypeError):
        _Direct(session({"a": pool, "b": Pool()})).send(batch(), outcome.ok, outcome.failed)
    assert pool.returned == [(pool.connection, False)], "its stream given back"


def test_an_answer_not_foreseen_is_left_to_the_batch_isolation() -> None:
    pool, outcome = Pool(), Outcome()
    request = _Direct(session({"a": pool})).send(batch(), outcome.ok, outcome.failed)
    pool.connection.answer(request.request_id, UnauthorizedErrorMessage(0x2100, "no", None))
    (error,) = outcome.errors
    assert isinstance(error, Unauthorized) and not isinstance(error, (*cql_module._TRANSIENT, InvalidRequest))


def test_a_timed_out_write_orphans_its_stream_and_its_late_answer_settles_nothing() -> None:
    pool, outcome = Pool(), Outcome()
    first = _Direct(session({"a": pool})).send(batch(), outcome.ok, outcome.failed)
    second = _Direct(session({"a": pool})).send(batch(), outcome.ok, outcome.failed)
    first.time_out()
    second.time_out()
    assert pool.returned == [(pool.connection, True), (pool.connection, True)]
    assert pool.connection.orphaned_request_ids == {1, 2} and pool.connection.orphaned_threshold_reached
    pool.connection.answer(1, ResultMessage(RESULT_KIND_VOID))        # late: the connection's orphan
    assert outcome.oks == [] and pool.connection.orphaned_request_ids == {2}
    first.time_out()
    assert len(pool.returned) == 2, "settled once"


def test_a_write_the_server_no_longer_knows_prepares_the_statements_again(monkeypatch: pytest.MonkeyPatch) -> None:
    cql = Cql(Settings.load({"APP_ENV": "test"}))
    cql._session = object()          # type: ignore[assignment]
    cql._prepared["INSERT ..."] = object()     # type: ignore[assignment]

    async def run(self: Any, timeout: float) -> list[BaseException]:
        return [PreparedQueryNotFound(0x2500, "unprepared", b"qid")]
    monkeypatch.setattr(cql_module._Round, "run", run)
    with pytest.raises(TransientError):
        asyncio.run(cql.execute_all([(batch(), ())]))
    assert cql._prepared == {}


def test_the_direct_path_only_on_the_driver_release_it_was_written_for(caplog: pytest.LogCaptureFixture) -> None:
    fake = session({"a": Pool()})
    assert isinstance(_Direct.for_session(fake, True), _Direct), "the pinned release (setup.cfg) is installed"
    assert _Direct.for_session(fake, False) is None
    assert _Direct.for_session(fake, True, version="3.30.0") is None
    assert "scylla-driver 3.30.0, not 3.29.12: history writes go through execute_async" in caplog.text


def test_the_pinned_driver_is_the_one_the_direct_path_was_written_for() -> None:
    from pathlib import Path
    pins = (Path(__file__).parents[2] / "setup.cfg").read_text()
    assert f"scylla-driver=={_Direct.WRITTEN_FOR}" in pins
