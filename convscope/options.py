"""Typed, bounded options: declared once, in a tool's signature, checked the same way everywhere.

A tool's keyword options carry their type and bounds in their annotations (pydantic v2 ``Annotated[int,
Field(ge=1, le=1024)]``, ``Literal[...]``) and their help in the docstring's ``Options:`` section
(``name: what it does, for a person``). :func:`options_model` turns that into one pydantic model per tool;
it checks Python keyword arguments, command-line flags and the web's JSON alike, before any work, and its
JSON schema generates the CLI flags, the web forms and the OpenAPI schema. Values only Python can pass
(tensors, callables) are typed ``SkipJsonSchema[...]``: accepted from Python, absent from the front ends.

An out-of-range value is one line naming the option and its allowed range (:class:`OptionError`).
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import re
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic.json_schema import SkipJsonSchema

from .errors import OptionError

__all__ = ["SERVER_ONLY", "BatchSize", "Fp32Only", "OptionError", "OptionSpec", "Options", "Precision", "PythonOnly", "Seed",
           "describe_options", "option_help", "option_specs", "options_model", "parse_text", "validate_options"]

# -- shared option types ---------------------------------------------------------------------------------------
Precision = Literal["fp32", "bf16"]
Fp32Only = Literal["fp32"]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
BatchSize = Annotated[int, Field(ge=1, le=4096)] | None
PythonOnly = SkipJsonSchema  # PythonOnly[torch.Tensor]: accepted from Python, not offered by the CLI or the web
SERVER_ONLY = {"x-server-only": True}  # in an option's JSON schema: Python and the command line only, never the web app


def is_server_only(schema: dict[str, Any]) -> bool:
    """Whether an option's schema is marked :data:`SERVER_ONLY` (or a server path: ``Path``), in any union member."""
    members = schema.get("anyOf") or [schema]
    return any(m.get("x-server-only") or m.get("format") in ("path", "file-path", "directory-path") for m in members)


class Options(BaseModel):
    """Base of every tool's options model: unknown names are refused, NaN and infinities too, and a bool is
    not taken for a number (``steps=True`` is a mistake, not 1)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", allow_inf_nan=False,
                              protected_namespaces=(), validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for name, value in values.items():
                field = cls.model_fields.get(name)
                if field is not None and isinstance(value, bool) and not _admits_bool(field.annotation):
                    raise ValueError(f"{name}: {value!r} is a bool; this option takes {_describe_type(field.annotation)}")
        return values


def _members(annotation: Any) -> list[Any]:
    """The plain types a (possibly Annotated, Optional, Union) annotation admits."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _admits_bool(annotation: Any) -> bool:
    for member in _members(annotation):
        if member is bool or member is Any or member is object:
            return True
        if get_origin(member) is Literal and any(isinstance(v, bool) for v in get_args(member)):
            return True
        if not isinstance(member, type) and get_origin(member) is None and member is not None:
            return True  # something exotic (a TypeVar, a callable protocol): let pydantic decide
    return False


def _describe_type(annotation: Any) -> str:
    words = []
    for member in _members(annotation):
        if member is type(None):
            words.append("None")
        elif get_origin(member) is Literal:
            words.append(" or ".join(repr(v) for v in get_args(member)))
        elif get_origin(member) in (tuple, list):
            words.append("a " + ("pair" if get_origin(member) is tuple else "list"))
        else:
            words.append(getattr(member, "__name__", str(member)))
    return ", ".join(dict.fromkeys(words))


# -- help from the docstring ---------------------------------------------------------------------------------
def option_help(doc: str) -> dict[str, str]:
    """``name: text`` entries of a docstring's ``Options:`` section (continuation lines indented more)."""
    lines = doc.split("\n")
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Options:")
    except StopIteration:
        return {}
    helps: dict[str, str] = {}
    current, indent = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            if current is not None:
                break
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        match = re.match(r"\s*(?:``)?(\w+)(?:``)?\s*:\s*(.*)", line) if width == indent else None
        if match:
            current = match.group(1)
            helps[current] = match.group(2).strip()
        elif current is not None:
            helps[current] += " " + line.strip()
    return {k: " ".join(v.replace("``", "").split()) for k, v in helps.items()}


# -- the model -------------------------------------------------------------------------------------------------
def options_model(fn: Callable[..., Any], *, name: str, skip: Sequence[str] = ()) -> type[Options]:
    """The options model of ``fn``: every parameter not in ``skip`` (its inputs, target, layer, progress),
    typed by its annotation (``Any`` when it has none), defaulting to its default, described by the
    docstring's ``Options:`` section. A ``**kwargs`` parameter lets unknown names through (the tool checks them)."""
    signature = inspect.signature(fn, eval_str=True)
    helps = option_help(inspect.getdoc(fn) or "")
    fields: dict[str, Any] = {}
    extra = "forbid"
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            extra = "allow"
            continue
        if param.kind is param.VAR_POSITIONAL or param.name in skip:
            continue
        annotation = Any if param.annotation is param.empty else param.annotation
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, Field(default, description=helps.get(param.name, "")))
    title = "".join(part.capitalize() for part in re.split(r"[_\W]+", name) if part) + "Options"
    model = create_model(title, __base__=Options, **fields)
    if extra == "allow":
        model.model_config = {**model.model_config, "extra": "allow"}
        model.model_rebuild(force=True)
    return model


def validate_options(tool: str, model: type[Options], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked and converted by ``model``; every option with its value (defaults filled in).
    One-line :class:`OptionError` naming the option and what it allows."""
    for name, value in values.items():  # the base model refuses these too; here the error can name the option
        field = model.model_fields.get(name)
        if field is not None and isinstance(value, bool) and not _admits_bool(field.annotation):
            raise OptionError(f"{tool}: option {name}={value!r} is a bool; it takes {_describe_type(field.annotation)}", name)
    try:
        checked = model.model_validate(values)
    except ValidationError as exc:
        raise OptionError(error_message(tool, model, exc), failing_field(exc)) from None
    out = {name: getattr(checked, name) for name in model.model_fields}
    out.update(checked.model_extra or {})
    return out


def failing_field(exc: ValidationError) -> str | None:
    """The option the most telling error is about (see :func:`error_message`)."""
    error = _telling(exc)
    loc = error.get("loc") or ()
    return str(loc[0]) if loc else None


_BOUND_WORDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _bounds(annotation: Any, info: Any = None) -> dict[str, float]:
    """ge/gt/le/lt found in a field's metadata and its annotation's (first numeric member)."""
    found: dict[str, float] = {}
    metadata = list(getattr(info, "metadata", []) or [])

    def collect(items: Sequence[Any]) -> None:
        for item in items:
            for key in _BOUND_WORDS:
                value = getattr(item, key, None)
                if value is not None and key not in found:
                    found[key] = value
            collect(getattr(item, "metadata", []) or [])

    collect(metadata)
    stack = [annotation]
    while stack and not found:
        current = stack.pop(0)
        if get_origin(current) is Annotated:
            collect(get_args(current)[1:])
            stack.append(get_args(current)[0])
        elif get_origin(current) in (Union, types.UnionType):
            stack.extend(get_args(current))
    return found


def describe_range(annotation: Any, info: Any = None) -> str:
    """'1 ≤ value ≤ 1024', 'value > 0', or '' when unbounded."""
    bounds = _bounds(annotation, info)
    low = next(((k, v) for k, v in bounds.items() if k in ("ge", "gt")), None)
    high = next(((k, v) for k, v in bounds.items() if k in ("le", "lt")), None)
    fmt = lambda v: f"{int(v):,}" if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"
    if low and high:
        return f"{fmt(low[1])} {'≤' if low[0] == 'ge' else '<'} value {'≤' if high[0] == 'le' else '<'} {fmt(high[1])}"
    if low:
        return f"value {_BOUND_WORDS[low[0]]} {fmt(low[1])}"
    if high:
        return f"value {_BOUND_WORDS[high[0]]} {fmt(high[1])}"
    return ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _telling(exc: ValidationError) -> dict[str, Any]:
    """Of pydantic's errors (a union gives one per member), the one that says most: a bound, an unknown name."""
    rank = {"greater_than": 0, "greater_than_equal": 0, "less_than": 0, "less_than_equal": 0, "literal_error": 1,
            "extra_forbidden": 0, "missing": 3, "value_error": 0}
    return min(exc.errors(include_url=False), key=lambda e: (not e.get("loc"), rank.get(e["type"], 2)))


def error_message(tool: str, model: type[Options], exc: ValidationError) -> str:
    """The most telling of pydantic's errors as one line: which option, what was given, what is allowed."""
    error = _telling(exc)
    loc = error.get("loc") or ()
    name = str(loc[0]) if loc else ""
    fields = model.model_fields
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(name, list(fields), n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"{tool} has no option {name!r}{hint} (options: {', '.join(fields) or 'none'})"
    if error["type"] == "missing":
        return f"{tool} needs {name!r}: {fields[name].description or _describe_type(fields[name].annotation)}"
    if error["type"] == "value_error" and not loc:
        return f"{tool}: option {str(error['msg']).removeprefix('Value error, ')}"
    field = fields.get(name)
    given = _shown(error.get("input"))
    where = "".join(f"[{part}]" for part in loc[1:] if isinstance(part, int))
    if field is None:
        return f"{tool}: {name}={given}: {error['msg']}"
    allowed = describe_range(field.annotation, field)
    choices = [v for m in _members(field.annotation) if get_origin(m) is Literal for v in get_args(m)]
    if error["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") or (
            allowed and error["type"] in ("int_parsing_size",)):
        return f"{tool}: option {name}{where}={given} is out of range; allowed: {allowed or error['msg']}"
    if choices and error["type"] == "literal_error":
        return f"{tool}: option {name}={given} is not one of {', '.join(map(repr, choices))}"
    expected = _describe_type(field.annotation)
    extra = f" ({allowed})" if allowed else ""
    return f"{tool}: option {name}{where}={given} is not valid: {str(error['msg']).lower()}; it takes {expected}{extra}"


# -- front ends ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptionSpec:
    """One option as a front end offers it: its JSON schema (types, bounds, choices) and its help."""

    name: str
    default: Any  # inspect.Parameter.empty when required
    kind: str  # "int" | "float" | "bool" | "str" | "choice" | "list" | "pair" | a "|"-joined mix
    choices: tuple[Any, ...]
    help: str
    schema: dict[str, Any]
    required: bool = False
    nullable: bool = False

    @property
    def minimum(self) -> float | None:
        return _schema_bound(self.schema, ("minimum", "exclusiveMinimum"))

    @property
    def maximum(self) -> float | None:
        return _schema_bound(self.schema, ("maximum", "exclusiveMaximum"))

    @property
    def range(self) -> str:
        """'1 to 1024', '> 0', '' (unbounded)."""
        low, high = self.minimum, self.maximum
        lo_ex = any("exclusiveMinimum" in s for s in _flat(self.schema))
        hi_ex = any("exclusiveMaximum" in s for s in _flat(self.schema))
        fmt = lambda v: f"{int(v):,}" if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"
        if low is not None and high is not None:
            return f"{'more than ' if lo_ex else ''}{fmt(low)} to {fmt(high)}{' (exclusive)' if hi_ex else ''}"
        if low is not None:
            return f"{'>' if lo_ex else '≥'} {fmt(low)}"
        if high is not None:
            return f"{'<' if hi_ex else '≤'} {fmt(high)}"
        return ""

    def as_json(self) -> dict[str, Any]:
        """JSON-safe description (the web app's forms)."""
        default = None if self.default is inspect.Parameter.empty else self.default
        try:
            json.dumps(default)
        except (TypeError, ValueError):
            default = None
        return {"name": self.name, "default": default, "kind": self.kind, "choices": list(self.choices), "help": self.help,
                "minimum": self.minimum, "maximum": self.maximum, "range": self.range, "required": self.required,
                "nullable": self.nullable, "schema": self.schema}


def _flat(schema: dict[str, Any]) -> list[dict[str, Any]]:
    members = schema.get("anyOf") or [schema]
    out = []
    for member in members:
        out.append(member)
        if member.get("type") == "array":
            items = member.get("prefixItems") or ([member["items"]] if isinstance(member.get("items"), dict) else [])
            out += items
    return out


def _schema_bound(schema: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for member in _flat(schema):
        for key in keys:
            if key in member:
                return member[key]
    return None


def _kind(schema: dict[str, Any]) -> tuple[str, tuple[Any, ...], bool]:
    """(kind, choices, nullable) of a property's JSON schema."""
    members = schema.get("anyOf") or [schema]
    kinds, choices, nullable = [], [], False
    for member in members:
        kind = member.get("type")
        if "enum" in member or "const" in member:
            choices += member.get("enum", [member.get("const")])
            kinds.append("choice")
        elif kind == "null":
            nullable = True
        elif kind == "integer":
            kinds.append("int")
        elif kind == "number":
            kinds.append("float")
        elif kind == "boolean":
            kinds.append("bool")
        elif kind == "string":
            kinds.append("str")
        elif kind == "array":
            kinds.append("pair" if member.get("prefixItems") and len(member["prefixItems"]) == 2 else "list")
        elif kind == "object":
            kinds.append("dict")
    return "|".join(dict.fromkeys(kinds)) or "any", tuple(dict.fromkeys(choices)), nullable


def option_specs(model: type[Options]) -> list[OptionSpec]:
    """The options a front end offers (those with a JSON schema), in signature order."""
    schema = model.model_json_schema(mode="validation")
    properties = schema.get("properties", {})
    definitions = schema.get("$defs", {})
    specs = []
    for name, field in model.model_fields.items():
        prop = properties.get(name)
        if prop is None or not _exposable(prop):
            continue
        prop = _inline_refs(prop, definitions)
        kind, choices, nullable = _kind(prop)
        default = inspect.Parameter.empty if field.is_required() else field.default
        specs.append(OptionSpec(name, default, kind, choices, front_help(field.description or ""), prop, field.is_required(),
                                nullable))
    return specs


PYTHON_CLAUSE = re.compile(r";\s*(?:from Python also|a callable target)[^;]*?(?=;|$)")


def front_help(text: str) -> str:
    """An option's help as the command line and the web show it: without the clauses about what only Python can pass
    ("from Python also a tensor (C, H, W)", "a callable target is used as it is")."""
    stripped = PYTHON_CLAUSE.sub("", text).strip()
    return stripped if stripped.endswith(".") or not text.rstrip().endswith(".") else stripped.rstrip(".") + "."


def _exposable(prop: dict[str, Any]) -> bool:
    """Whether a property has a type a form can offer (not ``Any`` / python-only)."""
    members = prop.get("anyOf") or [prop]
    return any(("type" in m and m["type"] != "null") or "enum" in m or "const" in m or "$ref" in m for m in members)


def _inline_refs(value: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        if "$ref" in value and len(value) == 1:
            return _inline_refs(definitions.get(value["$ref"].split("/")[-1], {}), definitions)
        return {k: _inline_refs(v, definitions) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline_refs(v, definitions) for v in value]
    return value


def describe_options(fn: Callable[..., Any], *, skip: tuple[str, ...] = ()) -> list[OptionSpec]:
    """The front-end options of any function (see :func:`options_model`)."""
    return option_specs(options_model(fn, name=getattr(fn, "__name__", "function"), skip=skip))


# -- text (the command line) ------------------------------------------------------------------------------------
NULL_WORDS = ("none", "null", "auto", "default")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_text(text: str, schema: dict[str, Any]) -> Any:
    """A command-line value as the JSON value the schema describes: '32' -> 32, '32,16' -> [32, 16],
    'none' -> None for a nullable option, 'true' -> True. The options model then checks it; text that
    fits no member is passed on as it is, so the error names the option and its range."""
    members = schema.get("anyOf") or [schema]
    stripped = text.strip()
    for member in members:
        kind = member.get("type")
        try:
            if kind == "null" and stripped.lower() in NULL_WORDS:
                return None
            if "enum" in member or "const" in member:
                allowed = member.get("enum", [member.get("const")])
                for value in allowed:
                    if stripped == str(value) or stripped.lower() == str(value).lower():
                        return value
            elif kind == "boolean":
                if stripped.lower() in TRUE_WORDS:
                    return True
                if stripped.lower() in FALSE_WORDS:
                    return False
            elif kind == "integer" and re.fullmatch(r"[+-]?\d{1,30}", stripped):
                return int(stripped)
            elif kind == "number" and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?", stripped):
                value = float(stripped)
                if math.isfinite(value):
                    return value
            elif kind == "array" and ("," in stripped or member.get("items")):
                parts = [p for p in stripped.strip("[]()").split(",") if p.strip()]
                items = member.get("prefixItems") or [member.get("items") or {}] * len(parts)
                if member.get("prefixItems") and len(parts) != len(items):
                    continue
                return [parse_text(p, item) for p, item in zip(parts, items)]
            elif kind == "string":
                return text
        except (ValueError, TypeError):
            continue
    return text
