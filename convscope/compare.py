"""Several models (or several target classes) explained side by side by several methods (seed 004).

``compare(models, images, methods)`` runs every method on every model for every picture — one batched
call per (model, method) — and lays the answers out on one common frame: the original picture. Models
with different input sizes, crops and normalizations each preprocess the picture their own way; each map
is placed back where that model looked (the part of the picture a model never saw is dimmed), so the
cells line up and can be compared pixel by pixel (``agreement``: Spearman rank correlation over the
pixels both models saw).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, StringConstraints

from .engine import Cost
from .errors import ConvscopeError, InputError, TargetError
from .images import named_images
from .metrics.nested import method_list
from .models import Model, Prediction, as_model, load_model
from .options import PythonOnly
from .progress import Cancelled, ProgressArg, tracker
from .registry import CostContext, ReportSpec, register
from .result import Displayable, Result

__all__ = ["Cell", "Comparison", "compare", "crop_box"]

SCALES = ("each", "column")
TOP = re.compile(r"^\s*top(\d{1,2})\s*$", re.IGNORECASE)
CLASS_LIST = re.compile(r"^\s*\d{1,7}(\s*,\s*\d{1,7})*\s*$")


@dataclass
class Cell:
    """One model (or target class) × method × picture.

    ``result``: the method's Result for this one picture (None when the method does not apply:
    ``error`` says why). ``top1``: the row's model's top-1 on the picture; ``explained`` the class the
    map explains and ``probability`` the model's probability of it."""

    row: str
    method: str
    image: str
    top1: Prediction
    explained: str | None
    probability: float | None
    result: Result | None = None
    error: str | None = None


@dataclass
class Comparison(Displayable):
    """The grid ``compare`` made: ``cells[(row, method, image)]``, plus each row's model and the
    pictures. Kind "comparison": ``figure(image=None)`` draws rows × (picture + methods) for one picture or
    all of them stacked; ``table()`` prints it, ``agreement()`` compares rows' maps."""

    kind = "comparison"

    rows: list[str]
    methods: list[str]
    images: list[str]
    cells: dict[tuple[str, str, str], Cell]
    models: dict[str, Model]
    pictures: dict[str, Any]  # image name -> PIL picture (the original)
    scale: str = "each"
    rows_are: str = "models"  # or "targets"
    seconds: dict[str, float] = field(default_factory=dict)  # per method, all rows and pictures

    def cell(self, row: str | int, method: str | int, image: str | int = 0) -> Cell:
        """The cell by names or positions."""
        pick = lambda value, names: names[value] if isinstance(value, int) else value
        key = (pick(row, self.rows), pick(method, self.methods), pick(image, self.images))
        if key not in self.cells:
            raise KeyError(f"no cell {key}; rows {self.rows}, methods {self.methods}, images {self.images}")
        return self.cells[key]

    def frame_maps(self, method: str, image: str | int = 0, *, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
        """Every row's map of ``method`` on the picture, on the common frame: (R, H, W) float maps
        (NaN where a row's model did not look or the method did not apply) and (R, H, W) bool seen."""
        name = self.images[image] if isinstance(image, int) else image
        picture = self.pictures[name]
        height, width = display_size(picture.size, size)
        maps = np.full((len(self.rows), height, width), np.nan, dtype=np.float32)
        seen = np.zeros((len(self.rows), height, width), dtype=bool)
        for r, row in enumerate(self.rows):
            cell = self.cells[(row, method, name)]
            if cell.result is None:
                continue
            placed, mask = place_in_frame(self.models[row], cell.result.maps()[0], picture.size, (height, width))
            maps[r], seen[r] = placed, mask
        return maps, seen

    def agreement(self, method: str, image: str | int = 0) -> np.ndarray:
        """(R, R) Spearman rank correlation between rows' maps of ``method`` over the pixels both rows'
        models saw (NaN when a method did not apply to a row)."""
        from .metrics.sanity import rank_correlation

        maps, seen = self.frame_maps(method, image, size=112)
        out = np.full((len(self.rows), len(self.rows)), np.nan, dtype=np.float32)
        for a in range(len(self.rows)):
            for b in range(len(self.rows)):
                both = seen[a] & seen[b]
                if both.sum() < 4:
                    continue
                pair = torch.from_numpy(np.stack([maps[a][both], maps[b][both]]))
                out[a, b] = float(rank_correlation(pair[:1], pair[1:])[0])
        return out

    def table(self) -> str:
        """A text table: per row and picture, the top-1 and, per method, the explained class's probability
        and the mean agreement with the other rows."""
        width = max(3, *(len(row) for row in self.rows))  # whole row names: "efficientnet_lite0 · class #2"
        names = max(5, *(len(image) for image in self.images))  # whole picture names: "circle on sand"
        lines = [f"{'row':<{width}} {'image':<{names}} {'top-1':<26} {'explains':<26} " + " ".join(f"{m:>14}" for m in self.methods)]
        agreements = {(m, i): self.agreement(m, i) for m in self.methods for i in self.images} if len(self.rows) > 1 else {}
        for r, row in enumerate(self.rows):
            for image in self.images:
                first = self.cells[(row, self.methods[0], image)]
                top = f"{first.top1.label[:19]} {first.top1.probability:.1%}"
                probability = "" if first.probability is None else f" {first.probability:.1%}"
                explains = "(callable)" if first.explained is None else f"{first.explained[:19]}{probability}"
                cols = []
                for method in self.methods:
                    cell = self.cells[(row, method, image)]
                    if cell.result is None:
                        cols.append(f"{'n/a':>14}")
                        continue
                    agree = agreements.get((method, image))
                    others = [] if agree is None else [v for c, v in enumerate(agree[r]) if c != r and not np.isnan(v)]
                    cols.append(f"{('ρ=' + format(float(np.mean(others)), '.2f')) if others else '':>14}")
                lines.append(f"{row:<{width}} {image:<{names}} {top:<26} {explains:<26} " + " ".join(cols))
        if agreements:
            lines.append("ρ: mean Spearman rank correlation of the row's map with the other rows' maps (same picture, same method)")
        return "\n".join(lines)

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per cell: row, method, picture, the row's top-1, the class explained and its
        probability, and why the method did not apply (JSON, a DataFrame)."""
        return [{"row": cell.row, "method": cell.method, "image": cell.image, "top1": cell.top1.label,
                 "top1_probability": cell.top1.probability, "explained": cell.explained, "probability": cell.probability,
                 "error": cell.error} for cell in self.cells.values()]


# -- geometry: where a model looked ------------------------------------------------------------------
def display_size(picture_size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(H, W) of the common frame: the picture scaled so its longer side is ``longest`` pixels."""
    width, height = picture_size
    scale = longest / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def crop_box(model: Model, picture_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in the original picture's pixels of what ``model.crop`` keeps: the centre crop
    after a shorter-side resize (torchvision's recipe), or the whole picture when it is resized straight."""
    width, height = picture_size
    if model.resize_size is None or model.input_size is None:
        return 0.0, 0.0, float(width), float(height)
    out_h, out_w = model.input_size
    scale = model.resize_size / min(width, height)
    resized_w, resized_h = max(out_w, round(width * scale)), max(out_h, round(height * scale))
    left, top = (resized_w - out_w) // 2, (resized_h - out_h) // 2
    sx, sy = resized_w / width, resized_h / height
    return left / sx, top / sy, (left + out_w) / sx, (top + out_h) / sy


def place_in_frame(model: Model, map_hw: torch.Tensor, picture_size: tuple[int, int],
                   frame: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A model's (h, w) map -> the common frame (H, W): resized into the model's crop box; NaN and
    ``seen=False`` outside it."""
    height, width = frame
    x0, y0, x1, y1 = crop_box(model, picture_size)
    sx, sy = width / picture_size[0], height / picture_size[1]
    left, top = round(x0 * sx), round(y0 * sy)
    right, bottom = max(left + 1, min(width, round(x1 * sx))), max(top + 1, min(height, round(y1 * sy)))
    resized = F.interpolate(map_hw.detach().float().cpu()[None, None], size=(bottom - top, right - left),
                            mode="bilinear", align_corners=False)[0, 0].numpy()
    placed = np.full((height, width), np.nan, dtype=np.float32)
    seen = np.zeros((height, width), dtype=bool)
    placed[top:bottom, left:right] = resized
    seen[top:bottom, left:right] = True
    return placed, seen


# -- the comparison ------------------------------------------------------------------------------------
def _models(models: Any) -> dict[str, Model]:
    """Names, Models or modules (a mapping gives the row names) -> {unique row name: Model}."""
    if isinstance(models, (Model, torch.nn.Module, str)):
        models = [models]
    items = list(models.items()) if isinstance(models, Mapping) else [(None, m) for m in models]
    if not items:
        raise InputError("compare needs at least one model")
    named: dict[str, Model] = {}
    for given, model in items:
        wrapped = load_model(model) if isinstance(model, str) else as_model(model)
        if wrapped.input_size is None:
            raise InputError(f"model {wrapped.name!r} has no input_size; wrap it: cs.Model(module, input_size=(H, W), ...)")
        name = str(given or wrapped.name)
        base, k = name, 2
        while name in named:  # the same architecture twice (trained vs random): name them apart
            name, k = f"{base} #{k}", k + 1
        named[name] = wrapped
    return named


def _targets(targets: Any, models: dict[str, Model]) -> tuple[list[tuple[str, Model, Any]], str]:
    """(row name, model, target) per row and what the rows are ("models" or "targets")."""
    if isinstance(targets, str) and CLASS_LIST.match(targets):  # "281,504": the command line's list of classes
        targets = [int(t) for t in targets.split(",")]
    if isinstance(targets, str):
        top = TOP.match(targets)
        if top is None or int(top.group(1)) < 1:
            raise TargetError(f"targets={targets!r}: use 'top3' (the model's three best classes), a class index or a list")
        if len(models) != 1:
            raise TargetError(f"targets={targets!r} makes one row per class; it needs one model, got {len(models)}")
        name, model = next(iter(models.items()))
        return [(f"{name} · class #{k + 1}", model, ("top", k)) for k in range(int(top.group(1)))], "targets"
    if targets is None or isinstance(targets, int) or callable(targets):
        return [(name, model, targets) for name, model in models.items()], "models"
    targets = list(targets)
    if len(models) == 1:
        name, model = next(iter(models.items()))
        return [(f"{name}: {model.label(int(t))}" if isinstance(t, int) else f"{name}: target {i}", model, t)
                for i, t in enumerate(targets)], "targets"
    if len(targets) != len(models):
        raise TargetError(f"{len(targets)} targets for {len(models)} models; give one per model, one for all, or None (top-1)")
    return [(name, model, t) for (name, model), t in zip(models.items(), targets)], "models"


# -- the cost, before any model is loaded ------------------------------------------------------------------
def _model_items(models: Any) -> list[Any]:
    if isinstance(models, (Model, torch.nn.Module, str)):
        return [models]
    if isinstance(models, Mapping):
        return list(models.values())
    try:
        return list(models)
    except TypeError:
        return []


def _picture_count(images: Any) -> int:
    if isinstance(images, (Mapping, list, tuple)):
        return len(images)
    return 1


def _rows_per_model(targets: Any, count: int) -> int:
    """How many rows each model gets (one, or one per class when a single model's rows are classes)."""
    if isinstance(targets, str):
        top = TOP.match(targets)
        if top is not None:
            return int(top.group(1))
        return len(targets.split(",")) if count == 1 else 1
    if targets is None or isinstance(targets, int) or callable(targets):
        return 1
    try:
        return len(targets) if count == 1 else 1
    except TypeError:
        return 1


def _compare_cost(context: CostContext) -> Cost:
    """Per model: one forward of the pictures (its top classes), and every method on them for each of its rows.
    A model given by name is not loaded to estimate: its pictures count at its own input size."""
    options = context.options
    chosen = method_list(options["methods"], options["options"], who="compare")
    items = _model_items(context.inputs.get("models"))
    pictures = _picture_count(context.inputs.get("images"))
    rows = _rows_per_model(options["targets"], len(items))
    total = Cost(0)
    for item in items:
        model = item if isinstance(item, Model) else as_model(item) if isinstance(item, torch.nn.Module) else None
        size = getattr(model, "input_size", None) or (224, 224)
        x = torch.empty((pictures, getattr(model, "channels", None) or 3, *size))
        explain = sum((m.cost(model, x) for m in chosen), Cost(0))
        total = total + Cost(float(pictures)) + explain * rows
    return Cost(total.forwards, total.memory,
                f"{len(items)} model(s) x {rows} row(s) x {len(chosen)} method(s) on {pictures} picture(s)")


ClassIndex = Annotated[int, Field(ge=0, le=1_000_000)]
TargetsText = Annotated[str, StringConstraints(pattern=r"^\s*(top\d{1,2}|\d{1,7}(\s*,\s*\d{1,7}){0,63})\s*$")]
Targets = (ClassIndex | TargetsText | Annotated[list[ClassIndex], Field(min_length=1, max_length=64)]
           | PythonOnly[Callable[..., Any]] | PythonOnly[torch.Tensor] | None)
MethodNames = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=32)] | str


@register("compare", family="workflow", takes="models", returns="comparison", cost=_compare_cost,
          paper="convscope's comparison grid: each model's maps placed back on the original picture, so models with "
                "different crops and input sizes line up pixel for pixel",
          quick={"methods": ["gradcam"]},
          report=ReportSpec(title="The top classes side by side", options={"targets": "top3", "scale": "column",
                                                                                "methods": ["gradcam", "guided_gradcam"]},
                            note="Each row explains one of the model's three best classes with the same methods, on one "
                                 "colour scale per column: a map that really explains the class moves when the class "
                                 "changes, and a weaker class shows weaker evidence."))
def compare(models: Any, images: Any = None, methods: MethodNames = ("gradcam", "saliency"), *,
            targets: Targets = None, options: dict[str, dict[str, Any]] | None = None,
            scale: Literal["each", "column"] = "each", progress: ProgressArg = None) -> Comparison:
    """Explain pictures with every model × method, side by side on the original picture: rows = models (or
    one model's classes), columns = methods.

    models:  model names (``"efficientnet_lite0"``, ``"resnet18"``…), Models, modules, or a mapping
             row name -> model; models may differ in input size, crop and normalization.
    images:  paths, sample names (cat, coffee, astronaut, rocket) or pictures (default: the cat), or a
             mapping name -> picture.
    Each picture goes through each model's own preprocessing once; each method runs once per row on all
    pictures (batched). A method that does not apply to a model (``cam`` on a non-GAP head) leaves an
    explained empty cell instead of failing the grid. The methods and their options are checked before any
    model is loaded.

    Options:
        methods: the attribution methods, one column each, by name (a list, or comma-separated: "gradcam,saliency").
        targets: what each row explains: none (each model's own top-1), a class index for every model, one class
            per model, with one model a list of classes ("281,504": one row per class), or "top3" (one model's
            three best classes, one row each); from Python also a callable target.
        options: each method's own options, e.g. {"integrated_gradients": {"steps": 16}}.
        scale: "each" (every map scaled on its own, the method's usual display) or "column" (one scale per method
            column, so rows' strengths compare: meaningful for one model's several classes).
    """
    chosen = method_list(methods, options, who="compare")  # unknown names and bad options fail here, with suggestions
    named_models = _models(models)
    rows, rows_are = _targets(targets, named_models)
    if isinstance(images, Mapping):  # name -> picture
        pictures = [(str(name), picture) for name, picture in zip(images, named_images(list(images.values())))]
        pictures = [(name, picture) for name, (_, picture) in pictures]
    else:
        pictures = named_images(images if images is None or isinstance(images, (list, tuple)) else [images])
    image_names = _unique([n for n, _ in pictures])
    method_names = [m.name for m in chosen]
    cells: dict[tuple[str, str, str], Cell] = {}
    seconds = dict.fromkeys(method_names, 0.0)
    inputs: dict[int, torch.Tensor] = {}
    probabilities: dict[int, torch.Tensor] = {}  # (N, K) softmax of each model's output on the pictures
    tops: dict[int, list[list[Prediction]]] = {}

    with tracker(progress, len(rows) * len(chosen), "compare") as bar:
        for row, model, target in rows:
            key = id(model)
            if key not in inputs:
                inputs[key] = model.preprocess([picture for _, picture in pictures])  # (N, C, H, W)
                probabilities[key] = model.forward(inputs[key]).float().softmax(dim=1).cpu()
                tops[key] = _top(model, probabilities[key], 5)
            x = inputs[key]
            resolved = _row_target(target, tops[key], model)
            for method in chosen:
                start = time.perf_counter()
                try:
                    result = method(model, x, target=resolved)
                    error = None
                except ConvscopeError as exc:
                    if isinstance(exc, (TargetError, Cancelled)):
                        raise
                    result, error = None, str(exc)
                seconds[method.name] += time.perf_counter() - start
                for i, image in enumerate(image_names):
                    top1 = tops[key][i][0]
                    explained, probability = _explained(model, result, resolved, i, probabilities[key])
                    cells[(row, method.name, image)] = Cell(row, method.name, image, top1, explained, probability,
                                                            None if result is None else result[i], error)
                bar.advance()
    return Comparison([r for r, _, _ in rows], method_names, image_names, cells, {r: m for r, m, _ in rows},
                      dict(zip(image_names, (p for _, p in pictures))), scale, rows_are, seconds)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out


def _row_target(target: Any, tops: list[list[Prediction]], model: Model) -> Any:
    """A row's target for the method call: ("top", k) becomes each picture's k-th best class."""
    if isinstance(target, tuple) and target and target[0] == "top":
        k = target[1]
        if any(len(t) <= k for t in tops):
            raise TargetError(f"the model has fewer than {k + 1} classes for targets='top{k + 1}'")
        return torch.tensor([t[k].index for t in tops], dtype=torch.long)
    return target


def _top(model: Model, probs: torch.Tensor, k: int) -> list[list[Prediction]]:
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[Prediction(int(i), model.label(int(i)), float(v)) for v, i in zip(vs, idx)]
            for vs, idx in zip(values.tolist(), indices.tolist())]


def _explained(model: Model, result: Result | None, target: Any, index: int,
               probs: torch.Tensor) -> tuple[str | None, float | None]:
    """The label and probability of the class a cell explains (None for a callable target)."""
    if result is not None and result.target is not None:
        cls = int(result.target[index])
    elif target is None:
        cls = int(probs[index].argmax())
    elif isinstance(target, int):
        cls = target
    elif isinstance(target, torch.Tensor) and target.dim() == 1:
        cls = int(target[index])
    else:
        return None, None
    inside = 0 <= cls < probs.shape[1]
    return model.label(cls), float(probs[index, cls]) if inside else None
