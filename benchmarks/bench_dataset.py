"""Explaining a whole dataset: pictures per second on the local engine and on Ray with 1 and 2 actors, and memory
over a long run.

Usage::

    python benchmarks/bench_dataset.py                        # EfficientNet-Lite0, Grad-CAM, 192 JPEGs of 224x224
    python benchmarks/bench_dataset.py --model resnet50 --pictures 96
    python benchmarks/bench_dataset.py --memory 20000         # only the RSS of a 20,000-picture run (shapes, 64x64)

Method
------
* **Pictures.** ``--pictures`` JPEG files written once to a temporary folder (seeded random crops of the four
  sample photos), read and preprocessed by every contender: the decoding is part of the work.
* **Contenders** (``cs.explain_dataset(model, folder, "gradcam", out=...)``, shards of ``--shard-size``):
  ``local 1 thread`` (``torch.set_num_threads(1)`` in this process), ``local N threads`` (torch's default), ``ray 1
  actor`` and ``ray 2 actors`` (one thread and one Ray CPU each, on a local cluster started once before the rounds:
  ``ray.init(num_cpus=2)``).
* **Rates.** *Whole call*: pictures ÷ the seconds of the ``explain_dataset`` call, everything included (for Ray:
  Ray Data starting the actor pool and loading the model in each actor, about 3-4 s here). *Running*: the same
  shards through the engine's own ``ShardWorker`` (in this process, or in Ray actors through
  ``ray_engine.map_shards``), each shard stamped where it runs; pictures ÷ (the last shard's end − the first one's
  start): the rate a long run settles at, start-up excluded.
* **Unit.** The model's own batched forward (``F``: ``with torch.inference_mode(): module(x)``, 1 thread, batch 16,
  the median of 5) in pictures/s, measured in the same round, so every rate is also printed as a share of it.
* Rounds: one warm-up, then ``--repeats`` rounds running each contender once (the first one rotating); the median.
* **Targets** (the issue): Ray's overhead over the local engine at 1 actor ≤ 15%, scaling from 1 to 2 actors ≥ 1.8×
  (running rates; the machine has 2 cores: two 1-thread actors use both).
* **Memory** (``--memory N``): a run of ``shapes_biased`` over ``N`` 64x64 snow or sand pictures made on the fly by a
  Dataset (nothing held), RSS of this process sampled at every shard; prints the RSS after the first 10% and the
  largest after it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's convscope

import convscope as cs
from convscope.sweep import ShardJob, ShardWorker


def write_pictures(folder: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    photos = [cs.sample_image(name) for name in ("cat", "coffee", "astronaut", "rocket")]
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        w, h = int(width * rng.uniform(0.5, 1.0)), int(height * rng.uniform(0.5, 1.0))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        where = folder / f"class{i % 4}"
        where.mkdir(parents=True, exist_ok=True)
        photo.crop((left, top, left + w, top + h)).resize((224, 224)).save(where / f"{i:05d}.jpg", quality=90)


def run(model: cs.Model, folder: Path, engine: str, actors: int, threads: int | None, shard_size: int) -> tuple[float, int]:
    """(seconds, pictures) of one explain_dataset call over ``folder`` into a fresh temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        found = cs.explain_dataset(model, folder, "gradcam", out=out / "run", shard_size=shard_size, thumbnail=0,
                                   engine=engine, actors=actors, threads_per_actor=1, progress=False)
        return time.perf_counter() - start, len(found)
    finally:
        torch.set_num_threads(before)
        shutil.rmtree(out, ignore_errors=True)


class Timed:
    """What a Ray actor builds for the steady rate: the engine's ShardWorker, each shard's start and end stamped."""

    def __init__(self, job: ShardJob) -> None:
        self.job = job

    def __call__(self):
        worker = ShardWorker(self.job, threads=1)

        def explain(number: int) -> dict:
            start = time.time()
            shard = worker(number)
            shard.encode(self.job.dtype)
            return {"shard": number, "start": start, "end": time.time(), "pictures": len(shard.index)}

        return explain


def steady(model: cs.Model, folder: Path, engine: str, actors: int, shard_size: int) -> float:
    """Pictures per second while the workers run — from the first shard's start to the last one's end, stamped where
    they run: no actor start-up, no model loading, no driver."""
    from convscope.ray_engine import map_shards

    source = cs.data.source(model, folder)
    job = ShardJob(model, str(folder), None, None, "gradcam", {}, None, None, source.count, shard_size, 16, 5, "method", 0,
                   "float16")
    numbers = list(range(-(-source.count // shard_size)))
    if engine == "local":
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            rows = [Timed(job)()(n) for n in numbers]
        finally:
            torch.set_num_threads(before)
    else:
        rows = list(map_shards(Timed(job), numbers, address=None, actors=actors, threads=1, gpus=0))
    return sum(r["pictures"] for r in rows) / (max(r["end"] for r in rows) - min(r["start"] for r in rows))


def forward_rate(model: cs.Model, folder: Path) -> float:
    """Pictures per second of the model's own forward, batch 16, 1 thread (the median of 5 after a warm-up)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        paths = sorted(str(p) for p in folder.rglob("*.jpg"))[:16]
        x = model.preprocess(paths)
        times = []
        with torch.inference_mode():
            model.module(x)
            for _ in range(5):
                start = time.perf_counter()
                model.module(x)
                times.append(time.perf_counter() - start)
        return 16 / statistics.median(times)
    finally:
        torch.set_num_threads(before)


def speed(args: argparse.Namespace) -> None:
    import ray

    model = cs.load_model(args.model, weights="DEFAULT" if args.model == "efficientnet_lite0" else None)
    folder = Path(tempfile.mkdtemp(prefix="bench-pictures-"))
    write_pictures(folder, args.pictures)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    contenders = {  # name -> (engine, actors, threads of the local process)
        "local 1 thread": ("local", 1, 1),
        f"local {torch.get_num_threads()} threads": ("local", 1, None),
        "ray 1 actor": ("ray", 1, None),
        "ray 2 actors": ("ray", 2, None),
    }
    whole: dict[str, list[float]] = {name: [] for name in contenders}
    running: dict[str, list[float]] = {name: [] for name in contenders if name != f"local {torch.get_num_threads()} threads"}
    forwards = []
    names = list(contenders)
    try:
        for round_number in range(args.repeats + 1):
            order = names[round_number % len(names):] + names[:round_number % len(names)]
            measured = {}
            for name in order:
                engine, actors, threads = contenders[name]
                seconds, count = run(model, folder, engine, actors, threads, args.shard_size)
                rate = steady(model, folder, engine, actors, args.shard_size) if name in running else None
                measured[name] = (count / seconds, rate)
            forward = forward_rate(model, folder)
            if round_number == 0:
                continue  # warm-up
            forwards.append(forward)
            for name, (call, rate) in measured.items():
                whole[name].append(call)
                if rate is not None:
                    running[name].append(rate)
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    unit = statistics.median(forwards)
    print(f"{args.model}, Grad-CAM, {args.pictures} JPEGs of 224x224, shards of {args.shard_size}, {args.repeats} rounds "
          f"(median); F = the model's forward, batch 16, 1 thread: {unit:.1f} pictures/s")
    print(f"{'contender':<18} {'whole call/s':>13} {'running/s':>10} {'running / F':>12}")
    rates = {name: statistics.median(values) for name, values in running.items()}
    for name in contenders:
        rate = rates.get(name)
        shown = f"{rate:>10.1f} {rate / unit:>12.2f}" if rate is not None else f"{'':>10} {'':>12}"
        print(f"{name:<18} {statistics.median(whole[name]):>13.1f} {shown}")
    local = rates["local 1 thread"]
    print(f"Ray overhead at 1 actor (running, vs the local engine on 1 thread): {1 - rates['ray 1 actor'] / local:+.1%} "
          f"(aim <= 15%)")
    print(f"scaling 1 -> 2 actors (running): {rates['ray 2 actors'] / rates['ray 1 actor']:.2f}x (aim >= 1.8x)")
    per_actor = rates["ray 1 actor"]
    print(f"per actor: {per_actor:.1f} pictures/s -> ImageNet-train (1.28 M): {1.28e6 / per_actor / 3600:.1f} actor-hours")


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Backgrounds(torch.utils.data.Dataset):
    """``count`` snow or sand pictures made on demand (seeded by index), as a dataset bigger than memory is read."""

    def __init__(self, count: int) -> None:
        from convscope.zoo.shapes import MEAN, STD

        self.count, self.mean, self.std = count, torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        from convscope.zoo.shapes import sand, snow

        rng = np.random.default_rng(index)
        picture = torch.from_numpy((snow if index % 2 else sand)(rng, 1)[0])
        return (picture - self.mean) / self.std, index % 2


def memory(args: argparse.Namespace) -> None:
    model = cs.load_model("shapes_biased")
    samples: list[tuple[int, int]] = []
    out = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        start = time.perf_counter()
        cs.explain_dataset(model, Backgrounds(args.memory), out=out / "run", shard_size=256,
                           progress=lambda done, total, what: samples.append((done, rss())))
        seconds = time.perf_counter() - start
    finally:
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        shutil.rmtree(out, ignore_errors=True)
    settled = [r for done, r in samples if done >= args.memory // 10]
    print(f"{args.memory:,} snow/sand pictures (64x64), shards of 256: {seconds:.1f} s ({args.memory / seconds:,.0f} pictures/s), "
          f"output {size / 2**20:.1f} MiB")
    print(f"RSS after 10%: {settled[0] / 2**20:.0f} MiB; largest after: {max(settled) / 2**20:.0f} MiB; at the end: "
          f"{settled[-1] / 2**20:.0f} MiB ({len(samples)} samples)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--pictures", type=int, default=192)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", type=int, default=0, help="only the memory run, over this many pictures")
    args = parser.parse_args()
    print(f"convscope from {Path(cs.__file__).parent}")
    if args.memory:
        memory(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
