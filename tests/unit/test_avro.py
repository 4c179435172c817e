"""The Confluent wire-format Avro codec without servers: framing, every bad-bytes reason,
schema evolution, the registry round trips it makes, and the faust Codec interface."""
from __future__ import annotations

import asyncio
import struct
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

import pytest
from faust.serializers import codecs

from app.adapters.registry import IncompatibleSchema, SchemaNotRegistered
from app.avro import AvroCodec, subject_for
from domain.avro import AvroDecoder, AvroEncoder, InvalidSchema, Schema, SchemaNotLoaded, frame, schema_id_of
from domain.errors import PermanentError, Reason, TransientError
from models.avro_schemas import RAW_TRANSACTION, RAW_TRANSACTION_FIELDS, USER_CLICK

V1 = Schema.parse(USER_CLICK)
REFERRER = {"name": "referrer", "type": ["null", "string"], "default": None}
V2 = Schema.parse({**USER_CLICK, "fields": [*USER_CLICK["fields"], REFERRER]})
CLICK = {"user_id": "user-1", "url": "https://example.com/a",
         "timestamp": datetime(2026, 11, 22, 10, 0, 0, 123000, tzinfo=timezone.utc)}


def reason_of(decoder: Any, raw: bytes) -> Reason:
    with pytest.raises(PermanentError) as info:
        decoder.decode(raw)
    return info.value.reason


@pytest.mark.parametrize("backend", ["fastavro", "avro"])
def test_round_trip_in_the_confluent_wire_format(backend: str) -> None:
    raw = AvroEncoder(7, V1, backend=backend).encode(CLICK)
    assert raw[:5] == b"\x00\x00\x00\x00\x07" and schema_id_of(raw) == 7
    decoder = AvroDecoder(V1, backend=backend)
    decoder.add(7, V1)
    assert decoder.decode(raw) == CLICK


def test_both_libraries_write_the_same_bytes() -> None:
    assert AvroEncoder(1, V1, backend="avro").encode(CLICK) == AvroEncoder(1, V1).encode(CLICK)


@pytest.mark.parametrize("backend", ["fastavro", "avro"])
def test_each_kind_of_bad_bytes_has_its_reason(backend: str) -> None:
    decoder = AvroDecoder(V1, backend=backend)
    decoder.add(7, V1)
    decoder.add_unknown(99)
    good = AvroEncoder(7, V1).encode(CLICK)
    assert reason_of(decoder, b"") == Reason.TRUNCATED_AVRO
    assert reason_of(decoder, b'{"user_id": "json"}') == Reason.BAD_MAGIC_BYTE
    assert reason_of(decoder, b"\x01" + good[1:]) == Reason.BAD_MAGIC_BYTE
    assert reason_of(decoder, good[:3]) == Reason.TRUNCATED_AVRO
    assert reason_of(decoder, frame(99, good[5:])) == Reason.UNKNOWN_SCHEMA_ID
    for cut in range(5, len(good)):          # every truncation of the body, however short
        assert reason_of(decoder, good[:cut]) == Reason.TRUNCATED_AVRO, cut
    assert reason_of(decoder, good + b"\x00\x01") == Reason.INVALID_AVRO       # trailing bytes
    assert reason_of(decoder, frame(7, b"\x04\xff\xfe" + good[8:])) == Reason.INVALID_AVRO  # bad UTF-8


def test_an_id_nobody_fetched_is_a_programming_error_not_a_dead_letter() -> None:
    decoder = AvroDecoder(V1)
    with pytest.raises(SchemaNotLoaded, match="prefetch"):
        decoder.decode(frame(5, b"\x00"))


@pytest.mark.parametrize("backend", ["fastavro", "avro"])
def test_evolution_writer_adds_an_optional_field(backend: str) -> None:
    """New producer (v2, extra optional field), old consumer (reader v1): still decodes."""
    decoder = AvroDecoder(V1, backend=backend)
    decoder.add(8, V2)
    raw = AvroEncoder(8, V2).encode({**CLICK, "referrer": "https://search.example"})
    assert decoder.decode(raw) == CLICK


def test_evolution_reader_has_a_field_the_writer_lacks() -> None:
    """Old producer (v1), new consumer (reader v2): the default fills the missing field."""
    decoder = AvroDecoder(V2)
    decoder.add(7, V1)
    assert decoder.decode(AvroEncoder(7, V1).encode(CLICK)) == {**CLICK, "referrer": None}


def test_a_writer_schema_the_reader_cannot_read_is_dead_lettered_with_why() -> None:
    incompatible = Schema.parse({**USER_CLICK, "fields": [{"name": "user_id", "type": "long"},
                                                          *USER_CLICK["fields"][1:]]})
    decoder = AvroDecoder(V1)
    decoder.add(9, incompatible)
    raw = AvroEncoder(9, incompatible).encode({**CLICK, "user_id": 42})
    with pytest.raises(PermanentError) as info:
        decoder.decode(raw)
    assert info.value.reason == Reason.INCOMPATIBLE_SCHEMA
    assert "user_id" in info.value.message


def test_missing_ids_and_the_negative_cache() -> None:
    decoder = AvroDecoder(V1, negative_ttl_s=30)
    decoder.add(1, V1)
    values = [frame(1, b""), frame(2, b""), frame(2, b""), b"\x01junk", b"\x00\x00", None]
    assert decoder.missing(values, now=100.0) == {2}
    decoder.add_unknown(2, now=100.0)
    assert decoder.missing(values, now=110.0) == set()
    assert decoder.missing(values, now=131.0) == {2}, "asked again once the negative entry is old"


def test_invalid_schema_definitions_are_refused_with_a_message() -> None:
    with pytest.raises(InvalidSchema, match="not a valid Avro schema"):
        Schema.parse({"type": "record", "name": "X", "fields": [{"name": "a", "type": "strin"}]})


def test_the_seed_schema_put_logical_type_in_the_wrong_place() -> None:
    misplaced = {"name": "timestamp", "type": "long", "logicalType": "timestamp-millis"}
    seed = {**USER_CLICK, "fields": [*USER_CLICK["fields"][:2], misplaced]}
    decoder = AvroDecoder(Schema.parse(seed))
    decoder.add(1, Schema.parse(seed))
    raw = AvroEncoder(1, Schema.parse(seed)).encode({**CLICK, "timestamp": 1_700_000_000_000})
    assert decoder.decode(raw)["timestamp"] == 1_700_000_000_000, "a plain long: why models/ fixes it"


def test_encoding_a_datum_that_does_not_fit_names_the_schema() -> None:
    with pytest.raises(ValueError, match="UserClick"):
        AvroEncoder(1, V1).encode({"user_id": "u", "url": None, "timestamp": 1})


class FakeRegistry:
    """The SchemaRegistry interface in memory, counting requests."""

    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests = 0
        self.down = False

    async def schemas(self, ids: Iterable[int]) -> dict[int, Optional[str]]:
        if self.down:
            raise TransientError("registry down")
        ids = set(ids)
        self.requests += len(ids)
        return {i: self.by_id.get(i) for i in ids}

    async def register(self, subject: str, schema: str) -> int:
        canonical = Schema.parse(schema).text
        same = [i for i, text in self.by_id.items() if Schema.parse(text).text == canonical]
        i = same[0] if same else len(self.by_id) + 1
        self.by_id[i] = self.by_id.get(i, schema)
        self.subjects.setdefault(subject, []).append(i)
        return i

    async def lookup(self, subject: str, schema: str) -> int:
        canonical = Schema.parse(schema).text
        for i in self.subjects.get(subject, []):
            if Schema.parse(self.by_id[i]).text == canonical:
                return i
        raise SchemaNotRegistered(f"not registered under {subject}")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_codec_prefetches_each_unknown_id_once_then_decodes_without_io() -> None:
    registry = FakeRegistry()
    producer = AvroCodec(registry, USER_CLICK)   # type: ignore[arg-type]
    run(producer.use_schema("clicks", auto_register=True))
    assert registry.subjects == {"clicks-value": [1]}
    values = [producer.encode(CLICK) for _ in range(50)] + [frame(77, b"\x02x")] * 10

    consumer = AvroCodec(registry, USER_CLICK)   # type: ignore[arg-type]
    run(consumer.prefetch(values))
    assert registry.requests == 2, "one request per distinct id of the batch"
    run(consumer.prefetch(values))
    assert registry.requests == 2, "nothing asked again: known ids cached, unknown ids remembered"
    assert consumer.decode(values[0]) == CLICK
    with pytest.raises(PermanentError) as info:
        consumer.decode(values[-1])
    assert info.value.reason == Reason.UNKNOWN_SCHEMA_ID


def test_codec_prefetch_raises_transient_while_the_registry_is_down() -> None:
    registry = FakeRegistry()
    registry.down = True
    with pytest.raises(TransientError):
        run(AvroCodec(registry, USER_CLICK).prefetch([frame(1, b"")]))   # type: ignore[arg-type]


def test_production_mode_uses_the_registered_schema_and_never_registers() -> None:
    registry = FakeRegistry()
    codec = AvroCodec(registry, USER_CLICK)   # type: ignore[arg-type]
    with pytest.raises(SchemaNotRegistered):
        run(codec.use_schema("clicks", auto_register=False))
    assert registry.subjects == {}
    other = AvroCodec(registry, USER_CLICK)   # type: ignore[arg-type]
    schema_id = run(other.use_schema("clicks", auto_register=True)).schema_id
    assert run(codec.use_schema("clicks", auto_register=False)).schema_id == schema_id


def test_writing_a_schema_the_app_cannot_read_fails_before_any_request() -> None:
    registry = FakeRegistry()
    codec = AvroCodec(registry, USER_CLICK)   # type: ignore[arg-type]
    renamed = {**USER_CLICK, "fields": [{"name": "user", "type": "string"}, *USER_CLICK["fields"][1:]]}
    with pytest.raises(IncompatibleSchema, match="user_id"):
        run(codec.use_schema("clicks", renamed, auto_register=True))
    assert registry.subjects == {}


def test_it_is_a_faust_codec() -> None:
    registry = FakeRegistry()
    codec = AvroCodec(registry, USER_CLICK)   # type: ignore[arg-type]
    run(codec.use_schema("clicks", auto_register=True))
    raw = codecs.dumps(codec, CLICK)
    assert raw[0] == 0
    assert codecs.loads(codec, raw) == CLICK
    assert subject_for("t.user-clicks-avro") == "t.user-clicks-avro-value"


def test_avro_transactions_go_through_the_transactions_seam() -> None:
    """domain/transactions.decode(raw, avro=codec.decode) then to_transaction, as for JSON."""
    import random

    from app.commands.samples.transactions import raw_event
    from domain.transactions import decode, to_transaction

    registry = FakeRegistry()
    codec = AvroCodec(registry, RAW_TRANSACTION)   # type: ignore[arg-type]
    run(codec.use_schema("transactions.raw", auto_register=True))
    event = raw_event(random.Random(3), "acc-000001", datetime.now(timezone.utc))
    raw = codec.encode({k: v for k, v in event.items() if k in RAW_TRANSACTION_FIELDS})
    consumer = AvroCodec(registry, RAW_TRANSACTION)   # type: ignore[arg-type]
    run(consumer.prefetch([raw]))
    tx = to_transaction(decode(raw, avro=consumer.decode))
    assert tx.event_id == event["eventId"] and tx.account_id == "acc-000001"
    assert str(tx.amount) == event["amount"]


def test_frame_layout() -> None:
    assert frame(0x01020304, b"x") == b"\x00\x01\x02\x03\x04x"
    assert struct.unpack(">bI", frame(5, b"")) == (0, 5)


def test_the_negative_cache_is_bounded_between_batches_only() -> None:
    decoder = AvroDecoder(V1, negative_ttl_s=30, max_unknown=3)
    for schema_id in range(10, 15):                      # one batch: nothing evicted mid-batch
        decoder.add_unknown(schema_id, now=100.0)
    for schema_id in range(10, 15):
        assert reason_of(decoder, frame(schema_id, b"")) == Reason.UNKNOWN_SCHEMA_ID
    assert decoder.missing([frame(10, b""), frame(14, b"")], now=101.0) == {10}, "oldest dropped first"


def test_the_real_adapter_maps_an_unreachable_registry_to_transient() -> None:
    import socket

    from app.adapters.registry import SchemaRegistry
    from app.settings import Settings

    with socket.socket() as s:              # a port nobody listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings.load({"APP_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{port}/apis/ccompat/v7",
                              "APP_SCHEMA_REGISTRY_TIMEOUT_S": "2"})

    async def scenario() -> None:
        registry = SchemaRegistry(settings)
        try:
            with pytest.raises(TransientError, match="schema registry"):
                await AvroCodec(registry, USER_CLICK).prefetch([frame(1, b"")])
        finally:
            await registry.close()

    run(scenario())
