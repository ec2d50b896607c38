"""The method registry: ``@register`` once, and the CLI, the report and the web app find the method.

timm-style discovery instead of hand-kept lists; the contract tests are parametrized over it, so a
new method is tested without new test code.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConvscopeError

__all__ = ["MethodInfo", "OptionSpec", "choices", "describe_options", "explain", "get", "methods", "register"]

FAMILIES = ("gradient", "cam", "perturbation", "feature")
OUTPUTS = ("map", "pixels")


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: ``fn(model, x, *, target=None, layer=None, **options) -> Result``."""

    name: str
    fn: Callable[..., Any]
    family: str  # gradient | cam | perturbation | feature
    output: str  # "map": (B, 1, H, W); "pixels": (B, C, H, W)
    uses_layer: bool  # whether ``layer`` changes the answer
    paper: str
    quick: dict[str, Any] = field(default_factory=dict)  # options for a fast, coarser run (previews, tests)

    @property
    def summary(self) -> str:
        """The docstring's first paragraph, as one line of plain text."""
        paragraph = (inspect.getdoc(self.fn) or self.name).split("\n\n")[0]
        return " ".join(paragraph.split()).replace("``", "")

    @property
    def options(self) -> dict[str, inspect.Parameter]:
        """The keyword options beyond model, x, target and layer, with their defaults."""
        params = inspect.signature(self.fn).parameters
        return {k: p for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in ("target", "layer")}

    def option_specs(self) -> list[OptionSpec]:
        """Every option described for a form or ``--help``: name, default, type, choices, help text
        (from the docstring's ``Options:`` section, ``name: text`` per option)."""
        return describe_options(self.fn, skip=("target", "layer"))


@dataclass(frozen=True)
class OptionSpec:
    """One keyword option of a registered function, as a front end shows it."""

    name: str
    default: Any  # inspect.Parameter.empty when required
    kind: str  # "int" | "float" | "bool" | "str" | "choice" | "any"
    choices: tuple[Any, ...]
    help: str

    def as_json(self) -> dict[str, Any]:
        """JSON-safe description (the web app's forms); defaults that are not plain values become None."""
        plain = self.default if isinstance(self.default, (int, float, str, bool, type(None))) else None
        return {"name": self.name, "default": plain, "kind": self.kind, "choices": list(self.choices), "help": self.help}


def _option_help(doc: str) -> dict[str, str]:
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


def _kind(param: inspect.Parameter) -> str:
    annotation = str(param.annotation)
    default = param.default
    if isinstance(default, bool) or annotation == "bool":
        return "bool"
    if "Literal" in annotation:
        return "choice"
    for name in ("int", "float", "str"):
        if annotation == name or annotation.startswith(name + " |"):
            return name
    if isinstance(default, (int, float, str)) and not isinstance(default, bool):
        return type(default).__name__
    return "any"


def describe_options(fn: Callable[..., Any], *, skip: tuple[str, ...] = ()) -> list[OptionSpec]:
    """The keyword-only options of ``fn`` (see ``MethodInfo.option_specs``); ``Literal[...]``
    annotations and ``CHOICES`` give the allowed values."""
    helps = _option_help(inspect.getdoc(fn) or "")
    choices_of = getattr(fn, "__convscope_choices__", {})
    specs = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind is not param.KEYWORD_ONLY or name in skip:
            continue
        choices = tuple(choices_of.get(name, ()))
        kind = "choice" if choices else _kind(param)
        specs.append(OptionSpec(name, param.default, kind, choices, helps.get(name, "")))
    return specs


def choices(**allowed: tuple[Any, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator recording the allowed values of options (``@choices(variant=("mean", "square"))``)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__convscope_choices__ = {**getattr(fn, "__convscope_choices__", {}), **allowed}  # type: ignore[attr-defined]
        return fn

    return decorate


_METHODS: dict[str, MethodInfo] = {}


def register(name: str, *, family: str, output: str, uses_layer: bool, paper: str,
             quick: dict[str, Any] | None = None) -> Callable:
    """Decorator adding a method to the registry under ``name``; ``quick`` = options for a fast preview."""
    if family not in FAMILIES or output not in OUTPUTS:
        raise ValueError(f"bad registration for {name}: family {family!r}, output {output!r}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        _METHODS[name] = MethodInfo(name, fn, family, output, uses_layer, paper, dict(quick or {}))
        return fn

    return decorate


def _load_builtin() -> None:
    from . import attribution  # noqa: F401  (registers the built-in methods)


def methods(family: str | None = None) -> list[MethodInfo]:
    """All registered methods (optionally one family), in registration order."""
    _load_builtin()
    return [m for m in _METHODS.values() if family is None or m.family == family]


def get(name: str) -> MethodInfo:
    """The method called ``name``; an error suggesting close names otherwise."""
    _load_builtin()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConvscopeError(f"unknown method {name!r}{hint} (available: {', '.join(_METHODS)})")
    return _METHODS[name]


def explain(model: Any, x: Any, method: str = "gradcam", **options: Any) -> Any:
    """Run a registered method by name: ``cs.explain(model, x, "gradcam", target=281)``."""
    return get(method).fn(model, x, **options)
