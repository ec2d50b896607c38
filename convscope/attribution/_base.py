"""The few steps every attribution method shares: validate, resolve, and package a Result."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from ..errors import ConvscopeError
from ..models import Model, as_model
from ..result import Result
from ..targets import Target, check_target

__all__ = ["BF16_GRADIENTS", "FP32_ONLY", "PRECISIONS", "compute_precision", "package", "prepare"]

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


def package(model: Model, x: torch.Tensor, data: torch.Tensor, *, method: str, classes: torch.Tensor | None,
            scores: torch.Tensor, output: torch.Tensor | None, layer: str | None = None, **meta: Any) -> Result:
    """A Result with provenance: the explained classes' labels, scores and probabilities, and the
    model's own top-1 (``meta["predicted"]``, ``meta["predicted_probabilities"]``) for class outputs."""
    meta["scores"] = scores.detach().float()
    if isinstance(output, torch.Tensor) and output.dim() == 2:
        probs = output.detach().float().softmax(dim=1)
        top, predicted = probs.max(dim=1)
        meta["predicted"], meta["predicted_probabilities"] = predicted, top  # the model's top-1, whatever is explained
        if classes is not None:
            meta["probabilities"] = probs.gather(1, classes[:, None])[:, 0]
    data = data.detach().float() if data.dtype in (torch.bfloat16, torch.float16) else data.detach()
    return Result(data=data.contiguous(), method=method, target=classes, layer=layer,
                  labels=model.labels_for(classes), meta=meta, inputs=x.detach(), mean=model.mean, std=model.std)
