"""Regions of interest from an explanation (seed 004's "interesting region"): the mask where a map is
high, its bounding box, the picture seen through the mask, and the crop — per image or per class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import ConvscopeError
from .result import Result

__all__ = ["RegionOfInterest", "class_regions", "roi"]


@dataclass(frozen=True)
class RegionOfInterest:
    """mask (H, W) bool; box (left, top, right, bottom), right/bottom exclusive; masked (H, W, 3) uint8
    (the picture, black outside the mask); crop (h, w, 3) uint8 (the picture inside the box)."""

    mask: np.ndarray
    box: tuple[int, int, int, int]
    masked: np.ndarray
    crop: np.ndarray
    threshold: float
    label: str | None = None

    @property
    def coverage(self) -> float:
        """Share of the picture inside the mask."""
        return float(self.mask.mean())


def _smoothed(values: torch.Tensor) -> torch.Tensor:
    """Pixel-gradient maps are speckled: a small box blur turns them into regions."""
    import torch.nn.functional as F

    size = max(3, (min(values.shape[-2:]) // 32) | 1)
    return F.avg_pool2d(values[None, None], size, stride=1, padding=size // 2, count_include_pad=False)[0, 0]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from skimage.measure import label

    labels = label(mask, connectivity=2)
    if labels.max() <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def roi(result: Result, image: Any = None, *, threshold: float = 0.3, index: int = 0,
        largest: bool = True) -> RegionOfInterest:
    """The region where image ``index``'s map reaches ``threshold`` of its range (0..1, min-max scaled).

    ``image``: the picture to cut (default: the explained input); ``largest`` keeps only the biggest
    connected region, so one stray spot does not stretch the box.
    """
    from .render import normalize, to_uint8_image

    if not 0 <= threshold <= 1:
        raise ConvscopeError(f"threshold is a share of the map's range, between 0 and 1; got {threshold}")
    values = result.maps()[index].float().cpu()
    if result.data.shape[1] > 1:
        values = _smoothed(values)
    scaled = normalize(values, "minmax")
    mask = scaled >= threshold
    if float(values.max() - values.min()) == 0 or not mask.any():
        raise ConvscopeError(f"the {result.method} map of image {index} is flat: no region stands out")
    if largest:
        mask = _largest_component(mask)
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    picture = to_uint8_image(image, scaled.shape) if image is not None else result.images()[index]
    masked = picture * mask[..., None].astype(np.uint8)
    crop = picture[box[1]:box[3], box[0]:box[2]].copy()
    label = result.labels[index] if result.labels else None
    return RegionOfInterest(mask=mask, box=box, masked=masked, crop=crop, threshold=threshold, label=label)


def class_regions(model: Any, x: torch.Tensor, classes: Sequence[int], *, method: str = "gradcam",
                  threshold: float = 0.3, **options: Any) -> list[RegionOfInterest]:
    """One region per class on the same image ``x`` (1, C, H, W): where the model sees each class."""
    from .registry import get

    if x.dim() != 4 or x.shape[0] != 1:
        raise ConvscopeError(f"class_regions explains one image, shape (1, C, H, W); got {tuple(x.shape)}")
    batch = x.expand(len(classes), -1, -1, -1)
    result = get(method).fn(model, batch, target=list(classes), **options)
    return [roi(result, threshold=threshold, index=i) for i in range(len(classes))]
