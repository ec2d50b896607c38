"""What ``embed`` costs next to the model's own batched forward, and how long t-SNE takes.

Usage::

    python benchmarks/bench_embed.py                       # Lite0 (256 crops) + digits_cnn (1,797) + t-SNE 2,000 x 1,280
    python benchmarks/bench_embed.py --images 128 --repeats 2 --skip-tsne
    python benchmarks/bench_embed.py --threads 1           # torch.set_num_threads(1)

Method
------
* **Inputs.** EfficientNet-Lite0 on ``--images`` pictures made from the four skimage photos by seeded
  random crops (a quarter to all of each side); the digits CNN on all 1,797 scikit-learn digits.
* **Contenders, per model**, each run over all the images in batches of ``--batch-size``:

  - ``F``: the unit — ``with torch.inference_mode(): module(x[i:i+B])`` over a preprocessed tensor,
    model in eval: a plain batched forward, nothing kept;
  - ``F channels-last``: the same on a channels-last copy of each batch (what convscope feeds the model;
    it changes the speed of CPU convolutions, so it separates layout from overhead);
  - ``embed(tensor)``: ``cs.embed(model, x, projection="none")`` on the same tensor — the head's input
    captured by a forward pre-hook in the same forward, top-1 and its probability, 48-px thumbnails, inside
    ``Guard`` (the 2-D map ``embed`` makes by default is timed on its own, under t-SNE below);
  - ``embed(tensor), no thumbnails``: the same with ``thumbnail_size=0``;
  - ``P+F``: ``model.preprocess(pictures[i:i+B])`` then the forward, per batch: the floor for pictures;
  - ``embed(pictures)``: ``cs.embed(model, pictures)``; compared with ``P+F``.

  Throughput is images per second; the ratio is ``contender images/s ÷ unit images/s`` (target ≥ 0.9),
  the median over rounds of the per-round ratio. A round runs every contender once, the starting one
  rotating, after one warm-up round; the garbage collector is paused inside a round.
* **t-SNE.** 2,000 × 1,280 features with structure: 20 clusters on a 30-dimensional subspace, unequal
  spreads, plus isotropic noise (as penultimate CNN features look: a few directions matter). Timed
  once per thread count (``threads=1`` is convscope's default; 2 as a comparison), PCA to 50 dims
  included, scikit-learn's Barnes-Hut t-SNE (1,000 iterations). Target: ≤ 10 s on 2 cores.

Timings on a shared machine swing with its load; the ``env:`` line gives the load average.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's convscope
import convscope as cs
from convscope.features.embed import embed, tsne
from convscope.zoo.digits import digits_dataset


def crops(count: int, seed: int = 0) -> list:
    """``count`` random crops (a quarter to all of each side) of the four sample photos."""
    rng = np.random.default_rng(seed)
    photos = [cs.sample_image(name) for name in ("cat", "coffee", "astronaut", "rocket")]
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        w, h = int(width * rng.uniform(0.5, 1.0)), int(height * rng.uniform(0.5, 1.0))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        out.append(photo.crop((left, top, left + w, top + h)))
    return out


def rounds(contenders: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Seconds per contender per round, rotated start, one warm-up round, no GC inside a round."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats + 1):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        gc.collect()
        gc.disable()
        try:
            for name in order:
                start = time.perf_counter()
                contenders[name]()
                if round_index:
                    times[name].append(time.perf_counter() - start)
        finally:
            gc.enable()
    return times


def ratio(times: dict[str, list[float]], name: str, unit: str) -> float:
    """Median over rounds of (unit seconds / contender seconds) = contender images/s ÷ unit images/s."""
    return statistics.median(u / t for u, t in zip(times[unit], times[name]))


def report(title: str, count: int, times: dict[str, list[float]], pairs: dict[str, tuple[str, ...]]) -> None:
    print(f"\n{title}: {count} images, {len(next(iter(times.values())))} rounds")
    print(f"  {'contender':30s} {'median s':>9s} {'images/s':>9s}  throughput ÷ unit's")
    for name, values in times.items():
        seconds = statistics.median(values)
        units = pairs.get(name, ())
        ratios = ", ".join(f"{ratio(times, name, unit):.2f} x {unit}" for unit in units)
        met = ""
        if units and name.startswith("embed") and "no thumbnails" not in name:
            met = "  (target >= 0.9 x " + units[0] + (": met)" if ratio(times, name, units[0]) >= 0.9 else ": NOT met)")
        print(f"  {name:30s} {seconds:9.2f} {count / seconds:9.1f}  {ratios}{met}")


def bench_model(model: cs.Model, pictures: list, batch_size: int, repeats: int, title: str) -> None:
    x = model.preprocess(pictures)
    module = model.module

    def forward() -> None:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                module(x[i:i + batch_size])

    def forward_channels_last() -> None:  # what convscope feeds the model: a channels-last copy of each batch
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                module(x[i:i + batch_size].to(memory_format=torch.channels_last, copy=True))  # as Model.working_copy

    def preprocess_forward() -> None:
        with torch.inference_mode():
            for i in range(0, len(pictures), batch_size):
                module(model.preprocess(pictures[i:i + batch_size]))

    contenders = {
        "F": forward,
        "F channels-last": forward_channels_last,
        "embed(tensor)": lambda: embed(model, x, batch_size=batch_size, projection="none", progress=False),
        "embed(tensor), no thumbnails": lambda: embed(model, x, batch_size=batch_size, thumbnail_size=0, projection="none",
                                                      progress=False),
        "P+F": preprocess_forward,
        "embed(pictures)": lambda: embed(model, pictures, batch_size=batch_size, projection="none", progress=False),
    }
    pairs = {"embed(tensor)": ("F", "F channels-last"), "embed(tensor), no thumbnails": ("F", "F channels-last"),
             "embed(pictures)": ("P+F",)}
    report(f"{title}, batch {batch_size}", len(pictures), rounds(contenders, repeats), pairs)


def structured_features(count: int = 2000, dims: int = 1280, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dims, 30)))[0]  # (dims, 30) orthonormal
    centres = rng.normal(scale=4.0, size=(clusters, 30))
    members = rng.integers(0, clusters, count)
    spread = rng.uniform(0.5, 2.0, clusters)[members, None]
    latent = centres[members] + rng.normal(size=(count, 30)) * spread
    return (np.maximum(latent @ basis.T * 3 + rng.normal(scale=0.3, size=(count, dims)), 0)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="Lite0 pictures (random crops of the 4 photos)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="recorded rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--skip-tsne", action="store_true")
    parser.add_argument("--skip-lite0", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"convscope from {Path(cs.__file__).parent}")
    print(f"env: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")

    digits = cs.load_model("digits_cnn")
    bench_model(digits, digits_dataset("all").pictures(), 256, args.repeats, "digits_cnn (1x32x32)")
    if not args.skip_lite0:
        lite0 = cs.load_model("efficientnet_lite0")
        bench_model(lite0, crops(args.images), args.batch_size, args.repeats, "efficientnet_lite0 (3x224x224)")

    if not args.skip_tsne:
        features = structured_features()
        print(f"\nt-SNE of {features.shape[0]} x {features.shape[1]} features (PCA to 50, perplexity 30), target <= 10 s:")
        for threads in (1, 2):
            start = time.perf_counter()
            projection = tsne(features, threads=threads)
            seconds = time.perf_counter() - start
            print(f"  threads={threads}: {seconds:6.1f} s  (KL {projection.params['kl_divergence']:.2f}, "
                  f"load average {os.getloadavg()[0]:.1f})  target " + ("met" if seconds <= 10 else "NOT met"))


if __name__ == "__main__":
    main()
