"""Clicks domain: validation, the structured log line, per-url counts, spoiled samples."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Optional

import orjson
import pytest

from domain.avro import AvroDecoder, AvroEncoder, Schema
from app.commands.samples.clicks import bad_avro, sample_clicks
from domain.clicks import Click, count_by_url, log_line, to_click
from domain.parsing import TimeRules
from domain.errors import PermanentError, Reason
from models.avro_schemas import SEED_USER_CLICK, USER_CLICK

AT = datetime(2026, 11, 22, 10, 0, 0, 123000, tzinfo=timezone.utc)


def test_to_click_and_its_log_line() -> None:
    click = to_click({"user_id": "u1", "url": "https://example.com/a", "timestamp": AT})
    assert click == Click("u1", "https://example.com/a", AT)
    line = orjson.loads(log_line(click, topic="t", partition=3, offset=42))
    assert line == {"event": "click", "user_id": "u1", "url": "https://example.com/a",
                    "timestamp": "2026-11-22T10:00:00.123Z", "topic": "t", "partition": 3, "offset": 42}


ANY_TIME = TimeRules(earliest=datetime.min.replace(tzinfo=timezone.utc), max_ahead=timedelta(days=3_000_000))


@pytest.mark.parametrize("decoded, reason", [
    ({"user_id": "", "url": "u", "timestamp": AT}, Reason.MISSING_FIELD),
    ({"user_id": "u", "url": "", "timestamp": AT}, Reason.MISSING_FIELD),
    ({"user_id": "u", "url": "x" * 3000, "timestamp": AT}, Reason.FIELD_TOO_LARGE),
    ({"user_id": "u\x00", "url": "x", "timestamp": AT}, Reason.CONTROL_CHARACTER),
    ({"user_id": "u", "url": "x", "timestamp": 17}, Reason.IMPLAUSIBLE_TIMESTAMP),
    ({"user_id": "u", "url": "x", "timestamp": "2026-11-22T10:00:00Z"}, Reason.INVALID_TIMESTAMP),
    ({"user_id": "u", "url": "x", "timestamp": 1763805600123.0}, Reason.INVALID_TIMESTAMP),
    ({"user_id": "u", "url": "x", "timestamp": True}, Reason.INVALID_TIMESTAMP),
    ({"user_id": "u", "url": "x", "timestamp": None}, Reason.INVALID_TIMESTAMP),
    ({"user_id": "u", "url": "x"}, Reason.INVALID_TIMESTAMP),
])
def test_invalid_clicks(decoded: dict, reason: Reason) -> None:
    with pytest.raises(PermanentError) as info:
        to_click(decoded)
    assert info.value.reason == reason


AT_MS = 1795341600123          # AT in epoch milliseconds


def test_a_long_timestamp_is_epoch_milliseconds() -> None:
    assert (AT - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1) == AT_MS
    click = to_click({"user_id": "u1", "url": "https://example.com/a", "timestamp": AT_MS})
    assert click == Click("u1", "https://example.com/a", AT)
    assert click.clicked_at.tzinfo is timezone.utc
    assert orjson.loads(log_line(click, topic="t", partition=0, offset=0))["timestamp"] == "2026-11-22T10:00:00.123Z"
    assert to_click({"user_id": "u", "url": "x", "timestamp": -1}, rules=ANY_TIME).clicked_at == \
        datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)


@pytest.mark.parametrize("backend", ["fastavro", "avro"])
def test_the_seed_schemas_clicks_decode_to_a_long_and_are_accepted(backend: str) -> None:
    """What the worker does with a value the seed's AvroProducer wrote: the writer schema is
    readable as ours (long to long), the datum comes out as an int, and to_click takes it."""
    seed, ours = Schema.parse(SEED_USER_CLICK), Schema.parse(USER_CLICK)
    assert '"logicalType"' not in seed.text, "Avro ignores a logicalType beside the field's type"
    decoder = AvroDecoder(ours, backend=backend)
    decoder.add(9, seed)
    raw = AvroEncoder(9, seed, backend=backend).encode({"user_id": "u1", "url": "https://e.com/", "timestamp": AT_MS})
    decoded = decoder.decode(raw)
    assert decoded["timestamp"] == AT_MS
    assert to_click(decoded) == Click("u1", "https://e.com/", AT)


class _BrokenZone(tzinfo):
    def utcoffset(self, dt: Optional[datetime]) -> Any:
        return "not a timedelta"

    def dst(self, dt: Optional[datetime]) -> None:
        return None

    def tzname(self, dt: Optional[datetime]) -> str:
        return "broken"


@pytest.mark.parametrize("timestamp", [
    2**63 - 1, -2**63,                                # Avro's long range: far outside datetime's
    253402300800000,                                  # 10000-01-01T00:00Z, one past datetime.max
    -62135596800001,                                  # one millisecond before 0001-01-01T00:00Z
    datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),   # no UTC equivalent
    datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 1, 1, tzinfo=_BrokenZone()),
])
def test_timestamps_that_no_utc_datetime_holds_are_invalid_never_a_crash(timestamp: Any) -> None:
    with pytest.raises(PermanentError) as info:
        to_click({"user_id": "u", "url": "x", "timestamp": timestamp})
    assert info.value.reason == Reason.TIMESTAMP_OUT_OF_RANGE
    assert "timestamp" in info.value.message


def test_the_ends_of_the_range_of_dates() -> None:
    assert to_click({"user_id": "u", "url": "x", "timestamp": 253402300799999}, rules=ANY_TIME).clicked_at == \
        datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
    assert to_click({"user_id": "u", "url": "x", "timestamp": -62135596800000}, rules=ANY_TIME).clicked_at == \
        datetime(1, 1, 1, tzinfo=timezone.utc)


def test_aware_datetimes_come_out_in_utc_and_naive_ones_are_taken_as_utc() -> None:
    in_sao_paulo = AT.astimezone(timezone(timedelta(hours=-3)))
    assert to_click({"user_id": "u", "url": "x", "timestamp": in_sao_paulo}).clicked_at.utcoffset() == timedelta(0)
    assert to_click({"user_id": "u", "url": "x", "timestamp": in_sao_paulo}).clicked_at == AT
    naive = AT.replace(tzinfo=None)                   # what local-timestamp-millis decodes to
    assert to_click({"user_id": "u", "url": "x", "timestamp": naive}).clicked_at == AT


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
