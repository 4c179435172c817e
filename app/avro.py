"""The Avro codec: Confluent wire format with schemas from the registry, as a faust Codec.

Per batch, agents `await codec.prefetch(values)` (one registry round trip for the ids not
seen yet, none once warm) and then call the sync `codec.decode(raw)` for each value, which
never does I/O. Producers `await codec.use_schema(topic)` once (register under
`<topic>-value`, or look the schema up when auto-registration is off) and then call the
sync `codec.encode(datum)`.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional, Union

from faust.serializers.codecs import Codec
from faust.types.codecs import CodecT

from app.adapters.registry import IncompatibleSchema, SchemaRegistry
from domain.avro import AvroDecoder, AvroEncoder, InvalidSchema, Schema, SchemaDefinition, readable_as

log = logging.getLogger(__name__)


def subject_for(topic: str) -> str:
    """Confluent's default TopicNameStrategy for values."""
    return f"{topic}-value"


class AvroCodec(Codec):
    """Faust codec (`value_serializer=codec`) and per-batch decoder for Confluent-framed Avro.

    `reader`: the schema this application reads with (writer schemas from the registry are
    resolved to it) and, by default, writes with. decode() raises domain PermanentError
    with reasons bad_magic_byte, unknown_schema_id, truncated_avro, invalid_avro or
    incompatible_schema; prefetch() raises TransientError while the registry is down.
    """

    def __init__(self, registry: SchemaRegistry, reader: Union[Schema, SchemaDefinition, None] = None, *,
                 backend: str = "fastavro", negative_ttl_s: float = 30.0,
                 children: Optional[tuple[CodecT, ...]] = None) -> None:
        super().__init__(children, registry=registry, reader=reader, backend=backend,
                         negative_ttl_s=negative_ttl_s)
        self.registry = registry
        self.reader = reader if isinstance(reader, Schema) or reader is None else Schema.parse(reader)
        self.backend = backend
        self.decoder = AvroDecoder(self.reader, backend=backend, negative_ttl_s=negative_ttl_s)
        self.encoder: Optional[AvroEncoder] = None

    # --- consuming ------------------------------------------------------------------------

    async def prefetch(self, values: Iterable[Optional[bytes]]) -> None:
        """Fetch the writer schemas of `values` that are not cached yet, all in one go.

        Ids the registry does not have are remembered as unknown (decode dead-letters those
        values) and asked again after `negative_ttl_s`. Registry down: TransientError.
        """
        ids = self.decoder.missing(values)
        if not ids:
            return
        for schema_id, text in sorted((await self.registry.schemas(ids)).items()):
            if text is None:
                log.warning("schema id %d is not in the schema registry: its values are dead-lettered",
                            schema_id)
                self.decoder.add_unknown(schema_id)
                continue
            try:
                writer = Schema.parse(text)
            except InvalidSchema as exc:
                self.decoder.add_unreadable(schema_id, str(exc))
                continue
            self.decoder.add(schema_id, writer)
            problem = self.decoder.problem(schema_id)
            if problem:
                log.warning("schema id %d (%s) cannot be read as %s: %s; its values are dead-lettered",
                            schema_id, writer.name, self.reader.name if self.reader else "-", problem)
            else:
                log.info("schema id %d (%s) loaded from the schema registry", schema_id, writer.name)

    def decode(self, raw: Optional[bytes]) -> dict[str, Any]:
        """One framed value to a dict, from cached schemas only (sync, no I/O)."""
        return self.decoder.decode(raw)

    # --- producing ------------------------------------------------------------------------

    async def use_schema(self, topic: str, schema: Union[Schema, SchemaDefinition, None] = None, *,
                         auto_register: bool) -> AvroEncoder:
        """Get the id of `schema` (default: the reader schema) under `<topic>-value` and encode
        with it from now on. auto_register=False (production): the schema must be registered
        already; SchemaNotRegistered otherwise. Incompatible with the subject: IncompatibleSchema."""
        if schema is None:
            if self.reader is None:
                raise ValueError("no schema to write with: pass one or give the codec a reader schema")
            schema = self.reader
        elif not isinstance(schema, Schema):
            schema = Schema.parse(schema)
        if self.reader is not None:
            problem = readable_as(self.reader, schema)
            if problem is not None:   # caught here: no round trip, and a message naming the field
                raise IncompatibleSchema(f"schema {schema.name} cannot be read as {self.reader.name}, "
                                         f"the schema this application reads with: {problem}")
        subject = subject_for(topic)
        if auto_register:
            schema_id = await self.registry.register(subject, schema.json())
        else:
            schema_id = await self.registry.lookup(subject, schema.json())
        self.decoder.add(schema_id, schema)
        self.encoder = AvroEncoder(schema_id, schema, backend=self.backend)
        return self.encoder

    def encode(self, datum: Mapping[str, Any]) -> bytes:
        if self.encoder is None:
            raise RuntimeError("no writer schema yet: await codec.use_schema(topic, auto_register=...) first")
        return self.encoder.encode(datum)

    # --- faust Codec ----------------------------------------------------------------------

    def _loads(self, s: bytes) -> Any:
        return self.decode(s)

    def _dumps(self, s: Any) -> bytes:
        return self.encode(s)
