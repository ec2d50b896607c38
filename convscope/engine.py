"""What every tool shares: checks before the forward, precision, batch sizes, one blur, packaging a
Result, and the cost of a call (forward passes and memory) checked against the limits before any work.

Compute families (attribution, features, metrics, workflows) import from here; nothing here imports them.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import ConvscopeError, CostError
from .models import Model, as_model
from .result import Result
from .targets import Target, check_target

__all__ = ["BF16_GRADIENTS", "DEFAULT_MAX_FORWARDS", "FP32_ONLY", "PRECISIONS", "Cost", "Limits", "backward_bytes", "bytes_per_row",
           "channels_last", "check_cost", "compute_precision", "current_limits", "default_rows", "gaussian_blur", "limits",
           "machine_memory", "memory_budget", "package", "perturbation_rows", "prepare", "stand_in", "trace_memo"]

# -- precision -------------------------------------------------------------------------------------------
# Measured on EfficientNet-Lite0 (benchmarks/): bf16 pixel gradients correlate with fp32 at only 0.5-0.9.
BF16_GRADIENTS = "bfloat16 gradients through every layer give pixel maps that agree with fp32 only to a correlation of 0.5-0.9"

PRECISIONS = ("fp32", "bf16")
FP32_ONLY = ("fp32",)  # the choices of methods that refuse bf16


def compute_precision(model: Model, precision: str) -> AbstractContextManager[Any]:
    """fp32 (exact) or bf16: autocast to bfloat16 — faster forwards on CPUs with bf16 units. CAM maps
    agree with fp32 to a correlation of 0.99+ (measured on EfficientNet-Lite0); methods whose maps
    would not agree refuse it (see ``prepare``). Results are returned as float32 either way. With
    ``target=None`` the explained class is the top-1 of the bf16 forward, which differs from fp32's
    only when two classes' scores are within bfloat16's resolution (``Result.target`` says which)."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16)
    raise ConvscopeError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def prepare(model: Any, x: Any, target: Target, precision: str = "fp32", *,
            no_bf16: str | None = None) -> tuple[Model, torch.Tensor]:
    """(Model, x) after the checks that need no forward pass. ``no_bf16``: why this method refuses
    bf16 (measured: its maps would not agree with fp32), or None when it offers it."""
    if precision not in PRECISIONS:
        raise ConvscopeError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and no_bf16:
        raise ConvscopeError(f"precision='bf16' is not offered here: {no_bf16}; use precision='fp32'")
    wrapped = as_model(model)
    wrapped.check_input(x)
    check_target(target, x.shape[0])
    return wrapped, x


TOP_KEPT = 10  # the model's top classes a Result records (meta["top_classes"], meta["top_probabilities"])


def package(model: Model, x: torch.Tensor, data: torch.Tensor, *, method: str, classes: torch.Tensor | None,
            scores: torch.Tensor, output: torch.Tensor | None, layer: str | None = None, kind: str | None = None,
            **meta: Any) -> Result:
    """A Result with provenance: the explained classes' labels, scores and probabilities, and the
    model's own top-1 (``meta["predicted"]``, ``meta["predicted_probabilities"]``) for class outputs.
    ``kind``: "map" for (B, 1, H, W) data, "pixels" for (B, C, H, W) (the default follows the shape)."""
    meta["scores"] = scores.detach().float()
    if isinstance(output, torch.Tensor) and output.dim() == 2:
        probs = output.detach().float().softmax(dim=1)
        top, predicted = probs.max(dim=1)
        meta["predicted"], meta["predicted_probabilities"] = predicted, top  # the model's top-1, whatever is explained
        best = probs.topk(min(TOP_KEPT, probs.shape[1]), dim=1)
        meta["top_probabilities"], meta["top_classes"] = best.values, best.indices  # (B, k), k <= TOP_KEPT
        if classes is not None:
            meta["probabilities"] = probs.gather(1, classes[:, None])[:, 0]
    data = data.detach().float() if data.dtype in (torch.bfloat16, torch.float16) else data.detach()
    kind = kind or ("map" if data.dim() == 4 and data.shape[1] == 1 else "pixels")
    return Result(data=data.contiguous(), method=method, target=classes, layer=layer, kind=kind,
                  labels=model.labels_for(classes), meta=meta, inputs=x.detach(), mean=model.mean, std=model.std)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the channels-last layout the forward wants: ``channels_last`` for (B, C, H, W),
    ``channels_last_3d`` for a video's (B, C, T, H, W); other ranks as they are."""
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x.contiguous()


# -- batch sizes ---------------------------------------------------------------------------------------------
def default_rows(height: int, width: int, *, per_224: int = 16, device: torch.device | None = None) -> int:
    """Pictures per forward for a tool that evaluates many: ``per_224`` pictures of 224x224, scaled by area
    (small batches beat large ones on CPUs with the default allocator; see benchmarks/), 4x on a GPU. For a
    video pass ``height`` = T x H: its frames count as area."""
    rows = max(1, (per_224 * 224 * 224) // max(1, int(height) * int(width)))
    return rows * 4 if device is not None and device.type == "cuda" else rows


def machine_memory(device: torch.device | None = None) -> int | None:
    """Bytes of memory the device has in all (a GPU's, else the machine's RAM); None when unknown."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(device: torch.device) -> int:
    """Bytes a batch of pictures may use: a quarter of the free memory, at most 2 GiB."""
    free = None
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    elif hasattr(os, "sysconf"):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            free = None
    return min(2 << 30, free // 4) if free else 1 << 30


def trace_memo(model: Model, shape: tuple[int, ...]) -> tuple[list[Any], dict[Any, Any]] | None:
    """The cached layer trace of ``model`` at ``shape`` (C, H, W) and its memo (where estimates keep what they
    derive from it); None when the model cannot be traced (TorchScript, a model the trace cannot run)."""
    from .layers import _trace_entry

    try:
        return _trace_entry(model.module, tuple(shape))
    except (ConvscopeError, RuntimeError):
        return None


def bytes_per_row(model: Model, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> int | None:
    """Memory one picture of ``shape`` (C, H, W) needs in an inference forward: about 4 x its largest
    activation (the layer's input, output and the workspace of the next), from the cached layer trace;
    None when unknown (TorchScript, or a model the trace cannot run)."""
    traced = trace_memo(model, shape)
    if traced is None:
        return None
    records, memo = traced
    key = ("bytes_per_row", dtype)
    if key not in memo:
        sizes = [math.prod(r.output_shape) for r in records if r.output_shape]
        itemsize = torch.empty(0, dtype=dtype).element_size()
        memo[key] = 4 * max(sizes, default=math.prod(shape)) * itemsize
    return memo[key]


def backward_bytes(model: Model, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> int | None:
    """Memory one picture of ``shape`` (C, H, W) needs in a forward whose graph is kept for a backward to the
    input: autograd keeps every layer's output (their sum, from the cached layer trace) on top of the inference
    workspace (:func:`bytes_per_row`); None when unknown (TorchScript, a model the trace cannot run)."""
    traced = trace_memo(model, shape)
    if traced is None:
        return None
    records, memo = traced
    key = ("backward_bytes", dtype)
    if key not in memo:
        itemsize = torch.empty(0, dtype=dtype).element_size()
        kept = sum(math.prod(r.output_shape) for r in records if r.is_leaf and r.output_shape)
        memo[key] = kept * itemsize + (bytes_per_row(model, shape, dtype) or 0)
    return memo[key]


def perturbation_rows(model: Any, x: torch.Tensor, batch_size: int | None = None) -> int:
    """Perturbed pictures per forward: ``batch_size`` when given, else the fastest size that fits memory —
    :func:`default_rows` (16 of 224x224 on CPU, 64 on GPU), fewer when the model's largest activation
    times the rows would pass :func:`memory_budget`."""
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConvscopeError(f"batch_size must be a positive int or None (automatic), got {batch_size!r}")
        return batch_size
    wrapped = as_model(model)
    device = wrapped.device
    fast = default_rows(math.prod(x.shape[2:-1]), x.shape[-1], device=device)  # a video's frames count as area
    per_row = bytes_per_row(wrapped, tuple(x.shape[1:]), x.dtype)
    if per_row is None:
        return fast
    return max(1, min(fast, memory_budget(device) // per_row))


def stand_in(model: Model, pictures: Any = None) -> torch.Tensor | None:
    """An empty (1, C, H, W) with the size a call will explain, for cost estimates (no data in it): that of a
    batch ``pictures`` (B, C, H, W) when given, else the model's input size; None when neither is known."""
    if isinstance(pictures, torch.Tensor) and pictures.dim() == 4:
        return torch.empty((1, *pictures.shape[1:]))
    if model.input_size is None:
        return None
    return torch.empty((1, model.channels or 3, *model.input_size))


# -- one blur --------------------------------------------------------------------------------------------------
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of (B, C, H, W) with ``sigma`` pixels (radius ceil(3 sigma)), reflecting at the
    border (replicating when the picture is smaller than the radius); ``sigma <= 0`` gives a copy."""
    if sigma <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    padded = F.pad(x, (radius,) * 4, mode="reflect" if radius < min(x.shape[-2:]) else "replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


# -- cost --------------------------------------------------------------------------------------------------------
DEFAULT_MAX_FORWARDS = 20_000  # about 6 minutes of EfficientNet-Lite0 on 2 CPU cores; an hour of VGG16


@dataclass(frozen=True)
class Cost:
    """What a call will cost, estimated before any work.

    forwards: forward passes of one picture at the model's input size (a backward counts as two; a bigger
              picture counts by its area). For tools that take a dataset, per picture (``per_item``).
    memory:   peak bytes the call adds beyond the model (0: small).
    detail:   what drives the number, in words ("169 windows per picture").
    """

    forwards: float
    memory: int = 0
    detail: str = ""
    per_item: bool = False

    def __add__(self, other: Cost) -> Cost:
        detail = "; ".join(d for d in (self.detail, other.detail) if d)
        return Cost(self.forwards + other.forwards, max(self.memory, other.memory), detail, self.per_item or other.per_item)

    def __mul__(self, factor: float) -> Cost:
        return Cost(self.forwards * factor, self.memory, self.detail, self.per_item)

    __rmul__ = __mul__


@dataclass(frozen=True)
class Limits:
    """The largest call convscope starts: ``max_forwards`` forward passes (:class:`Cost`), ``max_memory``
    bytes (None: the machine's memory)."""

    max_forwards: float = DEFAULT_MAX_FORWARDS
    max_memory: int | None = None


def _env_limits() -> Limits:
    text = os.environ.get("CONVSCOPE_MAX_FORWARDS", "").strip()
    if not text:
        return Limits()
    try:
        value = float(text)
    except ValueError:
        raise ConvscopeError(f"CONVSCOPE_MAX_FORWARDS={text!r} is not a number") from None
    return Limits(max_forwards=value if value > 0 else math.inf)


_LIMITS: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("convscope_limits", default=None)
_APPROVED: contextvars.ContextVar[bool] = contextvars.ContextVar("convscope_cost_approved", default=False)


def current_limits() -> Limits:
    """The limits in force: the innermost ``limits(...)`` block, else ``CONVSCOPE_MAX_FORWARDS``, else the default."""
    return _LIMITS.get() or _env_limits()


@contextlib.contextmanager
def limits(*, max_forwards: float | None = None, max_memory: int | None = None) -> Iterator[Limits]:
    """Raise or lower the cost limits inside a block: ``with cs.limits(max_forwards=200_000): cs.occlusion(...)``.
    ``max_forwards=float("inf")`` turns the forward-pass limit off."""
    base = current_limits()
    if max_forwards is not None and not max_forwards > 0:
        raise ConvscopeError(f"max_forwards must be positive, got {max_forwards!r}")
    chosen = Limits(base.max_forwards if max_forwards is None else float(max_forwards),
                    base.max_memory if max_memory is None else int(max_memory))
    token = _LIMITS.set(chosen)
    try:
        yield chosen
    finally:
        _LIMITS.reset(token)


def _gib(value: float) -> str:
    return f"{value / 2**30:,.1f} GiB"


def check_cost(tool: str, cost: Cost, device: torch.device | None = None) -> None:
    """Refuse, with the estimate, a call over the limits (inside an approved call nested calls pass)."""
    if _APPROVED.get():
        return
    bound = current_limits()
    unit = " per picture" if cost.per_item else ""
    why = f" ({cost.detail})" if cost.detail else ""
    if cost.forwards > bound.max_forwards:
        raise CostError(f"{tool} would take about {cost.forwards:,.0f} forward passes{unit}{why}, over the limit of "
                        f"{bound.max_forwards:,.0f}; use lighter options or fewer pictures, or raise the limit "
                        f"(cs.limits(max_forwards=...), --max-forwards, CONVSCOPE_MAX_FORWARDS)", cost, bound)
    available = bound.max_memory or machine_memory(device)
    if available and cost.memory > available:
        raise CostError(f"{tool} would need about {_gib(cost.memory)} of memory{why}, more than the "
                        f"{_gib(available)} {'allowed' if bound.max_memory else 'this machine has'}; use lighter options",
                        cost, bound)


@contextlib.contextmanager
def approved() -> Iterator[None]:
    """Inside: the call's cost was checked; the tools it calls are not checked again."""
    token = _APPROVED.set(True)
    try:
        yield
    finally:
        _APPROVED.reset(token)
