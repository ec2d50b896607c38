"""The Ray engine (``engine="ray"``, the ``convscope[ray]`` extra): a dataset's shards explained by a pool of actors.

Ray Data batch inference as its documentation does it: one model per actor (a class whose ``__init__`` builds the
worker once and whose ``__call__`` explains a batch of shards), ``map_batches(..., concurrency=N)`` streams the
shards through the pool, and the driver writes each shard's files as they arrive — nothing is gathered in memory.
The actors run :class:`convscope.sweep.ShardWorker`, the local engine's worker, on the same fixed shards, so both
engines write the same files. Ray retries the task of an actor that dies (``max_restarts`` / ``max_task_retries``),
and the store writes a shard once, so every picture is in the output exactly once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .errors import ConvscopeError

__all__ = ["gather_shards", "map_shards", "pack", "require_ray", "run_shards", "session", "unpack"]

MISSING = "engine='ray' needs Ray Data: pip install 'convscope[ray]'"


def require_ray() -> Any:
    """``ray`` with Ray Data, or a one-line error naming the extra."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConvscopeError(MISSING) from None
    return ray


@contextlib.contextmanager
def session(address: str | None) -> Iterator[Any]:
    """Ray, connected: an existing connection as it is; else ``address`` ("auto", HOST:PORT, ray://HOST:PORT) or, with
    none, a local cluster on this machine for the call (shut down after it)."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=None if address in (None, "local") else address, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False)
        except ConnectionError as exc:
            raise ConvscopeError(f"cannot reach the Ray cluster at {address!r}: {str(exc).splitlines()[0][:160]}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


class _Actor:
    """One Ray actor: builds ``make()`` once (a model and what it needs), then maps batches of shard numbers."""

    def __init__(self, make: Callable[[], Callable[[int], dict[str, Any]]]) -> None:
        self.work = make()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows = [self.work(int(number)) for number in batch["shard"]]
        return {key: [row[key] for row in rows] for key in rows[0]}


def map_shards(make: Callable[[], Callable[[int], dict[str, Any]]], numbers: Sequence[int], *, address: str | None,
               actors: int, threads: int, gpus: float) -> Iterator[dict[str, Any]]:
    """``make()(number)`` for every shard number, run by ``actors`` Ray actors (``threads`` CPUs and ``gpus`` GPUs
    each), yielded as they finish (in no fixed order). ``make`` is pickled once per actor; each row it returns must
    hold plain values (numbers, bytes, strings) and its ``shard``."""
    with session(address) as ray:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        items = ray.data.from_items([{"shard": int(n)} for n in numbers], override_num_blocks=max(1, len(numbers)))
        pool = ray.data.ActorPoolStrategy(size=max(1, min(int(actors), len(numbers))))
        results = items.map_batches(_Actor, fn_constructor_kwargs={"make": make}, batch_size=1, batch_format="numpy",
                                    compute=pool, num_cpus=float(threads), num_gpus=float(gpus) or None)
        yield from results.iter_rows()


class _ExplainShards:
    """What a Ray actor of ``run_shards`` builds: the local engine's worker, returning a shard's encoded files."""

    def __init__(self, job: Any, threads: int, gpus: float) -> None:
        self.job, self.threads, self.gpus = job, threads, gpus

    def __call__(self) -> Callable[[int], dict[str, Any]]:
        from .sweep import ShardWorker

        worker = ShardWorker(self.job, threads=self.threads, device="cuda" if self.gpus > 0 else None)

        def explain(number: int) -> dict[str, Any]:
            shard = worker(number)
            npz, table = shard.encode(self.job.dtype)
            return {"shard": number, "npz": npz, "table": table, "pictures": len(shard.index),
                    "height": int(shard.maps.shape[1]), "width": int(shard.maps.shape[2])}

        return explain


def run_shards(job: Any, numbers: Sequence[int], store: Any, bar: Any, *, address: str | None, actors: int, threads: int,
               gpus: float) -> None:
    """explain_dataset's shards ``numbers`` on Ray, each written to ``store`` as it arrives (a shard a retried task
    computed twice is written once); ``bar`` advances by each shard's pictures."""
    for row in map_shards(_ExplainShards(job, threads, gpus), numbers, address=address, actors=actors, threads=threads, gpus=gpus):
        if store.write(int(row["shard"]), (bytes(row["npz"]), bytes(row["table"])), map_shape=(row["height"], row["width"])):
            bar.advance(int(row["pictures"]))


def pack(values: dict[str, Any]) -> bytes:
    """Arrays and JSON-able values as one bytes value (a Ray row's cell): an uncompressed npz."""
    import io
    import json

    arrays = {k: v for k, v in values.items() if isinstance(v, np.ndarray)}
    arrays["__json__"] = np.frombuffer(json.dumps({k: v for k, v in values.items() if k not in arrays}).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack(payload: bytes) -> dict[str, Any]:
    import io
    import json

    with np.load(io.BytesIO(payload)) as found:
        values: dict[str, Any] = {k: found[k] for k in found.files if k != "__json__"}
        values.update(json.loads(found["__json__"].tobytes().decode()))
    return values


class _RunRanges:
    """What a Ray actor of ``gather_shards`` builds: ``job.source()`` once, then ``job.run`` on a shard's pictures."""

    def __init__(self, job: Any, count: int, shard_size: int, threads: int, gpus: float) -> None:
        self.job, self.count, self.shard_size, self.threads, self.gpus = job, count, shard_size, threads, gpus

    def __call__(self) -> Callable[[int], dict[str, Any]]:
        import torch

        torch.set_num_threads(self.threads)
        job = self.job
        if self.gpus > 0:
            from .sweep import copy_on_device

            job.model = copy_on_device(job.model, torch.device("cuda"))
        source = job.source()

        def run(number: int) -> dict[str, Any]:
            start = number * self.shard_size
            stop = min(self.count, start + self.shard_size)
            return {"shard": number, "pictures": stop - start, "payload": pack(job.run(source, start, stop))}

        return run


def gather_shards(job: Any, count: int, shard_size: int, bar: Any, *, address: str | None, actors: int, threads: int,
                  gpus: float) -> list[dict[str, Any]]:
    """``job.run(source, start, stop)`` over shards of ``shard_size`` pictures on Ray actors, gathered in the
    dataset's order (for results that live in memory anyway, like an embedding's features)."""
    numbers = list(range(-(-count // shard_size)))
    parts: dict[int, dict[str, Any]] = {}
    for row in map_shards(_RunRanges(job, count, shard_size, threads, gpus), numbers, address=address, actors=actors,
                          threads=threads, gpus=gpus):
        number = int(row["shard"])
        if number not in parts:
            parts[number] = unpack(bytes(row["payload"]))
            bar.advance(int(row["pictures"]))
    return [parts[n] for n in numbers]
