"""Sending sample data from commands: one progress bar, delivery awaited per thousand."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Iterable, List, Optional

from tqdm import tqdm

from app.main import app


async def send_all(topic: str, messages: Iterable[tuple[Optional[bytes], bytes]], *, desc: str,
                   unit: str = "ev", total: Optional[int] = None) -> int:
    """Produce (key, value) pairs to `topic`; returns how many were delivered."""
    producer = app.producer
    pending: List[Awaitable[Any]] = []
    sent = 0
    for key, value in tqdm(messages, desc=desc, unit=unit, total=total):
        pending.append(await producer.send(topic, key, value, None, None, None))
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            sent += len(pending)
            pending.clear()
    await asyncio.gather(*pending)
    await producer.flush()
    return sent + len(pending)
