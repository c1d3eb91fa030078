"""The edit form of a review: generated from the preview's JSON schema when it has one, else a text or
JSON editor; read back from the submitted form keeping exactly what the reviewer typed.

Simple fields (text, numbers, yes/no, a choice) get their own control; nested objects and lists are
edited as JSON in a text area. The form does not judge the values: submitted text is handed to the
review queue, which validates the edit against the preview's model (so the console and the API accept
exactly the same edits); what it finds wrong is shown beside the field it names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..errors import InvalidInput
from ..flows.review_requests import ReviewRequest, preview_schema
from ..store.payloads import parse_json

__all__ = ["EditForm", "FormField", "edit_form", "read_edit"]

Kind = Literal["text", "textarea", "number", "checkbox", "select", "json"]
Mode = Literal["fields", "text", "json"]
_PREFIX = "field."


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    kind: Kind
    value: str
    required: bool = False
    nullable: bool = False
    options: tuple[str, ...] = ()
    description: str | None = None
    error: str | None = None

    @property
    def input_name(self) -> str:
        return _PREFIX + self.name


@dataclass(frozen=True)
class EditForm:
    """What the edit form shows: one control per field, or one editor (``text`` or ``json``)."""

    mode: Mode
    fields: tuple[FormField, ...] = ()
    raw: str = ""
    error: str | None = None  # a problem not tied to one field
    errors: Mapping[str, str] = field(default_factory=dict)

    def with_problems(self, problems: list[tuple[str, str]]) -> EditForm:
        """The same form (what was typed kept) with each problem beside its field."""
        by_field: dict[str, str] = {}
        for where, reason in problems:
            top = where.split(".", 1)[0]
            by_field.setdefault(top, f"{where}: {reason}" if where != top else reason)
        names = {f.name for f in self.fields}
        fields = tuple(replace(f, error=by_field.get(f.name)) for f in self.fields)
        rest = [f"{k}: {v}" for k, v in by_field.items() if k not in names]
        return replace(self, fields=fields, errors=by_field, error="; ".join(rest) or None)


def edit_form(req: ReviewRequest) -> EditForm:
    """The form for editing ``req``'s preview, filled with the preview."""
    schema = preview_schema(req)
    if schema is not None and schema.get("type") == "object" and isinstance(req.preview, dict):
        return EditForm("fields", _fields(schema, req.preview))
    if isinstance(req.preview, str) and schema is None:
        return EditForm("text", raw=req.preview)
    return EditForm("json", raw=json.dumps(req.preview, indent=2, ensure_ascii=False, default=str))


def read_edit(req: ReviewRequest, form: Mapping[str, str]) -> tuple[Any, EditForm]:
    """The edit the reviewer submitted and the form as they left it; raises :class:`EditRefused` when a
    field cannot even be read (JSON that does not parse), naming it."""
    shown = edit_form(req)
    if shown.mode == "text":
        raw = form.get("edit", "")
        return raw.replace("\r\n", "\n"), replace(shown, raw=raw)
    if shown.mode == "json":
        raw = form.get("edit", "")
        typed = replace(shown, raw=raw)
        try:
            return parse_json(raw, "the edit"), typed
        except InvalidInput as e:
            raise EditRefused(typed.with_problems([("edit", str(e))])) from None
    return _read_fields(req, shown, form)


class EditRefused(Exception):
    """The submitted form could not be turned into an edit; ``form`` says where and keeps the input."""

    def __init__(self, form: EditForm) -> None:
        super().__init__(form.error or "the edit could not be read")
        self.form = form


def _read_fields(req: ReviewRequest, shown: EditForm, form: Mapping[str, str]) -> tuple[Any, EditForm]:
    edit: dict[str, Any] = dict(req.preview) if isinstance(req.preview, dict) else {}
    kept: list[FormField] = []
    problems: list[tuple[str, str]] = []
    for f in shown.fields:
        raw = form.get(f.input_name)
        if f.kind == "checkbox":
            kept.append(replace(f, value="true" if raw is not None else ""))
            edit[f.name] = raw is not None
            continue
        raw = (raw or "").replace("\r\n", "\n")
        kept.append(replace(f, value=raw))
        if raw == "" and f.nullable:
            edit[f.name] = None
        elif f.kind == "json":
            try:
                edit[f.name] = parse_json(raw, f.name)
            except InvalidInput as e:
                problems.append((f.name, str(e)))
        else:
            edit[f.name] = raw  # numbers too: the model's validation converts them and says what is wrong
    typed = replace(shown, fields=tuple(kept))
    if problems:
        raise EditRefused(typed.with_problems(problems))
    return edit, typed


def _fields(schema: Mapping[str, Any], preview: Mapping[str, Any]) -> tuple[FormField, ...]:
    defs = schema.get("$defs", {})
    required = set(schema.get("required", ()))
    return tuple(
        _field(name, _deref(prop, defs), defs, name in required, preview.get(name))
        for name, prop in schema.get("properties", {}).items()
    )


def _deref(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {
            **defs.get(ref.removeprefix("#/$defs/"), {}),
            **{k: v for k, v in prop.items() if k != "$ref"},
        }
    return prop


def _field(
    name: str, prop: Mapping[str, Any], defs: Mapping[str, Any], required: bool, value: Any
) -> FormField:
    nullable = False
    options = prop.get("anyOf")
    if isinstance(options, list):
        kinds = [_deref(o, defs) for o in options]
        rest = [k for k in kinds if k.get("type") != "null"]
        nullable = len(rest) < len(kinds)
        prop = {**prop, **rest[0]} if len(rest) == 1 else prop
    label = str(prop.get("title") or name)
    description = prop.get("description")
    kind = _kind(prop, value)
    shown = _shown(kind, value)
    choices = tuple(str(c) for c in prop.get("enum", ()))
    return FormField(name, label, kind, shown, required, nullable, choices, description)


def _kind(prop: Mapping[str, Any], value: Any) -> Kind:
    if "enum" in prop and all(isinstance(c, str) for c in prop["enum"]):
        return "select"
    kind = prop.get("type")
    if kind == "string":
        return "textarea" if isinstance(value, str) and ("\n" in value or len(value) > 80) else "text"
    if kind in ("integer", "number"):
        return "number"
    if kind == "boolean":
        return "checkbox"
    return "json"


def _shown(kind: Kind, value: Any) -> str:
    if value is None:
        return ""
    if kind == "checkbox":
        return "true" if value else ""
    if kind == "json":
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return str(value)
