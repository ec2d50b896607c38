"""Shortcut audit: does the model look at the object, or at what happens to surround it?

The leopard classifier that learned snow, the tank detector that learned the weather: ``audit`` makes
that a number. Two tests, both batched:

1. **Where the explanation falls** (needs object regions: masks, boxes or a folder of mask pictures).
   Each image is explained for the class the model predicted; the *share* is the part of the map's
   positive mass inside the object region — the energy-based pointing game of Wang et al. 2020
   (Score-CAM, §4.2) — next to the share a uniform map would get (the region's area). The *hit* is the
   pointing game of Zhang et al. 2016 (does the map's peak fall inside the region). The *concentration*
   ``(share - area) / (1 - area)`` says how much more of the map the object holds than a uniform map
   would give it: 0 for a map that ignores the object, 1 for a map entirely on it, below 0 for a map
   that avoids it. It is fair to small objects and coarse maps alike (a 16×16 Grad-CAM on an object of
   4% of the picture puts about a third of its mass inside when the model looks at the object), and an
   image is flagged when it is below ``threshold``: the prediction rests outside the object.
2. **Whose class the prediction follows** (needs regions, not an explanation). Objects are pasted onto
   the backgrounds of pictures of other classes (the other picture's own object filled in from its
   surroundings first); a model that learned the object predicts the object's class, a model that
   learned the background predicts the background's.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from .. import data
from ..engine import Cost, default_rows, stand_in
from ..errors import InputError
from ..images import to_uint8
from ..models import Model, as_model
from ..options import BatchSize, PythonOnly, Seed
from ..progress import ProgressArg, tracker
from ..registry import CAM_LAYER, CostContext, ReportSpec, register
from ..result import Displayable
from ..store import Explanations, is_explanations, open_explanations
from ..sweep import (
    THUMBNAIL,
    Actors,
    Address,
    Engine,
    Gpus,
    Threads,
    batch_target,
    check_engine,
    class_index,
    dataset_target,
    explain_dataset,
    fingerprint,
    top_predictions,
)
from .nested import method as checked_method
from .spray import Strategies, spray

__all__ = ["Audit", "StrategyAudit", "SwapTest", "audit", "fill_region", "region_share", "smooth_fill", "strategies"]

FLAG_CONCENTRATION = 0.1  # default threshold: the object holds hardly more of the map than its area
EXAMPLES = 8  # pictures kept per kind (worst images, swap composites) for figures


@dataclass
class SwapTest:
    """Objects pasted onto other classes' backgrounds. Per composite: ``object_class``,
    ``background_class``, ``predicted``; ``examples``: a few composites (uint8 (h, w, 3)) with
    (object class, background class, predicted) for figures."""

    object_class: np.ndarray
    background_class: np.ndarray
    predicted: np.ndarray
    class_names: list[str]
    examples: list[tuple[np.ndarray, int, int, int]] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return int(self.predicted.shape[0])

    @property
    def follows_object(self) -> float:
        """Fraction of composites predicted as the pasted object's class."""
        return float(np.mean(self.predicted == self.object_class)) if len(self) else float("nan")

    @property
    def follows_background(self) -> float:
        """Fraction of composites predicted as the background picture's class."""
        return float(np.mean(self.predicted == self.background_class)) if len(self) else float("nan")

    def per_class(self) -> dict[str, tuple[int, float, float]]:
        """Object class -> (composites, follows object, follows background)."""
        out = {}
        for c in sorted(set(self.object_class.tolist())):
            rows = self.object_class == c
            out[self.class_names[c]] = (int(rows.sum()), float(np.mean(self.predicted[rows] == c)),
                                        float(np.mean(self.predicted[rows] == self.background_class[rows])))
        return out


@dataclass
class Audit(Displayable):
    """Per image (N,): ``label`` (-1 when unknown), ``predicted``, ``probability`` (of the prediction),
    ``share`` of the explanation inside the region, ``area`` of the region (the share of a uniform map),
    ``hit`` (the map's peak inside the region), ``concentration`` ((share - area) / (1 - area)),
    ``flagged`` (concentration < ``threshold``), ``explained`` (the class each map explains); ``swap`` the
    background-swap test (None when not run); ``examples``: image index -> (picture uint8 (h, w, 3), map
    (h, w), region (h, w)) at most 96 px, for the lowest-concentration images (``keep_examples``).
    Kind "audit": ``figure(k=8)`` draws the worst images, the shares per class and the swap composites."""

    kind = "audit"

    method: str
    threshold: float
    class_names: list[str]
    label: np.ndarray
    predicted: np.ndarray
    probability: np.ndarray
    share: np.ndarray
    area: np.ndarray
    hit: np.ndarray
    paths: list[str | None]
    examples: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(repr=False)
    swap: SwapTest | None = None
    seconds: float = 0.0
    evidence: np.ndarray | None = None  # (N,) bool: the map has some positive value (else nothing to locate)
    explained: np.ndarray | None = None  # (N,) the class each map explains (the top-1 unless target= said otherwise)

    def __len__(self) -> int:
        return int(self.share.shape[0])

    @property
    def concentration(self) -> np.ndarray:
        """(N,) how much more of the map the object holds than a uniform map would: (share - area) / (1 - area)."""
        return (self.share - self.area) / np.clip(1 - self.area, 1e-6, None)

    @property
    def is_flagged(self) -> np.ndarray:
        """(N,) bool: the prediction rests outside the object (concentration below the threshold). A map
        without any positive value locates nothing and is not flagged (see ``without_evidence``)."""
        located = np.ones(len(self), dtype=bool) if self.evidence is None else self.evidence
        return located & (self.concentration < self.threshold)

    @property
    def without_evidence(self) -> int:
        """Images whose map has no positive value (e.g. Grad-CAM of an untrained model)."""
        return 0 if self.evidence is None else int((~self.evidence).sum())

    @property
    def flagged(self) -> np.ndarray:
        """Indices of the images whose prediction rests outside the object."""
        return np.flatnonzero(self.is_flagged)

    @property
    def flagged_fraction(self) -> float:
        return float(len(self.flagged) / max(1, len(self)))

    @property
    def relies_on_background(self) -> bool:
        """The verdict: most explanations fall outside the objects, or (when run) most pasted objects
        are classified by their new background."""
        by_share = self.flagged_fraction > 0.5
        by_swap = self.swap is not None and len(self.swap) > 0 and self.swap.follows_background > 0.5
        return by_share or by_swap

    @property
    def verdict(self) -> str:
        share = (f"{self.flagged_fraction:.0%} of images flagged (median share of the {self.method} map on the object "
                 f"{np.median(self.share):.0%}, where a uniform map would give {np.median(self.area):.0%}; concentration "
                 f"{np.median(self.concentration):.2f}, flagged below {self.threshold:.2f})")
        swap = ("" if self.swap is None or not len(self.swap) else
                f"; pasted onto another class's background, the prediction follows the background in "
                f"{self.swap.follows_background:.0%} of {len(self.swap)} composites and the object in {self.swap.follows_object:.0%}")
        head = "RELIES ON THE BACKGROUND" if self.relies_on_background else "looks at the objects"
        empty = f"; {self.without_evidence} maps without positive evidence were not judged" if self.without_evidence else ""
        if self.without_evidence == len(self) and not self.relies_on_background:
            head = "NO EVIDENCE TO JUDGE"
        return f"{head}: {share}{swap}{empty}"

    def worst(self, k: int = EXAMPLES) -> np.ndarray:
        """Indices of the ``k`` images with the lowest concentration, worst first."""
        return np.argsort(self.concentration, kind="stable")[:k]

    def per_class(self) -> dict[str, dict[str, float]]:
        """Per true class (or predicted class when labels are unknown): images, accuracy, mean share,
        mean area, pointing-game hit rate, flagged fraction."""
        keys = self.label if (self.label >= 0).all() else self.predicted
        out = {}
        for c in sorted(set(keys.tolist())):
            rows = keys == c
            known = self.label[rows] >= 0
            out[self._name(c)] = {
                "images": int(rows.sum()),
                "accuracy": float(np.mean(self.predicted[rows][known] == self.label[rows][known])) if known.any() else float("nan"),
                "share": float(self.share[rows].mean()), "area": float(self.area[rows].mean()),
                "concentration": float(self.concentration[rows].mean()),
                "hit": float(self.hit[rows].mean()), "flagged": float(np.mean(self.is_flagged[rows])),
            }
        return out

    def _name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else f"class {index}"

    def table(self) -> str:
        """The per-class summary, the swap test and the verdict as text."""
        lines = [f"{'class':<16} {'images':>6} {'accuracy':>8} {'share':>6} {'area':>6} {'conc.':>6} {'hit':>6} {'flagged':>8}"]
        for name, row in self.per_class().items():
            lines.append(f"{name[:16]:<16} {row['images']:>6} {row['accuracy']:>8.1%} {row['share']:>6.1%} "
                         f"{row['area']:>6.1%} {row['concentration']:>6.2f} {row['hit']:>6.1%} {row['flagged']:>8.1%}")
        if self.swap is not None and len(self.swap):
            lines.append("")
            lines.append(f"{'object pasted':<16} {'onto':>6} {'follows object':>15} {'follows background':>19}")
            for name, (count, obj, bg) in self.swap.per_class().items():
                lines.append(f"{name[:16]:<16} {count:>6} {obj:>15.1%} {bg:>19.1%}")
        lines.append("")
        lines.append(f"share: the part of the {self.method} map's positive mass inside the object region (energy pointing "
                     f"game); area: what a uniform map would get; conc.: (share - area) / (1 - area), flagged below "
                     f"{self.threshold:.2f}; hit: the map's peak inside the region")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """The numbers as a dict (for JSON)."""
        return {"method": self.method, "images": len(self), "threshold": self.threshold,
                "flagged_fraction": self.flagged_fraction, "median_share": float(np.median(self.share)),
                "median_concentration": float(np.median(self.concentration)), "without_evidence": self.without_evidence,
                "median_area": float(np.median(self.area)), "hit_rate": float(self.hit.mean()),
                "relies_on_background": self.relies_on_background, "per_class": self.per_class(),
                "swap": None if self.swap is None else {"composites": len(self.swap), "follows_object": self.swap.follows_object,
                                                       "follows_background": self.swap.follows_background},
                "seconds": self.seconds}

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per image: its path, true and predicted class, the class explained, share, area,
        concentration, hit and whether it is flagged (JSON, a DataFrame)."""
        concentration, flagged = self.concentration, self.is_flagged
        explained = self.explained if self.explained is not None else self.predicted
        return [{"image": i, "path": self.paths[i] if i < len(self.paths) else None,
                 "label": None if self.label[i] < 0 else self._name(int(self.label[i])),
                 "predicted": self._name(int(self.predicted[i])), "probability": float(self.probability[i]),
                 "explained": self._name(int(explained[i])), "share": float(self.share[i]), "area": float(self.area[i]),
                 "concentration": float(concentration[i]), "hit": bool(self.hit[i]), "flagged": bool(flagged[i])}
                for i in range(len(self))]


@dataclass
class StrategyAudit(Displayable):
    """A mask-free shortcut audit: per explained class, the strategies SpRAy found among its maps
    (``classes``: class name -> :class:`convscope.metrics.spray.Strategies`); ``skipped``: classes with too few
    pictures to cluster (name -> count); ``folder``: where the explanations were read. Kind "strategy_audit":
    ``table()``, ``verdict``, ``summary()``, ``records()``, ``figure()`` (each class's clusters)."""

    kind = "strategy_audit"

    method: str
    classes: dict[str, Strategies]
    skipped: dict[str, int]
    pictures: int
    folder: str
    seconds: float = 0.0

    def __len__(self) -> int:
        return self.pictures

    @property
    def several(self) -> list[str]:
        """The classes explained in more than one way (more than one cluster)."""
        return [name for name, found in self.classes.items() if found.clusters > 1]

    @property
    def verdict(self) -> str:
        if not self.classes:
            return f"NOTHING TO CLUSTER: no class has {MIN_PICTURES} or more pictures"
        if not self.several:
            return (f"one strategy per class: the {self.method} maps of each of the {len(self.classes)} classes form one group "
                    f"(the eigengap suggests no split)")
        parts = [f"{name}: {self.classes[name].verdict}" for name in self.several[:4]]
        more = f"; {len(self.several) - 4} more" if len(self.several) > 4 else ""
        return (f"{len(self.several)} of {len(self.classes)} classes are explained in more than one way — look at each group: "
                f"a group on a corner, an edge or the background is a shortcut candidate. " + "; ".join(parts) + more)

    def table(self) -> str:
        lines = [f"{'class':<16} {'pictures':>8} {'strategies':>10} {'eigengap':>9}  where each strategy's evidence lies"]
        for name, found in self.classes.items():
            where = "; ".join(f"{share:.0%} {found.where(c)}" for c, share in enumerate(found.shares))
            lines.append(f"{name[:16]:<16} {len(found):>8} {found.clusters:>10} {found.eigengap:>9.3f}  {where}")
        for name, count in self.skipped.items():
            lines.append(f"{name[:16]:<16} {count:>8} {'-':>10} {'-':>9}  too few pictures to cluster")
        lines.append("")
        lines.append(f"SpRAy (Lapuschkin et al. 2019): each class's {self.method} maps (positive part, pooled, unit sum) clustered "
                     f"on a nearest-neighbour graph; the eigengap of its spectrum suggests how many strategies there are")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "pictures": self.pictures, "folder": self.folder, "verdict": self.verdict,
                "classes": {name: found.summary() for name, found in self.classes.items()}, "skipped": self.skipped,
                "seconds": self.seconds}

    def records(self) -> list[dict[str, Any]]:
        """One dict per clustered picture: its id, class and strategy (cluster)."""
        return [{"class": name, **record} for name, found in self.classes.items() for record in found.records()]


# -- pieces ------------------------------------------------------------------------------------------
def region_share(maps: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(share, hit) per image for maps (B, H, W) and bool regions (B, H, W): the positive mass of the map
    inside the region over all its positive mass (0 for a map with no positive value), and whether the
    map's maximum lies inside the region."""
    positive = maps.float().clamp_min(0).flatten(1)
    inside = regions.flatten(1).to(positive.dtype)
    total = positive.sum(1)
    share = torch.where(total > 0, (positive * inside).sum(1) / total.clamp_min(1e-30), torch.zeros_like(total))
    peak = maps.float().flatten(1).argmax(1)
    hit = inside.gather(1, peak[:, None])[:, 0] > 0
    return share, hit


def fill_region(x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Pictures (B, C, H, W) with their bool ``regions`` (B, H, W) filled in from the surroundings, so an
    object disappears into its background with the background's texture: each region is covered by the
    patch of the same picture one object-size away (8 directions), the one whose surroundings match the
    region's own surroundings best (a one-patch, exemplar-based inpainting in the spirit of Criminisi et
    al. 2004). Regions with no such patch (objects that fill most of the picture) get a smooth fill
    (``smooth_fill``). Outside the regions the pictures are unchanged."""
    batch, channels, height, width = x.shape
    regions = regions.to(x.device)
    out = x.clone()
    rows, cols = regions.any(2), regions.any(1)  # (B, H), (B, W)
    ys, xs = torch.arange(height, device=x.device), torch.arange(width, device=x.device)
    extent_y = torch.where(rows, ys, -1).amax(1) - torch.where(rows, ys, height).amin(1) + 1  # (B,) bounding box
    extent_x = torch.where(cols, xs, -1).amax(1) - torch.where(cols, xs, width).amin(1) + 1
    keep = ~regions
    ring = (F.max_pool2d(regions[:, None].float(), 5, stride=1, padding=2)[:, 0] > 0) & keep  # 2 px around the object
    flat_regions, flat_ring = regions.flatten(1), ring.flatten(1)
    best_error = torch.full((batch,), math.inf, device=x.device)
    grey, flat_keep = x.mean(1).flatten(1), keep.flatten(1)  # (B, H*W): patches are compared in grey
    best_index = torch.zeros_like(flat_keep, dtype=torch.long)
    for dir_y, dir_x in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
        shift_y, shift_x = dir_y * (extent_y + 2), dir_x * (extent_x + 2)  # (B,) one object size plus a gap
        source_y = ys[None, :, None] + shift_y[:, None, None]  # (B, H, 1)
        source_x = xs[None, None, :] + shift_x[:, None, None]  # (B, 1, W)
        inside = (source_y >= 0) & (source_y < height) & (source_x >= 0) & (source_x < width)  # (B, H, W)
        index = (source_y.clamp(0, height - 1) * width + source_x.clamp(0, width - 1)).flatten(1)  # (B, H*W)
        usable = inside.flatten(1) & flat_keep.gather(1, index)  # the source pixel is background
        valid = ~(flat_regions & ~usable).any(1)  # every object pixel has a background source
        compared = flat_ring & usable
        error = ((grey.gather(1, index) - grey).abs() * compared).sum(1) / compared.sum(1).clamp_min(1)
        better = valid & (error < best_error)
        best_index = torch.where(better[:, None], index, best_index)
        best_error = torch.where(better, error, best_error)
    best = x.flatten(2).gather(2, best_index[:, None].expand(batch, channels, -1)).view_as(x)
    patched = torch.isfinite(best_error)
    out = torch.where((regions & patched[:, None, None])[:, None], best, out)
    if not bool(patched.all()):
        rest = ~patched
        out[rest] = smooth_fill(x[rest], regions[rest])
    return out


def smooth_fill(x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """``regions`` (B, H, W) of pictures (B, C, H, W) filled with the mean of the surrounding pixels over
    cells of 1/16, 1/8, 1/4 and 1/2 of the picture (a pull-push pyramid; the finest cell that has enough
    background wins), smoothed by bilinear upsampling. Texture is lost: the fallback of ``fill_region``."""
    keep = (~regions)[:, None].to(x.dtype)
    out = x.clone()
    todo = regions.clone()
    size = min(x.shape[-2:])
    for divisor in (16, 8, 4, 2):
        cell = max(1, size // divisor)
        weight = F.interpolate(F.avg_pool2d(keep, cell, stride=cell, ceil_mode=True), size=x.shape[-2:],
                               mode="bilinear", align_corners=False)
        total = F.interpolate(F.avg_pool2d(x * keep, cell, stride=cell, ceil_mode=True), size=x.shape[-2:],
                              mode="bilinear", align_corners=False)
        value = total / weight.clamp_min(1e-6)  # the mean of the background pixels nearby
        ready = todo & (weight[:, 0] > 0.3)
        out = torch.where(ready[:, None], value, out)
        todo = todo & ~ready
    if bool(todo.any()):  # a region too large to reach: the mean of what is left
        mean = (x * keep).sum((2, 3), keepdim=True) / keep.sum((2, 3), keepdim=True).clamp_min(1)
        out = torch.where(todo[:, None], mean.expand_as(x), out)
    return out


# -- inputs ------------------------------------------------------------------------------------------
def _as_bool_masks(value: Any, count: int, size: tuple[int, int]) -> torch.Tensor:
    """Masks (N, H, W) or (N, 1, H, W) or boxes (N, 4) -> bool (N, H, W) at the model's input size."""
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if tensor.dim() == 2 and tensor.shape[1] == 4 and tensor.dtype != torch.bool:
        return _boxes(tensor, count, size)
    if tensor.dim() == 4 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.dim() != 3:
        raise InputError(f"regions must be masks (N, H, W), boxes (N, 4) or a folder of masks; got shape {tuple(tensor.shape)}")
    if tensor.shape[0] != count:
        raise InputError(f"{tensor.shape[0]} region masks for {count} images; give one per image")
    masks = tensor > 0 if tensor.dtype != torch.bool else tensor
    if tuple(masks.shape[-2:]) != size:
        height, width = masks.shape[-2:]
        if height * size[1] != width * size[0]:
            raise InputError(f"region masks are {height}x{width} but the images are {size[0]}x{size[1]}; give masks at the "
                             f"model input's size (or a folder of mask pictures, cropped like the images)")
        masks = F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
    return masks.cpu()


def _boxes(boxes: torch.Tensor, count: int, size: tuple[int, int]) -> torch.Tensor:
    if boxes.shape[0] != count:
        raise InputError(f"{boxes.shape[0]} boxes for {count} images; give one (x0, y0, x1, y1) per image")
    height, width = size
    b = boxes.float()
    bad = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > width) | (b[:, 3] > height) | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise InputError(f"box {i} {tuple(b[i].tolist())} is not (x0, y0, x1, y1) with 0 <= x0 < x1 <= {width}, "
                         f"0 <= y0 < y1 <= {height} (pixels of the model's {width}x{height} input)")
    ys = torch.arange(height, dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, None, :] + 0.5
    return ((ys >= b[:, 1, None, None]) & (ys <= b[:, 3, None, None]) & (xs >= b[:, 0, None, None]) & (xs <= b[:, 2, None, None]))


def _mask_folder(model: Model, folder: Path, root: Path | None, paths: Sequence[str | None]) -> torch.Tensor:
    """The mask picture of every image, found by its path relative to the dataset folder (or its file
    name) with any image extension, cropped exactly as the model crops the image."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of masks")
    masks = []
    for path in paths:
        if path is None:
            raise InputError("a folder of masks needs images read from files (a folder or a list of paths)")
        relative = Path(path).relative_to(root) if root is not None else Path(Path(path).name)
        candidates = [folder / relative.with_suffix(ext) for ext in data.IMAGE_EXTENSIONS] + \
                     [folder / Path(path).with_suffix(ext).name for ext in data.IMAGE_EXTENSIONS]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise InputError(f"no mask for {path} in {folder} (looked for {relative.with_suffix('.png')})")
        picture = model.crop(found).convert("L")
        masks.append(torch.from_numpy(np.asarray(picture) > 127))
    return torch.stack(masks)


def _small(x: torch.Tensor, side: int = 96) -> tuple[int, int]:
    height, width = x.shape[-2:]
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


# -- the audit ---------------------------------------------------------------------------------------
def _pictures_of(dataset: Any) -> Any:
    return dataset[0] if data.is_pair(dataset) else dataset


def _audit_cost(context: CostContext) -> Cost:
    """Per picture: the method's map of it, and (with regions and the swap test) one forward of a composite; reading a
    folder of explanations costs no map."""
    model = context.model
    dataset = context.inputs.get("dataset")
    swap = 1.0 if context.options["swap_backgrounds"] and context.options.get("regions") is not None else 0.0
    if model is None:
        return Cost(0, per_item=True)
    if is_explanations(dataset):
        return Cost(swap, 0, "the maps are read from the folder" + ("; one composite per picture" if swap else ""), per_item=True)
    own = context.tool.options_model.model_fields
    given = {k: v for k, v in context.options.items() if k not in own}
    chosen = checked_method(context.options["method"], {**given, "layer": context.special.get("layer")}, who="audit")
    one = stand_in(model, _pictures_of(dataset))
    if one is None:
        return Cost(0, per_item=True)
    explain = chosen.cost(model, one)
    return Cost(explain.forwards + swap, explain.memory, f"per picture: {chosen.name}" + (" and one composite" if swap else ""),
                per_item=True)


@register("audit", family="workflow", takes="dataset", returns="audit", cost=_audit_cost,
          report=ReportSpec(title="Shortcut audit of the dataset", explanations=True,
                            note="Each class's explanations grouped by where they put the evidence (SpRAy, no masks needed): "
                                 "one group per way the model decides. A group whose maps sit on a corner, an edge or the "
                                 "background is a shortcut candidate: look at its pictures. (With object masks, from Python "
                                 "or the command line, the audit also measures how much of each map falls on the object.)"),
          layer=CAM_LAYER,
          paper="Zhang et al. 2016, Top-down Neural Attention by Excitation Backprop (the pointing game); Wang et al. "
                "2020, Score-CAM (its energy-based pointing game); Xiao et al. 2021, Noise or Signal: The Role of Image "
                "Backgrounds in Object Recognition (objects on other classes' backgrounds)",
          quick={"swaps": 16, "keep_examples": 8})
def audit(model: Model | torch.nn.Module, dataset: Any, *, method: Annotated[str, Field(min_length=1, max_length=64)] = "gradcam",
          regions: Path | PythonOnly[Any] | None = None,
          target: Any = None, layer: Any = None, labels: list[int] | list[str] | PythonOnly[Any] | None = None,
          threshold: Annotated[float, Field(gt=-1, lt=1)] = FLAG_CONCENTRATION, batch_size: BatchSize = None,
          swap_backgrounds: bool = True, swaps: Annotated[int, Field(ge=1, le=100_000)] = 256, seed: Seed = 0,
          keep_examples: Annotated[int, Field(ge=0, le=1024)] = 16,
          clusters: Annotated[int, Field(ge=1, le=64)] | None = None, max_clusters: Annotated[int, Field(ge=2, le=64)] = 8,
          save_explanations: Path | None = None, engine: Engine = "local", address: Address | None = None,
          actors: Actors = 2, threads_per_actor: Threads = 1, gpus_per_actor: Gpus = 0.0,
          progress: ProgressArg = None, **method_options: Any) -> Audit | StrategyAudit:
    """Shortcut audit of a dataset. With the objects' regions: do the model's explanations fall on the objects,
    and does its prediction follow the object or the background when objects are pasted onto other classes'
    backgrounds? Without: SpRAy (Lapuschkin et al. 2019) — each class's explanations clustered, so a strategy
    that looks at a corner, a tag or the background shows as its own cluster, no mask drawn.

    dataset:  a folder (ImageFolder layout: sub-folder = label), a list of paths or pictures, a
              preprocessed tensor (N, C, H, W) (labels from ``labels=``), an ``(images, labels)`` pair,
              or a torch Dataset of (image, label).
    regions:  the object in each image: bool masks (N, H, W) at the model's input size (or a multiple of
              it with the same aspect ratio), boxes (N, 4) as (x0, y0, x1, y1) in input pixels, or a
              folder of mask pictures mirroring the dataset's files (same relative path or name, white =
              object), cropped as the model crops the images.
    target:   the class each map explains: None (the model's top-1, default), ``"label"`` (the true
              class), an int, or one class per image (N,).
    layer:    the method's layer (default: its own choice). Other keyword options go to the method
              (``steps=``…), checked by its own options before any work.
    dataset may also be a folder written by :func:`convscope.explain_dataset` (its maps are read, not made again;
    the model is then used only for the swap test). Without regions, or with ``engine="ray"`` or
    ``save_explanations=``, the maps are made by ``explain_dataset`` first (bounded memory, resumable when saved).
    Returns an :class:`Audit` (with regions: ``.table()``, ``.verdict``, ``.flagged``, ``.worst(k)``, ``.figure()``)
    or a :class:`StrategyAudit` (without: ``.classes`` -> ``metrics.spray.Strategies``, ``.table()``, ``.verdict``).

    Options:
        method: the attribution method whose maps are located (default gradcam); it runs batched on the dataset.
        regions: where the object is in each picture: a folder of mask pictures (white = object) laid out like the
            dataset's files (a path on this machine: the command line and Python only, never the web app); from Python
            also masks (N, H, W) or boxes (N, 4) as (x0, y0, x1, y1) in input pixels.
        labels: the true class of each picture when the dataset does not say it (a tensor of pictures): class
            names or indices.
        threshold: a picture is flagged when its concentration (share - area) / (1 - area) is below this: how much
            more of the map the object holds than a uniform map would give it.
        batch_size: pictures per call of the method (none: about 16 of 224x224, 196 of 64x64).
        swap_backgrounds: also paste objects onto other classes' backgrounds and see whose class the model predicts.
        swaps: at most this many composites per class in the swap test (a uniform sample of the dataset).
        seed: which pictures the swap test samples and pairs; the same seed gives the same composites.
        keep_examples: the pictures, maps and regions of this many lowest-concentration pictures are kept for figures.
        clusters: without regions: this many strategies per class (none: the eigengap of SpRAy's spectrum suggests it).
        max_clusters: without regions: the most strategies per class the eigengap may suggest.
        save_explanations: a folder to keep the explanations in (explain_dataset's output: a rerun resumes and a later
            audit reads it); none: a temporary folder when they are needed.
        engine: "local" (this process) or "ray" (the maps made by Ray actors: pip install 'convscope[ray]').
        address: the Ray cluster to join: "auto", HOST:PORT or ray://HOST:PORT (none: a local one for this call).
        actors: Ray actors, each with its own copy of the model.
        threads_per_actor: CPU threads (and Ray CPUs) per actor.
        gpus_per_actor: GPUs per actor (1 on a GPU cluster; 0: CPU only).
    """
    wrapped = as_model(model)
    chosen = checked_method(method, {**method_options, "layer": layer}, who="audit")
    check_engine(engine, address)
    reading = dict(regions=regions, labels=labels, threshold=threshold, batch_size=batch_size, swap_backgrounds=swap_backgrounds,
                   swaps=swaps, seed=seed, keep_examples=keep_examples, clusters=clusters, max_clusters=max_clusters,
                   progress=progress)
    if is_explanations(dataset):
        return _from_explanations(wrapped, open_explanations(dataset), None, **reading)
    if regions is None or engine == "ray" or save_explanations is not None:
        with contextlib.ExitStack() as stack:
            folder = save_explanations or stack.enter_context(tempfile.TemporaryDirectory(prefix="convscope-audit-"))
            store = explain_dataset(wrapped, dataset, method, out=folder, target=target, layer=layer, labels=labels,
                                    batch_size=batch_size, engine=engine, address=address, actors=actors,
                                    threads_per_actor=threads_per_actor, gpus_per_actor=gpus_per_actor, progress=progress,
                                    thumbnail=THUMBNAIL if keep_examples or regions is None else 0, **method_options)
            return _from_explanations(wrapped, store, dataset, **reading)
    source = data.source(wrapped, dataset, labels)
    pictures = _pictures_of(dataset)
    if batch_size is None and isinstance(pictures, torch.Tensor) and pictures.dim() == 4:
        batch_size = default_rows(*pictures.shape[-2:], device=wrapped.device)
    if batch_size is None:  # pictures: the model's input size decides
        batch_size = default_rows(*(wrapped.input_size or (224, 224)), device=wrapped.device)
    targets = dataset_target(target, source.count)
    root = Path(dataset).expanduser() if isinstance(dataset, (str, os.PathLike)) and Path(dataset).expanduser().is_dir() else None
    region_folder = Path(regions).expanduser() if isinstance(regions, (str, os.PathLike)) else None
    all_regions = None if region_folder is not None else regions
    generator = torch.Generator().manual_seed(int(seed))
    rows: dict[str, list[Any]] = {k: [] for k in ("label", "predicted", "probability", "share", "area", "hit", "evidence",
                                                  "explained", "paths")}
    examples: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # the lowest concentrations so far, for figures
    keep: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # class -> reservoir of (picture, region)
    seen: dict[int, int] = {}
    start, offset = time.perf_counter(), 0
    with tracker(progress, source.count, "audit") as bar:
        for x, names, paths in source.batches(batch_size):
            count = x.shape[0]
            if region_folder is not None:
                masks = _mask_folder(wrapped, region_folder, root, paths)
            else:
                masks = _batch_regions(all_regions, offset, count, source.count, tuple(x.shape[-2:]))
            empty = (~masks.flatten(1).any(1)).nonzero()
            if len(empty):
                raise InputError(f"the region of image {offset + int(empty[0])} is empty; every image needs its object")
            label = torch.tensor([class_index(wrapped, n) for n in names], dtype=torch.long)
            explain = batch_target(targets, label, offset, count)
            result = chosen(wrapped, x, target=explain)
            maps = result.maps().float().cpu()  # (B, H, W)
            if maps.shape[-2:] != masks.shape[-2:]:
                maps = F.interpolate(maps[:, None], size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
            share, hit = region_share(maps, masks)
            classes, probabilities = top_predictions(wrapped, x, result)
            predicted, probability = classes[:, 0], probabilities[:, 0]
            area = masks.flatten(1).float().mean(1)
            rows["label"].append(label)
            rows["predicted"].append(predicted)
            rows["probability"].append(probability)
            rows["share"].append(share)
            rows["area"].append(area)
            rows["hit"].append(hit)
            rows["evidence"].append(maps.flatten(1).amax(1) > 0)
            rows["explained"].append(predicted if result.target is None else result.target.cpu().long())
            rows["paths"] += list(paths)
            _keep_examples(examples, lambda index, x=x: _pictures(wrapped, x[index.to(x.device)], _small(x)).numpy(), maps, masks,
                           (share - area) / (1 - area).clamp_min(1e-6), offset, keep_examples)
            if swap_backgrounds:
                classes = torch.where(label >= 0, label, predicted)
                _reservoir(keep, seen, x.detach().cpu(), masks, classes, swaps, generator)
            offset += count
            bar.advance(count)
    cat = {k: torch.cat(v).numpy() if k != "paths" else v for k, v in rows.items()}
    examples = {i: examples[i][1:] for i in sorted(examples)}
    classes = int(max(cat["predicted"].max(), cat["label"].max())) + 1
    names = list(wrapped.labels) if wrapped.labels else [f"class {i}" for i in range(classes)]
    swap = _swap_test(wrapped, keep, names, batch_size, generator, progress) if swap_backgrounds else None
    return Audit(chosen.name, float(threshold), names, cat["label"], cat["predicted"], cat["probability"].astype(np.float32),
                 cat["share"].astype(np.float32), cat["area"].astype(np.float32), cat["hit"], cat["paths"],
                 examples, swap, time.perf_counter() - start, cat["evidence"], cat["explained"])


def _batch_regions(regions: Any, offset: int, count: int, total: int, size: tuple[int, int]) -> torch.Tensor:
    """This batch's slice of masks/boxes given for the whole dataset."""
    if isinstance(regions, (list, tuple)) and regions and not isinstance(regions[0], (int, float)):
        if len(regions) != total:
            raise InputError(f"{len(regions)} regions for {total} images; give one per image")
        part = regions[offset:offset + count]
        first = np.asarray(part[0].cpu() if isinstance(part[0], torch.Tensor) else part[0])
        stacked = np.stack([np.asarray(p.cpu() if isinstance(p, torch.Tensor) else p) for p in part]) if first.ndim else np.asarray(part)
        return _as_bool_masks(stacked, count, size)
    tensor = regions if isinstance(regions, torch.Tensor) else torch.as_tensor(np.asarray(regions))
    if tensor.dim() == 0 or tensor.shape[0] != total:
        raise InputError(f"{tensor.shape[0] if tensor.dim() else 0} regions for {total} images; give one per image")
    return _as_bool_masks(tensor[offset:offset + count], count, size)


def _keep_examples(examples: dict[int, Any], pictures_of: Any, maps: torch.Tensor, masks: torch.Tensor,
                   concentration: torch.Tensor, offset: int, limit: int) -> None:
    """Keep small copies of the ``limit`` lowest-concentration images seen so far (only those are converted):
    ``pictures_of(index)`` gives the chosen rows' uint8 pictures (k, h, w, 3); maps and regions follow their size."""
    if limit <= 0:
        return
    worst_kept = max((c for c, *_ in examples.values()), default=math.inf) if len(examples) >= limit else math.inf
    order = torch.argsort(concentration, stable=True)[:limit]
    chosen = [int(i) for i in order if float(concentration[i]) < worst_kept or len(examples) < limit]
    if not chosen:
        return
    index = torch.tensor(chosen)
    pictures = np.asarray(pictures_of(index))
    small = tuple(pictures.shape[1:3])
    same = tuple(maps.shape[-2:]) == small
    these = maps[index] if same else F.interpolate(maps[index][:, None], size=small, mode="bilinear", align_corners=False)[:, 0]
    regions = masks[index] if same else F.interpolate(masks[index][:, None].float(), size=small, mode="nearest")[:, 0] > 0.5
    for k, i in enumerate(chosen):
        examples[offset + i] = (float(concentration[i]), pictures[k], these[k].numpy(), regions[k].numpy())
    while len(examples) > limit:
        del examples[max(examples, key=lambda j: (examples[j][0], j))]


def _pictures(model: Model, x: torch.Tensor, small: tuple[int, int]) -> torch.Tensor:
    shrunk = x.detach().float().cpu()
    if tuple(shrunk.shape[-2:]) != small:
        shrunk = F.interpolate(shrunk, size=small, mode="bilinear", align_corners=False, antialias=True)
    return torch.from_numpy(to_uint8(model.denormalize(shrunk)))


def _reservoir(keep: dict[int, list[Any]], seen: dict[int, int], x: torch.Tensor, masks: torch.Tensor,
               classes: torch.Tensor, limit: int, generator: torch.Generator) -> None:
    """Keep a uniform random sample of at most ``limit`` (picture, region) pairs per class (Vitter's
    algorithm R), so the swap test needs bounded memory on any dataset size."""
    for i, c in enumerate(classes.tolist()):
        seen[c] = seen.get(c, 0) + 1
        bucket = keep.setdefault(c, [])
        if len(bucket) < limit:
            bucket.append((x[i], masks[i]))
        else:
            j = int(torch.randint(0, seen[c], (1,), generator=generator))
            if j < limit:
                bucket[j] = (x[i], masks[i])


def _swap_test(model: Model, keep: dict[int, list[Any]], names: list[str], batch_size: int,
               generator: torch.Generator, progress: ProgressArg = None) -> SwapTest:
    """Each kept object onto the (object-free) background of a kept picture of another class (progress: one
    unit per composite)."""
    classes = sorted(c for c in keep if c >= 0)
    objects, backgrounds, predicted, examples = [], [], [], []
    if len(classes) < 2:
        return SwapTest(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), names)
    pairs = []
    for c in classes:
        others = [o for o in classes if o != c]
        for picture, region in keep[c]:
            other = others[int(torch.randint(0, len(others), (1,), generator=generator))]
            bucket = keep[other]
            back, back_region = bucket[int(torch.randint(0, len(bucket), (1,), generator=generator))]
            pairs.append((picture, region, back, back_region, c, other))
    pairs = [pairs[i] for i in torch.randperm(len(pairs), generator=generator).tolist()]  # classes mixed in every batch
    with tracker(progress, len(pairs), "audit: background swaps") as bar:
        for start in range(0, len(pairs), batch_size):
            _swap_batch(model, pairs[start:start + batch_size], predicted, objects, backgrounds, examples)
            bar.advance(len(pairs[start:start + batch_size]))
    return SwapTest(np.asarray(objects), np.asarray(backgrounds), torch.cat(predicted).numpy(), names, examples)


def _swap_batch(model: Model, part: list[Any], predicted: list[torch.Tensor], objects: list[int], backgrounds: list[int],
                examples: list[Any]) -> None:
    """One batch of composites: the objects of ``part`` on its backgrounds (their own objects filled in), predicted."""
    pictures = torch.stack([p[0] for p in part])
    regions = torch.stack([p[1] for p in part])
    backs = fill_region(torch.stack([p[2] for p in part]), torch.stack([p[3] for p in part]))
    composite = torch.where(regions[:, None], pictures, backs)
    guesses = model.forward(composite.to(model.device)).argmax(1).cpu()
    predicted.append(guesses)
    objects += [p[4] for p in part]
    backgrounds += [p[5] for p in part]
    if len(examples) < EXAMPLES:
        shown = to_uint8(model.denormalize(composite[:EXAMPLES - len(examples)].float().cpu()))
        examples += [(shown[i], part[i][4], part[i][5], int(guesses[i])) for i in range(len(shown))]


# -- reading explanations from disk (explain_dataset's folder) ------------------------------------------------
MIN_PICTURES = 4  # SpRAy clusters a class with at least this many pictures
POOLED = 32  # maps read from a folder are pooled to at most POOLED x POOLED (positive part) before clustering


class _StoredThumbnails:
    """The thumbnails of the pictures ``rows`` of a folder of explanations, read one by one when asked (only a
    cluster's examples are)."""

    def __init__(self, store: Explanations, rows: np.ndarray) -> None:
        self.store, self.rows = store, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.store.thumbnails([int(self.rows[i])])[0]


def strategies(explanations: Explanations | str | os.PathLike, *, clusters: int | None = None, max_clusters: int = 8,
               seed: int = 0, limit: int = 5000) -> StrategyAudit:
    """SpRAy over a folder written by ``explain_dataset``: each explained class's maps clustered (see
    :func:`convscope.metrics.spray.spray`), read one shard at a time and pooled to at most 32x32 (N x 4 KB in memory)."""
    store = open_explanations(explanations)
    start = time.perf_counter()
    table = store.table(["index", "id", "explained"])
    ids = table.column("id").to_pylist()
    explained = table.column("explained").to_numpy()
    pooled = []
    for _, maps, _ in store.shards():
        positive = torch.from_numpy(maps).clamp_min(0)[:, None]
        if max(positive.shape[-2:]) > POOLED:
            positive = F.adaptive_avg_pool2d(positive, (min(POOLED, positive.shape[-2]), min(POOLED, positive.shape[-1])))
        pooled.append(positive[:, 0].numpy())
    every = np.concatenate(pooled)
    names = store.class_names
    found: dict[str, Strategies] = {}
    skipped: dict[str, int] = {}
    thumbnails = bool(store.manifest.get("thumbnail"))
    for c in sorted(set(explained.tolist())):
        rows = np.flatnonzero(explained == c)
        name = names[c] if names and 0 <= c < len(names) else f"class {c}"
        if rows.size < MIN_PICTURES:
            skipped[name] = int(rows.size)
            continue
        found[name] = spray(every[rows], pictures=_StoredThumbnails(store, rows) if thumbnails else None,
                            ids=[ids[i] for i in rows], clusters=clusters, max_clusters=max_clusters, seed=seed, limit=limit,
                            name=name, method=store.method)
    return StrategyAudit(store.method, found, skipped, len(store), str(store.folder), time.perf_counter() - start)


def _from_explanations(model: Model, store: Explanations, dataset: Any, *, regions: Any, labels: Any, threshold: float,
                       batch_size: int | None, swap_backgrounds: bool, swaps: int, seed: int, keep_examples: int,
                       clusters: int | None, max_clusters: int, progress: ProgressArg) -> Audit | StrategyAudit:
    """The audit of explanations on disk: SpRAy without regions, the region audit (and swap test) with them."""
    if regions is None:
        return strategies(store, clusters=clusters, max_clusters=max_clusters, seed=seed)
    start = time.perf_counter()
    table = store.table(["index", "id", "label_index", "predicted", "probability", "explained"])
    ids = table.column("id").to_pylist()
    paths = [None if i.startswith("#") else i for i in ids]
    label = table.column("label_index").to_numpy().astype(np.int64)
    predicted = table.column("predicted").to_numpy().astype(np.int64)
    _channels, height, width = store.manifest["dataset"]["shape"]
    size = (int(height), int(width))
    root = Path(dataset).expanduser() if isinstance(dataset, (str, os.PathLike)) and Path(dataset).expanduser().is_dir() else None
    if root is None or is_explanations(root):
        stored_root = store.manifest["dataset"].get("root")  # the pictures' folder, as explain_dataset read it
        root = Path(stored_root) if stored_root else None
    region_folder = Path(regions).expanduser() if isinstance(regions, (str, os.PathLike)) else None
    total = len(store)
    columns: dict[str, list[torch.Tensor]] = {"share": [], "area": [], "hit": [], "evidence": []}
    examples: dict[int, Any] = {}
    for index, maps, thumbs in store.shards(thumbnails=True):
        offset, count = int(index[0]), len(index)
        if region_folder is not None:
            masks = _mask_folder(model, region_folder, root, paths[offset:offset + count])
        else:
            masks = _batch_regions(regions, offset, count, total, size)
        up = F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        share, hit = region_share(up, masks)
        area = masks.flatten(1).float().mean(1)
        columns["share"].append(share)
        columns["area"].append(area)
        columns["hit"].append(hit)
        columns["evidence"].append(up.flatten(1).amax(1) > 0)
        if thumbs is not None:
            _keep_examples(examples, lambda rows, thumbs=thumbs: thumbs[rows.numpy()], up, masks,
                           (share - area) / (1 - area).clamp_min(1e-6), offset, keep_examples)
    cat = {k: torch.cat(v).numpy() for k, v in columns.items()}
    names = store.class_names or (list(model.labels) if model.labels else [f"class {i}" for i in range(int(predicted.max()) + 1)])
    swap = None
    if swap_backgrounds:
        swap = _stored_swap_test(model, store, dataset, labels, regions, region_folder, root, paths, label, predicted, names,
                                 swaps, seed, batch_size, size, progress)
    return Audit(store.method, float(threshold), names, label, predicted, table.column("probability").to_numpy().astype(np.float32),
                 cat["share"].astype(np.float32), cat["area"].astype(np.float32), cat["hit"], paths,
                 {i: examples[i][1:] for i in sorted(examples)}, swap, time.perf_counter() - start, cat["evidence"],
                 table.column("explained").to_numpy().astype(np.int64))


def _stored_swap_test(model: Model, store: Explanations, dataset: Any, labels: Any, regions: Any, region_folder: Path | None,
                      root: Path | None, paths: list[str | None], label: np.ndarray, predicted: np.ndarray, names: list[str],
                      swaps: int, seed: int, batch_size: int | None, size: tuple[int, int], progress: ProgressArg) -> SwapTest | None:
    """The swap test on explanations from disk: per class (its label, else its prediction) a seeded sample of at
    most ``swaps`` pictures, read again (from the dataset given, or the stored paths) with their regions. None
    when the pictures cannot be read again (a folder of explanations of a tensor, without the tensor)."""
    if dataset is not None and not is_explanations(dataset):
        source = data.source(model, dataset, labels)
    elif all(p is not None and Path(p).is_file() for p in paths):
        source = data.from_pictures(model, paths, [None] * len(paths), list(paths), None)
    else:
        return None
    if fingerprint(model) != store.manifest.get("weights"):
        raise InputError(f"{store.folder} was explained by another model ({store.manifest.get('model')}, other weights); the swap "
                         f"test runs the model: pass that model, or swap_backgrounds=False")
    generator = torch.Generator().manual_seed(int(seed))
    classes = np.where(label >= 0, label, predicted)
    keep: dict[int, list[Any]] = {}
    for c in sorted(set(classes.tolist())):
        rows = np.flatnonzero(classes == c)
        picked = sorted(rows[torch.randperm(rows.size, generator=generator)[:swaps].numpy()].tolist())
        for i in picked:
            x = source.read(i, i + 1)[0]
            if region_folder is not None:
                mask = _mask_folder(model, region_folder, root, [paths[i]])
            else:
                mask = _batch_regions(regions, i, 1, len(store), size)
            keep.setdefault(int(c), []).append((x[0].detach().cpu(), mask[0]))
    rows = batch_size or default_rows(*size, device=model.device)
    return _swap_test(model, keep, names, rows, generator, progress)
