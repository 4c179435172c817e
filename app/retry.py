"""Retry transient failures with capped exponential backoff, logging once per change of state."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Optional, TypeVar

from domain.errors import TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)

# How many retry loops are waiting out an outage right now (app/stalls.py stands still then).
_in_outage = 0


def in_outage() -> bool:
    return _in_outage > 0


async def retry_transient(call: Callable[[], Awaitable[T]], *, what: str,
                          first_delay: float = 0.2, max_delay: float = 5.0,
                          on_state: Optional[Callable[[bool], None]] = None) -> T:
    """Await `call()` until it does not raise TransientError.

    Never gives up: the caller's partition simply waits until the server is back. A
    cancelled task (worker shutdown, rebalance) stops the loop with CancelledError, and
    the events of the batch are not acked, so they are consumed again.
    """
    global _in_outage
    delay = first_delay
    down_since: Optional[float] = None
    attempt = 0
    try:
        while True:
            try:
                result = await call()
            except TransientError as exc:
                attempt += 1
                if down_since is None:
                    down_since = time.monotonic()
                    _in_outage += 1
                    log.warning("%s unavailable, retrying with backoff: %s", what, exc)
                    if on_state:
                        on_state(False)
                await asyncio.sleep(delay)
                delay = min(max_delay, delay * 2)
                continue
            if down_since is not None:
                log.warning("%s available again after %.1fs and %d retries", what,
                            time.monotonic() - down_since, attempt)
                if on_state:
                    on_state(True)
            return result
    finally:
        if down_since is not None:
            _in_outage -= 1


async def until_done(call: Callable[[], Awaitable[T]], *, what: str, max_delay: float = 30.0) -> T:
    """Await `call()` until it succeeds, whatever it raises (cancellation aside).

    For a whole batch: an unforeseen error (a bug, a server answer nobody expected) must not
    crash the agent, because faust restarts a crashed agent *after* the batch it was holding,
    which then stays unprocessed and unacked until the worker restarts. Here the batch is
    retried with backoff and every failure is logged with its traceback; its writes are
    idempotent, so a partial first attempt is harmless.
    """
    global _in_outage
    delay = 0.5
    failing = False
    try:
        while True:
            try:
                return await call()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - see the docstring
                log.exception("%s failed unexpectedly; retrying the whole batch in %.1fs", what, delay)
                if not failing:
                    failing, _in_outage = True, _in_outage + 1
                await asyncio.sleep(delay)
                delay = min(max_delay, delay * 2)
    finally:
        if failing:
            _in_outage -= 1
