"""Avro in the Confluent wire format, without I/O: framing, schemas, decoding and encoding.

Wire format: magic byte 0, the schema id as 4 bytes big-endian, then the Avro binary
encoding of one datum with that (writer) schema. The registry is asked for writer schemas
elsewhere (app/avro.py); here they are already known, so decoding is plain CPU work.

Two libraries, each for what it does best (figures in bench/avro_codecs.py):
- `avro` (the reference implementation) checks schemas: strict parsing with clear messages,
  canonical form, and the spec's reader/writer compatibility check, once per schema id.
- `fastavro` (Cython) encodes and decodes every datum: several times faster per event.
"""
from __future__ import annotations

import io
import json
import re
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import avro.errors
import avro.io
import avro.schema
import fastavro
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from domain.errors import PermanentError, Reason, Stage

MAGIC = 0
HEADER = struct.Struct(">bI")          # magic byte, schema id (unsigned 32-bit big-endian)
BACKENDS = ("fastavro", "avro")

SchemaDefinition = Union[str, Mapping[str, Any]]


class InvalidSchema(ValueError):
    """A schema definition that is not valid Avro; the message says where."""


@dataclass(frozen=True)
class Schema:
    """One Avro schema, parsed once for both libraries."""

    text: str                       # canonical form (Avro's "Parsing Canonical Form")
    definition: Mapping[str, Any]   # the JSON definition as given (keeps doc and defaults)
    fast: Any                       # fastavro.parse_schema(definition)
    ref: avro.schema.Schema         # avro.schema.parse(definition)

    @classmethod
    def parse(cls, definition: SchemaDefinition) -> "Schema":
        text = definition if isinstance(definition, str) else json.dumps(definition)
        try:
            ref = avro.schema.parse(text)
        except (avro.errors.SchemaParseException, json.JSONDecodeError) as exc:
            raise InvalidSchema(f"not a valid Avro schema: {exc}") from None
        data = json.loads(text)
        return cls(text=ref.canonical_form, definition=data, fast=fastavro.parse_schema(data), ref=ref)

    @property
    def name(self) -> str:
        return str(getattr(self.ref, "fullname", self.ref.type))

    def json(self) -> str:
        """The definition to register (with defaults and docs, which the canonical form drops)."""
        return json.dumps(self.definition, separators=(",", ":"))


def readable_as(reader: Schema, writer: Schema) -> Optional[str]:
    """None when data written with `writer` can be read with `reader`, else why not (avro's check)."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader.ref, writer.ref)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return None
    fields = [f.name for f in getattr(reader.ref, "fields", ())]

    def where(location: str) -> str:   # "/fields/0/type" -> "/fields/0/type (field user_id)"
        match = re.match(r"/?fields/(\d+)", location)
        if match and int(match.group(1)) < len(fields):
            return f"{location} (field {fields[int(match.group(1))]})"
        return location

    kinds = sorted({kind.value for kind in result.incompatibilities}) or ["incompatible"]
    locations = sorted(result.locations - {"/"}) or ["/"]
    return (f"{', '.join(kinds)}: {'; '.join(sorted(result.messages))} "
            f"at {', '.join(where(loc) for loc in locations)}")


def frame(schema_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema_id) + body


def schema_id_of(raw: Optional[bytes]) -> Optional[int]:
    """The schema id of a Confluent-framed value, None when it has no complete header."""
    if raw is None or len(raw) < HEADER.size or raw[0] != MAGIC:
        return None
    return int(HEADER.unpack_from(raw)[1])


def _error(reason: Reason, message: str) -> PermanentError:
    return PermanentError(Stage.DECODE, reason, message)


# Exceptions meaning "the body ended before its datum did", per library: fastavro raises
# EOFError for short strings/bytes and IndexError inside a varint; avro raises
# InvalidAvroBinaryEncoding("Read n bytes, expected m bytes").
_TRUNCATED = (EOFError, IndexError)


@dataclass
class _Writer:
    schema_id: int
    read: Optional[Callable[[io.BytesIO], Any]]   # None: not readable as the reader schema
    problem: str = ""


class AvroDecoder:
    """Decodes framed values with writer schemas it was given; never does I/O.

    `reader`: the schema the application expects; each writer schema is resolved to it (a
    field the producer added is dropped, one it lacks gets its default). None: datums come
    back as written. Unknown ids are remembered for `negative_ttl_s` so a batch of values
    with a bogus id costs one registry request, not one per value.
    """

    def __init__(self, reader: Optional[Schema] = None, *, backend: str = "fastavro",
                 negative_ttl_s: float = 30.0, max_unknown: int = 10000) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        self.reader = reader
        self.backend = backend
        self.negative_ttl_s = negative_ttl_s
        self.max_unknown = max_unknown
        self._writers: dict[int, _Writer] = {}
        self._unknown: dict[int, float] = {}     # schema id -> when the registry said 404

    # --- the cache ------------------------------------------------------------------------

    def add(self, schema_id: int, writer: Schema) -> None:
        """Learn a writer schema; checks once whether it can be read as the reader schema."""
        self._unknown.pop(schema_id, None)
        problem = readable_as(self.reader, writer) if self.reader is not None else None
        if problem is not None:
            self._writers[schema_id] = _Writer(schema_id, None, problem)
            return
        self._writers[schema_id] = _Writer(schema_id, self._read_function(writer))

    def add_unreadable(self, schema_id: int, problem: str) -> None:
        """A schema id whose values can never be decoded here (e.g. the registry's text is not Avro)."""
        self._unknown.pop(schema_id, None)
        self._writers[schema_id] = _Writer(schema_id, None, problem)

    def add_unknown(self, schema_id: int, now: Optional[float] = None) -> None:
        self._unknown.pop(schema_id, None)       # re-inserted: the dict stays oldest first
        self._unknown[schema_id] = time.monotonic() if now is None else now

    def knows(self, schema_id: int) -> bool:
        return schema_id in self._writers

    def problem(self, schema_id: int) -> Optional[str]:
        """Why values of a known schema id cannot be decoded here; None when they can."""
        writer = self._writers.get(schema_id)
        return None if writer is None or writer.read is not None else writer.problem

    def missing(self, values: Iterable[Optional[bytes]], now: Optional[float] = None) -> set[int]:
        """Schema ids in `values` to ask the registry for (neither known nor recently unknown)."""
        now = time.monotonic() if now is None else now
        # Forget stale or surplus unknown ids here, between batches, never during one: a
        # value whose id was just forgotten is then simply asked for again.
        for old_id, noted_at in list(self._unknown.items()):
            if now - noted_at < self.negative_ttl_s and len(self._unknown) <= self.max_unknown:
                break
            del self._unknown[old_id]
        out = set()
        for raw in values:
            schema_id = schema_id_of(raw)
            if schema_id is None or schema_id in self._writers:
                continue
            noted = self._unknown.get(schema_id)
            if noted is None or now - noted >= self.negative_ttl_s:
                out.add(schema_id)
        return out

    # --- decoding -------------------------------------------------------------------------

    def decode(self, raw: Optional[bytes]) -> dict[str, Any]:
        """One framed value to a dict; every failure is a PermanentError with its reason.

        Raises SchemaNotLoaded (a programming error, not the value's fault) when the
        value's schema id was neither added nor marked unknown: prefetch first.
        """
        if not raw:
            raise _error(Reason.TRUNCATED_AVRO, "empty value: no Confluent wire-format header")
        if raw[0] != MAGIC:
            raise _error(Reason.BAD_MAGIC_BYTE, f"magic byte is {raw[0]:#04x}, expected 0x00 "
                                                "(not Confluent-framed Avro)")
        if len(raw) < HEADER.size:
            raise _error(Reason.TRUNCATED_AVRO, f"{len(raw)} bytes: shorter than the 5-byte header")
        schema_id = HEADER.unpack_from(raw)[1]
        writer = self._writers.get(schema_id)
        if writer is None:
            if schema_id in self._unknown:
                raise _error(Reason.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not in the registry")
            raise SchemaNotLoaded(schema_id)
        if writer.read is None:
            reader = self.reader.name if self.reader else "?"
            raise _error(Reason.INCOMPATIBLE_SCHEMA,
                         f"schema id {schema_id} cannot be read as {reader}: {writer.problem}")
        body = io.BytesIO(raw)
        body.seek(HEADER.size)
        try:
            datum = writer.read(body)
        except _TRUNCATED:
            raise _error(Reason.TRUNCATED_AVRO, f"body of {len(raw) - HEADER.size} bytes ends before "
                                                f"its record (schema id {schema_id})") from None
        except avro.errors.InvalidAvroBinaryEncoding as exc:
            reason = Reason.TRUNCATED_AVRO if str(exc).startswith("Read ") else Reason.INVALID_AVRO
            raise _error(reason, f"schema id {schema_id}: {exc}") from None
        except (ValueError, TypeError, KeyError, OverflowError, avro.errors.AvroException,
                fastavro.read.SchemaResolutionError) as exc:   # UnicodeDecodeError is a ValueError
            raise _error(Reason.INVALID_AVRO, f"schema id {schema_id}: {type(exc).__name__}: {exc}") from None
        left = len(raw) - body.tell()
        if left:
            raise _error(Reason.INVALID_AVRO, f"{left} bytes left after the record: not written "
                                              f"with schema id {schema_id}")
        if not isinstance(datum, dict):
            raise _error(Reason.INVALID_AVRO, f"schema id {schema_id} is not a record schema")
        return datum

    def _read_function(self, writer: Schema) -> Callable[[io.BytesIO], Any]:
        reader = self.reader
        same = reader is None or reader.text == writer.text
        if self.backend == "fastavro":
            w_fast, r_fast = writer.fast, (None if same else reader.fast)   # type: ignore[union-attr]
            return lambda body: fastavro.schemaless_reader(body, w_fast, r_fast)
        datum_reader = avro.io.DatumReader(writer.ref, writer.ref if same else reader.ref)  # type: ignore[union-attr]
        return lambda body: datum_reader.read(avro.io.BinaryDecoder(body))


class SchemaNotLoaded(LookupError):
    """decode() met a schema id nobody fetched: call prefetch() for the batch first."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} was not prefetched; await prefetch(values) before decode()")
        self.schema_id = schema_id


class AvroEncoder:
    """Encodes dicts with one registered schema into the wire format (sync, no I/O)."""

    def __init__(self, schema_id: int, schema: Schema, *, backend: str = "fastavro") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        self.schema_id = schema_id
        self.schema = schema
        self.header = HEADER.pack(MAGIC, schema_id)
        if backend == "fastavro":
            fast = schema.fast
            self._write: Callable[[io.BytesIO, Any], None] = \
                lambda out, datum: fastavro.schemaless_writer(out, fast, datum)
        else:
            writer = avro.io.DatumWriter(schema.ref)
            self._write = lambda out, datum: writer.write(datum, avro.io.BinaryEncoder(out))

    def encode(self, datum: Mapping[str, Any]) -> bytes:
        """Raises ValueError naming the field when `datum` does not fit the schema."""
        out = io.BytesIO()
        out.write(self.header)
        try:
            self._write(out, datum)
        except (ValueError, TypeError, KeyError, AttributeError, avro.errors.AvroTypeException) as exc:
            raise ValueError(f"cannot encode as {self.schema.name} (schema id {self.schema_id}): "
                             f"{type(exc).__name__}: {exc}") from None
        return out.getvalue()
