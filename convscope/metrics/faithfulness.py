"""Faithfulness: does deleting the pixels a map calls important really hurt the prediction?

Deletion and insertion (Petsiuk, Das & Saenko 2018, RISE: Randomized Input Sampling for Explanation
of Black-box Models): order the pixels by the map, most important first; *deletion* replaces them
by a fill in ``steps`` equal chunks and records the target's probability after each chunk (a
faithful map makes it fall fast: low area under the curve); *insertion* starts from the fill (a
blurred picture) and reveals the original pixels in the same order (a faithful map makes it rise
fast: high area). ``compare`` runs several registered methods plus a random-map baseline on the same
image(s) and ranks them, so every ranking shows what chance looks like.

Every curve point is one row of a batched forward (inference mode, inside ``Guard``); the two end
points (the clean picture and the fully filled one) do not depend on the map, so ``compare`` computes
them once for all methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..attribution.gradient import baseline_for
from ..engine import compute_precision, default_rows, package, prepare
from ..errors import ConvscopeError
from ..hooks import Guard
from ..models import Model
from ..progress import ProgressArg, Tracker, tracker
from ..result import Result
from ..targets import Target, resolve_target

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DEFAULT_METHODS", "DEFAULT_STEPS", "Curve", "Ranking", "RankingRow", "compare", "curve_figure", "deletion",
           "insertion", "random_map", "ranking_figure"]

DEFAULT_STEPS = 16  # curve points - 1 (Petsiuk et al.: 224). On Lite0 and the sample photos the AUCs at 8 and 32 steps
# differ by at most 0.012, so finer curves buy little for their cost
DEFAULT_METHODS = ("gradcam", "integrated_gradients", "saliency")
KINDS = ("deletion", "insertion")
FILLS = ("blur", "zeros", "black", "mean")
BASELINE = "random"


# -- the curve -------------------------------------------------------------------------------------
@dataclass(eq=False)
class Curve:
    """A deletion or insertion curve for a batch.

    fractions: (S+1,) share of the pixels removed (deletion) or revealed (insertion) at each point,
               from 0 to 1.
    scores:    (B, S+1) the target's probability at each point (its score for a callable target).
    auc:       (B,) area under each image's curve by the trapezoid rule, in [0, 1] for probabilities;
               deletion: lower is better; insertion: higher is better.
    kind:      "deletion" or "insertion"; method: the explained Result's method; target: the classes
               scored (None for a callable target); fill: what replaced the pixels.
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    kind: str
    method: str
    target: torch.Tensor | None = None
    fill: str = "blur"

    def __repr__(self) -> str:
        aucs = ", ".join(f"{v:.3f}" for v in self.auc.tolist())
        return f"Curve(kind={self.kind!r}, method={self.method!r}, steps={len(self.fractions) - 1}, auc=[{aucs}])"

    @property
    def mean_auc(self) -> float:
        """The batch's mean area under the curve."""
        return float(self.auc.mean())

    def figure(self) -> Figure:
        """A matplotlib figure of every image's curve (no GUI needed)."""
        return curve_figure([self])


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


def _check_batch_size(batch_size: Any, x: torch.Tensor) -> int:
    if batch_size is None:
        return default_rows(*x.shape[-2:])
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConvscopeError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return batch_size


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


def _score(target: Target, output: torch.Tensor) -> torch.Tensor:
    """(rows,) probability of the class (or the callable's score) from a model output."""
    output = output.float()
    if isinstance(target, torch.Tensor):
        return output.softmax(dim=1).gather(1, target[:, None])[:, 0]
    scores, _ = resolve_target(target, output)
    return scores.float()


def _setup(model: Any, x: torch.Tensor, *, target: Target, fill: Any, batch_size: int | None, precision: str,
           default: torch.Tensor | None = None) -> _Setup:
    """Checks, the canvas, and one forward of [x, canvas] that fixes the target (``target``, else
    ``default`` classes, else each image's top-1) and scores both ends."""
    wrapped, x = prepare(model, x, target, precision)
    rows = _check_batch_size(batch_size, x)
    batch = x.shape[0]
    with Guard(wrapped.module, grad=False):
        inputs = wrapped.working_copy(x)
        canvas = _canvas(wrapped, inputs, fill).contiguous(memory_format=torch.channels_last)  # fp32, outside autocast
        with compute_precision(wrapped, precision):
            output = wrapped.module(torch.cat([inputs, canvas]))
            chosen: Target = target if target is not None else default
            _, classes = resolve_target(chosen, output[:batch])
            fixed: Target = classes if classes is not None else chosen
            clean, filled = _score(fixed, output[:batch]), _score(fixed, output[batch:])
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


def _curve(setup: _Setup, result: Result, kind: str, steps: int, seed: int, progress: Tracker) -> Curve:
    """Every intermediate point of one curve, in batches of ``setup.rows`` perturbed pictures."""
    maps = _maps_of(result, setup)
    batch, _, height, width = setup.x.shape
    pixels = height * width
    steps = _check_steps(steps, pixels)
    ranks = _order(maps, seed).view(batch, 1, height, width)
    counts = torch.round(torch.linspace(0, pixels, steps + 1, dtype=torch.float64)).long()  # pixels changed per point
    scores = torch.empty(batch, steps + 1, dtype=torch.float32, device=setup.x.device)
    start, end = (setup.clean, setup.filled) if kind == "deletion" else (setup.filled, setup.clean)
    scores[:, 0], scores[:, steps] = start, end
    # rows = (point, image) pairs for points 1..S-1, point-major
    total = (steps - 1) * batch
    with Guard(setup.model.module, grad=False), compute_precision(setup.model, setup.precision):
        for first in range(0, total, setup.rows):
            index = torch.arange(first, min(first + setup.rows, total), device=setup.x.device)
            point, image = index // batch + 1, index % batch
            changed = ranks[image] < counts.to(ranks.device)[point].view(-1, 1, 1, 1)  # (rows, 1, H, W)
            if kind == "deletion":
                chunk = torch.where(changed, setup.canvas[image], setup.x[image])
            else:
                chunk = torch.where(changed, setup.x[image], setup.canvas[image])
            output = setup.model.module(chunk.contiguous(memory_format=torch.channels_last))
            target = setup.target[image] if isinstance(setup.target, torch.Tensor) else setup.target
            scores[image, point] = _score(target, output)
            progress.advance(len(index))
    fractions = (counts.float() / pixels).to(scores.device)
    auc = torch.trapezoid(scores, fractions, dim=1)
    return Curve(fractions.cpu(), scores.cpu(), auc.cpu(), kind, result.method,
                 None if setup.classes is None else setup.classes.cpu(), setup.fill)


def _single(kind: str, model: Any, x: torch.Tensor, result: Result, steps: int, fill: Any, batch_size: int | None,
            target: Target, seed: int, precision: str, progress: ProgressArg) -> Curve:
    _check_result(result, x)
    prepare(model, x, target, precision)  # bad inputs fail before any forward
    _check_steps(steps, x.shape[-1] * x.shape[-2])
    setup = _setup(model, x, target=target, fill=fill, batch_size=batch_size, precision=precision, default=result.target)
    pixels = x.shape[-1] * x.shape[-2]
    with tracker(progress, max(0, _check_steps(steps, pixels) - 1) * x.shape[0], kind) as bar:
        return _curve(setup, result, kind, steps, seed, bar)


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
    forward (None: about 16 of 224×224). precision: "fp32" or "bf16" (autocast).
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
class Ranking:
    """Methods ranked by faithfulness on one batch, best first, the random baseline among them.

    rows:    one :class:`RankingRow` per method, sorted by the first metric in ``metric``
             (deletion AUC ascending, or insertion AUC descending).
    curves:  method -> kind -> :class:`Curve`, for figures.
    target:  (B,) the classes every method explained and every curve scored (None: a callable).
    """

    rows: list[RankingRow]
    metric: tuple[str, ...]
    steps: int
    fill: str
    target: torch.Tensor | None = None
    labels: list[str] | None = None
    curves: dict[str, dict[str, Curve]] = field(default_factory=dict, repr=False)
    baseline_samples: int = 1  # random maps averaged in the baseline's row

    @property
    def best(self) -> str:
        """The name of the best-ranked method (possibly the baseline, which says the maps are no better than chance)."""
        return self.rows[0].method

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
                     f"random map(s){who})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: rows, metric, steps, fill, target classes and labels."""
        return {"rows": [r.as_dict() for r in self.rows], "metric": list(self.metric), "steps": self.steps,
                "fill": self.fill, "target": None if self.target is None else self.target.tolist(), "labels": self.labels,
                "baseline_samples": self.baseline_samples}

    def figure(self) -> Figure:
        """Each method's batch-mean curve per metric (the baseline dashed)."""
        return ranking_figure(self)


def _check_methods(methods: Any, options: Any) -> tuple[list[str], dict[str, dict[str, Any]]]:
    from ..registry import get

    names = [methods] if isinstance(methods, str) else list(DEFAULT_METHODS if methods is None else methods)
    if not names or not all(isinstance(n, str) for n in names):
        raise ConvscopeError(f"methods must be a list of registered method names, got {methods!r}")
    if len(set(names)) != len(names):
        raise ConvscopeError(f"methods lists a name twice: {names}")
    names = [n for n in names if n != BASELINE]  # the baseline always runs, once
    for name in names:
        get(name)  # unknown names fail before any work, with suggestions
    options = {} if options is None else options
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise ConvscopeError("options must map a method name to a dict of its options, e.g. {'integrated_gradients': {'steps': 16}}")
    stray = [k for k in options if k not in names and k != BASELINE]
    if stray:
        raise ConvscopeError(f"options given for {stray[0]!r}, which is not in methods {names}")
    for name, opts in options.items():
        if "target" in opts:
            raise ConvscopeError(f"options[{name!r}] sets target; pass target= to compare so every method explains the same class")
    return names, dict(options)


def _ping(parent: Tracker) -> Callable[[int, int, str], None]:
    """A progress callback for a method run inside ``compare``: its own units are not counted, but
    every report reaches the caller's callback, so a long method can still be cancelled."""
    return lambda done, total, what: parent.advance(0)


def _mean_curve(curves: list[Curve]) -> Curve:
    """The pointwise mean of curves over the same points (its AUC is the mean AUC: the rule is linear)."""
    if len(curves) == 1:
        return curves[0]
    first = curves[0]
    return Curve(first.fractions, torch.stack([c.scores for c in curves]).mean(0), torch.stack([c.auc for c in curves]).mean(0),
                 first.kind, first.method, first.target, first.fill)


def compare(model: Any, x: torch.Tensor, methods: Sequence[str] | None = None, *, target: Target = None,
            metric: str | Sequence[str] = KINDS, steps: int = DEFAULT_STEPS, fill: Any = "blur", seed: int = 0,
            options: dict[str, dict[str, Any]] | None = None, baseline_samples: int = 3, batch_size: int | None = None,
            precision: str = "fp32", progress: ProgressArg = None) -> Ranking:
    """Rank registered methods by faithfulness on an image or a batch, with a random-map baseline.

    Every method (by registry name; ``options`` = per-method keyword options) explains the same
    classes — ``target``, else each image's top-1 — and its map is scored by deletion (area under the
    curve, lower is better) and insertion (higher is better), averaged over the batch. The random
    baseline always runs: the mean curve of ``baseline_samples`` random maps (:func:`random_map`, drawn
    from ``seed``; one draw's AUC varies by ±0.1 on a single photo, so chance is an average); a method
    ranked below it orders pixels no better than chance on these images. Rows are sorted by the first
    ``metric``.

    Cost per method: its own explanation plus ``steps - 1`` forwards per image per metric (the end
    points are shared by all methods). ``steps``, ``fill``, ``batch_size``, ``precision`` as in
    :func:`deletion`.
    """
    from ..registry import get

    names, options = _check_methods(methods, options)
    kinds = _check_kinds(metric)
    if isinstance(baseline_samples, bool) or not isinstance(baseline_samples, int) or baseline_samples < 1:
        raise ConvscopeError(f"baseline_samples must be a positive integer, got {baseline_samples!r}")
    prepare(model, x, target, precision)
    _check_steps(steps, x.shape[-1] * x.shape[-2])
    setup = _setup(model, x, target=target, fill=fill, batch_size=batch_size, precision=precision)
    batch = x.shape[0]
    fixed = setup.target
    per_curve = (steps - 1) * batch
    rows: list[RankingRow] = []
    curves: dict[str, dict[str, Curve]] = {}
    runs = len(names) + baseline_samples
    with tracker(progress, runs * (1 + len(kinds) * per_curve), "comparing methods") as bar:
        for name in [*names, BASELINE]:
            started = time.perf_counter()
            if name == BASELINE:
                draws = [random_map(setup.model, x, target=fixed, seed=int(seed) * 1_000_003 + k, **options.get(BASELINE, {}))
                         for k in range(baseline_samples)]
            else:
                info = get(name)
                extra = dict(options.get(name, {}))
                if "progress" in info.options and "progress" not in extra:
                    extra["progress"] = _ping(bar)
                draws = [info.fn(setup.model, x, target=fixed, **extra)]
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


# -- pictures (compute above, rendering here) -----------------------------------------------------------
def curve_figure(curves: Sequence[Curve]) -> Figure:
    """One panel per curve: every image's score against the fraction of pixels changed, AUC in the legend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(curves), 3.2), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, curve in zip(axes, curves):
        fractions = curve.fractions.numpy()
        for i, (scores, auc) in enumerate(zip(curve.scores.numpy(), curve.auc.tolist())):
            ax.plot(fractions, scores, label=f"image {i}: AUC {auc:.3f}")
            ax.fill_between(fractions, scores, alpha=0.12)
        verb = "removed" if curve.kind == "deletion" else "revealed"
        ax.set(xlabel=f"fraction of pixels {verb}", ylabel="probability", xlim=(0, 1), ylim=(0, None),
               title=f"{curve.kind} · {curve.method} (fill {curve.fill})")
        ax.legend(fontsize=7)
    return fig


def ranking_figure(ranking: Ranking) -> Figure:
    """One panel per metric: each method's batch-mean curve, the random baseline dashed."""
    from matplotlib.figure import Figure

    kinds = ranking.metric
    fig = Figure(figsize=(4.6 * len(kinds), 3.4), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        for row in ranking.rows:
            curve = ranking.curves[row.method][kind]
            auc = row.deletion_auc if kind == "deletion" else row.insertion_auc
            ax.plot(curve.fractions.numpy(), curve.scores.mean(0).numpy(), "--" if row.baseline else "-",
                    color="gray" if row.baseline else None, label=f"{row.method} ({auc:.3f})")
        better = "lower" if kind == "deletion" else "higher"
        ax.set(xlabel="fraction of pixels " + ("removed" if kind == "deletion" else "revealed"), ylabel="probability",
               xlim=(0, 1), ylim=(0, None), title=f"{kind} AUC ({better} is better)")
        ax.legend(fontsize=7)
    return fig

