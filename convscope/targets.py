"""Targets: which output score a method explains, with strict batch semantics.

``target`` is ``None`` (each image's top-1 class), an ``int`` (that class for every image), a sequence
or 1-D tensor of B ints (one per image), or a callable ``output -> (B,)`` scores — which is how
regression, sums of classes or a segmentation region use the same code path (pytorch-grad-cam's
idea). Small ready-made callables are below.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .errors import TargetError

__all__ = ["Target", "check_target", "class_probability", "class_score", "fixed_target", "output_sum", "resolve_target",
           "row_scores"]

Target = int | Sequence[int] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None


def _as_index(value: object, where: str) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise TargetError(f"{where} must be an integer class index, got {value!r}")
    try:
        return operator.index(value)  # int, numpy ints, 0-d integer tensors
    except TypeError:
        raise TargetError(f"{where} must be an integer class index, got {type(value).__name__}") from None


def check_target(target: Target, batch: int) -> None:
    """Errors that can be found before the forward pass (type, length, dims)."""
    if target is None or (callable(target) and not isinstance(target, torch.Tensor)):
        return
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TargetError(f"target tensor must hold integer class indices, got dtype {target.dtype}")
        if target.dim() == 0:
            return
        if target.dim() != 1:
            raise TargetError(f"target tensor must be 1-D with one class per image, got shape {tuple(target.shape)}")
        if target.numel() != batch:
            raise TargetError(f"target has {target.numel()} entries for a batch of {batch}; give one class per image or a single int")
        return
    if isinstance(target, (str, bytes)):
        raise TargetError(f"target must be a class index, a sequence of them or a callable, got {target!r}")
    if isinstance(target, Sequence):
        if len(target) != batch:
            raise TargetError(f"target has {len(target)} entries for a batch of {batch}; give one class per image or a single int")
        for i, t in enumerate(target):
            _as_index(t, f"target[{i}]")
        return
    _as_index(target, "target")


def resolve_target(target: Target, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores (B,) to differentiate and the explained classes (B,) LongTensor (None for callables).

    ``output`` is the model's output for the batch, (B, K) for class targets.
    """
    is_callable = callable(target) and not isinstance(target, torch.Tensor)
    if not isinstance(output, torch.Tensor):
        if not is_callable:
            raise TargetError(
                f"the model returns {type(output).__name__}, not a tensor; pass a callable target: output -> (B,) scores"
            )
        scores = target(output)
        if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
            raise TargetError("target callable must return a 1-D tensor with one score per image")
        return scores, None
    batch = output.shape[0] if output.dim() else 0
    check_target(target, batch)
    if is_callable:
        scores = target(output)
        if not isinstance(scores, torch.Tensor):
            raise TargetError(f"target callable must return a tensor of shape ({batch},), got {type(scores).__name__}")
        if scores.dim() == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if tuple(scores.shape) != (batch,):
            raise TargetError(f"target callable must return one score per image, shape ({batch},), got {tuple(scores.shape)}")
        return scores, None
    if output.dim() != 2:
        raise TargetError(
            f"class targets need a (B, K) model output, got {tuple(output.shape)}; pass a callable target: output -> (B,) scores"
        )
    num = output.shape[1]
    if target is None:
        classes = output.detach().argmax(dim=1)
    else:
        if isinstance(target, torch.Tensor):
            values = target.reshape(-1).tolist()
        elif isinstance(target, Sequence):
            values = [_as_index(t, "target") for t in target]
        else:
            values = [_as_index(target, "target")]
        bad = [v for v in values if not 0 <= v < num]
        if bad:
            raise TargetError(f"class index {bad[0]} is out of range for a model with {num} outputs (0..{num - 1})")
        classes = torch.tensor(values, dtype=torch.long, device=output.device).expand(batch).clone()
    scores = output.gather(1, classes[:, None])[:, 0]
    return scores, classes


def fixed_target(target: Target, classes: torch.Tensor | None) -> Target:
    """The target once resolved by a first forward: the explained classes (B,) for class targets, the
    callable itself otherwise — what every later forward of the same call scores (perturbed pictures,
    interpolation points, noisy copies)."""
    return classes if classes is not None else target


def row_scores(output: Any, fixed: Target, rows: torch.Tensor | None = None, kind: str = "logit") -> torch.Tensor:
    """The fixed target's score (n,) float32 for each row of ``output`` — the one place a class is scored.

    ``fixed``: classes (B,) from :func:`fixed_target`, or a callable (called on ``output`` as it is, ``kind``
    ignored). ``rows`` (n,): the image each output row belongs to (default: row i is image i; a single int
    broadcasts). ``kind``: "logit" (the raw score) or "probability" (the softmax probability of the class).
    """
    if isinstance(fixed, torch.Tensor):
        out = output.float()
        if rows is None:
            chosen = fixed.to(out.device)
        else:
            index = torch.as_tensor(rows, device=fixed.device)
            chosen = fixed[index].to(out.device)
            if chosen.dim() == 0:
                chosen = chosen.expand(out.shape[0])
        values = out.softmax(dim=1) if kind == "probability" else out
        return values.gather(1, chosen.reshape(-1, 1))[:, 0]
    scores, _ = resolve_target(fixed, output)
    return scores.float()


def class_score(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The logit of one class (what an ``int`` target does), as a callable."""
    return lambda output: output[:, index]


def class_probability(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The softmax probability of one class."""
    return lambda output: output.softmax(dim=1)[:, index]


def output_sum(indices: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The sum of several outputs (several classes; several regression outputs)."""
    idx = list(indices)
    return lambda output: output[:, idx].sum(dim=1)
