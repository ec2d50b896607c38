"""Train the two shapes CNNs shipped with convscope: `python scripts/train_shapes.py [--epochs N]`.

``convscope.zoo.shapes``: circles and squares on snow or sand. The *biased* model learns from 2,000
pictures where every circle lies on snow and every square on sand; the *balanced* model from 2,000
where the background is independent of the shape. Both are tested on 1,000 held-out pictures made the
same way, on 1,000 balanced ones, and on 1,000 *swapped* ones (circles on sand, squares on snow): a model
that learned the background fails the swapped set. Seeded and single-threaded (the same weights on the
same torch build); about a minute per model on one CPU core. Writes
``convscope/data/shapes_{biased,balanced}.safetensors``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from convscope.zoo.shapes import WEIGHTS, ShapesCNN, shapes_dataset, wrap

DATA = Path(__file__).resolve().parents[1] / "convscope"


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


def normalized(which: str, images: torch.Tensor) -> torch.Tensor:
    reference = wrap(ShapesCNN(), which)
    mean = torch.tensor(reference.mean).view(1, 3, 1, 1)
    std = torch.tensor(reference.std).view(1, 3, 1, 1)
    return (images - mean) / std


def train(which: str, epochs: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = shapes_dataset(2000, biased=which == "biased", split="train")
    x, y = normalized(which, data.images), data.labels
    tests = {
        "same kind": shapes_dataset(1000, biased=which == "biased", split="test"),
        "balanced": shapes_dataset(1000, biased=False, split="test"),
        "swapped": shapes_dataset(1000, split="test", swap=True),
    }
    module = ShapesCNN()
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=1e-4)
    batch, steps = 64, math.ceil(len(y) / 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        module.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            flips = torch.rand(len(idx), generator=generator) < 0.5  # mirror: shapes and textures do not care
            inputs = torch.where(flips[:, None, None, None], x[idx].flip(-1), x[idx])
            loss = F.cross_entropy(module(inputs), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        print(f"  {which} epoch {epoch + 1:2d}  loss {total / len(y):.4f}")
    scores = {name: accuracy(module, normalized(which, t.images), t.labels) for name, t in tests.items()}
    print(f"{which}: {time.perf_counter() - start:.0f} s; test accuracy " +
          ", ".join(f"{name} {value:.3f}" for name, value in scores.items()))
    from safetensors.torch import save_file

    out = DATA / WEIGHTS[which]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.eval().state_dict().items()}, str(out))
    print(f"-> {out} ({out.stat().st_size / 1024:.0f} KB)")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=tuple(WEIGHTS), help="train one of the two models")
    args = parser.parse_args()
    torch.set_num_threads(1)  # reduction order, hence the weights, independent of the machine's cores
    for which in [args.only] if args.only else list(WEIGHTS):
        train(which, args.epochs, args.seed)


if __name__ == "__main__":
    main()
