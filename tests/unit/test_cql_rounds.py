"""Cql's rounds of writes (app/adapters/cql.py `_Round`) against a fake driver session whose
answers come from another thread, as the driver's do: the window, the first error, the timeout."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Optional

from cassandra import OperationTimedOut

from app.adapters.cql import _Round


class Future:
    def __init__(self, session: "Session", params: Any) -> None:
        self.session, self.params = session, params
        self._event = threading.Event()
        self.timeout: Optional[float] = None
        self.callbacks: Optional[tuple[Callable[..., None], Callable[..., None], tuple[Any, ...]]] = None

    def add_callbacks(self, ok: Callable[..., None], failed: Callable[..., None], errback_args: tuple[Any, ...] = ()
                      ) -> None:
        self.callbacks = (ok, failed, errback_args)
        self.session.answer(self)

    def settle(self, error: Optional[BaseException] = None) -> None:
        assert self.callbacks is not None
        ok, failed, args = self.callbacks
        self._event.set()
        self.session.in_flight -= 1
        if error is None:
            ok([])
        else:
            failed(error, *args)

    def _on_timeout(self) -> None:
        self.settle(OperationTimedOut("timed out"))


class Session:
    """Answers each statement on a thread of its own after a moment; `fail`: params answered with
    an error; `silent`: params never answered (until `_on_timeout`)."""

    def __init__(self, fail: frozenset[Any] = frozenset(), silent: frozenset[Any] = frozenset()) -> None:
        self.fail, self.silent = fail, silent
        self.sent: list[Any] = []
        self.in_flight = self.most_in_flight = 0
        self.timers: list[Callable[[], None]] = []
        self.cluster = self
        self.connection_class = self

    def execute_async(self, statement: Any, params: Any, timeout: Any = "unset") -> Future:
        assert timeout is None           # no driver timer per request
        self.sent.append(params)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return Future(self, params)

    def answer(self, future: Future) -> None:
        if future.params in self.silent:
            return
        error = RuntimeError(f"refused {future.params}") if future.params in self.fail else None
        threading.Timer(0.001, future.settle, (error,)).start()

    def create_timer(self, _delay: float, callback: Callable[[], None]) -> None:
        self.timers.append(callback)
        threading.Timer(0.001, callback).start()


def run(session: Session, n: int, window: int, timeout: float = 5.0) -> list[BaseException]:
    async def scenario() -> list[BaseException]:
        round_ = _Round(session, [("insert", i) for i in range(n)], window,  # type: ignore[arg-type]
                        asyncio.get_running_loop())
        return await round_.run(timeout)
    return asyncio.run(scenario())


def test_every_statement_is_sent_with_at_most_the_window_in_flight() -> None:
    session = Session()
    assert run(session, 200, window=8) == []
    assert sorted(session.sent) == list(range(200)) and session.most_in_flight <= 8


def test_an_empty_round_ends_at_once() -> None:
    assert run(Session(), 0, window=8) == []


def test_the_first_error_stops_the_sending_and_is_returned() -> None:
    session = Session(fail=frozenset({5}))
    errors = run(session, 200, window=4)
    assert [str(e) for e in errors] == ["refused 5"] and len(session.sent) < 200


def test_no_answer_for_the_timeout_is_operation_timed_out_and_the_driver_times_the_request_out() -> None:
    session = Session(silent=frozenset({3}))
    errors = run(session, 10, window=4, timeout=0.2)
    assert isinstance(errors[0], OperationTimedOut)
    assert len(session.timers) == 1         # the silent request's own _on_timeout, on the driver's side
