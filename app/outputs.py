"""The one way an agent emits an output: forward to a sink topic or dead-letter, with the
source headers, the size limits of the broker and the dead-letter log line in one place."""
from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any, Awaitable, Callable, Coroutine, Optional, Protocol, Sequence

from aiokafka.errors import (KafkaError, KafkaTimeoutError, MessageSizeTooLargeError, RecordListTooLargeError,
                             RecordTooLargeError)

from app.logs import event_fields
from app.retry import retry_transient
from domain.dead_letters import dead_letter_of
from domain.errors import PermanentError, Reason, Stage, TransientError
from domain.transactions import event_id_of
from models.dead_letter import DeadLetter

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
# (topic, key, value, headers) -> the future of its delivery (faust's producer.send, or aiokafka's)
Send = Callable[[str, Optional[bytes], Optional[bytes], Headers], Awaitable[Awaitable[Any]]]
# Room left in a request for the record batch's own header (61 bytes) and the request's.
REQUEST_OVERHEAD = 512
RECORD_OVERHEAD = 61 + 5 * 5                # batch header, and the varints of one record
MAX_LETTER_KEY = 1024        # a larger original key is not the letter's key (it is in the payload store)
_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)


class PayloadStore(Protocol):
    """Where the original bytes of a dead letter too large for the topic are kept (ScyllaDB)."""

    async def store_dead_letter_payload(self, topic: str, partition: int, offset: int,
                                        key: Optional[bytes], value: Optional[bytes], sha256: str) -> None: ...


def source_headers(message: Any) -> Headers:
    """Where an output came from: every sink and dead letter carries them."""
    return [("source-topic", message.topic.encode()),
            ("source-partition", str(message.partition).encode()),
            ("source-offset", str(message.offset).encode())]


def record_size(key: Optional[bytes], value: Optional[bytes], headers: Headers) -> int:
    """An upper bound of what the producer counts against its request size (aiokafka's
    estimate adds a 61-byte batch header and varints of at most 5 bytes per length), by
    arithmetic: this runs for every output."""
    return (RECORD_OVERHEAD + len(key or b"") + len(value or b"")
            + sum(len(name) + len(data) + 10 for name, data in headers))


def as_outage_or_refusal(exc: BaseException) -> BaseException:
    """A producer error as the pipeline's error model sees it: too large is the event's fault
    (PermanentError), a timeout or a lost connection is an outage (TransientError); anything
    else is returned as it is (unforeseen: the batch machinery isolates it)."""
    cause = exc.__cause__ if exc.__cause__ is not None and not isinstance(exc, KafkaError) else exc
    if isinstance(cause, _TOO_LARGE):
        return PermanentError(Stage.FORWARD, Reason.TOO_LARGE, f"the broker refused the output: {cause}")
    if isinstance(cause, KafkaTimeoutError) or (isinstance(cause, KafkaError) and cause.retriable):
        return TransientError(f"Kafka: {type(cause).__name__}: {cause}")
    return exc


class Outputs:
    """`send` puts a record on the broker; `max_bytes` is the smallest of the limits that apply
    (the producer's max_request_size, the broker's message.max.bytes); `payloads` keeps what
    does not fit in a dead letter."""

    def __init__(self, send: Send, *, dead_letter_topic: str, max_bytes: int,
                 payloads: Optional[PayloadStore] = None, send_now: Callable[[], None] = lambda: None) -> None:
        self._send = send
        self._send_now = send_now
        self.dead_letter_topic = dead_letter_topic
        self.max_bytes = max_bytes - REQUEST_OVERHEAD
        self.payloads = payloads

    def check_fits(self, message: Any, key: Optional[bytes], value: bytes) -> None:
        """Raises PermanentError(too_large) for an output the broker would refuse."""
        size = record_size(key, value, source_headers(message))
        if size > self.max_bytes:
            raise PermanentError(Stage.FORWARD, Reason.TOO_LARGE,
                                 f"the output is {size} bytes, the broker accepts at most {self.max_bytes}")

    def forward(self, message: Any, topic: str, key: Optional[bytes],
                value: bytes) -> Coroutine[Any, Any, Awaitable[Any]]:
        """Queue one output (check_fits first); awaited, returns the future of its delivery.
        A plain function handing back `_queue`'s coroutine: one coroutine per output, not two."""
        return self._queue(topic, key, value, source_headers(message))

    async def dead_letter(self, message: Any, error: PermanentError, *, agent: str = "") -> Awaitable[Any]:
        """Queue the dead letter of one consumed message; returns the future of its delivery.
        A letter that would be too large for the topic leaves the original bytes in the payload
        store and carries their size and hash instead (replay reads them back from there)."""
        letter = dead_letter_of(error, message)
        body = letter.dumps()
        headers = source_headers(message)
        key = message.key
        if record_size(key, body, headers) > self.max_bytes:
            letter = await self._keep_apart(message, letter)
            body, key = letter.dumps(), (key if key is not None and len(key) <= MAX_LETTER_KEY else None)
        logging.getLogger(f"agents.{agent.replace('-', '_')}" if agent else __name__).warning(
            "dead letter %s/%s@%s: %s (%s)", message.topic, message.partition, message.offset,
            error.reason.value, error.message[:300],
            extra={**event_fields(message.topic, message.partition, message.offset,
                                  event_id_of(message.value) if letter.value_b64 is not None else None),
                   "reason": error.reason.value, "stage": error.stage.value})
        return await self._queue(self.dead_letter_topic, key, body, headers)

    async def _keep_apart(self, message: Any, letter: DeadLetter) -> DeadLetter:
        """The letter without the original bytes, which go to the payload store (replay reads
        them back). If the store refuses them (not an outage), the letter still goes, saying
        that the bytes stay only at the source offset: a letter is never not sent."""
        key, value = message.key, message.value
        digest = hashlib.sha256(value or b"").hexdigest()
        changes: dict[str, Any] = {"key_b64": None, "value_b64": None, "value_size": len(value or b""),
                                   "value_sha256": digest}
        try:
            if self.payloads is None:
                raise RuntimeError("no payload store configured")
            payloads = self.payloads
            await retry_transient(lambda: payloads.store_dead_letter_payload(
                message.topic, message.partition, message.offset, key, value, digest),
                what="CQL server (dead-letter payloads)")
            changes["stored_apart"] = True
        except Exception as exc:  # noqa: BLE001 - an outage never gets here: retry_transient waits it out
            changes["error"] = (f"{letter.error} (original bytes not kept: {type(exc).__name__}: "
                                f"{str(exc)[:200]}; they stay at the source offset)")
        return DeadLetter(**{**letter.asdict(), **changes})

    async def _queue(self, topic: str, key: Optional[bytes], value: bytes, headers: Headers) -> Awaitable[Any]:
        try:
            return await self._send(topic, key, value, headers)
        except Exception as exc:  # noqa: BLE001 - classified, and re-raised as what it is
            _reraise(exc)
            raise

    async def delivered(self, pending: Sequence[Awaitable[Any]]) -> None:
        """Wait until every queued output is on the broker; a failure raises as_outage_or_refusal.
        The caller has queued all it will: `send_now` lets the producer send what it holds without
        waiting out its linger (nothing more of this batch is coming to fill it)."""
        if pending:
            self._send_now()
        try:
            await asyncio.gather(*pending)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified, and re-raised as what it is
            _reraise(exc)
            raise


def _reraise(exc: BaseException) -> None:
    classified = as_outage_or_refusal(exc)
    if classified is not exc:
        raise classified from exc
