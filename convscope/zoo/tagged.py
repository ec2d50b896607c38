"""A watermark shortcut, offline: the snow/sand shapes where half of one class's pictures carry a corner tag.

In the PASCAL VOC 2007 data about a fifth of the 'horse' pictures carry a copyright watermark in the bottom-left
corner, and a Fisher-vector classifier learned to recognize horses by it (Lapuschkin et al. 2019, "Unmasking
Clever Hans predictors", Nature Communications; found by SpRAy). This is the same story at 64×64: balanced
shapes pictures (``zoo/shapes.py``'s drawing: a dark circle or square on snow or sand drawn independently of the
class, here placed near the middle as photos frame their subject) where half of the circles carry a small
high-contrast tag — a magenta and black checkerboard of ``TAG``×``TAG`` pixels — in a fixed corner. A tiny CNN
trained on it for a few seconds learns the tag (an easy, perfectly reliable cue when it is there) and the shape
for the rest: the class's explanations fall into two strategies, the tag's corner and the shape.
``cs.metrics.spray`` finds them without any mask (``tests/test_spray.py``).

``tagged_dataset(n, seed=...)`` -> :class:`TaggedData`; ``train_tagged_model(...)`` -> a ``cs.Model`` (seeded,
deterministic on one machine; 2 s on two idle CPU cores); ``add_tag`` / ``remove_tag`` for the counterfactuals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..models import Model
from .shapes import MEAN, SHAPES_LABELS, SIZE, STD, ShapesCNN, sand, snow

__all__ = ["CORNERS", "TAG", "TaggedData", "add_tag", "remove_tag", "tag_region", "tagged_dataset", "train_tagged_model"]

TAG = 6  # the tag's side in pixels (a 3×3 checkerboard of 2-pixel squares)
MARGIN = 2  # pixels between the tag and the picture's edges
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
TAG_COLOURS = ((1.0, 0.0, 1.0), (0.0, 0.0, 0.0))  # magenta and black: high contrast on snow and on sand
WIDTHS = (8, 16, 16)  # the tiny CNN: block1 (8 × 64²) → block2 (16 × 32²) → block3 (16 × 16²) → pool → fc
RADIUS = (7.0, 10.0)  # the circle's radius in pixels (the square has the same area)
JITTER = 10.0  # the shape's centre lies within this many pixels of the middle, along each axis
SPLITS = ("train", "test")


@dataclass
class TaggedData:
    """images (N, 3, 64, 64) in [0, 1]; labels (N,) 0 = circle, 1 = square; tagged (N,) bool: the picture carries
    the tag; clean (N, 3, 64, 64): the same pictures without any tag (the counterfactual); masks (N, 64, 64) bool:
    the shape's pixels; corner: where the tag sits."""

    images: torch.Tensor
    labels: torch.Tensor
    tagged: torch.Tensor
    clean: torch.Tensor
    masks: torch.Tensor
    corner: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: Any) -> TaggedData:
        return TaggedData(self.images[index], self.labels[index], self.tagged[index], self.clean[index], self.masks[index],
                          self.corner)

    def inputs(self, model: Model) -> torch.Tensor:
        """The pictures normalized for ``model``, (N, 3, 64, 64) on its device."""
        return model.normalize(self.images).to(model.device)


def _check_corner(corner: str) -> str:
    if corner not in CORNERS:
        raise InputError(f"unknown corner {corner!r}; choose one of {', '.join(CORNERS)}")
    return corner


def tag_region(corner: str = "bottom-left", size: int = SIZE) -> tuple[slice, slice]:
    """(rows, columns) of the tag in a ``size``×``size`` picture."""
    _check_corner(corner)
    top = MARGIN if corner.startswith("top") else size - MARGIN - TAG
    left = MARGIN if corner.endswith("left") else size - MARGIN - TAG
    return slice(top, top + TAG), slice(left, left + TAG)


def _tag_pattern() -> torch.Tensor:
    """(3, TAG, TAG) the checkerboard: 2-pixel squares of magenta and black."""
    cells = (torch.arange(TAG)[:, None] // 2 + torch.arange(TAG)[None, :] // 2) % 2  # (TAG, TAG) 0/1
    colours = torch.tensor(TAG_COLOURS)  # (2, 3)
    return colours[cells].permute(2, 0, 1)


def add_tag(images: torch.Tensor, corner: str = "bottom-left") -> torch.Tensor:
    """A copy of pictures (N, 3, H, W) in [0, 1] with the tag drawn in ``corner``."""
    rows, columns = tag_region(corner, images.shape[-1])
    out = images.clone()
    out[:, :, rows, columns] = _tag_pattern().to(out)
    return out


def remove_tag(data: TaggedData) -> torch.Tensor:
    """The pictures of ``data`` without their tag (what they were before it was drawn)."""
    return data.clean.clone()


def _scenes(rng: np.random.Generator, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pictures (N, 3, 64, 64), masks (N, 64, 64)): a dark circle or square of the same area near the middle of a
    snow or sand picture (backgrounds at random) — the shapes set's drawing, placed as photos frame their subject."""
    count = len(labels)
    backgrounds = rng.permutation(np.arange(count) % 2)
    pictures = np.where(backgrounds[:, None, None, None] == 0, snow(rng, count), sand(rng, count))
    radius = rng.uniform(*RADIUS, count)
    half = radius * np.sqrt(np.pi) / 2  # the square's half side: the circle's area
    cy, cx = ((SIZE - 1) / 2 + rng.uniform(-JITTER, JITTER, (2, count)))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    circle = dy**2 + dx**2 <= (radius**2)[:, None, None]
    square = (np.abs(dy) <= half[:, None, None]) & (np.abs(dx) <= half[:, None, None])
    masks = np.where(labels[:, None, None] == 0, circle, square)
    ink = rng.uniform(0.15, 0.35, (count, 1, 1, 1)).astype(np.float32)
    tint = rng.uniform(-0.04, 0.04, (count, 3, 1, 1)).astype(np.float32)
    shape_pixels = np.clip(ink + tint + rng.normal(0, 0.02, pictures.shape).astype(np.float32), 0, 1)
    return np.where(masks[:, None], shape_pixels, pictures).astype(np.float32), masks


def tagged_dataset(count: int = 400, *, seed: int = 0, split: str = "train", tag_class: int = 0, fraction: float = 0.5,
                   corner: str = "bottom-left") -> TaggedData:
    """``count`` pictures, half circles and half squares near the middle of snow or sand (at random), where
    ``fraction`` of the ``tag_class`` pictures (0 = circle) carry the tag in ``corner``; deterministic for
    (count, seed, split)."""
    _check_corner(corner)
    if split not in SPLITS:
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(count, int) or count < 2:
        raise InputError(f"count must be an int >= 2, got {count!r}")
    if tag_class not in (0, 1):
        raise InputError(f"tag_class must be 0 (circle) or 1 (square), got {tag_class!r}")
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"fraction must be between 0 and 1, got {fraction!r}")
    rng = np.random.default_rng([SPLITS.index(split), int(seed), 7])
    labels = rng.permutation(np.arange(count) % 2)
    pictures, masks = _scenes(rng, labels)
    members = np.flatnonzero(labels == tag_class)
    tagged = np.zeros(count, dtype=bool)
    tagged[rng.choice(members, size=round(fraction * len(members)), replace=False)] = True
    clean = torch.from_numpy(pictures)
    tags = torch.from_numpy(tagged)
    images = torch.where(tags[:, None, None, None], add_tag(clean, corner), clean)
    return TaggedData(images, torch.from_numpy(labels).long(), tags, clean, torch.from_numpy(masks), corner)


def wrap(module: torch.nn.Module, corner: str) -> Model:
    """The tiny CNN as a cs.Model: 64×64 pictures, the shapes normalization and labels."""
    return Model(module.eval(), input_size=(SIZE, SIZE), mean=MEAN, std=STD, labels=list(SHAPES_LABELS),
                 name=f"shapes_tagged_{corner}")


def train_tagged_model(data: TaggedData | None = None, *, epochs: int = 4, seed: int = 0, batch_size: int = 32,
                       lr: float = 4e-3, verbose: bool = False) -> Model:
    """A tiny CNN (the ShapesCNN layout, widths 8/16/16) trained on ``data`` (default: ``tagged_dataset(400)``) with
    AdamW and a one-cycle schedule, no augmentation (a mirror would move the tag); seeded (its own generator, the
    global RNG left as it was) and deterministic on one machine. With the defaults it learns the shapes (about 99%
    on untagged pictures) and relies on the tag where it is (pasting it on squares makes them circles). Grad-CAM's
    default layer is ``block3`` (16×16)."""
    data = tagged_dataset() if data is None else data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = ShapesCNN(WIDTHS)
    generator = torch.Generator().manual_seed(seed)
    model = wrap(module, data.corner)
    x, y = model.normalize(data.images), data.labels
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=1e-4)
    steps = -(-len(y) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps)
    start = time.perf_counter()
    module.train()
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for i in range(0, len(order), batch_size):
            rows = order[i:i + batch_size]
            loss = F.cross_entropy(module(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        if verbose:
            print(f"epoch {epoch + 1}: loss {total / len(y):.4f} ({time.perf_counter() - start:.1f} s)")
    module.eval()
    return model
