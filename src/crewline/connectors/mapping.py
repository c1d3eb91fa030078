"""Declared field maps from a system's JSON to a canonical record (:mod:`.records`).

A CRM's contact might be ``{"id": 42, "properties": {"full_name": ..., "email": ...}}``; a workflow wants a
:class:`~.records.Contact`. The map says where each record field is found, as a dotted path::

    CONTACT = FieldMap(Contact, {"source_id": "id", "name": "properties.full_name",
                                 "email": "properties.email", "company": "company.name"})

A path that is absent leaves the field at its default. The top-level keys no path reads go to the
record's ``extra``, so nothing the system said is lost. ``many`` reads a list (at ``items``, a dotted path,
or the answer itself) into a list of records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import GenericAlias
from typing import Any

import pydantic

from ..errors import ConnectorError
from .records import Record

__all__ = ["FieldMap"]

_MISSING = object()


@dataclass(frozen=True)
class FieldMap:
    record: type[Record]
    fields: Mapping[str, str] = field(default_factory=dict)  # record field -> dotted path in the JSON
    many: bool = False
    items: str | None = None  # with ``many``: where the list is (None: the answer is the list)

    def __post_init__(self) -> None:
        unknown = set(self.fields) - set(self.record.model_fields)
        if unknown:
            raise TypeError(f"FieldMap for {self.record.__name__}: no field(s) {', '.join(sorted(unknown))}")

    @property
    def result(self) -> Any:
        """The type :meth:`apply` returns (what a replay validates the recorded answer into)."""
        return GenericAlias(list, (self.record,)) if self.many else self.record

    def apply(self, data: Any, source: str = "?") -> Record | list[Record]:
        """``data`` as record(s); a :class:`ConnectorError` naming ``source`` when it does not fit."""
        if not self.many:
            return self._one(data, source)
        found = _get(data, self.items) if self.items else data
        if not isinstance(found, list):
            where = self.items or "the answer"
            raise ConnectorError(source, f"{where} is not a list of {self.record.__name__} records")
        return [self._one(item, source) for item in found]

    def _one(self, data: Any, source: str) -> Record:
        if not isinstance(data, Mapping):
            raise ConnectorError(source, f"expected an object to read a {self.record.__name__} from")
        values: dict[str, Any] = {"source": source}
        for name, path in self.fields.items():
            value = _get(data, path)
            if value is not _MISSING and value is not None:
                values[name] = str(value) if name == "source_id" else value
        read = {path.split(".", 1)[0] for path in self.fields.values()}
        values["extra"] = {k: v for k, v in data.items() if k not in read}
        try:
            return self.record.model_validate(values)
        except pydantic.ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:3]
            )
            raise ConnectorError(
                source, f"the answer does not fit {self.record.__name__}: {problems}"
            ) from None


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data
