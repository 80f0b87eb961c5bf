"""Declared record formats: a dataclass <-> the plain map the store keeps.

A stored type derives from :class:`Recorded` and declares its format once with
:func:`declared`: each field is written under its name (or the key given in
``keys``), its value as it is, or through a :class:`Codec` for the few that are
not plain (a nested record, a tuple of them, an ISO date, a record spread into
its parent's map). :meth:`Recorded.to_record` and :meth:`Recorded.from_record`
both follow that declaration, so a document's format is read in one place and
its two directions cannot drift apart.

Reading back is tolerant as the store's documents need: a key an older
document lacks takes the field's default (None where the field may be None),
scalars are coerced to their declared type (``int``, ``float``, ``str``,
``bool``; the NewTypes ``SensorId`` and ``EpochSeconds`` as theirs), and a
wrong shape raises :class:`KeyError`, :class:`TypeError` or :class:`ValueError`
for the caller to name. Pure, no I/O; msgpack and JSON can carry every map.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self, TypeVar

__all__ = ["ISO_DATE", "Codec", "Recorded", "declared", "listed", "spread", "tuple_of"]

R = TypeVar("R", bound="Recorded")


@dataclasses.dataclass(frozen=True, slots=True)
class Codec:
    """How one field's value is written (``dump``) and read back (``load``)."""

    dump: Callable[[Any], Any]
    load: Callable[[Any], Any]
    spread: bool = False  # a record whose keys go into the parent's map


def _same(value: Any) -> Any:
    return value


def _optional(load: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else load(value)


ISO_DATE = Codec(datetime.date.isoformat, datetime.date.fromisoformat)
"""A date as ``YYYY-MM-DD``."""

# Declared scalar types (annotations as written) -> how a stored value is read.
_SCALARS: dict[str, Callable[[Any], Any]] = {
    "int": int, "float": float, "str": str, "bool": bool,
    "SensorId": str, "EpochSeconds": int,
}


class Recorded:
    """Base of a stored type with a declared format (see :func:`declared`)."""

    __slots__ = ()
    _record_format: ClassVar[_Format]

    def to_record(self) -> dict[str, Any]:
        """The plain map the store keeps (msgpack/JSON-able)."""
        return type(self)._record_format.dump(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """The object :meth:`to_record` made ``record`` of (tolerant of older records)."""
        return cls._record_format.load(record)  # type: ignore[no-any-return]


def _format_of(cls: type) -> _Format:
    """The declared format of ``cls``; a dataclass that declares none is written as it is."""
    fmt = getattr(cls, "_record_format", None)
    return fmt if isinstance(fmt, _Format) else _Format(cls, {}, {})


def _codec_of(value: Codec | type) -> Codec:
    if isinstance(value, Codec):
        return value
    fmt = _format_of(value)
    return Codec(fmt.dump, fmt.load)


def tuple_of(item: Codec | type) -> Codec:
    """A tuple of values, written as a list."""
    codec = _codec_of(item)
    return Codec(lambda values: [codec.dump(v) for v in values],
                 lambda values: tuple(codec.load(v) for v in values))


def spread(item: type) -> Codec:
    """A nested record whose keys are written into the parent's map."""
    fmt = _format_of(item)
    return Codec(fmt.dump, fmt.load, spread=True)


def listed(cls: type) -> Codec:
    """A record written as the list of its fields' values, in order."""
    fmt = _format_of(cls)
    return Codec(lambda obj: [getattr(obj, f.name) for f in fmt.fields],
                 lambda values: fmt.load(dict(zip(fmt.keys, values, strict=True))))


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    key: str
    dump: Callable[[Any], Any]
    load: Callable[[Any], Any]
    default: Callable[[], Any] | None  # None: required
    spread: bool


class _Format:
    """One type's declared format: its fields, each with key, codec and default."""

    def __init__(self, cls: type, keys: Mapping[str, str],
                 codecs: Mapping[str, Codec | type], *, order: Sequence[str] = (),
                 constants: Mapping[str, Any] | None = None,
                 error: type[Exception] | None = None, what: str = "") -> None:
        self.cls = cls
        self.constants = dict(constants or {})
        self.error, self.what = error, what or cls.__name__
        ranked = {name: i for i, name in enumerate(order)}
        declared_fields = sorted(dataclasses.fields(cls),
                                 key=lambda f: ranked.get(f.name, len(ranked)))
        fields = []
        for f in declared_fields:
            given = codecs.get(f.name)
            codec = _codec_of(given) if given is not None else None
            annotation = str(f.type).replace(" ", "")
            nullable = annotation.endswith("|None") or annotation.startswith("None|")
            if codec is not None:
                dump, load = codec.dump, codec.load
            else:
                dump, load = _same, _SCALARS.get(annotation.removesuffix("|None"), _same)
            if nullable:
                dump, load = _optional(dump), _optional(load)
            if f.default is not dataclasses.MISSING:
                default: Callable[[], Any] | None = (lambda v=f.default: v)
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory
            else:
                default = (lambda: None) if nullable else None
            fields.append(_Field(f.name, keys.get(f.name, f.name), dump, load, default,
                                 codec is not None and codec.spread))
        self.fields = tuple(fields)
        self.keys = tuple(f.key for f in fields)

    def dump(self, obj: Any) -> dict[str, Any]:
        record: dict[str, Any] = dict(self.constants)
        for f in self.fields:
            value = f.dump(getattr(obj, f.name))
            if f.spread:
                record.update(value)
            else:
                record[f.key] = value
        return record

    def load(self, record: Mapping[str, Any]) -> Any:
        if self.error is None:
            return self._load(record)
        try:
            return self._load(record)
        except self.error:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self.error(f"bad {self.what}: {exc!r}") from exc

    def _load(self, record: Mapping[str, Any]) -> Any:
        if not isinstance(record, Mapping):
            raise TypeError(f"{self.cls.__name__}: a {type(record).__name__}, not a map")
        for key, value in self.constants.items():
            if record.get(key, value) != value:  # absent: written before it was declared
                kind = self.what.removesuffix(" document")
                raise (self.error or ValueError)(f"unknown {kind} {key} {record.get(key)!r}")
        values = {}
        for f in self.fields:
            if f.spread:
                values[f.name] = f.load(record)
            elif f.key in record:
                values[f.name] = f.load(record[f.key])
            elif f.default is not None:
                values[f.name] = f.default()
            else:
                raise KeyError(f.key)
        return self.cls(**values)


def declared(keys: Mapping[str, str] | None = None,
             codecs: Mapping[str, Codec | type] | None = None, *,
             order: Sequence[str] = (), constants: Mapping[str, Any] | None = None,
             error: type[Exception] | None = None, what: str = "",
             ) -> Callable[[type[R]], type[R]]:
    """Class decorator (above ``@dataclass``): declare the type's stored format.

    ``keys`` renames fields in the map (``{"last_value": "last"}``); ``codecs``
    gives the fields that are not written as they are their :class:`Codec`, or
    the (dataclass) type of a nested record. The map lists the fields named in
    ``order`` first, then the others in declaration order; ``constants`` come
    before them all and are checked when read (a format version). With ``error``
    a record that cannot be read raises that type, naming ``what`` was read.
    """

    def declare(cls: type[R]) -> type[R]:
        cls._record_format = _Format(cls, keys or {}, codecs or {}, order=order,
                                     constants=constants, error=error, what=what)
        return cls

    return declare
