"""Cost of convscope's attribution methods relative to the model's own forward pass.

Usage::

    python benchmarks/bench_attribution.py                      # EfficientNet-Lite0, batches 1 and 8
    python benchmarks/bench_attribution.py --model resnet50     # torchvision names load with weights=None
    python benchmarks/bench_attribution.py --batches 8 --repeats 40 --threads 2

Method of measurement
---------------------
Absolute seconds on a CPU depend on the machine, its load, its clock and the thread count, so every
contender is reported as a multiple of ``F``: the model's plain inference forward on the same batch
(``with torch.inference_mode(): module(x)``, model in eval), measured in the same process.

* All contenders run *interleaved*: each repeat ("round") calls every contender once, in an order
  rotated by one position per round, so slow drift (thermal throttling, a noisy neighbour) hits all
  of them alike and no contender always runs right after the same other one.
* Warm-up rounds (not recorded) come first: the first calls pay for allocator growth, oneDNN
  primitive creation and convscope's one-time layer trace.
* Each call is timed alone with ``time.perf_counter``; anything a contender needs that a user would
  do once (building Captum / pytorch-grad-cam objects, the top-1 targets handed to Captum) is done
  outside the timed region. Python's garbage collector is paused during a round and run between
  rounds.
* Reported: the median seconds per contender, and the median over rounds of the per-round ratio
  ``t(contender) / t(F)`` — the ratio of two calls made moments apart, which is steadier than the
  ratio of two medians.

Contenders: F; F+B (forward and gradient to the input via ``torch.autograd.grad`` with no parameter
requiring grad: the floor for any gradient method); convscope ``saliency`` and ``gradcam`` with
``target=None``; Captum ``Saliency`` and ``LayerGradCam`` (+ ``LayerAttribution.interpolate`` to the
input size, so it produces what convscope produces) with the top-1 targets given for free; and
pytorch-grad-cam ``GradCAM`` with ``targets=None``. Captum and pytorch-grad-cam run on the model as
loaded (parameters requiring grad, the state a user has them in); convscope switches that off itself.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# Measure the convscope of this checkout, not whatever an (editable) install points at.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import convscope as cs

SAMPLES = ("cat", "coffee", "astronaut", "rocket")
LITE0_NAMES = ("efficientnet_lite0", "efficientnet-lite0", "lite0")
SPEC = "convscope Grad-CAM (target=None) <= 1.0 F and <= 0.85x Captum LayerGradCam"
SPEC_MAX_F, SPEC_MAX_CAPTUM = 1.0, 0.85


# -- contenders ------------------------------------------------------------------------------------
@dataclass
class Contender:
    """One timed call. ``around`` is entered before and left after the timed call, untimed."""

    name: str
    run: Callable[[], Any]
    around: Callable[[], ContextManager[Any]] = nullcontext
    times: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class CamLayer:
    """The layer Captum and pytorch-grad-cam hook, and why it may differ from convscope's."""

    name: str
    module: nn.Module
    note: str


@contextmanager
def no_param_grads(module: nn.Module) -> Iterator[None]:
    """Parameters not requiring grad inside the block; their flags restored after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def external_cam_layer(model: cs.Model, ref: cs.LayerRef) -> CamLayer:
    """The module to hand to libraries that hook a module, not one call of it.

    convscope's default layer may be one call of a shared module (Lite0: ``_swish@1``, the 2nd call of
    the ReLU6 used by stem and head). Hooking that module would fire on every call, so we walk back to
    the last module called once whose output has the same shape (Lite0: ``_bn1``, right before it).
    """
    if ref.call is None:
        return CamLayer(ref.name, ref.module, f"same layer as convscope ({ref.label})")
    rows = cs.layers(model)
    index = next(i for i, r in enumerate(rows) if r.name == ref.label)
    shape = rows[index].output_shape
    for row in reversed(rows[:index]):
        if "@" not in row.name and row.output_shape == shape:
            return CamLayer(row.name, row.module,
                            f"convscope uses {ref.label} (call {ref.call} of a shared module, which a module hook "
                            f"cannot single out); Captum and pytorch-grad-cam use {row.name}, the same "
                            f"{shape[1]}x{shape[2]} map right before it")
        if row.output_shape != shape:
            break
    raise SystemExit(f"no single-call module with the shape of {ref.label}; cannot compare with Captum")


def make_contenders(model: cs.Model, x: torch.Tensor, cam_layer: CamLayer) -> list[Contender]:
    """Every contender, bound to the batch ``x``."""
    from captum.attr import LayerAttribution, LayerGradCam, Saliency
    from pytorch_grad_cam import GradCAM

    module = model.module
    module.eval()
    with torch.no_grad():  # not inference_mode: Captum's gather would refuse an inference tensor
        targets = module(x).argmax(dim=1)  # top-1 classes, handed to Captum for free
    size = tuple(x.shape[-2:])
    captum_cam = LayerGradCam(module, cam_layer.module)
    captum_saliency = Saliency(module)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    def forward_backward() -> torch.Tensor:
        with torch.enable_grad():
            pixels = x.detach().clone().requires_grad_(True)
            out = module(pixels)
            (grad,) = torch.autograd.grad(out.gather(1, targets[:, None]).sum(), pixels)
        return grad

    def captum_gradcam() -> torch.Tensor:
        attr = captum_cam.attribute(x, target=targets, relu_attributions=True)
        return LayerAttribution.interpolate(attr, size, interpolate_mode="bilinear")

    holder: dict[str, Any] = {}

    @contextmanager
    def gradcam_object() -> Iterator[None]:
        # Built outside the timed call, as a user builds it once; released after so its hooks do not
        # fire during the other contenders' forwards.
        holder["cam"] = GradCAM(model=module, target_layers=[cam_layer.module])
        try:
            yield
        finally:
            holder.pop("cam").activations_and_grads.release()

    return [
        Contender("F  (inference forward)", forward),
        Contender("F+B (grad to input)", forward_backward, around=lambda: no_param_grads(module)),
        Contender("convscope saliency", lambda: cs.saliency(model, x)),
        Contender("captum Saliency", lambda: captum_saliency.attribute(x, target=targets)),
        Contender("convscope gradcam", lambda: cs.gradcam(model, x)),
        Contender("captum LayerGradCam+interp", captum_gradcam),
        Contender("pytorch-grad-cam GradCAM", lambda: holder["cam"](input_tensor=x, targets=None), around=gradcam_object),
    ]


# -- timing ----------------------------------------------------------------------------------------
def run_round(contenders: Sequence[Contender], start: int, record: bool) -> None:
    """Call every contender once, starting at ``start`` (rotating order); keep times if ``record``."""
    n = len(contenders)
    gc.collect()
    gc.disable()
    try:
        for k in range(n):
            c = contenders[(start + k) % n]
            if c.error is not None:
                continue
            try:
                with c.around():
                    t0 = time.perf_counter()
                    c.run()
                    elapsed = time.perf_counter() - t0
            except Exception as exc:  # a contender that fails is reported, not fatal
                c.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
                continue
            if record:
                c.times.append(elapsed)
    finally:
        gc.enable()


def measure(contenders: Sequence[Contender], repeats: int | None, warmup: int, budget_s: float,
            min_rounds: int = 5, max_rounds: int = 60) -> int:
    """Warm up, then record ``repeats`` rounds, or (default) rounds until ``budget_s`` of wall time has
    passed (at least ``min_rounds``, at most ``max_rounds``). Returns the number of recorded rounds."""
    for i in range(warmup):
        run_round(contenders, i, record=False)
    if repeats is not None:
        for i in range(repeats):
            run_round(contenders, i, record=True)
        return repeats
    deadline = time.perf_counter() + budget_s
    done = 0
    while done < max_rounds and (done < min_rounds or time.perf_counter() < deadline):
        run_round(contenders, done, record=True)
        done += 1
    return done


# -- report ----------------------------------------------------------------------------------------
def ratios(c: Contender, ref: Contender) -> list[float]:
    return [t / f for t, f in zip(c.times, ref.times)]


def median_ratio(a: Contender, b: Contender) -> float:
    values = ratios(a, b)
    return statistics.median(values) if values else float("nan")


def report(contenders: Sequence[Contender], batch: int, repeats: int) -> None:
    by_name = {c.name: c for c in contenders}
    f = contenders[0]
    print(f"\n  batch {batch}: {repeats} interleaved rounds (median; ratio = median of per-round t/F; "
          f"IQR of that ratio in brackets)")
    print(f"  {'contender':<30} {'median s':>10} {'x F':>7}   {'ratio IQR':<15}")
    for c in contenders:
        if c.error is not None:
            print(f"  {c.name:<30} {'failed':>10}   {c.error}")
            continue
        r = ratios(c, f)
        q = statistics.quantiles(r, n=4, method="inclusive") if len(r) >= 2 else [r[0], r[0], r[0]]
        print(f"  {c.name:<30} {statistics.median(c.times):>10.4f} {statistics.median(r):>7.2f}   "
              f"[{q[0]:.2f}, {q[2]:.2f}]")
    spread = statistics.quantiles(f.times, n=4, method="inclusive") if len(f.times) >= 2 else [1.0, 1.0, 1.0]
    if spread[2] > 1.25 * spread[0]:
        print(f"  note: F itself varied {spread[0]:.4f}..{spread[2]:.4f} s (IQR) - the machine is busy; "
              f"rerun on a quiet machine, or with --threads 1 if another process shares the cores")
    ours, captum = by_name["convscope gradcam"], by_name["captum LayerGradCam+interp"]
    if ours.error is None and captum.error is None:
        vs_f, vs_captum = median_ratio(ours, f), median_ratio(ours, captum)
        ok_f = "PASS" if vs_f <= SPEC_MAX_F else "FAIL"
        ok_c = "PASS" if vs_captum <= SPEC_MAX_CAPTUM else "FAIL"
        print(f"  gradcam convscope/Captum (median of per-round ratios): {vs_captum:.2f}")
        print(f"  target: {SPEC}")
        print(f"    -> {vs_f:.2f} F [{ok_f}], {vs_captum:.2f}x Captum [{ok_c}]")


def sanity_check(model: cs.Model, x: torch.Tensor, cam_layer: CamLayer, same_layer: bool) -> None:
    """Check that the contenders compute the same thing (untimed, once)."""
    from captum.attr import LayerAttribution, LayerGradCam, Saliency

    with torch.no_grad():
        targets = model.module(x).argmax(dim=1)
    ours = cs.saliency(model, x)
    theirs = Saliency(model.module).attribute(x, target=targets)
    same_classes = bool((ours.target == targets).all())
    print(f"  check: saliency convscope vs Captum {relative_difference(ours.data, theirs)}, "
          f"same top-1 classes: {same_classes}")
    if same_layer:
        cam = cs.gradcam(model, x).data
        attr = LayerGradCam(model.module, cam_layer.module).attribute(x, target=targets, relu_attributions=True)
        ref = LayerAttribution.interpolate(attr.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
        print(f"  check: gradcam convscope vs Captum {relative_difference(cam, ref)}")


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    """Max and mean absolute difference, relative to b's max and mean magnitude. (Layout-specific
    kernels — convscope runs channels-last — sum in another order; where a ReLU or max-pool sits on a
    near-tie the gradient can take another path, so a few pixels may differ by more than rounding.)"""
    d = (a.detach().float() - b.detach().float()).abs()
    scale_max, scale_mean = float(b.abs().max()) or 1.0, float(b.abs().mean()) or 1.0
    return f"max|diff|/max {float(d.max()) / scale_max:.1e}, mean|diff|/mean {float(d.mean()) / scale_mean:.1e}"


# -- main ------------------------------------------------------------------------------------------
def load_benchmark_model(name: str) -> cs.Model:
    if name.lower() in LITE0_NAMES:
        return cs.load_model(name)
    return cs.load_model(name, weights=None)  # torchvision architectures, random weights (offline)


def make_batch(model: cs.Model, batch: int) -> torch.Tensor:
    images = [cs.sample_image(SAMPLES[i % len(SAMPLES)]) for i in range(batch)]
    return model.preprocess(images)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0 (pretrained) or a torchvision classifier name (random weights)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    p.add_argument("--repeats", type=int, default=None,
                   help="recorded rounds per batch (default: as many as fit in --budget, 5..60)")
    p.add_argument("--warmup", type=int, default=2, help="unrecorded rounds first (default: 2)")
    p.add_argument("--budget", type=float, default=60.0,
                   help="seconds of recorded rounds per batch when --repeats is not given (default: 60)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # Captum warns on every call that it set requires_grad on the input (and it undoes it after).
    warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_benchmark_model(args.model)
    ref = cs.default_cam_layer(model, (model.channels, *model.input_size))
    cam_layer = external_cam_layer(model, ref)
    print(f"convscope {cs.__version__} from {os.path.dirname(cs.__file__)}")
    print(f"model {model.name}; convscope Grad-CAM layer: {ref.label}; Captum / pytorch-grad-cam layer: "
          f"{cam_layer.name}\n  ({cam_layer.note})")
    for batch in args.batches:
        x = make_batch(model, batch)
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        load_avg = f", load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
        print(f"\nenv: torch {torch.__version__}, threads {torch.get_num_threads()}, "
              f"cpu_count {os.cpu_count()} (usable {affinity}){load_avg}, batch {batch}, input {tuple(x.shape)}")
        sanity_check(model, x, cam_layer, same_layer=ref.call is None)
        contenders = make_contenders(model, x, cam_layer)
        repeats = measure(contenders, args.repeats, args.warmup, args.budget)
        report(contenders, batch, repeats)


if __name__ == "__main__":
    main()
