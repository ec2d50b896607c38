"""One registry of tools: ``@register`` once, and the Python API checks it, the CLI, the report and the
web app are generated from it, and the contract and state tests run over it.

A tool is a function ``fn(<inputs>, *, target=None, layer=None, **options, progress=None) -> result`` plus
what the front ends need to know: its family, what it takes (``TAKES``), the kind of result it returns
(``convscope.result.RESULT_KINDS`` or another displayable object's ``kind``), its paper, its options as a
typed model (``convscope.options``), a cost estimate in forward passes (``convscope.engine.Cost``) and how
the report shows it. Calling the registered function validates the options and checks the cost before
any work — the same check the CLI and the web app make before they start a job.

timm-style discovery instead of hand-kept lists: adding a tool is one function in one file and its
``@register`` line.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .engine import Cost, approved, check_cost
from .errors import ConvscopeError, OptionError
from .options import Options, OptionSpec, option_specs, options_model, validate_options

SHAPE_NOTE = re.compile(r",?\s*\((?:B|out), [\w, ]*\)")  # ", (B, 1, H, W)": a shape note for Python readers

__all__ = ["CAM_LAYER", "FAMILIES", "GROUPS", "TAKES", "CostContext", "LayerUse",
           "MethodInfo", "Plan", "ReportSpec", "Tool", "explain", "get",
           "methods", "register", "tools"]

FAMILIES = {
    "model": "the model itself: its layers and its predictions",
    "attribution": "which pixels drove a decision",
    "workflow": "debugging a model: models and classes side by side, robustness, shortcut audits",
    "trust": "which explanation to believe",
    "features": "what the network has learned",
    "embedding": "a dataset in the model's feature space",
}
GROUPS = ("gradient", "cam", "perturbation")  # the attribution families
TAKES = {
    "images": "a model and a batch of preprocessed pictures x (B, C, H, W)",
    "image": "a model and one picture (a path, PIL image, array, sample name or preprocessed tensor)",
    "model": "a model only",
    "models": "several models (or one) and pictures",
    "dataset": "a model and a dataset (a folder, file list, tensor, (images, labels) pair or torch Dataset)",
}
INPUT_COUNT = {"images": 2, "image": 2, "model": 1, "models": 2, "dataset": 2}
SPECIAL = ("target", "layer", "progress")  # parameters every front end handles itself

CostFn = Callable[["CostContext"], Cost]


SpecOptions = dict[str, Any] | Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class ReportSpec:
    """How the report shows a tool.

    options: the options the report passes (a dict, or a function of the model giving one — e.g. layers chosen
             at four depths of this model); quick: for ``--quick``, on top of ``options`` (None: the tool's own
             quick options); title and a one-line note on how to read it; order: position among the part's
             sections (unset: registration position); part: the report part it belongs to (default: its family;
             "layers" puts it at the end); style: drawing options for ``render.to_html``; explanations: a dataset tool
             that reads a folder written by ``explain_dataset`` too (the report gives it such a folder).
    """

    options: SpecOptions = field(default_factory=dict)
    quick: SpecOptions | None = None
    title: str | None = None
    note: str = ""
    order: float | None = None
    part: str | None = None
    style: dict[str, Any] = field(default_factory=dict)
    explanations: bool = False  # a dataset tool that also reads a folder written by explain_dataset (the report's --folder)


@dataclass(frozen=True, eq=False)
class Tool:
    """A registered tool. ``fn`` is the checked entry point (what ``cs.<name>`` is); ``impl`` the function
    as written, for code that has validated its own call."""

    name: str
    impl: Callable[..., Any]
    family: str
    takes: str
    returns: str
    paper: str
    options_model: type[Options]
    group: str | None = None
    quick: dict[str, Any] = field(default_factory=dict)
    uses_layer: bool = False
    layer: LayerUse | None = None  # what a given layer must be and what the tool does without one (None: takes no layer)
    uses_target: bool = False
    loops: bool = False  # accepts progress= (reports progress, can be cancelled)
    cost: CostFn | None = None
    report: ReportSpec | None = field(default_factory=ReportSpec)
    aliases: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    fn: Callable[..., Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        signature = inspect.signature(self.impl)

        def entry(*args: Any, **kwargs: Any) -> Any:
            return self.plan(*args, **kwargs).run()

        entry.__name__ = entry.__qualname__ = getattr(self.impl, "__name__", self.name)
        entry.__doc__ = self.impl.__doc__
        entry.__module__ = self.impl.__module__
        entry.__signature__ = signature  # type: ignore[attr-defined]
        entry.__wrapped__ = self.impl  # type: ignore[attr-defined]
        entry.__convscope_tool__ = self  # type: ignore[attr-defined]
        object.__setattr__(self, "fn", entry)
        object.__setattr__(self, "_signature", signature)

    # -- what it is ------------------------------------------------------------------------------------
    @property
    def summary(self) -> str:
        """The docstring's first paragraph, as one line of plain text."""
        paragraph = (inspect.getdoc(self.impl) or self.name).split("\n\n")[0]
        return " ".join(paragraph.split()).replace("``", "")

    @property
    def description(self) -> str:
        """The summary for a person (command line, report, web page): without the tensor shapes (``, (B, 1, H, W)``)
        and the sentences about ``meta[...]`` that are for Python readers."""
        sentences = re.split(r"(?<=\.)\s+", SHAPE_NOTE.sub("", self.summary))
        return " ".join(sentence for sentence in sentences if "meta[" not in sentence)

    @property
    def output(self) -> str:
        """The result kind (``returns``); "map" or "pixels" for attribution methods."""
        return self.returns

    @property
    def options(self) -> dict[str, inspect.Parameter]:
        """The options' parameters (beyond inputs, target, layer and progress), with their defaults."""
        params = self._signature.parameters  # type: ignore[attr-defined]
        return {k: p for k, p in params.items() if k in self.options_model.model_fields}

    def option_specs(self) -> list[OptionSpec]:
        """Every option a front end offers: name, default, type, bounds, choices, help."""
        return option_specs(self.options_model)

    def options_schema(self) -> dict[str, Any]:
        """The JSON schema of the options the front ends offer (python-only values left out)."""
        schema = self.options_model.model_json_schema(mode="validation")
        offered = {spec.name for spec in self.option_specs()}
        schema["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k in offered}
        if "required" in schema:
            schema["required"] = [k for k in schema["required"] if k in offered]
        return schema

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    # -- a call, checked before any work ------------------------------------------------------------------
    def validate(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` checked and converted by the options model; every option with its value."""
        return validate_options(self.name, self.options_model, options)

    def plan(self, *args: Any, **kwargs: Any) -> Plan:
        """Bind a call, validate its options, estimate its cost and refuse it over the limits — no work yet
        (``plan(...).run()`` does it). The web app plans a job before it answers 202; the CLI before it loads
        pictures."""
        plan = self._bind(*args, **kwargs)
        plan.estimate(check=True)
        return plan

    def _bind(self, *args: Any, **kwargs: Any) -> Plan:
        signature: inspect.Signature = self._signature  # type: ignore[attr-defined]
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            message, name = self._binding_error(str(exc), kwargs)
            raise OptionError(message, name) from None
        arguments = dict(bound.arguments)
        inputs = {name: arguments.pop(name) for name in self.inputs if name in arguments}
        special = {name: arguments.pop(name) for name in SPECIAL if name in arguments}
        extra: dict[str, Any] = {}
        for name, param in signature.parameters.items():
            if param.kind is param.VAR_KEYWORD and name in arguments:
                extra = arguments.pop(name)
        options = self.validate({**arguments, **extra})
        return Plan(self, inputs, special, options)

    def _binding_error(self, message: str, kwargs: dict[str, Any]) -> tuple[str, str | None]:
        """(one line, the argument it is about) for a call that does not fit the signature."""
        known = [n for n in self._signature.parameters if n not in self.inputs]  # type: ignore[attr-defined]
        for name in kwargs:
            if name not in self._signature.parameters:  # type: ignore[attr-defined]
                close = difflib.get_close_matches(name, known, n=2, cutoff=0.5)
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                return f"{self.name} has no option {name!r}{hint} (options: {', '.join(known)})", name
        missing = re.search(r"missing a required argument: '(\w+)'", message)
        return f"{self.name}: {message}", missing.group(1) if missing else None

    def cost_of(self, *args: Any, **kwargs: Any) -> Cost | None:
        """The cost estimate of a call (forward passes, memory) — over the limits or not — without running it
        (None for a tool without a cost function)."""
        return self._bind(*args, **kwargs).estimate(check=False)


@dataclass
class CostContext:
    """What a cost function sees: the wrapped model, the call's inputs, special arguments and checked options."""

    tool: Tool
    model: Any  # convscope.Model or None (tools taking several models)
    inputs: dict[str, Any]
    special: dict[str, Any]
    options: dict[str, Any]

    @property
    def x(self) -> Any:
        """The batch of a tool that takes images, (B, C, H, W)."""
        return self.inputs.get(self.tool.inputs[1]) if len(self.tool.inputs) > 1 else None

    @property
    def pictures(self) -> int:
        """How many pictures the call explains (B for a batch, 1 for one picture or a model-only tool)."""
        import torch

        x = self.x
        if self.tool.takes == "images" and isinstance(x, torch.Tensor) and x.dim() == 4:
            return int(x.shape[0])
        return 1

    def area(self, height: int | None = None, width: int | None = None) -> float:
        """A picture's area (a clip's volume) relative to the model's input size (1.0 at the model's own size): what
        one forward of that picture costs in forwards at the input size."""
        import torch

        x = self.x
        frames = 1
        if height is None and isinstance(x, torch.Tensor) and x.dim() in (4, 5):  # (B, C, H, W) or a clip (B, C, T, H, W)
            height, width = int(x.shape[-2]), int(x.shape[-1])
            frames = int(x.shape[2]) if x.dim() == 5 else 1
        size = getattr(self.model, "input_size", None) or (224, 224)
        if height is None or width is None:
            return 1.0
        own = size[-2] * size[-1] * (size[0] if len(size) == 3 else 1)  # a video model's (T, H, W)
        return (frames * height * width) / float(own)

    def layer_shape(self, layer: Any = None) -> tuple[int, ...] | None:
        """The output shape (C, h, w) of ``layer`` (default: the call's layer, else the default CAM layer) for
        this call's picture size, from the cached layer trace; None when it cannot be known cheaply."""
        import torch

        from .engine import trace_memo
        from .layers import default_cam_layer, layers, resolve_layer

        x = self.x
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or self.model is None:
            return None
        chosen = layer if layer is not None else self.special.get("layer")
        if isinstance(chosen, (list, tuple)):
            chosen = chosen[0] if chosen else None
        shape = tuple(x.shape[1:])
        ref = default_cam_layer(self.model, shape) if chosen is None else resolve_layer(self.model, chosen)
        traced = trace_memo(self.model, shape)
        if traced is None:
            return None
        _, memo = traced
        if "output_shapes" not in memo:
            memo["output_shapes"] = {info.name: tuple(info.output_shape) if info.output_shape else None
                                     for info in layers(self.model, input_size=shape)}
        return memo["output_shapes"].get(ref.label)


@dataclass
class Plan:
    """A checked call of a tool: ``run()`` does the work (nested tool calls are not cost-checked again)."""

    tool: Tool
    inputs: dict[str, Any]
    special: dict[str, Any]
    options: dict[str, Any]
    cost: Cost | None = None

    def estimate(self, *, check: bool = True) -> Cost | None:
        """Estimate the cost and (``check``) refuse a call over the limits; a checked estimate is skipped inside
        an approved call (nested tool calls)."""
        from .engine import _APPROVED
        from .models import Model, as_model

        if self.tool.cost is None or (check and _APPROVED.get()):
            return None
        first = self.inputs.get(self.tool.inputs[0]) if self.tool.inputs else None
        model = first if isinstance(first, Model) else None
        if model is None and self.tool.takes != "models":
            try:
                model = as_model(first)
            except ConvscopeError:
                model = None  # the tool itself says what is wrong with it
        if self.tool.takes == "images" and model is not None:  # the shape the estimate reads (the tool checks the values)
            model.check_input(self.inputs.get(self.tool.inputs[1]), values=False)
        self.cost = self.tool.cost(CostContext(self.tool, model, self.inputs, self.special, self.options))
        if check:
            check_cost(self.tool.name, self.cost, getattr(model, "device", None))
        return self.cost

    def run(self, **special: Any) -> Any:
        """Do the work; ``special`` overrides target / layer / progress (the web passes its progress)."""
        with approved():
            return self.tool.impl(**self.inputs, **{**self.special, **special}, **self.options)


MethodInfo = Tool  # the name attribution code used before every tool was registered

_TOOLS: dict[str, Tool] = {}
_ALIASES: dict[str, str] = {}


@dataclass(frozen=True)
class LayerUse:
    """How a tool that takes ``layer=`` uses it, for the front ends: ``needs`` what the layer must give — "maps"
    (an output (C, H, W): CAMs, feature maps, visualization), "conv" (a convolution: its filters) or "output" (any
    output: pooled into features); ``default`` what the tool does without one, in words; ``cam``: that default is the
    model's default CAM layer (``layers.default_cam_layer``), which a front end can name."""

    needs: Literal["maps", "conv", "output"] = "maps"
    default: str = "the tool's own choice"
    cam: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"needs": self.needs, "default": self.default, "cam": self.cam}


CAM_LAYER = LayerUse("maps", "the last feature map (the default CAM layer)", cam=True)


def register(name: str, *, family: str, takes: str, returns: str, paper: str, group: str | None = None,
             quick: dict[str, Any] | None = None, cost: CostFn | None = None, report: ReportSpec | None = ReportSpec(),
             aliases: Sequence[str] = (), layer: LayerUse | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding a tool to the registry under ``name``; returns the checked entry point.

    family:  one of ``FAMILIES``; group: for attribution, one of ``GROUPS``.
    takes:   one of ``TAKES`` (its first parameters are those inputs: ``model``, then ``x`` / the picture / the
             dataset; ``models`` then the pictures).
    returns: the kind of result (``Result.kind`` or another displayable object's ``kind``).
    quick:   options for a fast, coarse run (previews, ``--quick``, tests); cost: ``CostContext -> Cost``;
    report:  how the report shows it (None: not in the report); layer: how it uses ``layer=`` (default: the CAM
             layer rule for the cam group, else :class:`LayerUse`'s defaults).
    """
    if family not in FAMILIES:
        raise ValueError(f"bad registration for {name}: family {family!r} is not one of {', '.join(FAMILIES)}")
    if family == "attribution" and group not in GROUPS:
        raise ValueError(f"bad registration for {name}: attribution tools need group= one of {', '.join(GROUPS)}")
    if takes not in TAKES:
        raise ValueError(f"bad registration for {name}: takes {takes!r} is not one of {', '.join(TAKES)}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _TOOLS or name in _ALIASES:
            raise ValueError(f"tool {name!r} is registered twice")
        signature = inspect.signature(fn)
        positional = [p.name for p in signature.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        inputs = tuple(positional[:INPUT_COUNT[takes]])
        model = options_model(fn, name=name, skip=(*inputs, *SPECIAL))
        tool = Tool(name, fn, family, takes, returns, paper, model, group, dict(quick or {}),
                    uses_layer=_takes(fn, "layer"), uses_target=_takes(fn, "target"),
                    layer=(layer or (CAM_LAYER if group == "cam" else LayerUse())) if _takes(fn, "layer") else None,
                    loops="progress" in signature.parameters, cost=cost, report=report, aliases=tuple(aliases),
                    inputs=inputs)
        _check_partial(tool, dict(quick or {}))  # a typo in the quick options fails at import, not in a test
        for given in (getattr(report, "options", None), getattr(report, "quick", None)):
            if isinstance(given, dict):
                _check_partial(tool, given)
        _TOOLS[name] = tool
        for alias in aliases:
            _ALIASES[alias] = name
        return tool.fn

    return decorate


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` has a parameter ``name`` that can be given (``layer: None = None`` says "no layer here")."""
    param = inspect.signature(fn, eval_str=True).parameters.get(name)
    return param is not None and param.annotation is not None and param.annotation is not type(None)


def _check_partial(tool: Tool, options: dict[str, Any]) -> None:
    """Options that must be valid where given (required options may be missing: the caller gives those)."""
    from pydantic import ValidationError

    from .options import error_message, failing_field

    try:
        tool.options_model.model_validate(options)
    except ValidationError as exc:
        if any(error["type"] != "missing" for error in exc.errors()):
            raise OptionError(error_message(tool.name, tool.options_model, exc), failing_field(exc)) from None


def unregister(name: str) -> None:
    """Remove a tool (tests that register a throwaway tool clean up with this)."""
    tool = _TOOLS.pop(name, None)
    for alias in getattr(tool, "aliases", ()):
        _ALIASES.pop(alias, None)


def _load_builtin() -> None:
    from . import attribution, compare, features, metrics, roi  # noqa: F401  (importing registers the built-in tools)


def tools(family: str | None = None) -> list[Tool]:
    """Every registered tool (optionally one family), in registration order."""
    _load_builtin()
    return [t for t in _TOOLS.values() if family is None or t.family == family]


def methods(group: str | None = None) -> list[Tool]:
    """The attribution methods (optionally one group: gradient, cam, perturbation), in registration order."""
    return [t for t in tools("attribution") if group is None or t.group == group]


def get(name: str) -> Tool:
    """The tool called ``name`` (or one of its aliases); an error suggesting close names otherwise."""
    _load_builtin()
    name = _ALIASES.get(name, name)
    if name not in _TOOLS:
        known = [*_TOOLS, *_ALIASES]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConvscopeError(f"unknown tool {name!r}{hint} (available: {', '.join(_TOOLS)})")
    return _TOOLS[name]


def explain(model: Any, x: Any, method: str = "gradcam", **options: Any) -> Any:
    """Run a registered attribution method by name: ``cs.explain(model, x, "gradcam", target=281)``."""
    tool = get(method)
    if tool.family != "attribution":
        raise ConvscopeError(f"{method!r} is a {tool.family} tool, not an attribution method; call cs.{tool.name}(...) "
                             f"(attribution methods: {', '.join(t.name for t in methods())})")
    return tool.fn(model, x, **options)
