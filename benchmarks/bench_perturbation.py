"""Occlusion's cost against the model's own forward passes and Captum's ``Occlusion``; RISE and
superpixels per perturbed image; bf16 against fp32.

Usage::

    python benchmarks/bench_perturbation.py                        # EfficientNet-Lite0, window 32, stride 16
    python benchmarks/bench_perturbation.py --quick                # window 56, stride 28, 3 rounds
    python benchmarks/bench_perturbation.py --model resnet50       # torchvision names load with weights=None
    python benchmarks/bench_perturbation.py --threads 1 --repeats 5 --images 2

Method of measurement
---------------------
The approach of ``bench_attribution.py``, whose helpers this script imports: contenders are timed in
interleaved rounds (each round calls every contender once, starting one position later each round,
with the garbage collector paused), after warm-up rounds, and every ratio is the median over rounds
of the ratio of two calls made in the same round.

* **The unit is NF**: N plain fp32 inference forwards in batches of 32 (``with torch.inference_mode():
  module(batch)``, model in eval, the caller's NCHW layout), where N = windows x images is the number
  of occluded images occlusion evaluates. It is what a user's own loop over the occluded pictures
  would cost at a typical batch size, and the issue's target is ``occlusion <= 0.8 NF``.
* **Captum** ``Occlusion(forward).attribute(x, sliding_window_shapes=(C, w, w), strides=(C, s, s),
  baselines=0, target=top1, perturbations_per_eval=64)`` on the same windows (the stride must divide
  H - w, so both libraries place the same windows), scored on the softmax probability like
  convscope's default; the top-1 classes are handed to Captum for free. Target: convscope >= 1.25x faster.
* **bf16**: ``precision="bf16"`` (autocast, channels-last). Target <= 0.4 x 0.8 NF = 0.32 NF, with maps
  that correlate with fp32 >= 0.98 (Pearson, per image, minimum over the images).
* **RISE and superpixels** (``--rise`` / ``--superpixels``, on by default unless ``--quick``): timed per
  perturbed image against the same forwards (``masks`` / ``samples`` x images forwards in batches of 32).
* Untimed checks first: convscope vs Captum maps (max |diff| / max), fp32 vs bf16 correlation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attribution import Contender, load_benchmark_model, make_batch, measure  # the sibling script

import convscope as cs  # this checkout: bench_attribution put it first on the path

MAX_NF, MIN_VS_CAPTUM, BF16_SHARE, MIN_CORR = 0.8, 1.25, 0.4, 0.98
PLAIN_BATCH = 32


def plain_forwards(module: torch.nn.Module, x: torch.Tensor, count: int) -> Callable[[], None]:
    """``count`` fp32 inference forwards of x's images, in batches of 32 (the unit NF)."""
    rows = x[torch.arange(PLAIN_BATCH) % x.shape[0]].contiguous()
    sizes = [PLAIN_BATCH] * (count // PLAIN_BATCH) + ([count % PLAIN_BATCH] if count % PLAIN_BATCH else [])

    def run() -> None:
        with torch.inference_mode():
            for n in sizes:
                module(rows[:n].clone())  # a fresh batch each time, as a loop building occluded images has

    return run


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Minimum over images of the Pearson correlation of two (B, 1, H, W) maps."""
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    fa, fb = fa - fa.mean(1, keepdim=True), fb - fb.mean(1, keepdim=True)
    return float(((fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-30)).min())


def median_ratio(a: Contender, b: Contender) -> float | None:
    if a.error or b.error or not a.times:
        return None
    return statistics.median(x / y for x, y in zip(a.times, b.times))


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def occlusion_contenders(model: cs.Model, x: torch.Tensor, window: int, stride: int, windows: int,
                         batch_size: int | None) -> tuple[list[Contender], dict[str, Any]]:
    from captum.attr import Occlusion

    module = model.module
    with torch.no_grad():
        targets = module(x).argmax(dim=1)
    captum = Occlusion(lambda inputs: module(inputs).softmax(dim=1))
    channels = x.shape[1]
    options = {"window": window, "stride": stride, "batch_size": batch_size, "progress": False}
    last: dict[str, Any] = {}

    def ours(precision: str) -> Callable[[], Any]:
        def run() -> Any:
            last[precision] = cs.explain(model, x, "occlusion", precision=precision, **options)
            return last[precision]
        return run

    def captum_run() -> torch.Tensor:
        with torch.no_grad():
            last["captum"] = captum.attribute(x, sliding_window_shapes=(channels, window, window),
                                              strides=(channels, stride, stride), baselines=0.0, target=targets,
                                              perturbations_per_eval=64)
        return last["captum"]

    return [
        Contender(f"NF: {windows * len(x)} forwards, batches of 32", plain_forwards(module, x, windows * len(x))),
        Contender("convscope occlusion fp32", ours("fp32")),
        Contender("convscope occlusion bf16", ours("bf16")),
        Contender("captum Occlusion ppe=64", captum_run),
    ], last


def report_occlusion(contenders: Sequence[Contender], last: dict[str, Any], rounds: int) -> None:
    nf, fp32, bf16, captum = contenders
    print(f"\n  {rounds} interleaved rounds; ratio = median over rounds of t / t(NF) measured in the same round")
    print(f"  {'contender':<40} {'median s':>9} {'x NF':>7}")
    for c in contenders:
        if c.error:
            print(f"  {c.name:<40} failed: {c.error}")
            continue
        print(f"  {c.name:<40} {statistics.median(c.times):>9.3f} {fmt(median_ratio(c, nf), '.2f'):>7}")
    spread = statistics.quantiles(nf.times, n=4) if len(nf.times) >= 2 else nf.times * 3
    if spread[2] > 1.25 * spread[0]:
        print(f"  note: NF itself varied {spread[0]:.3f}..{spread[2]:.3f} s (IQR): the machine is busy")
    vs_nf, vs_captum = median_ratio(fp32, nf), median_ratio(captum, fp32)
    bf16_nf = median_ratio(bf16, nf)
    corr = correlation(last["fp32"].data, last["bf16"].data) if "fp32" in last and "bf16" in last else None
    limit = BF16_SHARE * MAX_NF
    print(f"  targets: occlusion <= {MAX_NF} NF, >= {MIN_VS_CAPTUM}x faster than Captum; bf16 <= {limit:.2f} NF "
          f"with corr >= {MIN_CORR}")
    print(f"    -> fp32 {fmt(vs_nf, '.2f')} NF [{verdict(None if vs_nf is None else vs_nf <= MAX_NF)}], "
          f"Captum / convscope {fmt(vs_captum, '.2f')}x [{verdict(None if vs_captum is None else vs_captum >= MIN_VS_CAPTUM)}], "
          f"bf16 {fmt(bf16_nf, '.2f')} NF [{verdict(None if bf16_nf is None else bf16_nf <= limit)}] "
          f"(bf16/fp32 {fmt(median_ratio(bf16, fp32), '.2f')}), corr {fmt(corr)} "
          f"[{verdict(None if corr is None else corr >= MIN_CORR)}]")


def check_against_captum(model: cs.Model, x: torch.Tensor, window: int, stride: int) -> None:
    """Untimed: the same windows give the same map as Captum (fp32 rounding and channels-last aside)."""
    from captum.attr import Occlusion

    ours = cs.explain(model, x, "occlusion", window=window, stride=stride, progress=False)
    with torch.no_grad():
        theirs = Occlusion(lambda inputs: model.module(inputs).softmax(dim=1)).attribute(
            x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride), baselines=0.0,
            target=ours.target, perturbations_per_eval=64)
    diff = float((ours.data[:, 0] - theirs[:, 0]).abs().max()) / max(float(theirs.abs().max()), 1e-30)
    print(f"  check: occlusion convscope vs Captum max|diff|/max {diff:.1e}, corr {correlation(ours.data, theirs[:, :1]):.5f}")


def other_methods(model: cs.Model, x: torch.Tensor, args: argparse.Namespace) -> None:
    """RISE and superpixels per perturbed image, against the same number of plain forwards."""
    runs = []
    if args.rise:
        runs.append(("rise", {"masks": args.masks}, args.masks))
    if args.superpixels:
        runs.append(("superpixels", {"samples": args.samples}, args.samples))
    for name, options, per_image in runs:
        count = per_image * len(x)
        last: dict[str, Any] = {}

        def ours(precision: str, name: str = name, options: dict = options, last: dict = last) -> Callable[[], Any]:
            def run() -> Any:
                last[precision] = cs.explain(model, x, name, precision=precision, progress=False, **options)
            return run

        contenders = [Contender(f"NF: {count} forwards, batches of 32", plain_forwards(model.module, x, count)),
                      Contender(f"convscope {name} fp32", ours("fp32")), Contender(f"convscope {name} bf16", ours("bf16"))]
        rounds = measure(contenders, args.heavy_repeats, 0, 0.0)
        nf, fp32, bf16 = contenders
        corr = correlation(last["fp32"].data, last["bf16"].data) if len(last) == 2 else None
        print(f"\n  {name} ({', '.join(f'{k}={v}' for k, v in options.items())}), {rounds} round(s): "
              f"NF {statistics.median(nf.times):.3f} s; fp32 {statistics.median(fp32.times):.3f} s = "
              f"{fmt(median_ratio(fp32, nf), '.2f')} NF; bf16 {fmt(median_ratio(bf16, nf), '.2f')} NF, "
              f"corr with fp32 {fmt(corr)}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0 (pretrained) or a torchvision classifier name (random weights)")
    p.add_argument("--images", type=int, default=1, help="pictures explained at once (default: 1)")
    p.add_argument("--window", type=int, default=None, help="occlusion window in pixels (default: 32; --quick: 56)")
    p.add_argument("--stride", type=int, default=None, help="occlusion stride (default: 16; --quick: 28)")
    p.add_argument("--batch-size", type=int, default=None, help="convscope's batch_size (default: automatic)")
    p.add_argument("--repeats", type=int, default=None, help="recorded occlusion rounds (default: 5; --quick: 3)")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded occlusion rounds first (default: 1)")
    p.add_argument("--masks", type=int, default=256, help="RISE masks timed (default: 256)")
    p.add_argument("--samples", type=int, default=256, help="superpixels samples timed (default: 256)")
    p.add_argument("--heavy-repeats", type=int, default=1, help="rounds of RISE / superpixels (default: 1)")
    p.add_argument("--no-others", dest="others", action="store_false", help="time occlusion only")
    p.add_argument("--quick", action="store_true", help="window 56, stride 28, 3 rounds, occlusion only")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = p.parse_args(argv)
    args.window = args.window or (56 if args.quick else 32)
    args.stride = args.stride or (28 if args.quick else 16)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.rise = args.superpixels = args.others and not args.quick
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_benchmark_model(args.model)
    model.module.eval()
    x = make_batch(model, args.images)
    height = x.shape[-1]
    if (height - args.window) % args.stride:
        raise SystemExit(f"stride {args.stride} must divide {height} - {args.window} so Captum places the same windows")
    per_side = (height - args.window) // args.stride + 1
    windows = per_side**2
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f", load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    rows = cs.engine.perturbation_rows(model, x, args.batch_size)
    print(f"convscope {cs.__version__} from {os.path.dirname(cs.__file__)}")
    print(f"env: torch {torch.__version__}, threads {torch.get_num_threads()}, cpu_count {os.cpu_count()} "
          f"(usable {affinity}){load}")
    print(f"model {model.name}, input {tuple(x.shape)}; occlusion window {args.window}, stride {args.stride}: "
          f"{windows} windows per image; convscope batch_size {rows}")
    check_against_captum(model, x, args.window, args.stride)
    contenders, last = occlusion_contenders(model, x, args.window, args.stride, windows, args.batch_size)
    rounds = measure(contenders, args.repeats, args.warmup, 0.0)
    report_occlusion(contenders, last, rounds)
    other_methods(model, x, args)
    print(f"\n  load avg at the end {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")


if __name__ == "__main__":
    main()
