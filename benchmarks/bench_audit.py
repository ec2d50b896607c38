"""What the shortcut audit costs next to plain batched Grad-CAM on the same images.

Usage::

    python benchmarks/bench_audit.py                          # shapes_biased, 1,000 pictures of 64x64, batch 64
    python benchmarks/bench_audit.py --model efficientnet_lite0 --images 128 --batch-size 16
    python benchmarks/bench_audit.py --repeats 5 --threads 1

Method
------
* **Inputs.** ``shapes_*``: ``--images`` held-out snow/sand pictures with their object masks.
  Other models: seeded random crops of the four sample photos, preprocessed, with one random box each
  (what the audit's region bookkeeping costs does not depend on where the boxes are).
* **Unit.** ``gradcam``: ``cs.gradcam(model, x[i:i+B])`` over all images in batches of ``--batch-size``
  (explaining each image's top-1, the audit's default) — the explanation work the audit cannot avoid.
* **Contenders.** ``audit, no swap``: ``cs.audit(model, x, regions=masks, swap_backgrounds=False)`` —
  Grad-CAM plus the shares, pointing game, thumbnails and bookkeeping; ``audit + swap``: the same with the
  background-swap test (its default 256 composites per class, one extra forward each).
* Throughput is images per second; the ratio is ``contender images/s ÷ gradcam images/s`` (target for
  the audit without the swap test: ≥ 0.8), the median over rounds of the per-round ratio. A round runs
  every contender once, the first one rotating, after one warm-up round; no garbage collection inside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's convscope
from bench_embed import rounds  # the same interleaved rounds (this folder is on sys.path when run as a script)

import convscope as cs
from convscope.metrics.audit import audit


def inputs(model: cs.Model, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (N, C, H, W) preprocessed, regions (N, H, W) bool)."""
    if model.name.startswith("shapes_"):
        from convscope.zoo.shapes import shapes_dataset

        data = shapes_dataset(count, biased=True, split="test")
        return data.inputs(model), data.masks
    rng = np.random.default_rng(seed)
    photos = [cs.sample_image(name) for name in ("cat", "coffee", "astronaut", "rocket")]
    pictures = []
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        w, h = int(width * rng.uniform(0.5, 1.0)), int(height * rng.uniform(0.5, 1.0))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        pictures.append(photo.crop((left, top, left + w, top + h)))
    x = torch.cat([model.preprocess(pictures[i:i + 32]) for i in range(0, count, 32)])
    height, width = x.shape[-2:]
    regions = torch.zeros(count, height, width, dtype=torch.bool)
    for i in range(count):
        bh, bw = int(rng.integers(height // 4, height // 2)), int(rng.integers(width // 4, width // 2))
        top, left = int(rng.integers(0, height - bh)), int(rng.integers(0, width - bw))
        regions[i, top:top + bh, left:left + bw] = True
    return x, regions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes_biased")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = cs.load_model(args.model)
    x, regions = inputs(model, args.images)
    batch = args.batch_size

    def gradcam() -> None:
        for i in range(0, len(x), batch):
            cs.gradcam(model, x[i:i + batch])

    contenders = {
        "gradcam": gradcam,
        "audit, no swap": lambda: audit(model, x, regions=regions, swap_backgrounds=False, batch_size=batch, progress=False),
        "audit + swap": lambda: audit(model, x, regions=regions, batch_size=batch, progress=False),
    }
    times = rounds(contenders, args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{model.name}: {len(x)} images {tuple(x.shape[1:])}, batch {batch}, {args.repeats} rounds; torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load avg {load:.2f}")
    for name, values in times.items():
        ratios = [g / t for g, t in zip(times["gradcam"], values)]
        rate = len(x) / statistics.median(values)
        goal = "   target >= 0.8: " + ("PASS" if statistics.median(ratios) >= 0.8 else "FAIL") if name == "audit, no swap" else ""
        print(f"  {name:<16} {statistics.median(values):7.2f} s  {rate:8.0f} images/s  {statistics.median(ratios):5.2f} x gradcam{goal}")


if __name__ == "__main__":
    main()
