"""A small CNN for scikit-learn's 8×8 handwritten digits, trained by convscope and shipped with it.

The digits (``sklearn.datasets.load_digits``: 1,797 pictures, values 0..16) are shown to the network
as 1×32×32 grayscale pictures — the 8×8 picture scaled ×255/16 to 8-bit, then upscaled bilinearly
by ``Model.preprocess`` — so feature maps and CAMs have a few pixels to show. Three conv+BN+ReLU
blocks, global average pooling and one Linear layer (a CAM-style head). ``scripts/train_digits.py``
trains it on a fixed 75/25 split (``digits_dataset``) and writes ``convscope/data/digits_cnn.safetensors``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConvscopeError, ModelError
from ..models import Model

__all__ = ["DIGITS_LABELS", "DIGITS_MEAN", "DIGITS_STD", "DigitsCNN", "DigitsDataset", "digits_dataset", "digits_model"]

DIGITS_LABELS = tuple(str(d) for d in range(10))
INPUT_SIZE = (32, 32)
# mean and std of the training pictures as preprocess makes them (bilinear ×4, [0, 1]); see the training script
DIGITS_MEAN = (0.3,)
DIGITS_STD = (0.32,)
WEIGHTS = "data/digits_cnn.safetensors"
SPLIT_SEED = 0  # train_test_split(random_state=0, test_size=0.25, stratify=labels)
TEST_FRACTION = 0.25


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DigitsCNN(nn.Module):
    """(B, 1, 32, 32) -> (B, 10) logits: block1 (16 × 32²) → max-pool → block2 (32 × 16²) → max-pool
    → block3 (64 × 8²) → global average pool → ``fc``. The input of ``fc`` is the 64-D embedding."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), classes: int = 10, channels: int = 1) -> None:
        super().__init__()
        self.block1 = _block(channels, widths[0])
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = _block(widths[0], widths[1])
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = _block(widths[1], widths[2])
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> the pooled features (B, 64) that ``fc`` reads."""
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        return self.gap(self.block3(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def weights_path() -> Path:
    """Where the committed weights live (inside the installed package)."""
    return Path(str(resources.files("convscope").joinpath(WEIGHTS)))


def digits_model(weights: Any = "default") -> Model:
    """The trained digits CNN as a :class:`~convscope.Model` (1×32×32 input, labels "0".."9").

    ``weights``: "default" (the committed safetensors), None (reproducible random weights) or a path.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = DigitsCNN()
    if weights == "default":
        weights = weights_path()
    if weights is not None:
        from ..models import _load_state_dict_into, _read_state_dict

        path = Path(weights)
        _load_state_dict_into(module, _read_state_dict(path), path.name)
    module.eval()
    return Model(module, input_size=INPUT_SIZE, mean=DIGITS_MEAN, std=DIGITS_STD, labels=DIGITS_LABELS,
                 name="digits_cnn", resize_size=None, channels=1)


class DigitsDataset(torch.utils.data.Dataset):
    """A torch Dataset of ``(PIL image 8×8 "L", int label)``; ``images`` (N, 8, 8) uint8, ``targets`` (N,),
    ``classes`` ("0".."9"), ``indices`` (rows of ``load_digits()``)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, indices: np.ndarray) -> None:
        self.images, self.targets, self.indices = images, targets, indices
        self.classes = list(DIGITS_LABELS)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.images[index]), int(self.targets[index])

    def pictures(self) -> list[Any]:
        """Every picture as a PIL image (what ``model.preprocess`` takes)."""
        return [self[i][0] for i in range(len(self))]


def digits_dataset(split: str = "test") -> DigitsDataset:
    """scikit-learn's digits as 8-bit pictures: ``"train"`` (1,347) or ``"test"`` (450), the fixed
    stratified 75/25 split (random_state 0) the shipped model was trained on, or ``"all"`` (1,797)."""
    if split not in ("train", "test", "all"):
        raise ConvscopeError(f"unknown split {split!r}; choose 'train', 'test' or 'all'")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelError("the digits data set needs scikit-learn: pip install scikit-learn") from exc
    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # (N, 8, 8), 0..16 -> 0..255
    targets = digits.target.astype(np.int64)
    indices = np.arange(len(targets))
    if split != "all":
        train, test = train_test_split(indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=targets)
        indices = np.sort(train if split == "train" else test)
    return DigitsDataset(images[indices], targets[indices], indices)
