"""D-RISE: which pixels keep a detector's detection, the detector treated as a black box, (B, 1, H, W).

Petsiuk et al. 2021, "Black-box Explanation of Object Detectors via Saliency Maps". The picture is seen
through random smooth masks (RISE's masks: ``perturbation._RiseMasks``, the same bank and seed rule); each
masked picture's detections are compared with the target detection, and the map is the masks weighted by
that similarity, S = sum_i w_i M_i / (N p) — RISE's normalization, so the two maps read alike.

The paper's similarity of a detection d_j to the target d_t is IoU(L_t, L_j) · cos(P_t, P_j) · O_j, and a
mask's weight the largest over the masked picture's detections. torchvision detectors return, per
detection, only a box, one label and one score (no class vector, no separate objectness), so here

    w = max_j IoU(box_t, box_j) · score_j · [label_j == label_t]

— P_t is one-hot for the target's label, so cos(P_t, P_j) = P_j[label_t] / |P_j|, known only when the
detector reports label_t (then it is score_j, the class probability for Faster R-CNN and SSD, the sigmoid
class score for RetinaNet, sqrt(class x centerness) for FCOS, which also stand for the objectness); any
label when the target has none. On a model that is not a detector the weight is the class's score, as in
RISE: D-RISE of a classifier is RISE.
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine import channels_last, compute_precision, package, perturbation_rows
from ..errors import TargetError
from ..hooks import Guard
from ..options import BatchSize, Precision, Seed
from ..progress import ProgressArg, tracker
from ..registry import register
from ..result import Result
from ..targets import BoxTarget, Target, box_iou, fixed_target, resolve_target, row_scores
from .gradient import option_error
from .perturbation import Cells, Fill, Masks, Score, Share, _fill_tensor, _options_doc, _rise_cost, _RiseMasks, _start

__all__ = ["detection_similarity", "drise"]


def _is_detections(output: Any) -> bool:
    return isinstance(output, (list, tuple)) and bool(output) and all(isinstance(d, dict) and "boxes" in d for d in output)


def detection_similarity(detections: list[dict[str, torch.Tensor]], boxes: torch.Tensor, labels: torch.Tensor,
                         rows: torch.Tensor) -> torch.Tensor:
    """(n,) float32: for output row i (picture ``rows[i]``), max_j IoU(boxes[rows[i]], box_j) · score_j over the
    detections j with label ``labels[rows[i]]`` (any label where it is -1); 0 when there is none."""
    weights = torch.zeros(len(detections), dtype=torch.float32)
    for i, (d, b) in enumerate(zip(detections, rows.tolist())):
        found = d["boxes"].detach().float()
        if not found.numel():
            continue
        similarity = box_iou(found, boxes[b].to(found.device)[None])[:, 0] * d["scores"].detach().float()
        label = int(labels[b])
        if label >= 0 and "labels" in d:
            similarity = similarity * (d["labels"].to(similarity.device) == label)
        weights[i] = similarity.max().cpu()
    return weights


def _target_detections(target: Target, output: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The target detection of each picture: boxes (B, 4) and labels (B,) (-1: any label), from the clean forward.

    None: each picture's highest-scoring detection; an int (or one per picture): the highest-scoring detection
    with that label; ``cs.targets.box(...)``: its box, and its label (fixed from this forward when it has none).
    """
    batch = len(output)
    if isinstance(target, BoxTarget):
        fixed = target.fixed_on(output, require_match=False)  # D-RISE explains the box even if nothing matches it
        boxes = fixed.boxes.expand(batch, 4) if fixed.boxes.shape[0] == 1 else fixed.boxes
        if fixed.label is not None:
            labels = torch.full((batch,), fixed.label, dtype=torch.long)
        else:
            labels = fixed.labels.expand(batch) if fixed.labels.shape[0] == 1 else fixed.labels
        return boxes.float().cpu(), labels.cpu()
    if callable(target) and not isinstance(target, torch.Tensor):
        raise TargetError("drise explains one detection: pass target=None (the top detection), a label, or "
                          "cs.targets.box((x1, y1, x2, y2), label=k)")
    if target is None:
        wanted = [-1] * batch
    elif isinstance(target, torch.Tensor):
        wanted = [int(v) for v in target.reshape(-1).expand(batch).tolist()]
    elif isinstance(target, (list, tuple)):
        wanted = [int(v) for v in target]
    else:
        wanted = [int(target)] * batch
    boxes, labels = [], []
    for b, (d, label) in enumerate(zip(output, wanted)):
        scores = d["scores"].detach().float()
        ok = torch.ones_like(scores, dtype=torch.bool) if label < 0 else d["labels"].to(scores.device) == label
        if not ok.any():
            which = "anything" if label < 0 else f"an object of label {label}"
            raise TargetError(f"the detector finds {which} in picture {b}; pass target=cs.targets.box((x1, y1, x2, y2)), "
                              f"another label, or lower the detector's score threshold")
        best = torch.nonzero(ok).flatten()[scores[ok].argmax()]
        boxes.append(d["boxes"][best].detach().float().cpu())
        labels.append(int(d["labels"][best]) if "labels" in d else -1)
    return torch.stack(boxes), torch.tensor(labels, dtype=torch.long)


@register("drise", family="attribution", group="perturbation", takes="images", returns="map",
          paper="Petsiuk et al. 2021, Black-box Explanation of Object Detectors via Saliency Maps",
          quick={"masks": 8, "cells": 7}, cost=_rise_cost, report=None)
@_options_doc
def drise(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, masks: Masks = 1000, cells: Cells = 16,
          p: Share = 0.5, fill: Fill = 0.0, seed: Seed = 0, score: Score = "probability", batch_size: BatchSize = None,
          precision: Precision = "fp32", progress: ProgressArg = None) -> Result:
    """D-RISE: RISE's random masks weighted by how well each masked picture keeps the target detection,
    S = sum_i w_i M_i / (N p), (B, 1, H, W); w_i = max_j IoU(box_t, box_j) · score_j over the masked picture's
    detections with the target's label (see the module's docstring for the reduction of the paper's
    IoU · cos · objectness to what torchvision detectors return).

    ``target``: None (each picture's top detection), a label (its top detection of that label), or
    ``cs.targets.box((x1, y1, x2, y2), label=None)`` (that box in input pixels; its label, or the label of the
    best match on the clean picture). ``meta["boxes"]``/``meta["labels"]``: the explained detections;
    ``meta["neutral"]``: the mean weight (what a pixel whose visibility does not matter gets). On a model that
    is not a detector the weight is the class's score (``score`` says which): the map is RISE's.

    Options:
        masks: how many random masks; each costs one forward per picture. The paper uses 5000 for detectors;
            1000 (the default) shows the same regions with more speckle, 100-200 is a rough preview.
        cells: the masks' grid is cells x cells before it is upsampled (the paper: 16 for detectors): the size of
            the parts the map can tell apart. More cells find smaller parts but need more masks to settle.
        p: the probability that a cell is kept (visible); the paper uses 0.5.
        fill: what masked-out pixels become: {fill}.
        seed: the masks' seed: the same seed gives the same map; change it to see how much the map depends on the masks.
    """
    wrapped, x = _start(model, x, target, precision, layer, "drise")
    batch, _, height, width = x.shape
    if cells > min(height, width):
        raise option_error(f"drise: cells={cells} is more than the {height}x{width} picture's side; "
                           f"use at most {min(height, width)}", "cells")
    bank = _RiseMasks(masks, cells, float(p), seed, (height, width))
    rows = perturbation_rows(wrapped, x, batch_size)
    with Guard(wrapped.module, grad=False), compute_precision(wrapped, precision), \
            tracker(progress, batch * masks, "drise") as bar:
        pixels = wrapped.working_copy(x)
        fills = _fill_tensor(wrapped, pixels, fill).expand_as(pixels)
        output = wrapped.module(pixels.clone())  # a copy: the model may work in place on its input
        images = torch.arange(batch)
        if _is_detections(output):
            boxes, labels = _target_detections(target, output)
            classes = labels if bool((labels >= 0).all()) else None

            def weigh(out: Any, rows: torch.Tensor) -> torch.Tensor:
                return detection_similarity(out, boxes, labels, rows.cpu())

            scores = weigh(output, images)
            meta: dict[str, Any] = {"boxes": boxes, "labels": labels}
        else:  # not a detector: the class's score, as in RISE
            scores, classes = resolve_target(target, output)
            fixed = fixed_target(target, classes)

            def weigh(out: Any, rows: torch.Tensor) -> torch.Tensor:
                return row_scores(out, fixed, rows.to(pixels.device), score).float().cpu()

            meta = {"score": score}
        base = weigh(output, images)
        total = torch.zeros(batch, 1, height, width, dtype=torch.float32, device=pixels.device)
        weight_sum = torch.zeros(batch, dtype=torch.float32)
        for start in range(0, batch * masks, rows):  # job j: mask j // batch on image j % batch (each mask made once)
            jobs = torch.arange(start, min(start + rows, batch * masks))
            chosen, which = jobs % batch, jobs // batch
            first = int(which[0])
            mask = bank.make(range(first, int(which[-1]) + 1), pixels.device, pixels.dtype)[which - first]  # (n, 1, H, W)
            index = chosen.to(pixels.device)
            chunk = channels_last(torch.lerp(fills[index], pixels[index], mask))
            weight = weigh(wrapped.module(chunk), chosen)
            total.index_add_(0, index, weight.to(pixels.device).view(-1, 1, 1, 1) * mask.float())
            weight_sum.index_add_(0, chosen, weight)
            bar.advance(len(jobs))
    data = total / (masks * float(p))
    return package(wrapped, x, data, method="drise", classes=classes, scores=scores.detach(), output=output, kind="map",
                   base=base, masks=masks, cells=cells, p=float(p), seed=seed, neutral=(weight_sum / masks).to(data.device),
                   signed=True, units="similarity to the target detection when visible, minus the average", **meta)
