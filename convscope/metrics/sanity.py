"""Sanity check: does the explanation depend on what the model learned?

Cascading model-parameter randomization (Adebayo et al. 2018, Sanity Checks for Saliency Maps): on
a private copy of the model, re-initialize the parameterized layers from the output back to the
input, one group at a time (the randomized part grows: a cascade), explain the same classes after
each step and measure how similar each map stays to the original one — Spearman rank correlation of
the absolute maps (and of the signed maps when the method has signs) and SSIM of the maps scaled to
[0, 1]. A method whose maps survive the randomization of the whole network is showing the input
(edges), not the model: guided backpropagation is the known example.

The user's model is only read (``copy.deepcopy``); its weights, buffers and flags never change.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..engine import Cost, prepare
from ..errors import ConvscopeError, LayerError, ModelError
from ..layers import layers as list_layers
from ..layers import resolve_layer
from ..models import Model, as_model
from ..options import Seed
from ..progress import ProgressArg, tracker
from ..registry import CostContext, ReportSpec, register
from ..result import Displayable, Result
from ..targets import Target
from .nested import method as checked_method

__all__ = ["SanityReport", "layer_groups", "rank_correlation", "sanity", "ssim"]

THRESHOLD = 0.5
REST = "(all remaining)"


# -- similarity --------------------------------------------------------------------------------------
def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,) float64 ranks, ties sharing their average rank (as scipy.stats.rankdata)."""
    ordered, order = torch.sort(values)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average = ends - (counts.double() + 1) / 2  # 0-based mean position of each run of equal values
    ranks = torch.empty(values.shape, dtype=torch.float64, device=values.device)
    ranks[order] = average[inverse]
    return ranks


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per image between (B, ...) maps ``a`` and ``b``, (B,).

    Ranks with ties averaged, then Pearson's correlation of the ranks. A constant map carries no
    ordering: its correlation with anything is 0 (not NaN).
    """
    a, b = a.detach().flatten(1).float(), b.detach().flatten(1).float().to(a.device)
    out = torch.empty(a.shape[0], dtype=torch.float64)
    for i in range(a.shape[0]):
        ra, rb = _average_ranks(torch.nan_to_num(a[i])), _average_ranks(torch.nan_to_num(b[i]))
        ra, rb = ra - ra.mean(), rb - rb.mean()
        norm = float(ra.norm() * rb.norm())
        out[i] = float(ra @ rb) / norm if norm > 0 else 0.0
    return out.float()


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) scaled to [0, 1] per image (a constant map becomes 0)."""
    flat = torch.nan_to_num(maps.detach().float()).flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = high - low
    return ((flat - low) / torch.where(span > 0, span, 1)).view_as(maps)


def ssim(a: torch.Tensor, b: torch.Tensor, *, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) per image of (B, H, W) maps, each first scaled
    to [0, 1], (B,).

    Gaussian window (``sigma`` 1.5, 11 taps), K1 = 0.01, K2 = 0.03, data range 1, averaged over the
    positions where the window fits — scikit-image's ``structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)``.
    """
    x, y = _unit(a)[:, None].double(), _unit(b)[:, None].double().to(a.device)
    radius = int(3.5 * sigma + 0.5)
    if min(x.shape[-2:]) < 2 * radius + 1:
        raise ConvscopeError(f"maps of {tuple(x.shape[-2:])} are smaller than the {2 * radius + 1}-pixel SSIM window")
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, no padding: only positions where the window fits
        return F.conv2d(F.conv2d(t, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).float().cpu()


# -- which layers, in which order -----------------------------------------------------------------------
def _owns_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


def _block_key(name: str) -> str:
    """A layer's block: the name up to its first numbered part (``layer4.1.conv2`` -> ``layer4.1``,
    ``_blocks.15._project_conv`` -> ``_blocks.15``), else the layer itself."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return name


def layer_groups(model: Model | nn.Module, input_size: Sequence[int]) -> list[tuple[str, list[nn.Module]]]:
    """The model's parameterized layers grouped into blocks, from the output back to the input:
    [(label, modules)]. Consecutive layers of one numbered block (``layer4.1``, ``_blocks.15``,
    ``features.18``) form one group; a normalization layer joins the layer it follows (``conv1`` +
    ``bn1``); other layers stand alone (``fc``). ``input_size`` is (C, H, W) or (H, W)."""
    seen: set[int] = set()
    ordered: list[tuple[str, nn.Module]] = []
    for info in list_layers(model, input_size=input_size):
        if _owns_parameters(info.module) and id(info.module) not in seen:
            seen.add(id(info.module))
            ordered.append((info.name.split("@")[0], info.module))
    groups: list[tuple[str, list[str], list[nn.Module]]] = []  # (key, names, modules) in execution order
    for name, module in ordered:
        key = _block_key(name)
        if groups and (groups[-1][0] == key or (_is_norm(module) and key == name)):
            groups[-1][1].append(name)
            groups[-1][2].append(module)
        else:
            groups.append((key, [name], [module]))
    labelled = []
    for key, names, modules in groups:
        label = names[0] if len(names) == 1 else key if all(n.startswith(key + ".") for n in names) else " + ".join(names)
        labelled.append((label, modules))
    return labelled[::-1]


def _named_groups(model: Model, names: Sequence[Any]) -> list[tuple[str, list[nn.Module]]]:
    groups = []
    for name in names:
        ref = resolve_layer(model, name)
        modules = [m for m in ref.module.modules() if _owns_parameters(m)]
        if not modules:
            raise LayerError(f"layer {ref.name!r} has no parameters to randomize; name a conv, a linear layer or a block")
        groups.append((ref.name, modules))
    return groups


def _steps(model: Model, x: torch.Tensor, layers: Any) -> list[tuple[str, list[nn.Module]]]:
    """The cascade: None = every group top-down; an int N = the top N groups then the rest in one
    step; names = those layers/blocks in the order given."""
    if layers is not None and not isinstance(layers, (int, str)) and not isinstance(layers, Sequence):
        raise ConvscopeError(f"layers must be None, a number of groups or a list of layer names, got {type(layers).__name__}")
    if isinstance(layers, str) or (isinstance(layers, Sequence) and not isinstance(layers, str)):
        names = [layers] if isinstance(layers, str) else list(layers)
        if not names:
            raise ConvscopeError("layers is an empty list; give layer names, a number of groups, or None for all")
        return _named_groups(model, names)
    if isinstance(layers, bool) or (layers is not None and (not isinstance(layers, int) or layers < 1)):
        raise ConvscopeError(f"layers must be a positive number of groups, got {layers!r}")
    groups = layer_groups(model, tuple(x.shape[1:]))
    if not groups:
        raise ModelError("the model has no parameterized layers to randomize")
    chosen = groups if layers is None else groups[:layers]
    covered = {id(m) for _, modules in chosen for m in modules}
    rest = [m for m in model.module.modules() if _owns_parameters(m) and id(m) not in covered]
    return [*chosen, (REST, rest)] if rest else chosen


def _reinitialize(modules: Sequence[nn.Module], seed: int) -> None:
    """Fresh random parameters for ``modules``: their own ``reset_parameters()`` (a BatchNorm also
    resets its running statistics), drawn from ``seed`` in a forked RNG so the caller's global
    random state is untouched. A module without ``reset_parameters`` gets uniform weights in
    ±1/sqrt(fan_in) and 1-D parameters redrawn from a Gaussian with their own mean and std."""
    cuda = sorted({p.device.index or 0 for m in modules for p in m.parameters(recurse=False) if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(seed)
        for module in modules:
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            for p in module.parameters(recurse=False):
                if p.dim() >= 2:
                    bound = 1 / math.sqrt(max(1, p[0].numel()))
                    p.uniform_(-bound, bound)
                else:
                    p.copy_(torch.randn_like(p) * p.std().nan_to_num(0) + p.mean())


def _private_copy(model: Model) -> Model:
    try:
        module = copy.deepcopy(model.module)
    except Exception as exc:
        raise ModelError(f"the sanity check needs a copy of the model and copy.deepcopy failed ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); pass a deep-copyable nn.Module") from None
    clone = copy.copy(model)
    clone.module = module
    return clone


# -- the report -------------------------------------------------------------------------------------
@dataclass(eq=False)
class SanityReport(Displayable):
    """The cascading randomization of one method on one batch (S steps, B images); kind "sanity":
    ``figure(index=0)`` draws one image's maps along the cascade and the similarity curves.

    layers:                  what each step randomized in addition to the steps before (top-down).
    rank_correlation:        (S, B) Spearman rank correlation of |map| with the original |map|.
    rank_correlation_signed: (S, B) the same on the signed maps (channel sum for pixel methods),
                             None when the original map has no negative values.
    ssim:                    (S, B) SSIM of the maps scaled to [0, 1] with the original.
    maps:                    (S + 1, B, H, W) the |maps|, the original first (raw values).
    threshold:               ``passed`` needs the mean rank correlation over the cascade below it.
    """

    kind = "sanity"

    method: str
    layers: list[str]
    rank_correlation: torch.Tensor
    rank_correlation_signed: torch.Tensor | None
    ssim: torch.Tensor
    maps: torch.Tensor
    threshold: float
    target: torch.Tensor | None = None
    labels: list[str] | None = None

    def __repr__(self) -> str:
        score = ", ".join(f"{v:.2f}" for v in self.score.tolist())
        return f"SanityReport(method={self.method!r}, steps={len(self.layers)}, score=[{score}], passed={self.passed})"

    @property
    def score(self) -> torch.Tensor:
        """(B,) the mean rank correlation of |map| over the cascade's steps (the area under the
        cascade curve with steps weighted equally): how much of the map survives randomization."""
        return self.rank_correlation.mean(dim=0)

    @property
    def passed_per_image(self) -> torch.Tensor:
        """(B,) bool: ``score`` is below ``threshold``."""
        return self.score < self.threshold

    @property
    def passed(self) -> bool:
        """Every image's map changed clearly as the model's weights were randomized."""
        return bool(self.passed_per_image.all())

    def table(self) -> str:
        """Plain text, one row per step: randomized layers, rank correlation (abs, signed), SSIM (batch means)."""
        header = ["randomized (cumulative)", "rank corr |map|", "rank corr signed", "SSIM"]
        cells = []
        for i, name in enumerate(self.layers):
            signed = "-" if self.rank_correlation_signed is None else f"{float(self.rank_correlation_signed[i].mean()):.3f}"
            cells.append([name, f"{float(self.rank_correlation[i].mean()):.3f}", signed, f"{float(self.ssim[i].mean()):.3f}"])
        widths = [max(len(header[i]), *(len(c[i]) for c in cells)) + 2 for i in range(len(header))]
        lines = [f"sanity check of {self.method} (Adebayo et al. 2018): cascading randomization, output to input",
                 "".join(h.ljust(w) for h, w in zip(header, widths)), "─" * sum(widths)]
        lines += ["".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
        scores = ", ".join(f"{v:.3f}" for v in self.score.tolist())
        verdict = (f"PASSED: the map changes with the weights (mean rank correlation {scores} < {self.threshold})" if self.passed
                   else f"FAILED: the map survives randomization (mean rank correlation {scores}; needs < {self.threshold})")
        lines.append(verdict)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per step of the cascade: what it randomized and the batch-mean similarities."""
        signed = self.rank_correlation_signed
        return [{"step": i + 1, "randomized": name, "rank_correlation": float(self.rank_correlation[i].mean()),
                 "rank_correlation_signed": None if signed is None else float(signed[i].mean()),
                 "ssim": float(self.ssim[i].mean())} for i, name in enumerate(self.layers)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe numbers (no maps)."""
        signed = None if self.rank_correlation_signed is None else self.rank_correlation_signed.tolist()
        return {"method": self.method, "layers": list(self.layers), "rank_correlation": self.rank_correlation.tolist(),
                "rank_correlation_signed": signed, "ssim": self.ssim.tolist(), "threshold": self.threshold,
                "score": self.score.tolist(), "passed": self.passed, "passed_per_image": self.passed_per_image.tolist(),
                "target": None if self.target is None else self.target.tolist(), "labels": self.labels}


def _signed(result: Result) -> torch.Tensor:
    """(B, H, W) the map with its signs: the channel sum for pixel methods."""
    return result.data.detach().float().sum(dim=1)


LayerNames = Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(min_length=1, max_length=1000)]


def _cascade_length(model: Model, shape: tuple[int, ...], layers: Any) -> int:
    """How many steps the cascade will have (as ``_steps`` will build it), from the cached layer trace."""
    if isinstance(layers, str):
        return 1
    if isinstance(layers, Sequence):
        return len(layers)
    groups = len(layer_groups(model, shape))
    if layers is None:
        return groups
    return groups if layers >= groups else layers + 1  # the top N, then all the rest in one step


def _sanity_cost(context: CostContext) -> Cost:
    """The method once on the original model and once after each step of the cascade; the model's copy and
    the kept maps in memory."""
    x, model = context.x, context.model
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or model is None:
        return Cost(0)
    chosen = checked_method(context.options["method"], context.options["options"], who="sanity")
    per_call = chosen.cost(model, x)
    steps = _cascade_length(model, tuple(x.shape[1:]), context.options["layers"])
    copy_bytes = sum(p.numel() * p.element_size() for p in model.module.parameters())
    maps_bytes = (steps + 1) * x.shape[0] * x.shape[-2] * x.shape[-1] * 4
    return Cost(per_call.forwards * (steps + 1), max(per_call.memory, copy_bytes + maps_bytes),
                f"{chosen.name} on the model and after each of {steps} randomization steps")


@register("sanity", family="trust", takes="images", returns="sanity", cost=_sanity_cost,
          paper="Adebayo et al. 2018, Sanity Checks for Saliency Maps (cascading model-parameter randomization)",
          quick={"layers": 3},
          report=ReportSpec(title="Sanity check: does the map depend on what the model learned?", style={"columns": 6},
                            note="The network's weights are randomized block by block from the output down and the map "
                                 "is made again each time: a map that reads the learned weights loses its similarity to "
                                 "the original at once (below the dashed line); one that survives shows the picture's edges."))
def sanity(model: Any, x: torch.Tensor, method: Annotated[str, Field(min_length=1, max_length=64)] = "gradcam", *,
           target: Target = None, layers: Annotated[int, Field(ge=1, le=10_000)] | LayerNames | str | None = None,
           seed: Seed = 0, options: dict[str, Any] | None = None,
           threshold: Annotated[float, Field(gt=-1, le=1)] = THRESHOLD, progress: ProgressArg = None) -> SanityReport:
    """Cascading model-parameter randomization (Adebayo et al. 2018): does a method's map change when the
    model's weights are randomized, from the output back to the input?

    A private deep copy of the model is explained (``options`` = the method's keyword options), then
    its parameterized layers are re-initialized from the output back to the input — ``layers=None``:
    every block (see :func:`layer_groups`); an int N: the top N blocks one by one, then all the rest
    in one step; a list of names: those layers/blocks in the order given — and after each step the
    same classes (``target``, else the original top-1) are explained again and compared with the
    original map: Spearman rank correlation of |map| (and of the signed map), and SSIM.

    ``score`` = each image's rank correlation averaged over the steps (the area under the cascade
    curve); ``passed`` when every score is below ``threshold``. Why the mean and 0.5: a method that
    reads the learned weights loses its map as soon as the top layers are random, one that shows the
    input's edges keeps it until the first layers are random too — so the last step alone does not
    separate them (on EfficientNet-Lite0 and the four sample photos, guided backprop's maps too fall
    to 0.16-0.42 once everything is random), the cascade does: over Lite0's 19 blocks the mean is
    -0.03-0.13 for Grad-CAM, 0.24-0.38 for saliency and 0.70-0.75 for guided backprop (above 0.9 on
    the cat until block 9 is random). Below 0.5 the original ranking accounts, on average, for under
    a quarter (r² < 0.25) of the randomized one.
    With ``layers=N`` the score averages the top N steps and the final one. ``seed`` fixes the new
    weights (the global RNG is not touched). The user's model is only read. The method and its options
    are checked before any work.

    Options:
        method: the attribution method checked, by name (e.g. "gradcam", "guided_backprop").
        layers: what to randomize, step by step: none for every block of the network (output first); a number N
            for the top N blocks one by one and then all the rest at once (fewer steps, faster); or layer/block
            names in the order to randomize them.
        seed: draws the new random weights; the same seed gives the same cascade.
        options: the method's own options, e.g. {"steps": 16} for integrated_gradients.
        threshold: the check passes when the map's mean rank correlation with the original over the cascade is
            below this (0.5: the original map explains under a quarter of the randomized one).
    """
    chosen = checked_method(method, options, who="sanity")
    wrapped, x = prepare(model, x, target)
    clone = _private_copy(as_model(wrapped))
    steps = _steps(clone, x, layers)
    with tracker(progress, len(steps) + 1, f"sanity check ({chosen.name})") as bar:
        original = chosen(clone, x, target=target)
        bar.advance(1)
        fixed: Target = original.target if original.target is not None else target
        base_abs = original.maps().abs()
        base_signed = _signed(original)
        signed = bool((base_signed < 0).any())
        maps, rho, rho_signed, structure = [base_abs.cpu()], [], [], []
        for step, (_, modules) in enumerate(steps):
            _reinitialize(modules, int(seed) * 1_000_003 + step)
            result = chosen(clone, x, target=fixed)
            current = result.maps().abs()
            rho.append(rank_correlation(base_abs, current))
            if signed:
                rho_signed.append(rank_correlation(base_signed, _signed(result)))
            structure.append(ssim(base_abs, current))
            maps.append(current.cpu())
            bar.advance(1)
    return SanityReport(
        method=chosen.name, layers=[label for label, _ in steps], rank_correlation=torch.stack(rho),
        rank_correlation_signed=torch.stack(rho_signed) if signed else None, ssim=torch.stack(structure),
        maps=torch.stack(maps), threshold=float(threshold),
        target=None if original.target is None else original.target.cpu(), labels=original.labels)
