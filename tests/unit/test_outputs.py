"""The one output path: source headers, size limits, oversized dead letters kept apart, and
how producer and PostgreSQL errors are classified (outage, refusal, unforeseen)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
from types import SimpleNamespace
from typing import Any, Optional

import asyncpg
import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from app.adapters.postgres import classify
from app.outputs import Outputs, as_outage_or_refusal
from domain.errors import PermanentError, Reason, Stage, TransientError

LIMIT = 1_048_576


def message(value: bytes, key: Optional[bytes] = b"acc-1") -> Any:
    return SimpleNamespace(topic="in", partition=2, offset=41, timestamp=1_700_000_000.0, key=key, value=value,
                           headers=[])


class Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Optional[bytes], bytes, list[tuple[str, bytes]]]] = []

    async def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Any) -> Any:
        assert value is not None
        if len(value) > LIMIT:
            raise ProducerSendError("too large") from MessageSizeTooLargeError("too large")
        self.sent.append((topic, key, value, headers))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Payloads:
    def __init__(self) -> None:
        self.kept: dict[tuple[str, int, int], tuple[Optional[bytes], Optional[bytes], str]] = {}

    async def store_dead_letter_payload(self, topic: str, partition: int, offset: int, key: Optional[bytes],
                                        value: Optional[bytes], sha256: str) -> None:
        self.kept[(topic, partition, offset)] = (key, value, sha256)


def outputs(broker: Broker, payloads: Optional[Payloads] = None) -> Outputs:
    return Outputs(broker.send, dead_letter_topic="dlq", max_bytes=LIMIT, payloads=payloads)


def error() -> PermanentError:
    return PermanentError(Stage.VALIDATE, Reason.FIELD_TOO_LARGE, "'description' has 900000 characters")


def test_a_small_dead_letter_carries_the_original_bytes_and_the_source_headers() -> None:
    broker = Broker()
    asyncio.run(outputs(broker).dead_letter(message(b'{"a": 1}'), error()))
    [(topic, key, body, headers)] = broker.sent
    letter = orjson.loads(body)
    assert topic == "dlq" and key == b"acc-1"
    assert base64.b64decode(letter["value_b64"]) == b'{"a": 1}' and not letter["stored_apart"]
    assert dict(headers) == {"source-topic": b"in", "source-partition": b"2", "source-offset": b"41"}


def test_a_dead_letter_too_large_for_the_topic_keeps_the_bytes_apart_with_size_and_hash() -> None:
    broker, payloads = Broker(), Payloads()
    value = b'{"description": "' + b"x" * 900_000 + b'"}'
    asyncio.run(outputs(broker, payloads).dead_letter(message(value), error()))
    [(_, _, body, _)] = broker.sent
    assert len(body) < 10_000
    letter = orjson.loads(body)
    digest = hashlib.sha256(value).hexdigest()
    assert letter["stored_apart"] and letter["value_b64"] is None
    assert (letter["value_size"], letter["value_sha256"]) == (len(value), digest)
    assert payloads.kept[("in", 2, 41)] == (b"acc-1", value, digest)


def test_an_output_too_large_for_the_broker_is_a_too_large_refusal() -> None:
    with pytest.raises(PermanentError) as caught:
        outputs(Broker()).check_fits(message(b""), b"k", b"x" * LIMIT)
    assert caught.value.reason is Reason.TOO_LARGE
    outputs(Broker()).check_fits(message(b""), b"k", b"x" * 1000)


def test_producer_errors_are_classified() -> None:
    def wrapped(cause: Exception) -> Exception:
        exc = ProducerSendError(repr(cause))
        exc.__cause__ = cause
        return exc

    assert isinstance(as_outage_or_refusal(wrapped(MessageSizeTooLargeError("big"))), PermanentError)
    assert isinstance(as_outage_or_refusal(wrapped(KafkaTimeoutError())), TransientError)
    assert isinstance(as_outage_or_refusal(KafkaConnectionError("gone")), TransientError)
    unforeseen = ValueError("?")
    assert as_outage_or_refusal(unforeseen) is unforeseen


@pytest.mark.parametrize("exc, kind", [
    (asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"),
     PermanentError),
    (asyncpg.exceptions.NumericValueOutOfRangeError("numeric field overflow"), PermanentError),
    (asyncpg.exceptions.UniqueViolationError("duplicate key"), PermanentError),
    (asyncpg.exceptions.AdminShutdownError("terminating connection"), TransientError),
    (asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"), TransientError),
    (asyncpg.exceptions.DeadlockDetectedError("deadlock"), TransientError),
    (asyncpg.exceptions.UndefinedTableError("no table"), asyncpg.exceptions.UndefinedTableError),
])
def test_postgres_errors_are_classified(exc: asyncpg.PostgresError, kind: type) -> None:
    classified = classify(exc, Stage.ENRICH)
    assert isinstance(classified, kind)
    if isinstance(classified, PermanentError):
        assert (classified.stage, classified.reason) == (Stage.ENRICH, Reason.REJECTED_BY_DATABASE)


def test_an_oversized_letter_whose_bytes_the_store_refuses_goes_without_them() -> None:
    class Refusing(Payloads):
        async def store_dead_letter_payload(self, *args: Any) -> None:
            raise PermanentError(Stage.STORE, Reason.REJECTED_BY_DATABASE, "value too large")

    broker = Broker()
    value = b"x" * 900_000
    asyncio.run(outputs(broker, Refusing()).dead_letter(message(value), error()))
    [(_, key, body, _)] = broker.sent
    letter = orjson.loads(body)
    assert key == b"acc-1" and letter["value_b64"] is None and not letter["stored_apart"]
    assert letter["value_sha256"] == hashlib.sha256(value).hexdigest() and letter["value_size"] == len(value)
    assert "original bytes not kept" in letter["error"]


def test_delivered_lets_the_producer_send_at_once_what_it_queued() -> None:
    calls: list[str] = []
    out = Outputs(Broker().send, dead_letter_topic="dlq", max_bytes=LIMIT, send_now=lambda: calls.append("now"))

    async def run() -> None:
        await out.delivered([])                    # nothing queued: nothing to hurry
        assert calls == []
        await out.delivered([await out.forward(message(b"v"), "sink", b"acc-1", b"v")])
    asyncio.run(run())
    assert calls == ["now"]
