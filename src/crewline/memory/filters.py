"""Metadata filters: a small Mongo-like language, checked up front and evaluated on item metadata.

``{"lang": "en"}`` is equality; an operator object allows ``$eq``, ``$ne``, ``$in``, ``$nin``, ``$gt``,
``$gte``, ``$lt``, ``$lte`` and ``$exists``; ``$and`` / ``$or`` take lists of filters. Dotted keys reach
into nested metadata (``"customer.tier"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput

__all__ = ["matches", "validate_filter"]

_OPS = frozenset({"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists"})
_MISSING = object()


def validate_filter(flt: object, *, field: str = "filter") -> dict[str, Any]:
    if not isinstance(flt, Mapping):
        raise InvalidInput(f"{field} must be a mapping like {{'lang': 'en'}}, got {type(flt).__name__}")
    for key, cond in flt.items():
        where = f"{field}.{key}"
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"{field}: keys must be non-empty strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise InvalidInput(f"{where} must be a non-empty list of filters")
            for i, sub in enumerate(cond):
                validate_filter(sub, field=f"{where}[{i}]")
        elif key.startswith("$"):
            raise InvalidInput(f"{field}: unknown operator {key!r} at top level; use $and or $or")
        elif isinstance(cond, Mapping) and any(isinstance(op, str) and op.startswith("$") for op in cond):
            _validate_ops(cond, where)
    return dict(flt)


def _validate_ops(cond: Mapping[Any, Any], where: str) -> None:
    for op, value in cond.items():
        if op not in _OPS:
            raise InvalidInput(f"{where}: unknown operator {op!r}; use one of {', '.join(sorted(_OPS))}")
        if op in ("$in", "$nin") and not isinstance(value, list | tuple):
            raise InvalidInput(f"{where}.{op} needs a list of values, got {type(value).__name__}")
        if op in ("$gt", "$gte", "$lt", "$lte") and (
            isinstance(value, bool) or not isinstance(value, int | float | str)
        ):
            raise InvalidInput(f"{where}.{op} needs a number or a string, got {value!r}")
        if op == "$exists" and not isinstance(value, bool):
            raise InvalidInput(f"{where}.$exists needs true or false, got {value!r}")


def matches(flt: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    for key, cond in flt.items():
        if key == "$and":
            if not all(matches(sub, metadata) for sub in cond):
                return False
        elif key == "$or":
            if not any(matches(sub, metadata) for sub in cond):
                return False
        elif not _check(_lookup(metadata, key), cond):
            return False
    return True


def _lookup(metadata: Mapping[str, Any], key: str) -> Any:
    value: Any = metadata
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _check(value: Any, cond: Any) -> bool:
    if not (isinstance(cond, Mapping) and any(isinstance(op, str) and op.startswith("$") for op in cond)):
        return value is not _MISSING and value == cond
    return all(_op(op, value, arg) for op, arg in cond.items())


def _op(op: str, value: Any, arg: Any) -> bool:
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if op == "$ne":
        return value is _MISSING or value != arg
    if op == "$nin":
        return value is _MISSING or value not in arg
    if value is _MISSING:
        return False
    if op == "$eq":
        return bool(value == arg)
    if op == "$in":
        return bool(value in arg)
    try:
        if op == "$gt":
            return bool(value > arg)
        if op == "$gte":
            return bool(value >= arg)
        if op == "$lt":
            return bool(value < arg)
        return bool(value <= arg)
    except TypeError:
        return False
