"""The few steps every attribution method shares: validate, resolve, and package a Result."""

from __future__ import annotations

from typing import Any

import torch

from ..models import Model, as_model
from ..result import Result
from ..targets import Target, check_target

__all__ = ["package", "prepare"]


def prepare(model: Any, x: Any, target: Target) -> tuple[Model, torch.Tensor]:
    """(Model, x) after the checks that need no forward pass."""
    wrapped = as_model(model)
    wrapped.check_input(x)
    check_target(target, x.shape[0])
    return wrapped, x


def package(model: Model, x: torch.Tensor, data: torch.Tensor, *, method: str, classes: torch.Tensor | None,
            scores: torch.Tensor, output: torch.Tensor, layer: str | None = None, **meta: Any) -> Result:
    """A Result with provenance: the explained classes' labels, scores and probabilities."""
    meta["scores"] = scores.detach().float()
    if classes is not None and output.dim() == 2:
        meta["probabilities"] = output.detach().float().softmax(dim=1).gather(1, classes[:, None])[:, 0]
    return Result(data=data.detach().contiguous(), method=method, target=classes, layer=layer,
                  labels=model.labels_for(classes), meta=meta, inputs=x.detach(), mean=model.mean, std=model.std)
