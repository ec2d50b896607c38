"""Regions of interest from an explanation (seed 004's "interesting region"): the mask where a map is
high, its bounding box, the picture seen through the mask, and the crop — per image or per class.

``roi(result)`` cuts one image's region out of an explanation; ``class_regions(model, x)`` is the tool:
it explains the pictures (or one picture for several classes) and returns their :class:`Regions`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from .engine import Cost
from .errors import ConvscopeError
from .metrics.nested import method as checked_method
from .registry import CAM_LAYER, CostContext, ReportSpec, register
from .result import Displayable, Result
from .targets import Target

__all__ = ["RegionOfInterest", "Regions", "class_regions", "roi"]


@dataclass(frozen=True)
class RegionOfInterest(Displayable):
    """mask (H, W) bool; box (left, top, right, bottom), right/bottom exclusive; masked (H, W, 3) uint8
    (the picture, black outside the mask); crop (h, w, 3) uint8 (the picture inside the box).
    Kind "region": it draws as the masked picture with its box, and the crop."""

    kind = "region"

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


@dataclass
class Regions(Displayable):
    """The regions ``class_regions`` found, one per picture (or per class of one picture), in order; None where
    the map is flat (``notes`` says why). Kind "regions": ``figure()`` shows each masked picture and crop.
    Indexing and iterating give the :class:`RegionOfInterest` objects."""

    kind = "regions"

    regions: list[RegionOfInterest | None]
    method: str
    threshold: float
    names: list[str] = field(default_factory=list)  # what each region is of ("image 0", "class 281")
    notes: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.regions)

    def __getitem__(self, index: int) -> RegionOfInterest | None:
        return self.regions[index]

    def __iter__(self) -> Iterator[RegionOfInterest | None]:
        return iter(self.regions)

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per region: what it is of, the class label, its coverage and box (JSON)."""
        return [{"name": name, "label": None if region is None else region.label,
                 "coverage": None if region is None else region.coverage,
                 "box": None if region is None else list(region.box), "note": note}
                for name, region, note in zip(self.names, self.regions, self.notes)]

    def table(self) -> str:
        """One line per region: what it is of, its class, its share of the picture and its box."""
        lines = [f"regions where the {self.method} map reaches {self.threshold:.0%} of its range (largest connected region)"]
        for record in self.records():
            if record["box"] is None:
                lines.append(f"{record['name']}: no region ({record['note']})")
            else:
                lines.append(f"{record['name']}: '{record['label']}' region, {record['coverage']:.0%} of the picture, "
                             f"box {tuple(record['box'])}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


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


def _minmax(values: torch.Tensor) -> np.ndarray:
    """A (H, W) map scaled to [0, 1] (a constant map becomes 0)."""
    array = values.detach().float().cpu().numpy()
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _picture(image: Any, size: tuple[int, int]) -> np.ndarray:
    """A picture (path, PIL image, array) as uint8 RGB (H, W, 3) at ``size`` = (H, W)."""
    from PIL import Image

    from .images import load_image

    pil = load_image(image)
    if pil.size != (size[1], size[0]):
        pil = pil.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(pil, dtype=np.uint8)


def roi(result: Result, image: Any = None, *, threshold: float = 0.3, index: int = 0,
        largest: bool = True) -> RegionOfInterest:
    """The region where image ``index``'s map reaches ``threshold`` of its range (0..1, min-max scaled).

    ``image``: the picture to cut (default: the explained input); ``largest`` keeps only the biggest
    connected region, so one stray spot does not stretch the box.
    """
    if not 0 <= threshold <= 1:
        raise ConvscopeError(f"threshold is a share of the map's range, between 0 and 1; got {threshold}")
    values = result.maps()[index].float().cpu()
    if result.data.shape[1] > 1:
        values = _smoothed(values)
    scaled = _minmax(values)
    mask = scaled >= threshold
    if float(values.max() - values.min()) == 0 or not mask.any():
        raise ConvscopeError(f"the {result.method} map of image {index} is flat: no region stands out")
    if largest:
        mask = _largest_component(mask)
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    picture = _picture(image, scaled.shape) if image is not None else result.images()[index]
    masked = picture * mask[..., None].astype(np.uint8)
    crop = picture[box[1]:box[3], box[0]:box[2]].copy()
    label = result.labels[index] if result.labels else None
    return RegionOfInterest(mask=mask, box=box, masked=masked, crop=crop, threshold=threshold, label=label)


def _class_regions_cost(context: CostContext) -> Cost:
    """The method's map of every picture (of the one picture once per class)."""
    x = context.x
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        return Cost(0)
    own = context.tool.options_model.model_fields
    given = {k: v for k, v in context.options.items() if k not in own}
    chosen = checked_method(context.options["method"], {**given, "layer": context.special.get("layer")},
                            who="class_regions")
    classes = context.options["classes"]
    batch = x if not classes else torch.empty((len(classes), *x.shape[1:]))
    cost = chosen.cost(context.model, batch)
    return Cost(cost.forwards, cost.memory, f"{chosen.name} on {batch.shape[0]} picture(s)")


@register("class_regions", family="workflow", takes="images", returns="regions", cost=_class_regions_cost,
          layer=CAM_LAYER,
          paper="Zhou et al. 2016, Learning Deep Features for Discriminative Localization (boxes from a thresholded map)",
          report=ReportSpec(title="Region of interest", options={"threshold": 0.4},
                            note="The part of the picture the map for the top class points at (where it reaches 40% of its "
                                 "range; the largest connected region), seen through that mask, and the box around it cut "
                                 "out: what the model looked at."))
def class_regions(model: Any, x: torch.Tensor,
                  classes: Annotated[list[Annotated[int, Field(ge=0, le=1_000_000)]], Field(min_length=1, max_length=64)]
                  | None = None, *, target: Target = None, layer: Any = None,
                  method: Annotated[str, Field(min_length=1, max_length=64)] = "gradcam",
                  threshold: Annotated[float, Field(ge=0, le=1)] = 0.3, largest: bool = True,
                  **method_options: Any) -> Regions:
    """The region each picture's map points at: the mask where the map is high, its box, the picture seen
    through the mask and the crop. With ``classes``, one picture (1, C, H, W) and one region per class: where
    the model sees each class.

    ``target`` (without ``classes``): the class each map explains (default: each picture's top-1). ``layer``
    and other keyword options go to the method, checked by its own options before any work. A picture whose
    map is flat has no region (None, with a note).

    Options:
        classes: one picture, several classes: one region per class (e.g. [281, 504]); none: one region per picture.
        method: the attribution method whose map makes the regions (default gradcam).
        threshold: the share of the map's range (0 to 1, after min-max scaling) a pixel must reach to be in the region.
        largest: keep only the largest connected region, so one stray spot does not stretch the box.
    """
    chosen = checked_method(method, {**method_options, "layer": layer}, who="class_regions")
    if classes:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConvscopeError(f"class_regions with classes explains one image, shape (1, C, H, W); got {shape}")
        if target is not None:
            raise ConvscopeError("class_regions takes classes (one region per class) or target (one per picture), not both")
        batch, target, names = x.expand(len(classes), -1, -1, -1), list(classes), [f"class {c}" for c in classes]
    else:
        batch, names = x, [f"image {i}" for i in range(x.shape[0])] if isinstance(x, torch.Tensor) and x.dim() == 4 else []
    result = chosen(model, batch, target=target)
    regions: list[RegionOfInterest | None] = []
    notes: list[str | None] = []
    for i in range(len(result)):
        try:
            regions.append(roi(result, threshold=threshold, index=i, largest=largest))
            notes.append(None)
        except ConvscopeError as exc:
            regions.append(None)
            notes.append(str(exc))
    return Regions(regions, chosen.name, float(threshold), names or [f"image {i}" for i in range(len(result))], notes)
