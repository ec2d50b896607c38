"""Targets: which output score a method explains, with strict batch semantics.

``target`` is ``None`` (each image's top-1 class), an ``int`` (that class for every image), a sequence
or 1-D tensor of B ints (one per image), or a callable ``output -> (B,)`` scores — which is how
regression, sums of classes or a segmentation region use the same code path (pytorch-grad-cam's
idea). Small ready-made callables are below.

Models whose output is not a (B, K) tensor — segmentation models (``{"out": (B, K, H, W)}`` or a plain
(B, K, H, W)), detectors (a list of B dicts with ``boxes``, ``labels``, ``scores``) — are explained through
:func:`segmentation` and :func:`box`. These are :class:`OutputTarget` objects: what they score (the pixels
predicted as the class; the detection's label) is fixed from the call's clean forward by
:func:`resolve_target`, so that every later forward of the same call (perturbed pictures, path points,
noisy copies) scores the same pixels and the same object.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .errors import TargetError

__all__ = ["BoxTarget", "OutputTarget", "SegmentationTarget", "Target", "box", "box_iou", "check_target", "class_probability",
           "class_score", "fixed_target", "output_rows", "output_sum", "resolve_target", "row_scores", "segmentation",
           "select_rows"]

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
    if isinstance(target, OutputTarget):
        target.check(batch)
        return
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


def _is_detections(output: Any) -> bool:
    return isinstance(output, (list, tuple)) and bool(output) and all(isinstance(d, dict) and "boxes" in d for d in output)


def _callable_advice(output: Any) -> str:
    """What to pass instead of a class index for an output that is not (B, K) — one clause, by the output's shape."""
    if _is_detections(output):
        return ("the model is a detector (a list of dicts with boxes, labels, scores); pass target=cs.targets.box((x1, y1, x2, y2), "
                "label=k) to explain one detection (command line: --box X1,Y1,X2,Y2 --box-label K)")
    if isinstance(output, dict):
        maps = [k for k, v in output.items() if isinstance(v, torch.Tensor) and v.dim() == 4]
        if maps:
            key = "" if "out" in maps else f", output_key={maps[0]!r}"
            return (f"the model returns a dict of (B, K, H, W) maps ({', '.join(map(str, output))}); pass "
                    f"target=cs.targets.segmentation(k{key}) to explain class k's pixels (command line: --seg-class K)")
    if isinstance(output, torch.Tensor) and output.dim() == 4:
        return (f"the model returns (B, K, H, W) = {tuple(output.shape)} maps, not (B, K) scores; pass "
                f"target=cs.targets.segmentation(k) to explain class k's pixels (command line: --seg-class K)")
    if isinstance(output, torch.Tensor):
        return f"class targets need a (B, K) model output, got {tuple(output.shape)}; pass a callable target: output -> (B,) scores"
    return f"the model returns {type(output).__name__}, not a tensor; pass a callable target: output -> (B,) scores"


def _callable_scores(target: Callable[..., torch.Tensor], output: Any, batch: int | None) -> torch.Tensor:
    """A callable's scores, checked: a tensor (B,) ((B, 1) accepted) — B the output's rows when known."""
    scores = target(output)
    if not isinstance(scores, torch.Tensor):
        raise TargetError(f"target callable must return a tensor with one score per image, got {type(scores).__name__}")
    if scores.dim() == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.dim() != 1 or (batch is not None and scores.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "(B,)"
        raise TargetError(f"target callable must return one score per image, shape {want}, got {tuple(scores.shape)}")
    return scores


def output_rows(output: Any) -> int | None:
    """The number of pictures in a model's output: a tensor's first dim, a list's length (a detector's one dict
    per picture), the first tensor's rows of a dict or tuple; None when unknown."""
    if isinstance(output, torch.Tensor):
        return int(output.shape[0]) if output.dim() else None
    if _is_detections(output):
        return len(output)
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (list, tuple)) else ()
    for value in values:
        rows = output_rows(value)
        if rows is not None:
            return rows
    return None


def resolve_target(target: Target, output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores (B,) to differentiate and the explained classes (B,) LongTensor (None for callables).

    ``output`` is the model's output for the batch: (B, K) for class targets; anything a callable reads
    (a dict, a list of detections, (B, K, H, W) maps) otherwise. An :class:`OutputTarget` is fixed here,
    from this (clean) forward; :func:`fixed_target` then gives the fixed copy.
    """
    if isinstance(target, OutputTarget):
        fixed = target.fixed_on(output)
        target._resolved = fixed
        return _callable_scores(fixed, output, output_rows(output)), None
    is_callable = callable(target) and not isinstance(target, torch.Tensor)
    if not isinstance(output, torch.Tensor):
        if not is_callable:
            raise TargetError(_callable_advice(output))
        return _callable_scores(target, output, output_rows(output)), None
    batch = output.shape[0] if output.dim() else 0
    check_target(target, batch)
    if is_callable:
        return _callable_scores(target, output, batch), None
    if output.dim() != 2:
        raise TargetError(_callable_advice(output))
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
    """The target once resolved by a first forward: the explained classes (B,) for class targets, the fixed
    copy of an :class:`OutputTarget` (what :func:`resolve_target` fixed), the callable itself otherwise — what
    every later forward of the same call scores (perturbed pictures, interpolation points, noisy copies)."""
    if classes is not None:
        return classes
    if isinstance(target, OutputTarget):
        return target._resolved or target
    return target


def row_scores(output: Any, fixed: Target, rows: torch.Tensor | int | None = None, kind: str = "logit") -> torch.Tensor:
    """The fixed target's score (n,) float32 for each row of ``output`` — the one place a class is scored.

    ``fixed``: classes (B,) from :func:`fixed_target`, or a callable (called on ``output`` as it is, ``kind``
    ignored; an :class:`OutputTarget` is told which picture each row is). ``rows`` (n,): the image each output
    row belongs to (default: row i is image i; a single int broadcasts). ``kind``: "logit" (the raw score) or
    "probability" (the softmax probability of the class).
    """
    if isinstance(fixed, torch.Tensor):
        if not isinstance(output, torch.Tensor):
            raise TargetError(_callable_advice(output))
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
    if isinstance(fixed, OutputTarget):
        return _callable_scores(lambda out: fixed(out, rows=rows), output, output_rows(output)).float()
    scores, _ = resolve_target(fixed, output)
    return scores.float()


def select_rows(output: Any, index: slice | torch.Tensor) -> Any:
    """The rows ``index`` of a model's output, whatever its structure: a tensor's rows, a detector's dicts, the
    same rows of every tensor in a dict or tuple (what a method that ran several batches in one forward needs)."""
    if isinstance(output, torch.Tensor):
        return output[index]
    if _is_detections(output):
        picks = range(len(output))[index] if isinstance(index, slice) else index.tolist()
        return [output[i] for i in picks]
    if isinstance(output, dict):
        return type(output)((k, select_rows(v, index)) for k, v in output.items())
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # a namedtuple
        return type(output)(*(select_rows(v, index) for v in output))
    if isinstance(output, (list, tuple)):
        return type(output)(select_rows(v, index) for v in output)
    return output


# -- output targets: segmentation maps and detections -------------------------------------------------------
def _row_index(rows: torch.Tensor | int | None, count: int, fixed: int, device: torch.device) -> torch.Tensor:
    """Which of the ``fixed`` pictures each of ``count`` output rows is, (count,) long."""
    if rows is None:
        if fixed not in (1, count):
            raise TargetError(f"the target was fixed for {fixed} pictures but the output has {count} rows; "
                              f"resolve it on the same batch (cs.targets.resolve_target)")
        return torch.arange(count, device=device) if fixed == count else torch.zeros(count, dtype=torch.long, device=device)
    index = torch.as_tensor(rows, device=device).long().reshape(-1)
    if index.numel() == 1:
        index = index.expand(count)
    if fixed == 1:
        return torch.zeros(count, dtype=torch.long, device=device)
    return index


class OutputTarget:
    """A ready-made callable target for a structured output: ``target(output, rows=None) -> (n,)`` scores.

    What it scores that the clean picture decides (the predicted pixels, the detection's label) is fixed by
    :meth:`fixed_on` from the call's clean forward; ``rows`` (n,) says which picture each output row is, for
    per-picture state (a single int: every row is that picture; None: row i is picture i).
    """

    _resolved: OutputTarget | None = None

    def check(self, batch: int) -> None:
        """Errors found before the forward (per-picture state of the wrong length)."""
        for name, count in self._per_picture().items():
            if count not in (1, batch):
                raise TargetError(f"{type(self).__name__}: {name} has {count} entries for a batch of {batch}; "
                                  f"give one, or one per picture")

    def _per_picture(self) -> dict[str, int]:
        return {}

    def fixed_on(self, output: Any) -> OutputTarget:
        """A copy with what the clean forward decides fixed (itself when nothing is left to fix)."""
        return self

    def __call__(self, output: Any, rows: torch.Tensor | int | None = None) -> torch.Tensor:
        raise NotImplementedError


class SegmentationTarget(OutputTarget):
    """Class ``class_index``'s scores (B, K, H, W)[:, k] summed over a region (see :func:`segmentation`)."""

    def __init__(self, class_index: int, mask: Any = None, output_key: str = "out") -> None:
        self.class_index = _as_index(class_index, "class_index")
        if self.class_index < 0:
            raise TargetError(f"class_index must be >= 0, got {self.class_index}")
        self.output_key = output_key
        self.mask = None if mask is None else _as_mask(mask)
        self.predicted: torch.Tensor | None = None  # (B, H, W) float: the pixels predicted as the class, fixed

    def __repr__(self) -> str:
        region = "a mask" if self.mask is not None else "the predicted pixels"
        return f"segmentation({self.class_index}, over {region})"

    def _per_picture(self) -> dict[str, int]:
        return {"mask": self.mask.shape[0]} if self.mask is not None and self.mask.dim() == 3 else {}

    def logits(self, output: Any) -> torch.Tensor:
        """The (n, K, H, W) maps in ``output``: a dict's ``output_key``, a tuple's first map, or the tensor itself."""
        maps = output
        if isinstance(output, dict):
            if self.output_key not in output:
                raise TargetError(f"the model's output has no key {self.output_key!r} (keys: {', '.join(map(str, output))}); "
                                  f"pass output_key=")
            maps = output[self.output_key]
        elif isinstance(output, (list, tuple)):
            found = [v for v in output if isinstance(v, torch.Tensor) and v.dim() == 4]
            maps = found[0] if found else output
        if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
            shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise TargetError(f"cs.targets.segmentation needs (B, K, H, W) class maps from the model, got {shape}; "
                              f"use a callable target for this output")
        if not 0 <= self.class_index < maps.shape[1]:
            raise TargetError(f"class {self.class_index} is out of range for a model with {maps.shape[1]} classes "
                              f"(0..{maps.shape[1] - 1})")
        return maps

    def _predicted_region(self, maps: torch.Tensor) -> torch.Tensor:
        return (maps.detach().argmax(dim=1) == self.class_index).float()

    def fixed_on(self, output: Any) -> SegmentationTarget:
        maps = self.logits(output)
        if self.mask is not None or self.predicted is not None:
            self._region(maps)  # the size check, before any work
            return self
        region = self._predicted_region(maps)
        empty = torch.nonzero(region.sum(dim=(1, 2)) == 0).flatten().tolist()
        if empty:
            b = empty[0]
            seen = torch.bincount(maps[b].detach().argmax(dim=0).flatten(), minlength=maps.shape[1])
            raise TargetError(f"class {self.class_index} is predicted at no pixel of picture {b} (the model predicts mostly "
                              f"class {int(seen.argmax())} there); pass mask= (the pixels to explain) or another class")
        fixed = copy.copy(self)
        fixed.predicted = region
        fixed._resolved = None
        return fixed

    def _region(self, maps: torch.Tensor) -> torch.Tensor:
        region = self.mask if self.mask is not None else self.predicted
        if region is None:
            region = self._predicted_region(maps)  # called directly, unfixed: this output's own prediction
        if tuple(region.shape[-2:]) != tuple(maps.shape[-2:]):
            raise TargetError(f"the mask is {tuple(region.shape[-2:])} but the model's output maps are "
                              f"{tuple(maps.shape[-2:])}; give a mask (H, W) or (B, H, W) of the output's size")
        return region

    def __call__(self, output: Any, rows: torch.Tensor | int | None = None) -> torch.Tensor:
        maps = self.logits(output)
        region = self._region(maps).to(maps.device)
        if region.dim() == 3:
            region = region[_row_index(rows, maps.shape[0], region.shape[0], maps.device)]
        return (maps[:, self.class_index].float() * region).sum(dim=(-2, -1))

    def select(self, rows: torch.Tensor) -> SegmentationTarget:
        """The fixed target for a batch whose row i is picture ``rows[i]``."""
        chosen = copy.copy(self)
        if self.mask is not None and self.mask.dim() == 3 and self.mask.shape[0] > 1:
            chosen.mask = self.mask[rows.to(self.mask.device)]
        if self.predicted is not None and self.predicted.shape[0] > 1:
            chosen.predicted = self.predicted[rows.to(self.predicted.device)]
        chosen._resolved = None
        return chosen


def _as_mask(mask: Any) -> torch.Tensor:
    try:
        region = torch.as_tensor(mask)
    except (TypeError, ValueError, RuntimeError):
        raise TargetError(f"mask must be a tensor or array (H, W) or (B, H, W), got {type(mask).__name__}") from None
    if region.dim() not in (2, 3):
        raise TargetError(f"mask must be (H, W) or (B, H, W), got shape {tuple(region.shape)}")
    region = region.detach().float()
    if region.numel() and (region.min() < 0 or region.max() > 1 or not torch.isfinite(region).all()):
        raise TargetError("mask values must be booleans or weights between 0 and 1")
    return region


def segmentation(class_index: int, mask: Any = None, output_key: str = "out") -> SegmentationTarget:
    """Explain a segmentation model's class ``class_index``: its scores summed over a region, (B,).

    ``mask``: bool or 0-1 weights (H, W) (every picture) or (B, H, W), the size of the model's output maps;
    None: the pixels the model predicts as the class (argmax over classes) on the clean picture — fixed then,
    so that perturbed pictures are scored on the same pixels. Reads ``output[output_key]`` of a dict
    output (torchvision's ``{"out": ..., "aux": ...}``), the first (B, K, H, W) of a tuple, or a plain
    (B, K, H, W) tensor (segmentation-models-pytorch). Example: ``cs.gradcam(model, x, target=cs.targets.segmentation(15),
    layer="backbone.layer4")``.
    """
    return SegmentationTarget(class_index, mask, output_key)


class BoxTarget(OutputTarget):
    """The score of the detection matching a box (see :func:`box`)."""

    def __init__(self, box: Any, label: int | None = None, iou: float = 0.5) -> None:
        try:
            boxes = torch.as_tensor(box, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise TargetError(f"box must be 4 numbers (x1, y1, x2, y2) or a (B, 4) tensor, got {type(box).__name__}") from None
        boxes = boxes.detach().reshape(1, 4) if boxes.numel() == 4 and boxes.dim() == 1 else boxes.detach()
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise TargetError(f"box must be 4 numbers (x1, y1, x2, y2) or a (B, 4) tensor, got shape {tuple(boxes.shape)}")
        if not torch.isfinite(boxes).all() or (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
            raise TargetError(f"box must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1 in input pixels, got {boxes.tolist()}")
        if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0 < iou <= 1:
            raise TargetError(f"iou must be a number in (0, 1], got {iou!r}")
        self.boxes = boxes
        self.label = None if label is None else _as_index(label, "label")
        self.iou = float(iou)
        self.labels: torch.Tensor | None = None  # (B,) the label fixed per picture (-1: any), when label is None
        self._fixed = False  # fixed on a clean forward: later forwards (perturbed, noisy) may match nothing

    def __repr__(self) -> str:
        return f"box({[round(v, 1) for v in self.boxes[0].tolist()]}, label={self.label})"

    def _per_picture(self) -> dict[str, int]:
        return {"box": self.boxes.shape[0]}

    @staticmethod
    def detections(output: Any) -> list[dict[str, torch.Tensor]]:
        if not _is_detections(output):
            raise TargetError("cs.targets.box reads a detector's output: a list of dicts with 'boxes' and 'scores' (torchvision "
                              f"detectors in eval mode), got {type(output).__name__}")
        return list(output)

    def matches(self, detection: dict[str, torch.Tensor], box: torch.Tensor, label: int) -> torch.Tensor:
        """(N,) bool: the detections with IoU >= ``iou`` with ``box`` and the label (any when ``label`` < 0)."""
        boxes = detection["boxes"].detach().float()
        ok = box_iou(boxes, box.to(boxes.device)[None])[:, 0] >= self.iou
        if label >= 0 and "labels" in detection:
            ok &= detection["labels"].to(ok.device) == label
        return ok

    def fixed_on(self, output: Any, require_match: bool = True) -> BoxTarget:
        """The label fixed per picture from the clean forward's best match (when ``label`` is None); with
        ``require_match`` a picture where no detection matches the box is refused (its score would be 0 and
        every gradient map blank)."""
        detections = self.detections(output)
        require_match = require_match and not self._fixed  # once fixed (SmoothGrad's noisy copies), no match scores 0
        index = _row_index(None, len(detections), self.boxes.shape[0], self.boxes.device)
        labels = []
        for d, b in zip(detections, index.tolist()):
            fixed_label = self.label if self.label is not None else -1 if self.labels is None else int(self.labels[b])
            ok = self.matches(d, self.boxes[b], fixed_label)
            if require_match and not ok.any():
                found = d["boxes"].detach().float()
                best = float(box_iou(found, self.boxes[b].to(found.device)[None]).max()) if found.numel() else 0.0
                which = "" if fixed_label < 0 else f" with label {fixed_label}"
                raise TargetError(f"no detection{which} matches the box {[round(v, 1) for v in self.boxes[b].tolist()]} in "
                                  f"picture {b} (IoU >= {self.iou:g}; the detector found {len(found)} boxes, best IoU "
                                  f"{best:.2f}); pick a box from its output, lower iou= or the detector's score threshold")
            if ok.any() and "labels" in d:
                best_match = torch.nonzero(ok).flatten()[d["scores"].detach()[ok].argmax()]
                labels.append(int(d["labels"][best_match]))
            else:
                labels.append(fixed_label)
        if self._fixed:
            return self
        fixed = copy.copy(self)
        if self.label is None and self.labels is None:
            fixed.labels = torch.tensor(labels, dtype=torch.long)
        fixed._resolved, fixed._fixed = None, True
        return fixed

    def __call__(self, output: Any, rows: torch.Tensor | int | None = None) -> torch.Tensor:
        detections = self.detections(output)
        count = len(detections)
        boxes = self.boxes[_row_index(rows, count, self.boxes.shape[0], self.boxes.device)]
        if self.label is not None:
            labels = [self.label] * count
        elif self.labels is not None:
            labels = self.labels[_row_index(rows, count, self.labels.shape[0], self.labels.device)].tolist()
        else:
            labels = [-1] * count
        scores = []
        for d, box_, label in zip(detections, boxes, labels):
            values = d["scores"]
            ok = self.matches(d, box_, label)
            scores.append(values[ok.to(values.device)].max() if ok.any() else values.sum() * 0)  # 0, still on the graph
        return torch.stack([s.float() for s in scores])

    def select(self, rows: torch.Tensor) -> BoxTarget:
        """The fixed target for a batch whose row i is picture ``rows[i]``."""
        chosen = copy.copy(self)
        if self.boxes.shape[0] > 1:
            chosen.boxes = self.boxes[rows.to(self.boxes.device)]
        if self.labels is not None and self.labels.shape[0] > 1:
            chosen.labels = self.labels[rows.to(self.labels.device)]
        chosen._resolved = None
        return chosen


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boxes (N, 4) and (M, 4) in (x1, y1, x2, y2), (N, M)."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp_min(0).prod(dim=-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(dim=-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(dim=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp_min(1e-12)


def box(box: Any, label: int | None = None, iou: float = 0.5) -> BoxTarget:
    """Explain one detection of a detector: the score (B,) of the detection matching ``box``.

    ``box``: (x1, y1, x2, y2) in input pixels (or a (B, 4) tensor, one per picture). Among the detections
    with IoU >= ``iou`` with it and label ``label`` (any label when None — then the label of the best match
    on the clean picture, fixed for the rest of the call), the highest score; 0 (still on the graph when the
    detector's scores are) when none matches. Reads the list of dicts torchvision detectors return in eval
    mode (``boxes`` (N, 4), ``labels`` (N,), ``scores`` (N,)). Example: ``cs.gradcam(detector, x,
    target=cs.targets.box((40, 30, 120, 90)), layer="backbone.body.layer4")``.
    """
    return BoxTarget(box, label, iou)


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
