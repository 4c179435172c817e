"""Retry transient failures with capped exponential backoff, logging once per change of state."""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Awaitable, Callable, Optional, TypeVar

from domain.errors import TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)

# The outages being waited out right now: what is down -> how many retry loops wait for it.
# The watchdog (app/stalls.py) stands still meanwhile; /ready names them.
outages: collections.Counter[str] = collections.Counter()


def in_outage() -> bool:
    return any(n > 0 for n in outages.values())


def current_outages() -> list[str]:
    return sorted(what for what, n in outages.items() if n > 0)


async def retry_transient(call: Callable[[], Awaitable[T]], *, what: str,
                          first_delay: float = 0.2, max_delay: float = 5.0,
                          on_state: Optional[Callable[[bool], None]] = None) -> T:
    """Await `call()` until it does not raise TransientError.

    Never gives up: the caller's partition simply waits until the server is back. A
    cancelled task (worker shutdown, rebalance) stops the loop with CancelledError, and
    the events of the batch are not acked, so they are consumed again. Every other error
    goes through at once: only an outage is waited out without limit.
    """
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
                    outages[what] += 1
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
            outages[what] -= 1
            if outages[what] <= 0:
                del outages[what]
