"""Clicks domain: validation, the structured log line, per-url counts, spoiled samples."""
from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from domain.avro import AvroDecoder, AvroEncoder, Schema
from domain.clicks import Click, bad_avro, count_by_url, log_line, sample_clicks, to_click
from domain.errors import PermanentError, Reason
from models.avro_schemas import USER_CLICK

AT = datetime(2026, 11, 22, 10, 0, 0, 123000, tzinfo=timezone.utc)


def test_to_click_and_its_log_line() -> None:
    click = to_click({"user_id": "u1", "url": "https://example.com/a", "timestamp": AT})
    assert click == Click("u1", "https://example.com/a", AT)
    line = orjson.loads(log_line(click, topic="t", partition=3, offset=42))
    assert line == {"event": "click", "user_id": "u1", "url": "https://example.com/a",
                    "timestamp": "2026-11-22T10:00:00.123Z", "topic": "t", "partition": 3, "offset": 42}


@pytest.mark.parametrize("decoded, reason", [
    ({"user_id": "", "url": "u", "timestamp": AT}, Reason.MISSING_FIELD),
    ({"user_id": "u", "url": "", "timestamp": AT}, Reason.MISSING_FIELD),
    ({"user_id": "u", "url": "x" * 3000, "timestamp": AT}, Reason.INVALID_FIELD),
    ({"user_id": "u", "url": "x", "timestamp": 17}, Reason.INVALID_TIMESTAMP),
])
def test_invalid_clicks(decoded: dict, reason: Reason) -> None:
    with pytest.raises(PermanentError) as info:
        to_click(decoded)
    assert info.value.reason == reason


def test_counts_per_url() -> None:
    clicks = [Click("u", url, AT) for url in ("a", "b", "a", "a")]
    assert count_by_url(clicks) == {"a": 3, "b": 1}


def test_samples_encode_and_each_spoiled_kind_decodes_to_its_reason() -> None:
    schema = Schema.parse(USER_CLICK)
    encoder, decoder = AvroEncoder(1, schema), AvroDecoder(schema)
    decoder.add(1, schema)
    decoder.add_unknown(0x7FFFFFF0)
    data = sample_clicks(30, users=5, urls=3, seed=1)
    for i, datum in enumerate(data):
        good = encoder.encode(datum)
        assert to_click(decoder.decode(good)).user_id == datum["user_id"]
        spoiled, reason = bad_avro(good, i)
        with pytest.raises(PermanentError) as info:
            decoder.decode(spoiled)
        assert info.value.reason == reason
