"""Avro schemas the application reads (reader schemas) and its producers register."""
from __future__ import annotations

from typing import Any, Mapping

# The seed's UserClick. The seed wrote "logicalType" beside "type" in the field, where Avro
# ignores it (the timestamp is then a plain long); here it sits inside the type, so the
# value decodes as a timezone-aware UTC datetime.
USER_CLICK: Mapping[str, Any] = {
    "namespace": "com.mycompany.events",
    "type": "record",
    "name": "UserClick",
    "fields": [
        {"name": "user_id", "type": "string"},
        {"name": "url", "type": "string"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}

# A raw Pix transaction in Avro: the same raw field names and value shapes as the JSON
# events (app/commands/samples/transactions.py::raw_event), so domain/transactions.py::to_transaction
# validates both alike. The ten mapped fields plus a few carried ones; optional fields are
# unions with null and a default, so a producer may omit them.
RAW_TRANSACTION: Mapping[str, Any] = {
    "namespace": "com.txpipe.pix",
    "type": "record",
    "name": "RawTransaction",
    "fields": [
        {"name": "eventId", "type": "string"},
        {"name": "eventType", "type": "string", "doc": "PIX_PAYMENT, PIX_RECEIPT or PIX_REFUND"},
        {"name": "accountId", "type": "string"},
        {"name": "amount", "type": "string", "doc": "decimal string, at most 2 decimal places"},
        {"name": "currency", "type": "string"},
        {"name": "occurredAt", "type": "string", "doc": "ISO-8601 with a UTC offset"},
        {"name": "endToEndId", "type": "string"},
        {"name": "counterpartyKey", "type": "string"},
        {"name": "channel", "type": "string"},
        {"name": "description", "type": ["null", "string"], "default": None},
        {"name": "schemaVersion", "type": ["null", "string"], "default": None},
        {"name": "source", "type": ["null", "string"], "default": None},
        {"name": "traceId", "type": ["null", "string"], "default": None},
    ],
}

# What a producer keeps of a raw event (app/commands/samples/transactions.py::raw_event) to encode it.
RAW_TRANSACTION_FIELDS = frozenset(field["name"] for field in RAW_TRANSACTION["fields"])


# The seeds' producer schema, verbatim (shared/seeds/004, its `value_schema_str`): "logicalType"
# beside "type", so Avro reads the timestamp as a plain long; domain/clicks.py accepts it as
# epoch milliseconds. Kept for the tests that produce clicks exactly as that document does.
SEED_USER_CLICK = """
{
  "namespace": "com.mycompany.events",
  "type": "record",
  "name": "UserClick",
  "fields": [
    { "name": "user_id", "type": "string" },
    { "name": "url", "type": "string" },
    { "name": "timestamp", "type": "long", "logicalType": "timestamp-millis" }
  ]
}
"""
