"""Avro serde for the records in ``schemas/``: single-object encoding over fastavro.

Wire format, the Avro spec's "Single-object encoding"
(https://avro.apache.org/docs/1.12.0/specification/#single-object-encoding)::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form,
            8 bytes little-endian | Avro binary body

The fingerprint is fastavro's ``fingerprint(..., "CRC-64-AVRO")`` of fastavro's
``to_parsing_canonical_form``; like Java's ``SchemaNormalization.parsingFingerprint``
it puts the bytes in little-endian order, and like Java it writes a ``long`` with a
``logicalType`` as plain ``"long"`` (the spec's [STRIP] rule). Apache avro's Python
``Schema.fingerprint()`` (1.12) keeps ``{"type":"long"}`` there, so it disagrees on
every schema of ours with a timestamp; the tests pin the Java behaviour.

A reader looks the writer schema up by fingerprint in a ``SchemaRegistry`` and
resolves it into its own (current) schema, so a field added with a default reads
both ways.

A schema file may refer to a named type defined in another file (``NotificationRequest``
names ``tidings.Recipient``); the registry resolves the reference and keeps a
self-contained copy of each schema, which is what the fingerprint is computed on and
what other Avro libraries can parse.

Timestamps stay ``int`` milliseconds since the epoch on both sides: the copy of each
schema that fastavro reads and writes with has its ``timestamp-*`` logical types
removed, so fastavro never builds a ``datetime`` on the hot path and a ``datetime``
given to ``encode`` is refused rather than converted with the local time zone. The
Parsing Canonical Form drops ``logicalType``, so the fingerprint is unchanged, and
other readers still see ``timestamp-millis`` in the self-contained schema.
"""

from __future__ import annotations

import functools
import io
import json
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import (
    SchemaParseException,
    UnknownType,
    fingerprint,
    parse_schema,
    to_parsing_canonical_form,
)
from fastavro.validation import ValidationError as _FastavroValidationError
from fastavro.validation import validate

from schemas import SCHEMA_DIR
from streams.errors import ConfigError, SerializationError

__all__ = ["AvroSerde", "SchemaRegistry", "default_registry", "serde"]

_MARKER = b"\xc3\x01"
_HEADER_SIZE = 10  # marker + 8-byte fingerprint

# Kept as their underlying long; see the module docstring.
_RAW_LOGICAL_TYPES = frozenset({"timestamp-millis", "timestamp-micros"})
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})

# What fastavro's writer and reader raise on a record or bytes that do not fit the
# schema (found by fuzzing the reader with random, truncated and bit-flipped bodies):
# EOFError for a short body, UnicodeDecodeError (a ValueError) for bad text, IndexError
# for a union branch or enum symbol out of range, TypeError/ValueError/AttributeError
# for a record value of the wrong type, OverflowError for a number out of range.
_ENCODE_ERRORS: tuple[type[Exception], ...] = (
    AttributeError,
    KeyError,
    OverflowError,
    TypeError,
    ValueError,
)
_DECODE_ERRORS: tuple[type[Exception], ...] = (
    EOFError,
    IndexError,
    KeyError,
    OverflowError,
    SchemaResolutionError,
    TypeError,
    ValueError,
)


@dataclass(frozen=True, slots=True)
class _Entry:
    """One registered schema."""

    fullname: str
    fingerprint: int
    schema: dict[str, Any]  # self-contained, logical types kept: what other libraries parse
    parsed: dict[str, Any]  # fastavro-parsed, timestamps raw: what we read and write with
    defines: dict[str, Any]  # fastavro-parsed named types this schema defines, by full name


class SchemaRegistry:
    """Writer schemas by fingerprint, and the current schema of each record name.

    Every schema is parsed once, when registered.
    """

    def __init__(self) -> None:
        self._by_fingerprint: dict[int, _Entry] = {}
        self._current: dict[str, _Entry] = {}  # by full name and by name without namespace
        self._named_types: dict[str, Any] = {}  # of current schemas, for references by name

    @classmethod
    def from_directory(cls, directory: Path) -> SchemaRegistry:
        """A registry of every ``*.avsc`` in ``directory`` (not its subfolders), all current.

        Files may refer to named types in other files; they are registered in whatever
        order resolves the references.
        """
        registry = cls()
        pending = {path: _load(path) for path in sorted(directory.glob("*.avsc"))}
        while pending:
            unresolved: dict[Path, UnknownType] = {}
            for path, raw in pending.items():
                try:
                    entry = registry._build(raw)
                except UnknownType as exc:
                    unresolved[path] = exc
                    continue
                except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
                    raise ConfigError(f"{path}: not a valid Avro schema: {exc}") from exc
                registry._add(entry, current=True)
            if len(unresolved) == len(pending):
                path, unknown = next(iter(unresolved.items()))
                raise ConfigError(f"{path}: refers to unknown type {unknown.name!r}") from unknown
            pending = {path: pending[path] for path in unresolved}
        return registry

    def register(self, schema: dict[str, Any] | str | Path, *, current: bool = True) -> int:
        """Parse and register a record schema; return its CRC-64-AVRO fingerprint.

        ``schema`` is a schema dict, its JSON text, or the path of an ``.avsc`` file.
        Named types it refers to must be registered (and current) already. With
        ``current`` (the default) it becomes the schema ``AvroSerde(name)`` reads into
        and writes with; otherwise it is only known as a writer schema. Registering
        the same schema again is harmless.
        """
        raw = _load(schema)
        try:
            entry = self._build(raw)
        except UnknownType as exc:
            raise ConfigError(
                f"schema refers to unknown type {exc.name!r}; register that first"
            ) from exc
        except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"not a valid Avro schema: {exc}") from exc
        self._add(entry, current=current)
        return entry.fingerprint

    def writer(self, fingerprint: int) -> dict[str, Any]:
        """The fastavro-parsed writer schema with this fingerprint."""
        return self._entry(fingerprint).parsed

    def _entry(self, fingerprint: int) -> _Entry:
        try:
            return self._by_fingerprint[fingerprint]
        except KeyError:
            raise SerializationError(
                f"unknown writer schema fingerprint {fingerprint:#018x}"
            ) from None

    def _current_entry(self, name: str) -> _Entry:
        try:
            return self._current[name]
        except KeyError:
            known = ", ".join(sorted(n for n in self._current if "." not in n))
            raise ConfigError(f"no schema named {name!r}; known: {known}") from None

    def _build(self, raw: Any) -> _Entry:
        if not (isinstance(raw, dict) and raw.get("type") in ("record", "error")):
            raise ValueError("expected a record schema")
        # Parse with only the named types this schema refers to, so that a new version
        # of a type (a fixture, a newer producer's schema) never meets the current one.
        refs: dict[str, Any] = {}
        while True:
            named = dict(refs)
            try:
                parsed = parse_schema(raw, named)
                break
            except UnknownType as exc:
                if exc.name in refs or exc.name not in self._named_types:
                    raise
                refs[exc.name] = self._named_types[exc.name]
        standalone = _standalone(parsed, ChainMap(named, self._named_types), set())
        canonical = to_parsing_canonical_form(standalone)
        fingerprint_le = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        return _Entry(
            fullname=standalone["name"],
            fingerprint=int.from_bytes(fingerprint_le, "little"),
            schema=standalone,
            parsed=cast(dict[str, Any], parse_schema(_with_raw_timestamps(standalone), {})),
            defines={name: value for name, value in named.items() if name not in refs},
        )

    def _add(self, entry: _Entry, *, current: bool) -> None:
        self._by_fingerprint.setdefault(entry.fingerprint, entry)
        if current:
            self._current[entry.fullname] = entry
            self._current[entry.fullname.rpartition(".")[2]] = entry
            self._named_types.update(entry.defines)


class AvroSerde:
    """Encoder/decoder for one record type; the reader schema is the current one.

    ``schema`` replaces the registry's current schema for this serde only (it is
    registered as a writer schema, not made current): evolution tests use it to write
    and read with another version of a record.
    """

    __slots__ = ("_header", "_parsed", "_registry", "fingerprint", "name", "schema")

    def __init__(
        self,
        name: str,
        registry: SchemaRegistry | None = None,
        *,
        schema: dict[str, Any] | str | Path | None = None,
    ) -> None:
        self._registry = registry if registry is not None else default_registry()
        if schema is None:
            entry = self._registry._current_entry(name)
        else:
            entry = self._registry._entry(self._registry.register(schema, current=False))
            if name not in (entry.fullname, entry.fullname.rpartition(".")[2]):
                raise ConfigError(f"schema defines {entry.fullname!r}, not {name!r}")
        self.name: str = entry.fullname
        self.fingerprint: int = entry.fingerprint
        self.schema: dict[str, Any] = entry.schema
        self._parsed = entry.parsed
        self._header = _MARKER + entry.fingerprint.to_bytes(8, "little")

    # Measured with timeit on the dev box, for a NotificationRequest of one recipient
    # with every field, two channels and a template (290 bytes): encode ~20 µs, decode
    # ~18 µs, within 1 µs of bare fastavro; decoding a record written with another
    # version of the schema (resolution) ~35 µs. fastavro's validate() would add ~60 µs
    # per record, so encode relies on the writer's own checks (strict_allow_default
    # catches missing and unknown fields, the writer catches most wrong types) and runs
    # validate() only on failure, to name the field. The writer lets through a float
    # given for an int or long (truncated), an int beyond 32 bits in an int field, and a
    # str given for an array of str (written as its characters).
    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Single-object encoding of ``record``; fields with a default may be left out."""
        buffer = io.BytesIO()
        buffer.write(self._header)
        try:
            schemaless_writer(buffer, self._parsed, record, strict_allow_default=True)
        except _ENCODE_ERRORS as exc:
            raise SerializationError(self._why_not_encodable(record, exc)) from exc
        return buffer.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in ``data``, resolved from its writer schema into this serde's."""
        if data[:2] != _MARKER:
            raise SerializationError(
                f"cannot decode {self.name}: not Avro single-object encoding"
                f" (starts with {bytes(data[:2]).hex() or 'nothing'}, expected c301)"
            )
        if len(data) < _HEADER_SIZE:
            raise SerializationError(f"cannot decode {self.name}: header cut short")
        fingerprint = int.from_bytes(data[2:_HEADER_SIZE], "little")
        if fingerprint == self.fingerprint:
            writer, reader = self._parsed, None  # same schema: skip resolution
        else:
            writer, reader = self._registry.writer(fingerprint), self._parsed
        body = io.BytesIO(data)
        body.seek(_HEADER_SIZE)
        try:
            record = schemaless_reader(body, writer, reader)
        except _DECODE_ERRORS as exc:
            raise SerializationError(
                f"cannot decode {self.name}: {type(exc).__name__}: {exc}"
            ) from exc
        if body.tell() != len(data):
            raise SerializationError(
                f"cannot decode {self.name}: {len(data) - body.tell()} bytes after the record"
            )
        if not isinstance(record, dict):
            raise SerializationError(f"cannot decode {self.name}: not a record")
        return record

    def _why_not_encodable(self, record: Any, exc: Exception) -> str:
        # Cold path: fastavro's validate() names the field, the writer often does not.
        try:
            validate(record, self._parsed, raise_errors=True)
        except _FastavroValidationError as invalid:
            problems = "; ".join(_describe(problem) for problem in invalid.errors)
            return f"cannot encode {self.name}: {problems}"
        except _ENCODE_ERRORS:
            pass  # validate() choked too; the writer's message is all we have
        return f"cannot encode {self.name}: {exc}"


@functools.cache
def default_registry() -> SchemaRegistry:
    """The registry of every schema in ``schemas/*.avsc``, loaded once."""
    registry = SchemaRegistry.from_directory(SCHEMA_DIR)
    # Earlier versions of our records may still sit on topics (retention, replays): their
    # fingerprints must keep resolving, read into the current schema.
    for path in sorted((SCHEMA_DIR / "history").glob("*.avsc")):
        registry.register(path, current=False)
    return registry


@functools.cache
def serde(name: str) -> AvroSerde:
    """The serde for record ``name`` (``"NotificationRequest"``) on the default registry."""
    return AvroSerde(name)


def _load(schema: dict[str, Any] | str | Path) -> Any:
    if isinstance(schema, dict):
        return schema
    try:
        text = schema.read_text(encoding="utf-8") if isinstance(schema, Path) else schema
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read schema {str(schema)[:80]!r}: {exc}") from exc


def _standalone(node: Any, named_types: Mapping[str, Any], seen: set[str]) -> Any:
    """A copy of a fastavro-parsed schema that defines each named type at its first use.

    Later uses stay references by name, as the Parsing Canonical Form requires
    (https://avro.apache.org/docs/1.12.0/specification/#parsing-canonical-form-for-schemas);
    fastavro's own ``__`` bookkeeping keys are dropped.
    """
    if isinstance(node, str):
        if node in named_types and node not in seen:
            return _standalone(named_types[node], named_types, seen)
        return node
    if isinstance(node, list):
        return [_standalone(branch, named_types, seen) for branch in node]
    copy = {key: value for key, value in node.items() if not key.startswith("__")}
    kind = copy["type"]
    if kind in _NAMED_KINDS:
        seen.add(copy["name"])
    if kind in ("record", "error"):
        copy["fields"] = [
            {
                **{key: value for key, value in field.items() if not key.startswith("__")},
                "type": _standalone(field["type"], named_types, seen),
            }
            for field in copy["fields"]
        ]
    elif kind == "array":
        copy["items"] = _standalone(copy["items"], named_types, seen)
    elif kind == "map":
        copy["values"] = _standalone(copy["values"], named_types, seen)
    elif kind not in _NAMED_KINDS:
        copy["type"] = _standalone(kind, named_types, seen)
    return copy


def _with_raw_timestamps(node: Any) -> Any:
    """A copy of a schema without the logical types in ``_RAW_LOGICAL_TYPES``."""
    if isinstance(node, list):
        return [_with_raw_timestamps(branch) for branch in node]
    if not isinstance(node, dict):
        return node
    copy = dict(node)
    if copy.get("logicalType") in _RAW_LOGICAL_TYPES:
        del copy["logicalType"]
    for key in ("type", "items", "values"):
        if key in copy:
            copy[key] = _with_raw_timestamps(copy[key])
    if "fields" in copy:
        copy["fields"] = [
            {**field, "type": _with_raw_timestamps(field["type"])} for field in copy["fields"]
        ]
    return copy


def _describe(problem: Any) -> str:
    """One line for a fastavro ``ValidationErrorData`` (datum, schema, field)."""
    where = problem.field or "the record"
    if problem.datum is None:
        return f"{where} is missing or null, expected {_type_name(problem.schema)}"
    shown = repr(problem.datum)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return (
        f"{where} is {shown} ({type(problem.datum).__name__}),"
        f" expected {_type_name(problem.schema)}"
    )


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "[" + ", ".join(_type_name(branch) for branch in schema) + "]"
    if isinstance(schema, dict):
        return str(schema.get("name") or schema.get("type"))
    return str(schema)
