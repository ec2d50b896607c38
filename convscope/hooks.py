"""The one context manager that owns every hook and every piece of model state a method touches.

Captum's discipline, made a single object: hooks are registered inside the call and removed in
``finally``; the model runs in eval mode (BatchNorm never updates its statistics) with no parameter
requiring grad (so autograd never computes weight gradients); on exit every submodule's train/eval
flag and every parameter's ``requires_grad`` flag are put back exactly as they were — after success
or after an exception. A per-model lock serializes concurrent calls on the same model (the web app).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LayerError
from .spatial import Layout, layout_for

__all__ = ["RECTIFIER_RULES", "CallRecord", "Capture", "Guard", "LayerRef", "RectifierRule"]

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_for(module: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


@dataclass(frozen=True)
class LayerRef:
    """A resolved layer: dotted name, the module, and which call of it (None = its only call).

    A module that runs several times per forward (ResNet's shared ``relu``) is named per call as
    ``"layer1.0.relu@2"`` (0-based).
    """

    name: str
    module: nn.Module
    call: int | None = None

    @property
    def label(self) -> str:
        return self.name if self.call is None else f"{self.name}@{self.call}"


@dataclass
class Capture:
    """What a forward hook recorded for one layer: its output, as a leaf you can take gradients to."""

    ref: LayerRef
    grad: bool
    value: torch.Tensor | None = None
    calls: int = 0

    def check(self) -> torch.Tensor:
        """The captured output (B, C, h, w); a clear error when the layer never ran."""
        if self.value is None:
            if self.calls == 0:
                raise LayerError(f"layer {self.ref.label!r} did not run in the forward pass; pick a layer the model uses")
            raise LayerError(
                f"layer {self.ref.name!r} ran {self.calls} times, fewer than call {self.ref.call}; "
                f"use '{self.ref.name}@0' to '{self.ref.name}@{self.calls - 1}'"
            )
        return self.value


@dataclass
class CallRecord:
    """One module call seen while tracing: completion order, output shape (without batch)."""

    name: str
    module: nn.Module
    call: int
    output_shape: tuple[int, ...] | None
    is_leaf: bool  # a layer in the Keras sense: no children, or owns parameters (a conv with a padding child)


@dataclass
class Guard:
    """Context manager: ``with Guard(module) as g: cap = g.capture(ref); out = module(x)``.

    ``grad=True`` (default) enables autograd inside the block even under a caller's
    ``torch.no_grad()`` / ``inference_mode()``; ``grad=False`` runs in inference mode;
    ``grad="from_capture"`` records nothing until the first gradient capture fires, so the part of
    the forward below the explained layer runs without autograd bookkeeping (CAM methods).
    """

    module: nn.Module
    grad: bool | str = True
    _handles: list[Any] = field(default_factory=list, init=False, repr=False)
    _training: list[tuple[nn.Module, bool]] = field(default_factory=list, init=False, repr=False)
    _requires_grad: list[tuple[nn.Parameter, bool]] = field(default_factory=list, init=False, repr=False)
    _modes: list[Any] = field(default_factory=list, init=False, repr=False)
    _lock: threading.RLock | None = field(default=None, init=False, repr=False)
    _counters: list[list[int]] = field(default_factory=list, init=False, repr=False)
    _picture: tuple[int, ...] | None = field(default=None, init=False, repr=False)
    _watching: bool = field(default=False, init=False, repr=False)

    def __enter__(self) -> Guard:
        self._lock = _lock_for(self.module)
        self._lock.acquire()
        try:
            # eval() without calling user overrides of train(); only what differs is changed and restored
            self._training = [(m, True) for m in self.module.modules() if m.training]
            self._requires_grad = [(p, True) for p in self.module.parameters() if p.requires_grad]
            for m, _ in self._training:
                m.__dict__["training"] = False  # a plain attribute; skips nn.Module.__setattr__'s checks
            for p, _ in self._requires_grad:
                p.requires_grad_(False)
            if self.grad == "from_capture":
                self._modes = [torch.inference_mode(False), torch.no_grad()]
            elif self.grad:
                self._modes = [torch.inference_mode(False), torch.enable_grad()]
            else:
                self._modes = [torch.inference_mode(True)]
            for mode in self._modes:
                mode.__enter__()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        try:
            for mode in reversed(self._modes):
                mode.__exit__(None, None, None)
            self._modes = []
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._counters.clear()
            self._watching, self._picture = False, None
            for m, flag in self._training:
                m.__dict__["training"] = flag
            for p, flag in self._requires_grad:
                p.requires_grad_(flag)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    # -- hooks -------------------------------------------------------------------------------
    def add_hook(self, module: nn.Module, hook: Callable[..., Any], *, pre: bool = False) -> None:
        """Register a forward (pre-)hook that is removed when the block exits."""
        if isinstance(module, torch.jit.ScriptModule):
            raise LayerError(
                "TorchScript modules take no hooks, so layer views need an eager model: load its state dict with "
                "arch=..., or save it with torch.export (.pt2)"
            )
        register = module.register_forward_pre_hook if pre else module.register_forward_hook
        self._handles.append(register(hook))

    def rectifier_rule(self, rule: str) -> RectifierRule:
        """Give every ReLU-like call in this block the ``rule``'s backward (guided / deconvnet)."""
        mode = RectifierRule(rule)
        mode.__enter__()
        self._modes.append(mode)
        return mode

    def capture(self, ref: LayerRef, *, grad: bool = True) -> Capture:
        """Record ``ref``'s output in its spatial view (B, C, *S) (:mod:`convscope.spatial`: token sequences and
        channels-last maps are turned into channels-first maps). With ``grad`` the view becomes a leaf requiring
        grad and a copy goes downstream, so the backward stops at the layer and an in-place op after it
        cannot corrupt what was captured. A layer whose output already requires grad (it runs after
        another captured layer) is recorded as it is, so gradients reach every captured layer."""
        cap = Capture(ref, grad)
        calls = self._call_counter()

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            index = calls[0]
            calls[0] += 1
            cap.calls = calls[0]  # calls in this forward
            if ref.call is None and index > 0:
                raise LayerError(
                    f"layer {ref.name!r} runs more than once per forward (a shared module); "
                    f"name one call: '{ref.name}@0', '{ref.name}@1', ..."
                )
            if ref.call is not None and index != ref.call:
                return None
            if not isinstance(output, torch.Tensor):
                raise LayerError(
                    f"layer {ref.label!r} returns {type(output).__name__}, not a tensor; pick a layer that outputs a feature map"
                )
            layout = self.layout(module, output)
            if not grad:  # keep the value; a copy goes downstream, so later in-place ops cannot change it
                cap.value = layout.to_spatial(output.detach())
                return output.clone()
            if output.requires_grad:  # downstream of another capture (several layers at once): a tap
                cap.value = layout.to_spatial(output)
                return output.clone()
            if self.grad == "from_capture":
                torch.set_grad_enabled(True)  # record from here on; the guard's no_grad exit restores the mode
            leaf = layout.to_spatial(output.detach()).requires_grad_(True)
            cap.value = leaf
            downstream = layout.from_spatial(leaf, output)
            return downstream.clone() if downstream is leaf else downstream.contiguous()

        self.add_hook(ref.module, hook)
        return cap

    def edit(self, ref: LayerRef, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace ``ref``'s output (its ``ref.call``-th call, or every call) by ``fn(view)``, ``fn`` seeing and
        giving the spatial view (B, C, *S)."""
        calls = self._call_counter()

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            index = calls[0]
            calls[0] += 1
            if ref.call is not None and index != ref.call:
                return None
            layout = self.layout(module, output)
            return layout.from_spatial(fn(layout.to_spatial(output)), output)

        self.add_hook(ref.module, hook)

    def layout(self, module: nn.Module, output: torch.Tensor) -> Layout:
        """The spatial reading of ``module``'s ``output`` in the current forward (channels-first when there is none,
        so a layer without a map is passed on as it is and refused by the method that needs a map)."""
        found = layout_for(module, output.shape[1:], self._picture, prefix_tokens=_prefix_tokens(self.module))
        return found or Layout("channels_first", tuple(output.shape[2:]), int(output.shape[1]) if output.dim() > 1 else 1)

    def _call_counter(self) -> list[int]:
        """A per-forward call counter for one hook: reset whenever the model's forward starts, so
        ``@k`` names the k-th call within each forward, however many forwards the block runs."""
        counter = [0]
        self.track_picture()
        self._counters.append(counter)
        return counter

    def track_picture(self) -> None:
        """Watch the model's input, once per block: each forward resets the call counters and records the picture's
        size (H, W) or (T, H, W), which the spatial views of token layers need (:meth:`layout`)."""
        if self._watching:
            return

        def start(module: nn.Module, args: Any) -> None:
            for c in self._counters:
                c[0] = 0
            first = args[0] if args else None
            self._picture = tuple(first.shape[2:]) if isinstance(first, torch.Tensor) and first.dim() >= 4 else None

        self.add_hook(self.module, start, pre=True)
        self._watching = True

    def trace(self, names: dict[nn.Module, str]) -> list[CallRecord]:
        """Hook every module; returns the list that the next forward fills, in completion order."""
        records: list[CallRecord] = []
        counts: dict[nn.Module, int] = {}

        def make(name: str, is_leaf: bool) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                call = counts.get(module, 0)
                counts[module] = call + 1
                shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None
                records.append(CallRecord(name, module, call, shape, is_leaf))

            return hook

        for module, name in names.items():
            if module is self.module:
                continue
            is_layer = next(module.children(), None) is None or next(module.parameters(recurse=False), None) is not None
            self.add_hook(module, make(name, is_layer))
        return records


def _prefix_tokens(module: nn.Module) -> int | None:
    """The model's own count of class/distillation/register tokens (timm's ``num_prefix_tokens``), if it says."""
    value = getattr(module, "num_prefix_tokens", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- rectifier rules (guided backprop, deconvnet) ------------------------------------------------
RECTIFIER_RULES = ("guided", "deconvnet")


class _RectifierFunction(torch.autograd.Function):
    """A rectifier whose forward is unchanged and whose backward follows a visualization rule.

    guided (Springenberg et al. 2015): the local derivative, then only positive gradients pass.
    deconvnet (Zeiler & Fergus 2014): only positive gradients pass, whatever the forward did.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, low: float, high: float, slope: float, inplace: bool, rule: str) -> torch.Tensor:
        if slope:
            out = torch.where(x > 0, x, x * slope)
            out = x.copy_(out) if inplace else out
        else:
            out = x.clamp_(low, high) if inplace else x.clamp(low, high)
        if inplace:
            ctx.mark_dirty(x)
        ctx.save_for_backward(out)
        ctx.rule, ctx.low, ctx.high, ctx.slope = rule, low, high, slope
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        (out,) = ctx.saved_tensors
        positive = grad.clamp(min=0)
        if ctx.rule == "deconvnet":
            return positive, None, None, None, None, None
        if ctx.slope:
            local = torch.where(out > 0, positive, positive * ctx.slope)
        elif ctx.high == _INF:  # one fused kernel: pass where out > low
            local = torch.ops.aten.threshold_backward(positive, out, ctx.low)
        else:  # pass where low < out < high
            local = torch.ops.aten.hardtanh_backward(positive, out, ctx.low, ctx.high)
        return local, None, None, None, None, None


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


_INF = float("inf")
# ReLU-like functions -> (input, low, high, leaky slope, inplace); a dict so that the mode's check of
# every other torch call (convolutions, additions, ...) is one lookup.
_RECTIFIERS: dict[Any, Callable[[tuple, dict], tuple[Any, float, float, float, bool] | None]] = {
    F.relu: lambda a, k: (a[0], 0.0, _INF, 0.0, bool(_arg(a, k, 1, "inplace", False))),
    torch.relu: lambda a, k: (a[0], 0.0, _INF, 0.0, False),
    torch.Tensor.relu: lambda a, k: (a[0], 0.0, _INF, 0.0, False),
    torch.relu_: lambda a, k: (a[0], 0.0, _INF, 0.0, True),
    torch.Tensor.relu_: lambda a, k: (a[0], 0.0, _INF, 0.0, True),
    F.relu_: lambda a, k: (a[0], 0.0, _INF, 0.0, True),
    F.relu6: lambda a, k: (a[0], 0.0, 6.0, 0.0, bool(_arg(a, k, 1, "inplace", False))),
    # ReLU6 and other clipped ReLUs (hardtanh with min 0); other hardtanh calls are left alone
    F.hardtanh: lambda a, k: ((a[0], 0.0, float(_arg(a, k, 2, "max_val", 1.0)), 0.0, bool(_arg(a, k, 3, "inplace", False)))
                              if float(_arg(a, k, 1, "min_val", -1.0)) == 0.0 else None),
    F.leaky_relu: lambda a, k: (a[0], 0.0, _INF, float(_arg(a, k, 1, "negative_slope", 0.01)),
                                bool(_arg(a, k, 2, "inplace", False))),
}


def _rectifier_call(func: Any, args: tuple, kwargs: dict) -> tuple[torch.Tensor, float, float, float, bool] | None:
    """(input, low, high, leaky slope, inplace) when ``func`` is a ReLU-like call, else None."""
    parse = _RECTIFIERS.get(func)
    return None if parse is None else parse(args, kwargs)


class RectifierRule(torch.overrides.TorchFunctionMode):
    """Inside this mode every ReLU-like call — ``nn.ReLU`` (in-place too), ``ReLU6``, ``LeakyReLU``,
    ``F.relu``, ``torch.relu``, ``x.relu_()`` — gets the ``rule``'s backward. Scoped to the block and
    the thread; nothing is monkey-patched and no module is swapped. ``count`` = calls rewritten."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        if rule not in RECTIFIER_RULES:
            raise ValueError(f"unknown rectifier rule {rule!r}; choose one of {RECTIFIER_RULES}")
        self.rule = rule
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        parse = _RECTIFIERS.get(func)
        if parse is None:
            return func(*args, **kwargs)
        call = parse(args, kwargs)
        if call is None or not isinstance(call[0], torch.Tensor) or not call[0].requires_grad:
            return func(*args, **kwargs)
        x, low, high, slope, inplace = call
        self.count += 1
        return _RectifierFunction.apply(x, low, high, slope, inplace, self.rule)
