"""Faithfulness: does deleting the pixels a map calls important really hurt the prediction?

Deletion and insertion (Petsiuk, Das & Saenko 2018, RISE: Randomized Input Sampling for Explanation
of Black-box Models): order the pixels by the map, most important first; *deletion* replaces them
by a fill in ``steps`` equal chunks and records the target's probability after each chunk (a
faithful map makes it fall fast: low area under the curve); *insertion* starts from the fill (a
blurred picture) and reveals the original pixels in the same order (a faithful map makes it rise
fast: high area). ``rank`` (the registered trust tool, alias "trust") runs several registered methods
plus a random-map baseline on the same image(s) and ranks them, so every ranking shows what chance looks
like. (``cs.compare`` is another tool: models × methods side by side.)

Every curve point is one row of a batched forward (inference mode, inside ``Guard``); the two end
points (the clean picture and the fully filled one) do not depend on the map, so ``rank`` computes
them once for all methods. Curves and rankings are computed here and drawn by ``convscope.render``
(kinds "curve" and "ranking").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..attribution.gradient import baseline_for
from ..engine import Cost, compute_precision, package, perturbation_rows, prepare
from ..errors import ConvscopeError
from ..hooks import Guard
from ..models import Model
from ..options import BatchSize, Precision, PythonOnly, Seed
from ..progress import ProgressArg, Tracker, tracker
from ..registry import CostContext, ReportSpec, register
from ..result import Displayable, Result
from ..targets import Target, fixed_target, resolve_target, row_scores
from .nested import Method, method_list

__all__ = ["DEFAULT_METHODS", "DEFAULT_STEPS", "Curve", "Ranking", "RankingRow", "deletion", "insertion", "random_map",
           "rank"]

DEFAULT_STEPS = 16  # curve points - 1 (Petsiuk et al.: 224). On Lite0 and the sample photos the AUCs at 8 and 32 steps
# differ by at most 0.012, so finer curves buy little for their cost
DEFAULT_METHODS = ("gradcam", "integrated_gradients", "saliency")
KINDS = ("deletion", "insertion")
FILLS = ("blur", "zeros", "black", "mean")
BASELINE = "random"
MARGIN = 0.1  # a method beats the random map on a metric when its AUC is better by more than this share of the
# random map's AUC (random draws' AUCs spread by about that much): closer than that is a tie with chance

# -- option types (rank's; deletion and insertion check their own arguments) -------------------------------
MethodName = Annotated[str, Field(min_length=1, max_length=64)]
Methods = Annotated[list[MethodName], Field(min_length=1, max_length=32)] | str
Metric = Literal["deletion", "insertion"]
Steps = Annotated[int, Field(ge=1, le=1024)]
Fill = Literal["blur", "zeros", "black", "mean"] | float | PythonOnly[torch.Tensor]
MethodOptions = dict[str, dict[str, Any]] | None


# -- the curve -------------------------------------------------------------------------------------
@dataclass(eq=False)
class Curve(Displayable):
    """A deletion or insertion curve for a batch (kind "curve": ``figure()``, ``save()`` draw every image's curve).

    fractions: (S+1,) share of the pixels removed (deletion) or revealed (insertion) at each point,
               from 0 to 1.
    scores:    (B, S+1) the target's probability at each point (its score for a callable target).
    auc:       (B,) area under each image's curve by the trapezoid rule, in [0, 1] for probabilities;
               deletion: lower is better; insertion: higher is better.
    metric:    "deletion" or "insertion"; method: the explained Result's method; target: the classes
               scored (None for a callable target); fill: what replaced the pixels.
    """

    kind = "curve"

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    metric: str
    method: str
    target: torch.Tensor | None = None
    fill: str = "blur"

    def __repr__(self) -> str:
        aucs = ", ".join(f"{v:.3f}" for v in self.auc.tolist())
        return f"Curve(metric={self.metric!r}, method={self.method!r}, steps={len(self.fractions) - 1}, auc=[{aucs}])"

    @property
    def mean_auc(self) -> float:
        """The batch's mean area under the curve."""
        return float(self.auc.mean())

    def table(self) -> str:
        """Plain text: each image's area under the curve, and the batch mean."""
        better = "lower" if self.metric == "deletion" else "higher"
        lines = [f"{self.metric} curve of {self.method} ({len(self.fractions) - 1} steps, fill {self.fill}; {better} AUC is better)"]
        lines += [f"image {i}: AUC {auc:.4f}" for i, auc in enumerate(self.auc.tolist())]
        lines.append(f"mean: AUC {self.mean_auc:.4f}")
        return "\n".join(lines)

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per image: its AUC and its scores at each point (JSON)."""
        target = None if self.target is None else self.target.tolist()
        return [{"image": i, "metric": self.metric, "method": self.method, "auc": float(self.auc[i]),
                 "scores": self.scores[i].tolist(), "target": None if target is None else target[i]}
                for i in range(self.scores.shape[0])]


def _fill_name(fill: Any) -> str:
    return fill if isinstance(fill, str) else "tensor" if isinstance(fill, torch.Tensor) else f"{float(fill):g}"


def _canvas(model: Model, x: torch.Tensor, fill: Any) -> torch.Tensor:
    """The picture the pixels are replaced by (deletion) or revealed on (insertion), (B, C, H, W)."""
    if isinstance(fill, bool):
        raise ConvscopeError(f"fill must be 'blur', 'zeros', 'black', 'mean', a number or a tensor, not {fill!r}")
    if isinstance(fill, (int, float)):
        return torch.full_like(x, float(fill))
    if isinstance(fill, str):
        if fill == "mean":  # each image's own mean colour
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
        if fill not in FILLS:
            raise ConvscopeError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}, a number or a tensor")
        return baseline_for(model, x, fill)  # zeros (in input space), black, blur (Gaussian, sigma = W/20)
    if isinstance(fill, torch.Tensor):
        return baseline_for(model, x, fill).clone()
    raise ConvscopeError(f"fill must be 'blur', 'zeros', 'black', 'mean', a number or a tensor, not {type(fill).__name__}")


def _check_steps(steps: Any, pixels: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConvscopeError(f"steps must be a positive integer, got {steps!r}")
    if steps > pixels:
        raise ConvscopeError(f"steps={steps} is more than the {pixels} pixels of the image; use steps <= {pixels}")
    return steps


def _check_kinds(metric: Any) -> tuple[str, ...]:
    kinds = (metric,) if isinstance(metric, str) else tuple(metric)
    if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) != len(kinds):
        raise ConvscopeError(f"metric must be 'deletion', 'insertion' or both, got {metric!r}")
    return kinds


@dataclass
class _Setup:
    """What every curve on one batch shares: the inputs, the canvas, the scored target and the two
    end points (clean and fully filled), computed once."""

    model: Model
    x: torch.Tensor  # (B, C, H, W) private channels-last copy
    canvas: torch.Tensor  # (B, C, H, W)
    target: Target  # classes (B,) or a callable
    classes: torch.Tensor | None
    clean: torch.Tensor  # (B,) score of the clean picture
    filled: torch.Tensor  # (B,) score of the canvas
    fill: str
    precision: str
    rows: int  # rows per forward


def _setup(model: Any, x: torch.Tensor, *, target: Target, fill: Any, batch_size: int | None, precision: str,
           default: torch.Tensor | None = None) -> _Setup:
    """Checks, the canvas, and one forward of [x, canvas] that fixes the target (``target``, else
    ``default`` classes, else each image's top-1) and scores both ends."""
    wrapped, x = prepare(model, x, target, precision)
    rows = perturbation_rows(wrapped, x, batch_size)  # the one batch-size rule (engine)
    batch = x.shape[0]
    with Guard(wrapped.module, grad=False):
        inputs = wrapped.working_copy(x)
        canvas = _canvas(wrapped, inputs, fill).contiguous(memory_format=torch.channels_last)  # fp32, outside autocast
        with compute_precision(wrapped, precision):
            output = wrapped.module(torch.cat([inputs, canvas]))
            chosen: Target = target if target is not None else default
            _, classes = resolve_target(chosen, output[:batch])
            fixed = fixed_target(chosen, classes)
            clean = row_scores(output[:batch], fixed, kind="probability")
            filled = row_scores(output[batch:], fixed, kind="probability")
    return _Setup(wrapped, inputs, canvas, fixed, classes, clean, filled, _fill_name(fill), precision, rows)


def _order(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """(B, N) each pixel's rank, 0 = most important. Ties (e.g. the zeros of a ReLU'd map) are broken
    by a fixed random permutation from ``seed``, not by position, so they cannot favour a corner."""
    flat = maps.flatten(1).float()
    perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(int(seed))).to(flat.device)
    order = perm[torch.argsort(flat[:, perm], dim=1, descending=True, stable=True)]  # pixels, most important first
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order).contiguous())
    return ranks


def _check_result(result: Any, x: Any) -> None:
    if not isinstance(result, Result):
        raise ConvscopeError(f"result must be a cs.Result from an explanation method, got {type(result).__name__}")
    data, shape = result.data, tuple(getattr(x, "shape", ()))
    if len(shape) == 4 and (data.dim() != 4 or data.shape[0] != shape[0] or tuple(data.shape[-2:]) != shape[-2:]):
        raise ConvscopeError(f"result data {tuple(data.shape)} does not fit x {shape}; explain the same batch at the input's size")


def _maps_of(result: Any, setup: _Setup) -> torch.Tensor:
    _check_result(result, setup.x)
    maps = result.maps()
    if not bool(torch.isfinite(maps).all()):
        raise ConvscopeError(f"the {result.method} map contains NaN or infinite values; it cannot order pixels")
    return maps.to(setup.x.device)


def _curve(setup: _Setup, result: Result, metric: str, steps: int, seed: int, progress: Tracker) -> Curve:
    """Every intermediate point of one curve, in batches of ``setup.rows`` perturbed pictures."""
    maps = _maps_of(result, setup)
    batch, _, height, width = setup.x.shape
    pixels = height * width
    steps = _check_steps(steps, pixels)
    ranks = _order(maps, seed).view(batch, 1, height, width)
    counts = torch.round(torch.linspace(0, pixels, steps + 1, dtype=torch.float64)).long()  # pixels changed per point
    scores = torch.empty(batch, steps + 1, dtype=torch.float32, device=setup.x.device)
    start, end = (setup.clean, setup.filled) if metric == "deletion" else (setup.filled, setup.clean)
    scores[:, 0], scores[:, steps] = start, end
    # rows = (point, image) pairs for points 1..S-1, point-major
    total = (steps - 1) * batch
    with Guard(setup.model.module, grad=False), compute_precision(setup.model, setup.precision):
        for first in range(0, total, setup.rows):
            index = torch.arange(first, min(first + setup.rows, total), device=setup.x.device)
            point, image = index // batch + 1, index % batch
            changed = ranks[image] < counts.to(ranks.device)[point].view(-1, 1, 1, 1)  # (rows, 1, H, W)
            if metric == "deletion":
                chunk = torch.where(changed, setup.canvas[image], setup.x[image])
            else:
                chunk = torch.where(changed, setup.x[image], setup.canvas[image])
            output = setup.model.module(chunk.contiguous(memory_format=torch.channels_last))
            scores[image, point] = row_scores(output, setup.target, rows=image, kind="probability")
            progress.advance(len(index))
    fractions = (counts.float() / pixels).to(scores.device)
    auc = torch.trapezoid(scores, fractions, dim=1)
    return Curve(fractions.cpu(), scores.cpu(), auc.cpu(), metric, result.method,
                 None if setup.classes is None else setup.classes.cpu(), setup.fill)


def _single(metric: str, model: Any, x: torch.Tensor, result: Result, steps: int, fill: Any, batch_size: int | None,
            target: Target, seed: int, precision: str, progress: ProgressArg) -> Curve:
    _check_result(result, x)
    prepare(model, x, target, precision)  # bad inputs fail before any forward
    _check_steps(steps, x.shape[-1] * x.shape[-2])
    setup = _setup(model, x, target=target, fill=fill, batch_size=batch_size, precision=precision, default=result.target)
    pixels = x.shape[-1] * x.shape[-2]
    with tracker(progress, max(0, _check_steps(steps, pixels) - 1) * x.shape[0], metric) as bar:
        return _curve(setup, result, metric, steps, seed, bar)


def deletion(model: Any, x: torch.Tensor, result: Result, *, steps: int = DEFAULT_STEPS, fill: Any = "blur",
             batch_size: int | None = None, target: Target = None, seed: int = 0, precision: str = "fp32",
             progress: ProgressArg = None) -> Curve:
    """The deletion curve (Petsiuk et al. 2018): remove the most important pixels first.

    Pixels are ordered by ``result.maps()`` (B, H, W) and replaced by ``fill`` in ``steps`` equal
    chunks; the curve is the target's probability after each chunk, (B, steps + 1), from the clean
    picture to the fully filled one. A faithful map gives a low area under the curve.

    target: the class scored — None uses ``result.target`` (what was explained), else each image's
    top-1; a callable scores its own output value instead of a probability.
    fill: "blur" (default: a Gaussian blur, sigma = W/20, so both curves share their end points and
    deletion does not reward maps for cutting sharp holes), "zeros" (zero in input space: the
    paper's constant), "black", "mean" (each image's mean colour), a number or a tensor.
    seed: breaks ties in the map (equal values) by a fixed random order. batch_size: pictures per
    forward (None: about 16 of 224×224 on a CPU, 64 on a GPU, fewer when memory is short).
    precision: "fp32" or "bf16" (autocast). progress: see ``convscope.progress`` (one unit per perturbed
    picture; a callback may raise ``Cancelled``).
    """
    return _single("deletion", model, x, result, steps, fill, batch_size, target, seed, precision, progress)


def insertion(model: Any, x: torch.Tensor, result: Result, *, steps: int = DEFAULT_STEPS, fill: Any = "blur",
              batch_size: int | None = None, target: Target = None, seed: int = 0, precision: str = "fp32",
              progress: ProgressArg = None) -> Curve:
    """The insertion curve (Petsiuk et al. 2018): reveal the most important pixels first.

    Starts from ``fill`` (by default the blurred picture, as in the paper) and puts the original
    pixels back in the map's order, in ``steps`` equal chunks; (B, steps + 1) probabilities from the
    fill to the clean picture. A faithful map gives a high area under the curve. Options as in
    :func:`deletion`.
    """
    return _single("insertion", model, x, result, steps, fill, batch_size, target, seed, precision, progress)


# -- the random baseline -----------------------------------------------------------------------------
def random_map(model: Any, x: torch.Tensor, *, target: Target = None, seed: int = 0, cells: int = 7) -> Result:
    """A map that knows nothing: smooth random noise, (B, 1, H, W), ``method="random"``.

    Uniform noise on a ``cells`` × ``cells`` grid, upsampled bilinearly to the input — blobs about as
    coarse as a Grad-CAM map, so a ranking compares methods with chance at the same smoothness. One
    forward resolves the target (for provenance). Not registered: it explains nothing.
    """
    if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
        raise ConvscopeError(f"cells must be a positive integer, got {cells!r}")
    wrapped, x = prepare(model, x, target)
    with Guard(wrapped.module, grad=False):
        output = wrapped.module(wrapped.working_copy(x))
        scores, classes = resolve_target(target, output)
    noise = torch.rand((x.shape[0], 1, cells, cells), generator=torch.Generator().manual_seed(int(seed)))
    data = F.interpolate(noise, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False).to(x.device)
    return package(wrapped, x, data, method=BASELINE, classes=classes, scores=scores, output=output, seed=seed, cells=cells)


# -- ranking methods ----------------------------------------------------------------------------------
@dataclass
class RankingRow:
    """One method's scores on the batch: mean AUCs (None for a metric not run), per-image AUCs, and
    the seconds its explanation took (the curves not included)."""

    method: str
    deletion_auc: float | None
    insertion_auc: float | None
    deletion_per_image: list[float] | None
    insertion_per_image: list[float] | None
    seconds: float
    baseline: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "deletion_auc": self.deletion_auc, "insertion_auc": self.insertion_auc,
                "deletion_per_image": self.deletion_per_image, "insertion_per_image": self.insertion_per_image,
                "seconds": self.seconds, "baseline": self.baseline}


@dataclass(eq=False)
class Ranking(Displayable):
    """Methods ranked by faithfulness on one batch, best first, the random baseline among them (kind
    "ranking": ``figure()`` draws each method's batch-mean curves, ``table()`` prints the rows).

    rows:    one :class:`RankingRow` per method, sorted by the first metric in ``metric``
             (deletion AUC ascending, or insertion AUC descending).
    curves:  method -> metric -> :class:`Curve`, for figures.
    target:  (B,) the classes every method explained and every curve scored (None: a callable).
    """

    kind = "ranking"

    rows: list[RankingRow]
    metric: tuple[str, ...]
    steps: int
    fill: str
    target: torch.Tensor | None = None
    labels: list[str] | None = None
    curves: dict[str, dict[str, Curve]] = field(default_factory=dict, repr=False)
    baseline_samples: int = 1  # random maps averaged in the baseline's row
    margin: float = MARGIN  # how much better than the random map's AUC counts as better (a share of it)

    @property
    def best(self) -> str:
        """The name of the best-ranked method (possibly the baseline, which says the maps are no better than chance)."""
        return self.rows[0].method

    def beats_random(self, method: str) -> dict[str, bool]:
        """Per metric run: does ``method``'s AUC beat the random map's by more than ``margin`` of it (deletion:
        lower, insertion: higher)? Closer than that is a tie with chance."""
        row, chance = self.row(method), self.row(BASELINE)
        out = {}
        for kind in self.metric:
            mine, theirs = (row.deletion_auc, chance.deletion_auc) if kind == "deletion" else (row.insertion_auc, chance.insertion_auc)
            if mine is None or theirs is None:
                continue
            out[kind] = mine < theirs * (1 - self.margin) if kind == "deletion" else mine > theirs * (1 + self.margin)
        return out

    @property
    def trusted(self) -> list[str]:
        """The methods that beat the random map on every metric run, best first: the ones to believe here."""
        return [r.method for r in self.rows if not r.baseline and all(self.beats_random(r.method).values())]

    def _versus(self, method: str, kind: str) -> str:
        row, chance = self.row(method), self.row(BASELINE)
        auc = (lambda r: r.deletion_auc) if kind == "deletion" else (lambda r: r.insertion_auc)
        return f"{kind} AUC {auc(row):.3f} against random's {auc(chance):.3f}"

    @property
    def verdict(self) -> str:
        """Which method to believe on these pictures, in one line: the best of those that beat a random map on
        every test (deletion and insertion), or — said plainly — that none does, with those that beat it on one."""
        methods = [r.method for r in self.rows if not r.baseline]
        trusted = self.trusted
        tests = " and ".join(self.metric)
        losers = [m for m in methods if not any(self.beats_random(m).values())]
        chance = f"; {', '.join(losers)} did no better than a random map" if losers else ""
        partly = [(m, [k for k, won in self.beats_random(m).items() if won]) for m in methods if m not in trusted]
        which = "; ".join(f"{m} beats it on {' and '.join(won)} only ({', '.join(self._versus(m, k) for k in won)})"
                          for m, won in partly if won)
        if trusted:
            best = trusted[0]
            evidence = ", ".join(self._versus(best, kind) for kind in self.metric)
            also = f"; {', '.join(trusted[1:])} also beat{'s' if len(trusted) == 2 else ''} it" if len(trusted) > 1 else ""
            return f"Believe {best} here: it beats a random map on {tests} ({evidence}){also}{'; ' + which if which else ''}{chance}."
        if which:
            return (f"No method beats a random map on both tests here: {which}{chance}. Read these maps with care: "
                    f"none is clearly better than chance at finding the pixels the prediction needs.")
        return (f"No method beats a random map here: on these pictures none of {', '.join(methods)} finds the pixels the "
                f"prediction needs better than chance ({tests}). Do not read these maps as what the model used.")

    def row(self, method: str) -> RankingRow:
        """The row of ``method`` ("random" for the baseline)."""
        for row in self.rows:
            if row.method == method:
                return row
        raise ConvscopeError(f"no row for {method!r}; rows: {', '.join(r.method for r in self.rows)}")

    def table(self) -> str:
        """Plain-text table, best first: method, deletion AUC (↓), insertion AUC (↑), seconds."""
        header = ["method"] + [f"{k} AUC {'↓' if k == 'deletion' else '↑'}" for k in self.metric] + ["seconds"]
        cells = []
        for row in self.rows:
            values = [row.deletion_auc if k == "deletion" else row.insertion_auc for k in self.metric]
            name = f"{row.method} (baseline)" if row.baseline else row.method
            cells.append([name, *(f"{v:.4f}" for v in values), f"{row.seconds:.2f}"])
        widths = [max(len(header[i]), *(len(c[i]) for c in cells)) + 2 for i in range(len(header))]
        lines = ["".join(h.ljust(w) for h, w in zip(header, widths)), "─" * sum(widths)]
        lines += ["".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
        who = f"; target {', '.join(self.labels)}" if self.labels else ""
        images = len(self.rows[0].deletion_per_image or self.rows[0].insertion_per_image or [])
        lines.append(f"({images} image(s), {self.steps} steps, fill {self.fill}, baseline = mean of {self.baseline_samples} "
                     f"random map(s){who}; better than random: by more than {self.margin:.0%} of its AUC)")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def records(self) -> list[dict[str, Any]]:
        """The rows as plain dicts, best first (JSON, a DataFrame)."""
        return [r.as_dict() for r in self.rows]

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: rows, metric, steps, fill, target classes and labels."""
        return {"rows": self.records(), "metric": list(self.metric), "steps": self.steps,
                "fill": self.fill, "target": None if self.target is None else self.target.tolist(), "labels": self.labels,
                "baseline_samples": self.baseline_samples, "margin": self.margin, "trusted": self.trusted,
                "verdict": self.verdict}


def _mean_curve(curves: list[Curve]) -> Curve:
    """The pointwise mean of curves over the same points (its AUC is the mean AUC: the rule is linear)."""
    if len(curves) == 1:
        return curves[0]
    first = curves[0]
    return Curve(first.fractions, torch.stack([c.scores for c in curves]).mean(0), torch.stack([c.auc for c in curves]).mean(0),
                 first.metric, first.method, first.target, first.fill)


def _baseline_options(options: Any) -> dict[str, Any]:
    """The random baseline's options (``options["random"]``: only ``cells``)."""
    given = dict((options or {}).get(BASELINE) or {})
    stray = [k for k in given if k != "cells"]
    if stray:
        raise ConvscopeError(f"rank: the random baseline takes only 'cells' (the noise grid's side), not {stray[0]!r}")
    return given


def _rank_methods(methods: Any, options: Any) -> list[Method]:
    """The ranked methods, checked (the baseline is not among them: it always runs, once)."""
    return method_list(methods, options, who="rank", extra=(BASELINE,))


def _rank_cost(context: CostContext) -> Cost:
    """Each method's own explanation, and one forward per point of each curve: (methods + baseline maps) x
    metrics x (steps - 1) x pictures, plus the clean and filled pictures once and one forward per random map."""
    x = context.x
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        return Cost(0)
    options = context.options
    ranked = _rank_methods(options["methods"], options["options"])
    metrics = len(_check_kinds(options["metric"]))
    samples, points, pictures = options["baseline_samples"], max(0, options["steps"] - 1), context.pictures
    explained = sum((m.cost(context.model, x) for m in ranked), Cost(0))
    curves = (len(ranked) + samples) * metrics * points * pictures
    forwards = (curves + (2 + samples) * pictures) * context.area()
    return explained + Cost(forwards, 0, f"{len(ranked)} methods and {samples} random maps x {metrics} curves x {points} "
                                         f"points x {pictures} pictures")


def _quick_options(names: list[str]) -> dict[str, dict[str, Any]]:
    """Each method's own quick options (the report's --quick ranking)."""
    from ..registry import get

    return {name: dict(get(name).quick) for name in names if get(name).quick}


@register("rank", family="trust", takes="images", returns="ranking", aliases=("trust",), cost=_rank_cost,
          paper="Petsiuk, Das & Saenko 2018, RISE: Randomized Input Sampling for Explanation of Black-box Models "
                "(deletion and insertion)",
          quick={"steps": 8, "baseline_samples": 1},
          report=ReportSpec(title="Deletion and insertion: which map finds the pixels that matter",
                            options={"methods": ["gradcam", "integrated_gradients", "saliency", "occlusion"]},
                            quick=lambda model: {"steps": 8, "baseline_samples": 1, "options": _quick_options(
                                ["gradcam", "integrated_gradients", "saliency", "occlusion"])},
                            note="Each map is put to the test: removing the pixels it ranks first should make the "
                                 "probability fall fast (deletion: a lower area under the curve is better), and revealing them "
                                 "first on a blurred picture should make it rise fast (insertion: higher is better). A random "
                                 "map is the yardstick: the verdict says which method beats it here, if any."))
def rank(model: Any, x: torch.Tensor, methods: Methods = DEFAULT_METHODS, *, target: Target = None,
         metric: Metric | Annotated[list[Metric], Field(min_length=1, max_length=2)] = KINDS, steps: Steps = DEFAULT_STEPS,
         fill: Fill = "blur", seed: Seed = 0, options: MethodOptions = None,
         baseline_samples: Annotated[int, Field(ge=1, le=64)] = 3, batch_size: BatchSize = None,
         precision: Precision = "fp32", progress: ProgressArg = None) -> Ranking:
    """Rank attribution methods by faithfulness (deletion and insertion) on pictures, next to a random map.

    Every method (by registry name; ``options`` = per-method keyword options) explains the same
    classes — ``target``, else each image's top-1 — and its map is scored by deletion (area under the
    curve, lower is better) and insertion (higher is better), averaged over the batch. The random
    baseline always runs: the mean curve of ``baseline_samples`` random maps (:func:`random_map`, drawn
    from ``seed``; one draw's AUC varies by ±0.1 on a single photo, so chance is an average); a method
    ranked below it orders pixels no better than chance on these images. Rows are sorted by the first
    ``metric``. The methods and their options are checked before any work.

    Cost per method: its own explanation plus ``steps - 1`` forwards per image per metric (the end
    points are shared by all methods).

    Options:
        methods: the attribution methods to rank, by name (a list, or comma-separated: "gradcam,saliency").
        metric: "deletion", "insertion" or both; the rows are sorted by the first one.
        steps: points on each curve after the first: more gives smoother curves and costs one forward per
            picture and method for each step (8 and 32 give AUCs within 0.012 on photos).
        fill: what replaces the removed pixels (deletion) and what the pixels are revealed on (insertion):
            "blur" (a blurred copy, as in the paper), "zeros", "black", "mean" (each picture's mean colour) or a
            number in the model's input space.
        seed: breaks ties in the maps and draws the random maps; the same seed gives the same ranking.
        options: each method's own options, e.g. {"integrated_gradients": {"steps": 16}}; "random" takes "cells".
        baseline_samples: random maps averaged into the chance row (one draw's AUC varies by about 0.1).
        batch_size: perturbed pictures per forward (none: about 16 of 224x224 on a CPU, 64 on a GPU).
        precision: "fp32" (exact) or "bf16" (autocast for the curves' forwards; faster on CPUs with bfloat16 units).
    """
    ranked = _rank_methods(methods, options)
    baseline = _baseline_options(options)
    kinds = _check_kinds(metric)
    prepare(model, x, target, precision)
    _check_steps(steps, x.shape[-1] * x.shape[-2])
    setup = _setup(model, x, target=target, fill=fill, batch_size=batch_size, precision=precision)
    batch = x.shape[0]
    per_curve = (steps - 1) * batch
    rows: list[RankingRow] = []
    curves: dict[str, dict[str, Curve]] = {}
    runs = len(ranked) + baseline_samples
    with tracker(progress, runs * (1 + len(kinds) * per_curve), "ranking methods") as bar:
        for chosen in [*ranked, None]:
            started = time.perf_counter()
            if chosen is None:
                name = BASELINE
                draws = [random_map(setup.model, x, target=setup.target, seed=int(seed) * 1_000_003 + k, **baseline)
                         for k in range(baseline_samples)]
            else:
                name = chosen.name
                draws = [chosen(setup.model, x, target=setup.target)]
            seconds = (time.perf_counter() - started) / len(draws)
            bar.advance(len(draws))
            curves[name] = {kind: _mean_curve([_curve(setup, r, kind, steps, seed, bar) for r in draws]) for kind in kinds}
            aucs = {k: curves[name][k].auc for k in kinds}
            rows.append(RankingRow(
                method=name,
                deletion_auc=float(aucs["deletion"].mean()) if "deletion" in aucs else None,
                insertion_auc=float(aucs["insertion"].mean()) if "insertion" in aucs else None,
                deletion_per_image=aucs["deletion"].tolist() if "deletion" in aucs else None,
                insertion_per_image=aucs["insertion"].tolist() if "insertion" in aucs else None,
                seconds=seconds, baseline=name == BASELINE))
    primary = kinds[0]
    rows.sort(key=lambda r: r.deletion_auc if primary == "deletion" else -r.insertion_auc)  # type: ignore[operator]
    classes = setup.classes.cpu() if setup.classes is not None else None
    return Ranking(rows, kinds, steps, setup.fill, classes, setup.model.labels_for(setup.classes), curves, baseline_samples)
