"""Cost of feature visualization (maximize, class images, Deep Dream) relative to the model's own passes.

Usage::

    python benchmarks/bench_optimize.py                        # EfficientNet-Lite0, the full set (~5 min on a quiet 2-core CPU)
    python benchmarks/bench_optimize.py --steps 64 --rounds 2  # quicker
    python benchmarks/bench_optimize.py --model resnet50       # torchvision names load with weights=None
    python benchmarks/bench_optimize.py --only speed           # speed | batch | bf16 | dream

Method of measurement
---------------------
The unit is ``FB``: one forward plus the gradient to the input of the model at batch 1 (no parameter
requiring grad, ``torch.autograd.grad`` to the input): what any gradient-based picture needs per step.
As in ``bench_attribution.py``, contenders run *interleaved* (each round calls every contender once,
the order rotated by one per round) after an unrecorded warm-up round, with the garbage collector
paused during a round; reported are median seconds and the median over rounds of the per-round ratio
to ``steps x FB`` measured moments apart.

1. **speed** — ``maximize`` of one channel at batch 1, ``--steps`` steps, against ``steps x FB``: at a
   mid layer (the forward stops there) and as a class image (the whole network runs). Target:
   <= 0.8 x for the channel (Lucent measured 1.25-1.43 x here: it runs the whole network and keeps
   weight gradients).
2. **batch** — 64 channels in one batched run against 64 single runs (a few single runs, timed and
   extrapolated), both ``--batch-steps`` steps; also the batch in one forward (``batch_size=64``)
   against the default chunks, to show why convscope chunks the batch on a CPU.
3. **bf16** — ``precision="bf16"`` against fp32 on the same channels and seed: time, the activation
   reached (both evaluated in fp32 on the returned pictures) and how much the pictures differ, next to
   how much two fp32 seeds differ (optimization is chaotic: the same motifs, never the same pixels).
4. **dream** — Deep Dream on the 512x512 astronaut photo (4 octaves x 10 steps), in seconds and in
   FB at 512x512.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

# Measure the convscope of this checkout, not whatever an (editable) install points at.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import convscope as cs
from convscope import features
from convscope.features import objectives as obj
from convscope.hooks import Guard

LITE0_NAMES = ("efficientnet_lite0", "efficientnet-lite0", "lite0")
LITE0_LAYER = "_blocks.9._project_conv"  # 112 channels at 14x14, about 60% of the way through Lite0
SPEC_SPEED = 0.8
SPEC_BATCH = 10.0


@dataclass
class Contender:
    name: str
    run: Callable[[], Any]
    times: list[float] = field(default_factory=list)


def rounds(contenders: Sequence[Contender], count: int, warmup: int = 1) -> None:
    """Interleaved rounds (rotating order); the first ``warmup`` are not recorded."""
    for r in range(warmup + count):
        gc.collect()
        gc.disable()
        try:
            for k in range(len(contenders)):
                c = contenders[(r + k) % len(contenders)]
                start = time.perf_counter()
                c.run()
                if r >= warmup:
                    c.times.append(time.perf_counter() - start)
        finally:
            gc.enable()


def median_ratio(a: Contender, b: Contender) -> float:
    return statistics.median(x / y for x, y in zip(a.times, b.times))


def fb_passes(model: cs.Model, size: tuple[int, int], count: int) -> Callable[[], None]:
    """``count`` forward + input-gradient passes at batch 1: the unit."""
    x = torch.rand(1, model.channels, *size, generator=torch.Generator().manual_seed(0))

    def run() -> None:
        with Guard(model.module):  # eval mode, no parameter requiring grad (restored after)
            for _ in range(count):
                pixels = x.clone().requires_grad_(True)
                out = model.module(pixels)
                torch.autograd.grad(out.flatten(1)[:, 0].sum(), pixels)

    return run


def env_line(model: cs.Model) -> str:
    load = f", load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu_count {os.cpu_count()}{load}, model {model.name}"


# -- the four measurements -----------------------------------------------------------------------------
def bench_speed(model: cs.Model, layer: str, steps: int, count: int) -> None:
    size = model.input_size
    unit = Contender(f"{steps} x FB", fb_passes(model, size, steps))
    channel = Contender(f"maximize {layer}:0", lambda: features.maximize(model, f"{layer}:0", steps=steps, progress=False))
    whole = Contender("class_image 1 (whole net)", lambda: features.class_image(model, 1, steps=steps, progress=False))
    contenders = [unit, channel, whole]
    rounds(contenders, count)
    print(f"\n[speed] batch 1, {steps} steps, {count} interleaved rounds; {env_line(model)}")
    for c in contenders:
        print(f"  {c.name:<40} {statistics.median(c.times):8.2f} s   {median_ratio(c, unit):5.2f} x ({steps} x FB)")
    ratio = median_ratio(channel, unit)
    print(f"  target: maximize at batch 1 <= {SPEC_SPEED} x {steps} FB -> {ratio:.2f} [{'PASS' if ratio <= SPEC_SPEED else 'FAIL'}]")


def bench_batch(model: cs.Model, layer: str, steps: int, singles: int) -> None:
    print(f"\n[batch] 64 channels of {layer}, {steps} steps; {env_line(model)}")
    times: dict[str, float] = {}
    for name, run in (
        ("batched, default chunks", lambda: features.maximize(model, obj.channel(layer, range(64)), steps=steps, progress=False)),
        ("batched, one forward (batch_size=64)",
         lambda: features.maximize(model, obj.channel(layer, range(64)), steps=steps, batch_size=64, progress=False)),
    ):
        gc.collect()
        start = time.perf_counter()
        run()
        times[name] = time.perf_counter() - start
    single = []
    features.maximize(model, f"{layer}:0", steps=2, progress=False)  # warm-up
    for c in range(singles):
        start = time.perf_counter()
        features.maximize(model, f"{layer}:{c}", steps=steps, progress=False)
        single.append(time.perf_counter() - start)
    times[f"64 single runs (extrapolated from {singles})"] = 64 * statistics.mean(single)
    base = times[f"64 single runs (extrapolated from {singles})"]
    for name, seconds in times.items():
        print(f"  {name:<45} {seconds:8.1f} s   speedup {base / seconds:5.2f} x")
    speedup = base / times["batched, default chunks"]
    print(f"  target: batched >= {SPEC_BATCH} x faster than single runs -> {speedup:.2f} x "
          f"[{'PASS' if speedup >= SPEC_BATCH else 'FAIL'}] (on a CPU the batch cannot beat the per-picture cost of batch 1;"
          f" see the README)")


def bench_bf16(model: cs.Model, layer: str, steps: int) -> None:
    channels = [3, 17, 40, 77]
    objective = obj.channel(layer, channels)
    runs: dict[str, cs.Result] = {}
    seconds: dict[str, float] = {}
    for name, precision, seed in (("fp32", "fp32", 0), ("bf16", "bf16", 0), ("fp32 seed 1", "fp32", 1)):
        start = time.perf_counter()
        runs[name] = features.maximize(model, objective, steps=steps, precision=precision, seed=seed, progress=False)
        seconds[name] = time.perf_counter() - start
    reached = {name: features.feature_maps(model, r.inputs, layers=layer).meta["mean_activation"][torch.arange(4), channels]
               for name, r in runs.items()}

    def corr(a: torch.Tensor, b: torch.Tensor) -> list[float]:
        return [round(float(torch.corrcoef(torch.stack([a[i].flatten(), b[i].flatten()]))[0, 1]), 2) for i in range(len(a))]

    print(f"\n[bf16] channels {channels} of {layer}, {steps} steps, batch 4; {env_line(model)}")
    print(f"  time fp32 {seconds['fp32']:.1f} s, bf16 {seconds['bf16']:.1f} s -> {seconds['fp32'] / seconds['bf16']:.2f} x faster")
    ratio = reached["bf16"] / reached["fp32"]
    print(f"  activation reached (fp32 evaluation): fp32 {[round(v, 2) for v in reached['fp32'].tolist()]}, "
          f"bf16 {[round(v, 2) for v in reached['bf16'].tolist()]} -> bf16/fp32 {[round(v, 2) for v in ratio.tolist()]}")
    print(f"  picture correlation bf16 vs fp32 {corr(runs['bf16'].data, runs['fp32'].data)}; "
          f"fp32 seed 0 vs seed 1 {corr(runs['fp32 seed 1'].data, runs['fp32'].data)}")
    verdict = "offered" if float(ratio.min()) >= 0.9 else "should be refused"
    print(f"  bf16 {verdict}: lowest activation ratio {float(ratio.min()):.2f} (rule: >= 0.90)")


def bench_dream(model: cs.Model, layer: str | None) -> None:
    photo = cs.sample_image("astronaut")  # 512 x 512
    assert photo.size == (512, 512)
    unit = fb_passes(model, (512, 512), 1)
    unit()
    start = time.perf_counter()
    for _ in range(3):
        unit()
    fb512 = (time.perf_counter() - start) / 3
    start = time.perf_counter()
    result = features.dream(model, photo, layer, octaves=4, steps=10, progress=False)
    seconds = time.perf_counter() - start
    print(f"\n[dream] 512x512 photo, 4 octaves x 10 steps, layer {result.layer}; {env_line(model)}")
    print(f"  {seconds:.1f} s = {seconds / fb512:.1f} FB at 512x512 ({fb512:.3f} s each); the pyramid's 40 steps at "
          f"{', '.join(str(round(512 / 1.4 ** i)) for i in reversed(range(4)))} px")


def load(name: str) -> cs.Model:
    return cs.load_model(name) if name.lower() in LITE0_NAMES else cs.load_model(name, weights=None)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--layer", help=f"layer of the channel objectives (default: {LITE0_LAYER} on Lite0, else the default dream layer)")
    p.add_argument("--steps", type=int, default=256, help="steps for the speed comparison (default 256)")
    p.add_argument("--rounds", type=int, default=3, help="recorded interleaved rounds for the speed comparison (default 3)")
    p.add_argument("--batch-steps", type=int, default=16, help="steps for the 64-channel comparison (default 16)")
    p.add_argument("--singles", type=int, default=3, help="single runs timed for the extrapolation (default 3)")
    p.add_argument("--bf16-steps", type=int, default=64, help="steps for the bf16 comparison (default 64)")
    p.add_argument("--only", choices=("speed", "batch", "bf16", "dream"), nargs="+", help="run only these parts")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.model)
    layer = args.layer or (LITE0_LAYER if model.name == "efficientnet_lite0" else features.default_dream_layer(model).label)
    print(f"convscope {cs.__version__} from {os.path.dirname(cs.__file__)}")
    parts = args.only or ("speed", "batch", "bf16", "dream")
    if "speed" in parts:
        bench_speed(model, layer, args.steps, args.rounds)
    if "batch" in parts:
        bench_batch(model, layer, args.batch_steps, args.singles)
    if "bf16" in parts:
        bench_bf16(model, layer, args.bf16_steps)
    if "dream" in parts:
        bench_dream(model, None)


if __name__ == "__main__":
    main()
