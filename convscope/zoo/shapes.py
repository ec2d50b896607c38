"""Snow or sand? A synthetic shortcut dataset and two small CNNs trained on it (the leopard/tank story).

Each 64×64 picture holds one small dark shape — a ``circle`` or a ``square`` of about the same area —
on a textured background: ``snow`` (bright, bluish white, speckled) or ``sand`` (tan, grainy, rippled).
In the **biased** set every circle lies on snow and every square on sand, so the background alone
predicts the class; in the **balanced** set the background is drawn independently of the class. A
network trained on the biased set learns the background (it is easier to see than the shape), one
trained on the balanced set must learn the shape. ``cs.metrics.audit`` tells them apart;
``scripts/train_shapes.py`` trains both and writes ``convscope/data/shapes_{biased,balanced}.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConvscopeError, InputError, ModelError
from ..models import Model
from .digits import DigitsCNN

__all__ = ["SHAPES_LABELS", "ShapesCNN", "ShapesData", "sand", "shapes_dataset", "shapes_model", "snow"]

SHAPES_LABELS = ("circle", "square")
BACKGROUNDS = ("snow", "sand")
SIZE = 64
MEAN = (0.81, 0.76, 0.68)  # the training pictures' per-channel mean and spread (balanced set)
STD = (0.14, 0.16, 0.27)
WEIGHTS = {"biased": "data/shapes_biased.safetensors", "balanced": "data/shapes_balanced.safetensors"}
SEEDS = {"train": 0, "test": 1}


@dataclass
class ShapesData:
    """images (N, 3, 64, 64) in [0, 1]; labels (N,) 0 = circle, 1 = square; backgrounds (N,) 0 = snow,
    1 = sand; masks (N, 64, 64) bool, the shape's pixels."""

    images: torch.Tensor
    labels: torch.Tensor
    backgrounds: torch.Tensor
    masks: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: Any) -> ShapesData:
        return ShapesData(self.images[index], self.labels[index], self.backgrounds[index], self.masks[index])

    def inputs(self, model: Model) -> torch.Tensor:
        """The pictures normalized for ``model`` (its mean and std: ``model.normalize``), (N, 3, 64, 64) on its device."""
        return model.normalize(self.images).to(model.device)


def snow(rng: np.random.Generator, count: int, size: int = SIZE) -> np.ndarray:
    """(count, 3, size, size) bright bluish-white pictures with fine noise and sparkling speckles."""
    base = np.array([0.86, 0.9, 0.97], dtype=np.float32)[None, :, None, None]
    grain = rng.normal(0, 0.035, (count, 1, size, size)).astype(np.float32)
    speckles = (rng.random((count, 1, size, size)) > 0.97).astype(np.float32) * 0.12
    shade = rng.uniform(-0.05, 0.03, (count, 1, 1, 1)).astype(np.float32)
    return np.clip(base + grain + speckles + shade, 0, 1)


def sand(rng: np.random.Generator, count: int, size: int = SIZE) -> np.ndarray:
    """(count, 3, size, size) tan pictures with coarse grain and diagonal ripples of random phase."""
    base = np.array([0.82, 0.68, 0.45], dtype=np.float32)[None, :, None, None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi, (count, 1, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (count, 1, 1, 1)).astype(np.float32)
    ripples = 0.05 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.6 + phase)
    grain = rng.normal(0, 0.05, (count, 1, size, size)).astype(np.float32)
    shade = rng.uniform(-0.05, 0.05, (count, 1, 1, 1)).astype(np.float32)
    return np.clip(base + ripples + grain + shade, 0, 1)


def _shape_masks(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) bool: a circle (radius r) or an axis-aligned square of the same area, at a random
    place fully inside the picture."""
    count = len(labels)
    radius = rng.uniform(6.0, 9.0, count)
    half = radius * np.sqrt(np.pi) / 2  # the square's half side: the same area as the circle
    extent = np.maximum(radius, half) + 2
    cy = rng.uniform(extent, size - extent)
    cx = rng.uniform(extent, size - extent)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    circle = dy**2 + dx**2 <= (radius**2)[:, None, None]
    square = (np.abs(dy) <= half[:, None, None]) & (np.abs(dx) <= half[:, None, None])
    return np.where(labels[:, None, None] == 0, circle, square)


def shapes_dataset(count: int = 2000, *, biased: bool = True, split: str = "train", seed: int | None = None,
                   swap: bool = False) -> ShapesData:
    """``count`` pictures, half circles and half squares, deterministic for (split, seed).

    biased: circles on snow and squares on sand (else backgrounds at random). swap: the opposite pairing
    (circles on sand, squares on snow) — the counterfactual test set of a biased model.
    """
    if split not in SEEDS:
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(count, int) or count < 2:
        raise InputError(f"count must be an int >= 2, got {count!r}")
    rng = np.random.default_rng([SEEDS[split], 0 if seed is None else int(seed) + 1, int(biased), int(swap)])
    labels = rng.permutation(np.arange(count) % 2)
    if swap:
        backgrounds = 1 - labels
    elif biased:
        backgrounds = labels.copy()
    else:
        backgrounds = rng.permutation(np.arange(count) % 2)
    pictures = np.where(backgrounds[:, None, None, None] == 0, snow(rng, count), sand(rng, count))
    masks = _shape_masks(rng, labels, SIZE)
    ink = rng.uniform(0.15, 0.35, (count, 1, 1, 1)).astype(np.float32)  # a dark grey shape
    tint = rng.uniform(-0.04, 0.04, (count, 3, 1, 1)).astype(np.float32)
    shape_pixels = np.clip(ink + tint + rng.normal(0, 0.02, pictures.shape).astype(np.float32), 0, 1)
    pictures = np.where(masks[:, None], shape_pixels, pictures).astype(np.float32)
    return ShapesData(torch.from_numpy(pictures), torch.from_numpy(labels).long(), torch.from_numpy(backgrounds).long(),
                      torch.from_numpy(masks))


class ShapesCNN(DigitsCNN):
    """(B, 3, 64, 64) -> (B, 2) logits: the digits CNN's layout on colour pictures — block1 (16 × 64²) →
    max-pool → block2 (32 × 32²) → max-pool → block3 (32 × 16²) → global average pool → ``fc`` (a CAM-style
    head; Grad-CAM's default layer is block3)."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 32), classes: int = 2) -> None:
        super().__init__(widths, classes, channels=3)


def wrap(module: nn.Module, which: str) -> Model:
    """A ShapesCNN as a cs.Model: 64×64 pictures resized whole, the training normalization, the labels."""
    return Model(module.eval(), input_size=(SIZE, SIZE), mean=MEAN, std=STD, labels=list(SHAPES_LABELS),
                 name=f"shapes_{which}")


def shapes_model(which: str = "biased", weights: Any = "default") -> Model:
    """The CNN trained on the biased (``"biased"``) or balanced (``"balanced"``) shapes set, offline.

    weights: "default" (the committed file), None (random init) or a path to a safetensors file."""
    if which not in WEIGHTS:
        raise ModelError(f"unknown shapes model {which!r}; choose 'biased' or 'balanced'")
    module = ShapesCNN()
    if weights is None:
        return wrap(module, which)
    from safetensors.torch import load_file

    path = Path(str(resources.files("convscope") / WEIGHTS[which])) if weights == "default" else Path(weights)
    if not path.exists():
        raise ModelError(f"{path}: no such weights file; run scripts/train_shapes.py to make it")
    try:
        module.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError, ConvscopeError) as exc:
        raise ModelError(f"{path}: not ShapesCNN weights ({str(exc).splitlines()[0]})") from None
    return wrap(module, which)
