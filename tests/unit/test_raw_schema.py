"""The raw topics' schema (app/tuning.py `RawSchema`) hands the consumer's records over exactly as
faust's own schema does for the raw codec and bytes types: the same key, value, headers and
message, for bytes and for None."""
from __future__ import annotations

import asyncio

import faust
import pytest
from faust.types import Message

from app.tuning import RawSchema

RAW = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


@pytest.mark.parametrize("key, value, headers", [(b"acc-000001", b'{"a": 1}', [("x-replay", b"1")]),
                                                 (None, None, []), (b"", b"\x00\xff", [])])
def test_a_record_is_decoded_as_fausts_own_schema_decodes_it(key: bytes, value: bytes, headers: list) -> None:
    app = faust.App("raw-schema-test", broker="kafka://127.0.0.1:1")
    message = Message("t", 3, 7, 0.0, 0, headers=headers, key=key, value=value, checksum=None)

    async def both() -> tuple[faust.types.EventT, faust.types.EventT]:
        ours = await RawSchema(**RAW).compile(app)(message, propagate=True)
        theirs = await faust.Schema(**RAW).compile(app)(message, propagate=True)
        return ours, theirs

    ours, theirs = asyncio.run(both())
    assert (ours.key, ours.value, ours.headers) == (theirs.key, theirs.value, theirs.headers) == (key, value,
                                                                                             dict(headers))
    assert ours.message is theirs.message is message


def test_the_apps_raw_topics_use_it() -> None:
    from app.topics import dead_letters, sales_orders, transactions_in
    assert all(type(t.schema) is RawSchema for t in (transactions_in, sales_orders, dead_letters))
    assert (transactions_in.key_type, transactions_in.value_type) == (bytes, bytes)
