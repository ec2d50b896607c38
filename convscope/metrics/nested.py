"""The attribution methods a trust or workflow tool runs inside it (rank's methods, sanity's method, the map of
robustness, audit, compare and class_regions).

They are named by the caller, so they are checked the way the tool's own options are, before any work: an
unknown name is one line with suggestions, and the method's options are validated by that method's own options
model (``Tool.validate``). Their cost is the method's own cost function on the pictures the tool will explain,
and a looping method's progress reports into the calling tool's tracker (``convscope.progress`` nests), so a
cancel raised by the caller's callback gets through a long method.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..engine import Cost
from ..errors import ConvscopeError

__all__ = ["Method", "method", "method_list"]

FALLBACK_FORWARDS = 3.0  # per picture, for a method registered without a cost: a forward and a backward


@dataclass(frozen=True)
class Method:
    """A checked method: its tool, its validated options (every option, defaults filled in) and the ``layer``
    the caller chose for it (None: the method's own choice)."""

    tool: Any  # convscope.registry.Tool
    options: dict[str, Any] = field(default_factory=dict)
    layer: Any = None

    @property
    def name(self) -> str:
        return self.tool.name

    def __call__(self, model: Any, x: torch.Tensor, *, target: Any = None) -> Any:
        """The method's Result on ``x`` (its checked entry point: inside a tool's call the cost is not checked
        again); a looping method reports into the caller's active tracker, so its callback can cancel it."""
        extra: dict[str, Any] = dict(self.options)
        if self.layer is not None:
            extra["layer"] = self.layer
        return self.tool.fn(model, x, target=target, **extra)

    def cost(self, model: Any, x: torch.Tensor) -> Cost:
        """What explaining ``x`` (B, C, H, W) costs, from the method's own cost function (a forward and a
        backward per picture when it has none)."""
        from ..registry import CostContext

        pictures = int(x.shape[0]) if x.dim() == 4 else 1
        size = getattr(model, "input_size", None) or (224, 224)
        area = float(x.shape[-2] * x.shape[-1]) / float(size[0] * size[1]) if x.dim() >= 2 else 1.0
        if self.tool.cost is None:
            return Cost(FALLBACK_FORWARDS * pictures * area, 0, f"{self.name}: about {FALLBACK_FORWARDS:g} per picture")
        inputs = dict(zip(self.tool.inputs, (model, x)))
        special = {"layer": self.layer} if self.layer is not None else {}
        context = CostContext(self.tool, model, inputs, special, dict(self.options))
        if model is not None:
            return self.tool.cost(context)
        try:  # a model known only by name (compare estimates before loading): the method may need more
            return self.tool.cost(context)
        except (AttributeError, TypeError):
            return Cost(FALLBACK_FORWARDS * pictures * area, 0, f"{self.name}: about {FALLBACK_FORWARDS:g} per picture")


def _attribution_names() -> list[str]:
    from ..registry import methods

    return [tool.name for tool in methods()]


def method(name: Any, options: Mapping[str, Any] | None = None, *, who: str) -> Method:
    """``name`` as a checked attribution method with ``options`` (its keyword options; ``layer`` included).
    ``who``: the tool asking, for the messages. One-line errors: an unknown name (with suggestions), a tool
    that is not an attribution method, options the method does not take or out of their range."""
    from ..registry import get

    known = _attribution_names()
    if not isinstance(name, str) or not name.strip():
        raise ConvscopeError(f"{who}: a method is a registered method's name ({', '.join(known)}), not {name!r}")
    name = name.strip()
    try:
        tool = get(name)
    except ConvscopeError:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConvscopeError(f"{who}: unknown method {name!r}{hint} (methods: {', '.join(known)})") from None
    if tool.family != "attribution":
        raise ConvscopeError(f"{who} runs attribution methods; {tool.name!r} is a {tool.family} tool "
                             f"(methods: {', '.join(known)})")
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConvscopeError(f"{who}: the options of {tool.name} must be a dict of its keyword options, "
                             f"not {type(options).__name__}")
    given = dict(options)
    for special in ("target", "progress"):
        if special in given:
            raise ConvscopeError(f"{who}: the options of {tool.name} set {special}; pass {special}= to {who} itself "
                                 f"(every method then explains the same class and reports to the same progress)")
    layer = given.pop("layer", None)
    if layer is not None and not tool.uses_layer:
        raise ConvscopeError(f"{who}: {tool.name} takes no layer")
    return Method(tool, tool.validate(given), layer)


def method_list(names: Any, options: Mapping[str, Any] | None, *, who: str, extra: Sequence[str] = ()) -> list[Method]:
    """Several methods by name (a list, or one comma-separated string), each with its options from
    ``options`` (method name -> its options). ``extra``: names that are not methods but may appear in both
    (rank's random baseline); they are left out of the answer."""
    listed = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names or ())
    if not listed or not all(isinstance(n, str) and n.strip() for n in listed):
        raise ConvscopeError(f"{who} needs at least one method name (e.g. 'gradcam,saliency'), got {names!r}")
    listed = [n.strip() for n in listed]
    if len(set(listed)) != len(listed):
        raise ConvscopeError(f"{who}: methods lists a name twice: {', '.join(listed)}")
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or not all(isinstance(v, Mapping) for v in options.values()):
        raise ConvscopeError(f"{who}: options must map a method name to a dict of its options, "
                             f"e.g. {{'integrated_gradients': {{'steps': 16}}}}")
    stray = [k for k in options if k not in listed and k not in extra]
    if stray:
        raise ConvscopeError(f"{who}: options given for {stray[0]!r}, which is not in methods {listed}")
    return [method(n, options.get(n), who=who) for n in listed if n not in extra]
