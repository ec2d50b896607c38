"""The method registry: ``@register`` once, and the CLI, the report and the web app find the method.

timm-style discovery instead of hand-kept lists; the contract tests are parametrized over it, so a
new method is tested without new test code.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConvscopeError

__all__ = ["MethodInfo", "explain", "get", "methods", "register"]

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
