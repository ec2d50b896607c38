"""Every registered convscope attribution method, timed as a multiple of the model's own forward pass,
next to Captum and pytorch-grad-cam, with the agreement of its bfloat16 maps with float32.

Usage::

    python benchmarks/bench_methods.py                                # EfficientNet-Lite0, batches 1 and 8
    python benchmarks/bench_methods.py --model resnet50 --batches 8   # torchvision names: weights=None
    python benchmarks/bench_methods.py --methods gradcam,scorecam --repeats 10
    python benchmarks/bench_methods.py --skip-slow                    # leave out Score-CAM and Ablation-CAM

Method of measurement
---------------------
The approach of ``bench_attribution.py``, whose helpers this script imports (``Contender``, the
rotated and garbage-collector-free rounds, the warm-up, the budget of rounds):

* **The unit is F**, the model's plain inference forward on the same batch (``with
  torch.inference_mode(): module(x)``, model in eval). Every time is divided by the F measured *in the
  same round*, moments apart; the table gives the median over rounds of that per-round ratio.
* **Groups of interleaved rounds.** Contenders are timed in groups, and every group contains F. A
  round calls each contender of its group once, starting one position later each round, so drift of
  a shared machine hits all of them alike. F is called again before every ``--f-every`` contenders
  (before every one in the heavy groups) and the round's F is the median of those calls, so one
  unlucky F sample does not skew a whole round. The groups: ``single-pass`` (one forward and at most
  one backward: pixel gradients and CAMs, their references and the floors), ``integrated_gradients``,
  ``smoothgrad`` and ``slow`` (Score-CAM, Ablation-CAM and their references, on one image, one round
  by default, no warm-up: the single-pass group has already paid convscope's one-time layer trace).
  The single-pass group records rounds for ``--budget`` seconds (at least 5); the integrated-gradients
  and SmoothGrad groups run ``--heavy-repeats`` rounds after ``--heavy-warmup`` (default 1) warm-up rounds.
* **Units.** Integrated gradients is reported per path point, ÷ (steps × F); Score-CAM and
  Ablation-CAM per channel of the explained layer, ÷ (K × F); everything else ÷ F. ``speedup`` is
  the median of the per-round ``reference / ours`` ratios, for the reference whose own ratio to F is
  the lowest.
* **References** get what a user would prepare once outside the timed call: Captum the top-1 classes
  (convscope and pytorch-grad-cam find them inside the call); pytorch-grad-cam objects are built before
  and released after each timed call (their hooks would otherwise fire in other contenders' forwards).
  Captum and pytorch-grad-cam run on the model as loaded (parameters requiring grad); convscope turns
  that off inside its call. No reference may put more than ``--max-ref-rows`` (64) images through one
  backward, about 80 MB each on Lite0: ``IntegratedGradients`` with its default ``internal_batch_size``
  (all steps × batch rows at once, 20 GB at batch 8) is then skipped, and ``NoiseTunnel`` gets a
  smaller ``nt_samples_batch_size`` (it counts samples, each a whole batch); both with a note.
* **CAM layer.** Captum and pytorch-grad-cam hook modules; convscope's default layer on Lite0 is
  ``_swish@1``, one call of a shared module, so they get ``_bn1``, the same map before the ReLU6
  (``bench_attribution.external_cam_layer``). On ResNet and VGG all use convscope's default layer.
* **bf16.** Each method is also timed with ``precision="bf16"``; methods that refuse it (a
  ``ConvscopeError`` saying it is not offered) show "not offered". ``bf16`` gives that time ÷ F and,
  in brackets, ÷ the same method's fp32 time; ``corr`` is the Pearson correlation of ``.maps()`` fp32
  vs bf16 per image, the minimum over the batch (from the last timed calls), over the images where
  both precisions explain the same class: when bf16 changes an uncertain top-1 class (Lite0's
  astronaut picture, p = 0.13) the maps answer different questions, so that image is left out of
  ``corr`` and named in a note with its own correlation. Floors shown: F under bf16
  autocast; F on a channels-last copy of the input (convscope feeds the model such a copy); F+B
  (forward + gradient of the top-1 scores to the input, no parameter requiring grad: the floor of any
  pixel-gradient method), on the caller's layout and on channels-last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's ScoreCAM draws a progress bar per chunk

import torch

import convscope as cs

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the sibling script, importable once its folder is on the path
from bench_attribution import (
    CamLayer,
    Contender,
    external_cam_layer,
    load_benchmark_model,
    make_batch,
    measure,
    no_param_grads,
)

IG_STEPS = 32
SG_SAMPLES = 16
SG_SIGMA = 0.15
MIN_CORR = 0.98
SLOW = ("scorecam", "ablationcam")
CAPTUM_GRADIENT = {"saliency": "Saliency", "input_x_gradient": "InputXGradient",
                   "guided_backprop": "GuidedBackprop", "deconvnet": "Deconvolution"}
GRAD_CAM_LIB = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
                "layercam": "LayerCAM", "hirescam": "HiResCAM", "eigencam": "EigenCAM",
                "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}


# -- what a row is -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Goal:
    """A target from the issue: ours <= ``max_units`` (in the row's unit) and >= ``min_speedup`` x the
    best reference; bf16 maps (where offered) correlate with fp32 >= MIN_CORR."""

    max_units: float | None = None
    min_speedup: float | None = None


@dataclass
class Row:
    """One table line: a contender of ours, its bf16 twin, its references, and the unit of its times."""

    label: str
    ours: Contender
    bf16: Contender | None = None
    refs: list[Contender] = field(default_factory=list)
    unit: int = 1  # times are divided by unit x F
    unit_label: str = "F"
    goal: Goal | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Group:
    """Contenders timed together in interleaved rounds, with F called before every ``f_every`` of them
    (the round's F is the median of those calls: one F sample is at the mercy of a single time slice)."""

    name: str
    rows: list[Row]  # rows[0] is F itself
    repeats: int | None  # None: rounds for the time budget
    warmup: int
    f_every: int = 1
    elapsed_s: float = field(default=0.0, init=False)
    f: list[Contender] = field(default_factory=list, init=False)
    contenders: list[Contender] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        first = self.rows[0].ours
        seen = {id(first)}  # identity: a Contender compares by value
        timed = []
        for c in (c for row in self.rows for c in (row.ours, row.bf16, *row.refs) if c is not None):
            if id(c) not in seen:
                seen.add(id(c))
                timed.append(c)
        for i, c in enumerate(timed):
            if i % self.f_every == 0:
                f = first if not self.f else Contender(f"F #{len(self.f)}", first.run)
                self.f.append(f)
                self.contenders.append(f)
            self.contenders.append(c)

    def f_per_round(self) -> list[float]:
        return [statistics.median(times) for times in zip(*(c.times for c in self.f))]


class NotOffered(Exception):
    """The method refuses precision='bf16' (a ConvscopeError saying so)."""


@dataclass
class Setup:
    """What every contender is bound to: the model, the batch, and the CAM layers."""

    model: cs.Model
    x: torch.Tensor
    targets: torch.Tensor  # top-1 classes, handed to Captum for free
    layer: CamLayer  # the module Captum and pytorch-grad-cam hook
    channels: int  # K, channels of convscope's CAM layer
    max_ref_rows: int
    last: dict[str, Any] = field(default_factory=dict)  # each contender's last output, for the bf16 check

    def keep(self, name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            self.last[name] = out = fn()
            return out
        return run


# -- contenders ------------------------------------------------------------------------------------
def method_options(name: str) -> dict[str, Any]:
    return {"integrated_gradients": {"steps": IG_STEPS}, "smoothgrad": {"samples": SG_SAMPLES, "sigma": SG_SIGMA}}.get(name, {})


def ours(s: Setup, info: Any, precision: str) -> Contender:
    options = {**method_options(info.name), "precision": precision}

    def run() -> Any:
        try:
            return info.fn(s.model, s.x, **options)
        except cs.ConvscopeError as exc:
            if precision == "bf16" and "not offered" in str(exc):
                raise NotOffered(str(exc)) from None
            raise

    name = f"convscope {info.name}" + (" bf16" if precision == "bf16" else "")
    return Contender(name, s.keep(name, run))


def floors(s: Setup) -> list[Row]:
    """F itself (and in bf16), F on a channels-last input, and F+B on both layouts."""
    module = s.model.module
    channels_last = s.x.contiguous(memory_format=torch.channels_last)

    def forward(x: torch.Tensor, bf16: bool = False) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return module(x)
        return run

    def forward_backward(x: torch.Tensor) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.enable_grad():
                pixels = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
                out = module(pixels)
                (grad,) = torch.autograd.grad(out.gather(1, s.targets[:, None]).sum(), pixels)
            return grad
        return run

    frozen = lambda: no_param_grads(module)
    return [
        Row("F (inference forward)", Contender("F", forward(s.x)), bf16=Contender("F bf16", forward(s.x, True))),
        Row("F, channels-last input", Contender("F channels-last", forward(channels_last))),
        Row("F+B (grad to input)", Contender("F+B", forward_backward(s.x), around=frozen)),
        Row("F+B, channels-last input", Contender("F+B channels-last", forward_backward(channels_last), around=frozen)),
    ]


def grad_cam_lib(s: Setup, method: str) -> Contender:
    """pytorch-grad-cam's class for ``method``, built outside the timed call, targets=None (top-1)."""
    import pytorch_grad_cam

    cls = getattr(pytorch_grad_cam, GRAD_CAM_LIB[method])
    holder: dict[str, Any] = {}

    @contextmanager
    def built() -> Iterator[None]:
        holder["cam"] = cls(model=s.model.module, target_layers=[s.layer.module])
        try:
            yield
        finally:
            holder.pop("cam").activations_and_grads.release()

    return Contender(f"pytorch-grad-cam {cls.__name__}", lambda: holder["cam"](input_tensor=s.x, targets=None),
                     around=built)


def references(s: Setup, method: str) -> tuple[list[Contender], list[str]]:
    """The contenders to compare ``method`` with, and notes on those left out."""
    from captum import attr

    module, x, targets = s.model.module, s.x, s.targets
    refs: list[Contender] = []
    notes: list[str] = []
    if method in CAPTUM_GRADIENT:
        explainer = getattr(attr, CAPTUM_GRADIENT[method])(module)
        refs.append(Contender(f"captum {CAPTUM_GRADIENT[method]}", lambda: explainer.attribute(x, target=targets)))
    elif method == "integrated_gradients":
        ig = attr.IntegratedGradients(module)
        for batch_size in (16, None):
            rows = min(batch_size or IG_STEPS * len(x), IG_STEPS * len(x))
            name = f"captum IG internal_batch_size={batch_size or 'default'}"
            if rows > s.max_ref_rows:
                notes.append(f"{name} skipped: {rows} rows in one backward (> --max-ref-rows {s.max_ref_rows})")
                continue
            refs.append(Contender(name, lambda b=batch_size: ig.attribute(x, target=targets, n_steps=IG_STEPS,
                                                                          internal_batch_size=b)))
    elif method == "smoothgrad":
        tunnel = attr.NoiseTunnel(attr.Saliency(module))
        stdev = SG_SIGMA * float((x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).mean())
        per_pass = max(1, min(SG_SAMPLES, s.max_ref_rows // len(x)))  # nt_samples_batch_size counts samples, not rows
        if per_pass < SG_SAMPLES:
            notes.append(f"captum NoiseTunnel run with nt_samples_batch_size={per_pass}, not {SG_SAMPLES}: "
                         f"{SG_SAMPLES * len(x)} rows in one backward would exceed --max-ref-rows {s.max_ref_rows}")
        refs.append(Contender(f"captum NoiseTunnel(Saliency) nt_bs={per_pass}", lambda: tunnel.attribute(
            x, nt_type="smoothgrad", nt_samples=SG_SAMPLES, nt_samples_batch_size=per_pass, stdevs=stdev,
            target=targets)))
    if method in GRAD_CAM_LIB:
        refs.append(grad_cam_lib(s, method))
    if method == "gradcam":
        layer_cam = attr.LayerGradCam(module, s.layer.module)
        size = tuple(x.shape[-2:])
        refs.append(Contender("captum LayerGradCam+interp", lambda: attr.LayerAttribution.interpolate(
            layer_cam.attribute(x, target=targets, relu_attributions=True), size, interpolate_mode="bilinear")))
    return refs, notes


def goal_for(method: str) -> Goal | None:
    if method in CAPTUM_GRADIENT:
        return Goal(max_units=1.5, min_speedup=1.2)
    if method == "integrated_gradients":
        return Goal(max_units=1.3)
    if method in ("gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam"):
        return Goal(max_units=1.0)
    if method == "scorecam":
        return Goal(max_units=1.1, min_speedup=2.0)
    return None


def method_row(s: Setup, info: Any) -> Row:
    refs, notes = references(s, info.name)
    unit, unit_label = 1, "F"
    if info.name == "integrated_gradients":
        unit, unit_label = IG_STEPS, f"{IG_STEPS}F"
    elif info.name in SLOW:
        unit, unit_label = s.channels, f"{s.channels}F"
    return Row(info.name, ours(s, info, "fp32"), bf16=ours(s, info, "bf16"), refs=refs, unit=unit,
               unit_label=unit_label, goal=goal_for(info.name), notes=notes)


def make_groups(s: Setup, infos: Sequence[Any], args: argparse.Namespace) -> list[Group]:
    """The single-pass, integrated-gradients and SmoothGrad groups for the batch ``s.x``."""
    heavy = {"integrated_gradients", "smoothgrad"}
    single = [method_row(s, info) for info in infos if info.name not in heavy and info.name not in SLOW]
    groups = [Group("single-pass", floors(s) + single, args.repeats, args.warmup, f_every=args.f_every)]
    for info in infos:
        if info.name in heavy:  # fresh floors per group: a Contender keeps its times
            f, _, _, f_b = floors(s)
            f.bf16 = None
            groups.append(Group(info.name, [f, f_b, method_row(s, info)], args.heavy_repeats, args.heavy_warmup))
    return groups


def make_slow_group(s: Setup, infos: Sequence[Any], args: argparse.Namespace) -> Group | None:
    """Score-CAM and Ablation-CAM on ``s.x`` (one image)."""
    rows = [method_row(s, info) for info in infos if info.name in SLOW]
    if not rows:
        return None
    live = live_channels(s)
    for row in rows:
        row.notes.append(f"K = {s.channels} channels; {live} not constant on this image "
                         f"(convscope's scorecam skips constant maps, ablationcam all-zero ones)")
    forward = floors(s)[0]
    forward.bf16 = None
    return Group("slow", [forward, *rows], args.slow_repeats, 0)


def live_channels(s: Setup) -> int:
    """Channels of convscope's CAM layer that are not constant on the first image."""
    ref = cs.default_cam_layer(s.model, tuple(s.x.shape[1:]))
    with cs.Guard(s.model.module, grad=False) as guard:
        capture = guard.capture(ref, grad=False)
        s.model.module(s.x[:1])
    acts = capture.check()[0].flatten(1).float()
    span = acts.amax(dim=1) - acts.amin(dim=1)
    return int((span > 1e-7 * max(1.0, float(acts.abs().max()))).sum())


# -- statistics and the table ------------------------------------------------------------------------
def per_round(c: Contender, f: Sequence[float], unit: int) -> list[float]:
    return [t / (ft * unit) for t, ft in zip(c.times, f)]


def median_units(c: Contender | None, f: Sequence[float], unit: int) -> float | None:
    if c is None or c.error is not None or not c.times:
        return None
    return statistics.median(per_round(c, f, unit))


def map_correlation(a: Any, b: Any) -> tuple[float | None, list[str]]:
    """The minimum over the batch of the per-image Pearson correlation of two Results' ``.maps()``,
    over the images where both explain the same class; and a note for each image where they do not
    (bf16 changed the top-1 class: a different question, not a less precise map)."""
    fa, fb = a.maps().flatten(1).double(), b.maps().flatten(1).double()
    fa, fb = fa - fa.mean(dim=1, keepdim=True), fb - fb.mean(dim=1, keepdim=True)
    corr = (fa * fb).sum(dim=1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-30)
    same = torch.ones_like(corr, dtype=torch.bool)
    if a.target is not None and b.target is not None:
        same = a.target.cpu() == b.target.cpu()
    notes = [f"bf16 picked class {int(b.target[i])} instead of {int(a.target[i])} for image {i} "
             f"(fp32 top-1 probability {float(a.meta['probabilities'][i]):.2f}); map corr there {float(corr[i]):.3f}, "
             f"left out of corr" for i in torch.nonzero(~same).flatten().tolist()]
    return (float(corr[same].min()) if bool(same.any()) else None), notes


@dataclass
class Line:
    """A row's numbers, ready to print."""

    label: str
    unit_label: str
    seconds: float | None
    ours: float | None
    ours_error: str | None
    best_ref: str
    ref_units: float | None
    speedup: float | None
    bf16: str
    bf16_units: float | None
    corr: float | None
    verdict: str


def summarize(row: Row, f: Sequence[float], s: Setup, is_f: bool) -> Line:
    """The row's numbers; for F itself (``is_f``) the ratio is 1 by definition (the round's F is the
    median of several F calls, and the row's own calls are among them)."""
    mine = 1.0 if is_f else median_units(row.ours, f, row.unit)
    seconds = statistics.median(row.ours.times) if row.ours.times else None
    scored = [(median_units(r, f, row.unit), r) for r in row.refs]
    scored = [(v, r) for v, r in scored if v is not None]
    best_value, best = min(scored, key=lambda pair: pair[0]) if scored else (None, None)
    speedup = None
    if best is not None and mine is not None:
        speedup = statistics.median(t_ref / t_ours for t_ref, t_ours in zip(best.times, row.ours.times))
    bf16_units, corr, bf16 = None, None, "-"
    if row.bf16 is not None:
        if row.bf16.error is not None and row.bf16.error.startswith("NotOffered"):
            bf16 = "not offered"
        elif row.bf16.error is not None:
            bf16 = "failed"
        elif mine is not None:
            bf16_units = median_units(row.bf16, f, row.unit)
            vs_fp32 = statistics.median(b / a for b, a in zip(row.bf16.times, row.ours.times))
            bf16 = f"{bf16_units:.2f} ({vs_fp32:.2f})"
            if row.ours.name in s.last and row.bf16.name in s.last and hasattr(s.last[row.ours.name], "maps"):
                corr, flips = map_correlation(s.last[row.ours.name], s.last[row.bf16.name])
                row.notes += [n for n in flips if n not in row.notes]
    return Line(row.label, row.unit_label, seconds, mine, row.ours.error, best.name if best else "-", best_value, speedup,
                bf16, bf16_units, corr, verdict(row, mine, speedup, corr))


def verdict(row: Row, mine: float | None, speedup: float | None, corr: float | None) -> str:
    if row.goal is None and corr is None:
        return "-"
    if mine is None:
        return "NO (failed)"
    misses = []
    goal = row.goal or Goal()
    if goal.max_units is not None and mine > goal.max_units:
        misses.append(f"{mine:.2f} > {goal.max_units} {row.unit_label}")
    if goal.min_speedup is not None and (speedup is None or speedup < goal.min_speedup):
        misses.append(f"speedup {'n/a' if speedup is None else f'{speedup:.2f}'} < {goal.min_speedup}")
    if corr is not None and corr < MIN_CORR:
        misses.append(f"corr {corr:.3f} < {MIN_CORR}")
    return "yes" if not misses else "NO: " + "; ".join(misses)


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(title: str, groups: Sequence[Group], s: Setup) -> None:
    header = (f"  {'method':<24} {'ours s':>8} {'unit':>6} {'ours':>7}  {'best reference':<38} {'ref':>7} {'speedup':>8}  "
              f"{'bf16 (/fp32)':<13} {'corr':>6}  target met?")
    print(f"\n{title}\n{header}\n  {'-' * (len(header) + 8)}")
    notes: list[str] = []
    for group in groups:
        f = group.f_per_round()
        calls = sorted(t for c in group.f for t in c.times)
        q = statistics.quantiles(calls, n=4) if len(calls) >= 2 else calls * 3
        print(f"  [{group.name}: {len(f)} round(s) in {group.elapsed_s:.0f} s; F timed {len(group.f)}x per round: "
              f"median {statistics.median(calls):.4f} s, IQR {q[0]:.4f}..{q[2]:.4f} s]")
        if q[2] > 1.25 * q[0]:
            notes.append(f"{group.name}: F itself varied (IQR {q[0]:.4f}..{q[2]:.4f} s): the machine is busy")
        for row in group.rows:
            line = summarize(row, f, s, is_f=row.ours is group.f[0])
            ours = fmt(line.ours) if line.ours_error is None else "failed"
            speedup = "-" if line.speedup is None else f"{line.speedup:.2f}x"
            print(f"  {line.label:<24} {fmt(line.seconds, '.3f'):>8} {line.unit_label:>6} {ours:>7}  "
                  f"{line.best_ref:<38} {fmt(line.ref_units):>7} {speedup:>8}  {line.bf16:<13} "
                  f"{fmt(line.corr, '.3f'):>6}  {line.verdict}")
            notes += [f"{row.label}: {note}" for note in row.notes]
            notes += [f"{c.name}: {c.error}" for c in (row.ours, *row.refs) if c.error is not None]
            notes += [f"{c.name} = {fmt(median_units(c, f, row.unit))} {row.unit_label}" for c in row.refs
                      if c.name != line.best_ref and c.error is None]
    for note in notes:
        print(f"    note: {note}")


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0 (pretrained) or a torchvision classifier name (random weights)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    p.add_argument("--methods", default=None, help="comma-separated method names (default: all registered)")
    p.add_argument("--repeats", type=int, default=None,
                   help="recorded rounds of the single-pass group (default: as many as fit in --budget, 5..60)")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds of recorded single-pass rounds per batch when --repeats is not given (default: 20)")
    p.add_argument("--warmup", type=int, default=2, help="unrecorded single-pass rounds first (default: 2)")
    p.add_argument("--heavy-repeats", type=int, default=2,
                   help="recorded rounds of integrated gradients and SmoothGrad (default: 2, after 1 warm-up)")
    p.add_argument("--heavy-warmup", type=int, default=1,
                   help="unrecorded rounds of integrated gradients and SmoothGrad first (default: 1)")
    p.add_argument("--slow-repeats", type=int, default=1, help="rounds of Score-CAM / Ablation-CAM (default: 1)")
    p.add_argument("--f-every", type=int, default=4,
                   help="single-pass group: time F again before every N contenders (default: 4)")
    p.add_argument("--skip-slow", action="store_true", help="leave out scorecam and ablationcam")
    p.add_argument("--max-ref-rows", type=int, default=64,
                   help="most rows a reference puts through one backward (default: 64; ~80 MB a row on Lite0)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    return p.parse_args(argv)


def selected_methods(spec: str | None, skip_slow: bool) -> list[Any]:
    """Gradient and CAM methods (perturbation methods have their own benchmark, bench_perturbation.py)."""
    infos = [info for info in cs.methods() if info.group != "perturbation"]
    if spec:
        wanted = [name.strip() for name in spec.split(",") if name.strip()]
        known = {info.name for info in infos}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise SystemExit(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(sorted(known))}")
        infos = [info for info in infos if info.name in wanted]
    return [info for info in infos if not (skip_slow and info.name in SLOW)]


def make_setup(model: cs.Model, batch: int, layer: CamLayer, channels: int, max_ref_rows: int) -> Setup:
    x = make_batch(model, batch)
    with torch.no_grad():  # not inference_mode: Captum's gather would refuse an inference tensor
        targets = model.module(x).argmax(dim=1)
    return Setup(model, x, targets, layer, channels, max_ref_rows)


def env_line() -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_avg = f", load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    from importlib.metadata import version

    import captum

    return (f"env: torch {torch.__version__}, captum {captum.__version__}, grad-cam {version('grad-cam')}, "
            f"threads {torch.get_num_threads()}, cpu_count {os.cpu_count()} (usable {affinity}){load_avg}")


def run_groups(groups: Sequence[Group], budget: float) -> None:
    for group in groups:
        start = time.perf_counter()
        measure(group.contenders, group.repeats, group.warmup, budget)
        group.elapsed_s = time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
    warnings.filterwarnings("ignore", message=".*(ReLU-like|Setting backward hooks|non-full backward hook).*")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    infos = selected_methods(args.methods, args.skip_slow)
    model = load_benchmark_model(args.model)
    model.module.eval()
    ref = cs.default_cam_layer(model, (model.channels, *model.input_size))
    layer = external_cam_layer(model, ref)
    channels = next(row.output_shape[0] for row in cs.layers(model) if row.name == ref.label)
    print(f"model {model.name}; convscope CAM layer: {ref.label} ({channels} channels); Captum / pytorch-grad-cam "
          f"layer: {layer.name}\n  ({layer.note})")
    print(f"methods: {', '.join(info.name for info in infos)}; integrated_gradients steps={IG_STEPS}, "
          f"smoothgrad samples={SG_SAMPLES}")
    slow_done = not any(info.name in SLOW for info in infos)
    for batch in args.batches:
        print(f"\n{env_line()}, batch {batch}")
        s = make_setup(model, batch, layer, channels, args.max_ref_rows)
        groups = make_groups(s, infos, args)
        if batch == 1 and not slow_done:
            slow = make_slow_group(s, infos, args)
            groups += [slow] if slow else []
            slow_done = True
        run_groups(groups, args.budget)
        print_table(f"batch {batch}, input {tuple(s.x.shape)}", groups, s)
    if not slow_done:
        s = make_setup(model, 1, layer, channels, args.max_ref_rows)
        slow = make_slow_group(s, infos, args)
        if slow is not None:
            print(f"\n{env_line()}, 1 image")
            run_groups([slow], args.budget)
            print_table("slow methods, 1 image", [slow], s)


if __name__ == "__main__":
    main()
