"""Explain a whole dataset: every picture's map and numbers written to disk as they are made (``explain_dataset``).

The dataset is cut into fixed **shards** (``shard_size`` pictures, explained in fixed batches). A shard is the unit
of work, of writing and of resuming: the local engine explains the missing shards one after another in this process;
the Ray engine (``convscope.ray_engine``, the ``convscope[ray]`` extra) hands them to a pool of actors, one model
each, and writes what they return as it streams in. Both run the same :class:`ShardWorker` on the same shards, so
they write the same files (maps equal within float rounding of the kernels' thread counts), and a rerun after a
crash or Ctrl-C computes exactly the shards that are missing.

Salient ImageNet (Singla & Feizi 2022) and SpRAy (Lapuschkin et al. 2019) work from such dataset-wide explanations.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from . import data
from .engine import Cost, default_rows, stand_in
from .errors import InputError
from .images import to_uint8
from .models import Model, as_model
from .options import SERVER_ONLY, BatchSize, PythonOnly
from .progress import ProgressArg, tracker
from .registry import CAM_LAYER, CostContext, register
from .store import Explanations, Shard, open_explanations

__all__ = ["ENGINES", "ShardJob", "ShardWorker", "batch_target", "check_engine", "class_index", "dataset_target", "explain_dataset",
           "fingerprint", "top_predictions"]

ENGINES = ("local", "ray")
# where the work runs: Python and the command line decide, never the web app (SERVER_ONLY)
Engine = Annotated[Literal["local", "ray"], Field(json_schema_extra=SERVER_ONLY)]
Address = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^(auto|local|ray://[\w.\-]+:\d+|[\w.\-]+:\d+)$",
                               json_schema_extra=SERVER_ONLY)]
Actors = Annotated[int, Field(ge=1, le=4096, json_schema_extra=SERVER_ONLY)]
Threads = Annotated[int, Field(ge=1, le=256, json_schema_extra=SERVER_ONLY)]
Gpus = Annotated[float, Field(ge=0, le=16, json_schema_extra=SERVER_ONLY)]
THUMBNAIL = 64


def check_engine(engine: str, address: str | None) -> None:
    """One line before any work when a Ray address comes without the Ray engine."""
    if engine == "local" and address is not None:
        raise InputError("address= is the Ray cluster's; pass engine='ray' with it")


# -- targets and predictions over a dataset ------------------------------------------------------------------------
def class_index(model: Model, label: str | None) -> int:
    """A label's index in the model's classes (its name or its number as text); -1 when unknown."""
    if label is None:
        return -1
    if model.labels and label in model.labels:
        return model.labels.index(label)
    if label.lstrip("-").isdigit():
        return int(label)
    return -1


def dataset_target(target: Any, total: int) -> Any:
    """None (the top-1), "label", an int, or (N,) classes for the whole dataset (sliced per batch by :func:`batch_target`)."""
    if target is None or (isinstance(target, str) and target == "label"):
        return target
    if isinstance(target, str):
        raise InputError(f"target must be None (top-1), 'label', an int or one class per image, got {target!r}")
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return int(target)
    if callable(target) and not isinstance(target, torch.Tensor):
        raise InputError("a dataset's maps explain classes: target must be None (top-1), 'label', an int or one class per image")
    classes = torch.as_tensor(np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target))
    if classes.dim() != 1 or classes.is_floating_point() or classes.dtype == torch.bool:
        raise InputError(f"target must be one integer class per image, shape ({total},); got {tuple(classes.shape)} {classes.dtype}")
    if classes.shape[0] != total:
        raise InputError(f"target has {classes.shape[0]} classes for {total} images; give one per image, an int or None")
    return classes.long()


def batch_target(targets: Any, label: torch.Tensor, offset: int, count: int) -> Any:
    """This batch's explained classes (None: the method takes the top-1 from its own forward)."""
    if targets is None or isinstance(targets, int):
        return targets
    if isinstance(targets, str):  # "label"
        if bool((label < 0).any()):
            raise InputError(f"target='label' needs every image's label; image {offset + int((label < 0).nonzero()[0])} has "
                             f"none the model knows (labels must be its class names or indices)")
        return label
    return targets[offset:offset + count]


def top_predictions(model: Model, x: torch.Tensor, result: Any, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's top-k classes and probabilities (B, k), from the explaining forward when the method recorded
    them (whatever class it explained), else from one more forward."""
    classes, probabilities = result.meta.get("top_classes"), result.meta.get("top_probabilities")
    if isinstance(classes, torch.Tensor) and classes.shape[0] == x.shape[0] and classes.shape[1] >= min(k, classes.shape[1]):
        return classes[:, :k].cpu().long(), probabilities[:, :k].float().cpu()
    out = model.forward(x).float().softmax(1).cpu()
    best = out.topk(min(k, out.shape[1]), dim=1)
    return best.indices, best.values


# -- fingerprints: is a folder's run this run? ------------------------------------------------------------------------
def fingerprint(value: Any) -> str:
    """A short, stable hash of a model's weights (names, shapes, bytes), a tensor, or JSON-able data."""
    digest = hashlib.sha256()
    module = value.module if isinstance(value, Model) else value
    if isinstance(module, torch.nn.Module):
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                          if tensor.numel() else b"")
    elif isinstance(value, torch.Tensor):
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    else:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _dataset_fingerprint(dataset: Any, source: data.Source) -> dict[str, Any]:
    """What identifies the pictures: their count, the first and last picture's bytes and, where known, every
    path and label (files) or every byte (a tensor) — enough to refuse resuming a folder with other pictures."""
    first, last = source.read(0, 1)[0], source.read(source.count - 1, source.count)[0]
    found: dict[str, Any] = {"count": source.count, "shape": list(first.shape[1:]), "ends": fingerprint(torch.cat([first, last]))}
    pictures = dataset[0] if data.is_pair(dataset) else dataset
    if isinstance(pictures, torch.Tensor):
        found["tensor"] = fingerprint(pictures)
    if source.paths is not None and all(p is not None for p in source.paths):
        found["files"] = fingerprint([source.paths, source.labels])
    if isinstance(dataset, (str, os.PathLike)) and Path(dataset).expanduser().is_dir():
        found["root"] = str(Path(dataset).expanduser().resolve())  # where a folder of masks mirrors the pictures from
    return found


# -- the work of one shard ------------------------------------------------------------------------------------------
@dataclass
class ShardJob:
    """Everything a worker needs to explain any shard (pickled once per Ray actor): the model, the dataset as the
    caller gave it, the method by name with its options, and how the output is cut and stored."""

    model: Model
    dataset: Any
    labels: Any
    size: tuple[int, int] | None
    method: str
    method_options: dict[str, Any]
    layer: Any
    target: Any
    count: int
    shard_size: int
    batch_size: int
    top_k: int
    resolution: str
    thumbnail: int
    dtype: str

    def shard_range(self, number: int) -> tuple[int, int]:
        return number * self.shard_size, min(self.count, (number + 1) * self.shard_size)


class ShardWorker:
    """Explains shards of a :class:`ShardJob`: ``worker(number) -> Shard``. Made once per process (per Ray actor):
    the dataset source and the checked method are built here, not shipped."""

    def __init__(self, job: ShardJob, *, threads: int | None = None, device: str | None = None) -> None:
        from .metrics.nested import method as checked_method

        if threads:
            torch.set_num_threads(int(threads))
        self.job = job
        self.model = job.model
        if device is not None and torch.device(device) != self.model.device:
            self.model = copy_on_device(self.model, torch.device(device))
        self.source = data.source(self.model, job.dataset, job.labels, job.size)
        self.method = checked_method(job.method, {**job.method_options, "layer": job.layer}, who="explain_dataset")
        self.targets = dataset_target(job.target, job.count)

    def __call__(self, number: int) -> Shard:
        job, model = self.job, self.model
        start, stop = job.shard_range(number)
        parts: list[dict[str, Any]] = []
        maps, thumbs = [], []
        for offset in range(start, stop, job.batch_size):
            x, names, paths = self.source.read(offset, min(stop, offset + job.batch_size))
            x = x.to(model.device)
            if x.dim() != 4:
                raise InputError(f"explain_dataset takes pictures (B, C, H, W); this dataset gives {tuple(x.shape)}")
            label = torch.tensor([class_index(model, n) for n in names], dtype=torch.long)
            result = self.method(model, x, target=batch_target(self.targets, label, offset, x.shape[0]))
            found = _map_of(result, job.resolution)  # (b, h, w) float32, on the CPU
            classes, probabilities = top_predictions(model, x, result, job.top_k)
            explained = classes[:, 0] if result.target is None else result.target.cpu().long()
            explained_probability = result.meta.get("probabilities")
            if not isinstance(explained_probability, torch.Tensor):
                explained_probability = torch.where(explained == classes[:, 0], probabilities[:, 0], torch.nan)
            parts.append(_columns(model, offset, names, paths, label, classes, probabilities, explained,
                                  explained_probability.float().cpu(), found, number))
            maps.append(found.numpy())
            if job.thumbnail:
                thumbs.append(_thumbnails(model, x, job.thumbnail))
        columns = {k: [v for part in parts for v in part[k]] for k in parts[0]}
        return Shard(number, np.arange(start, stop, dtype=np.int64), np.concatenate(maps),
                     np.concatenate(thumbs) if thumbs else None, columns)


def copy_on_device(model: Model, device: torch.device) -> Model:
    """A copy of ``model`` on ``device`` (a Ray actor's GPU); the caller's model is never moved."""
    import copy

    moved = copy.copy(model)
    moved.module = copy.deepcopy(model.module).to(device)
    return moved


def _map_of(result: Any, resolution: str) -> torch.Tensor:
    """The map to store, (B, h, w) float32: at the method's own resolution (a CAM's layer grid) or at the input's."""
    low = result.meta.get("low_res") if resolution == "method" else None
    if isinstance(low, torch.Tensor) and low.dim() == 4 and low.shape[1] == 1:
        return low[:, 0].detach().float().cpu()
    maps = result.maps()
    if maps.dim() != 3:
        raise InputError(f"explain_dataset stores maps of pictures (B, H, W); {result.method} gave {tuple(maps.shape)}")
    return maps.detach().float().cpu()


def _thumbnails(model: Model, x: torch.Tensor, side: int) -> np.ndarray:
    """(b, t, t', 3) uint8: the pictures as the model saw them, the longer side ``side`` pixels."""
    height, width = x.shape[-2:]
    scale = side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.interpolate(x.detach().float().cpu(), size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return to_uint8(model.denormalize(small))


def _columns(model: Model, offset: int, names: list[str | None], paths: list[str | None], label: torch.Tensor,
             classes: torch.Tensor, probabilities: torch.Tensor, explained: torch.Tensor, explained_probability: torch.Tensor,
             maps: torch.Tensor, number: int) -> dict[str, list[Any]]:
    """The table's rows of one batch (column -> values), plain Python values in the order of ``store.COLUMNS``."""
    count = maps.shape[0]
    flat = maps.reshape(count, -1)
    peak = flat.argmax(1)
    height, width = maps.shape[-2:]
    absolute = flat.abs().sum(1)
    positive = flat.clamp_min(0).sum(1)
    return {
        "index": list(range(offset, offset + count)),
        "id": [p if p is not None else f"#{offset + i}" for i, p in enumerate(paths)],
        "label": list(names), "label_index": label.tolist(),
        "predicted": classes[:, 0].tolist(), "predicted_label": [model.label(int(c)) for c in classes[:, 0]],
        "probability": probabilities[:, 0].tolist(),
        "top_classes": classes.tolist(), "top_probabilities": probabilities.tolist(),
        "explained": explained.tolist(), "explained_label": [model.label(int(c)) for c in explained],
        "explained_probability": explained_probability.tolist(),
        "map_min": flat.amin(1).tolist(), "map_max": flat.amax(1).tolist(), "map_mean": flat.mean(1).tolist(),
        "positive_share": torch.where(absolute > 0, positive / absolute.clamp_min(1e-30), torch.zeros_like(absolute)).tolist(),
        "peak_y": (((peak // width).float() + 0.5) / height).tolist(), "peak_x": (((peak % width).float() + 0.5) / width).tolist(),
        "shard": [number] * count,
    }


# -- the tool ---------------------------------------------------------------------------------------------------------
def _explain_dataset_cost(context: CostContext) -> Cost:
    """Per picture: the method's cost on one picture at the size the dataset gives."""
    from .metrics.nested import method as checked_method

    model = context.model
    own = context.tool.options_model.model_fields
    given = {k: v for k, v in context.options.items() if k not in own}
    chosen = checked_method(context.options["method"], {**given, "layer": context.special.get("layer")}, who="explain_dataset")
    if model is None:
        return Cost(0, per_item=True)
    pictures = context.inputs.get("dataset")
    one = stand_in(model, pictures[0] if data.is_pair(pictures) else pictures)
    if one is None:
        return Cost(0, per_item=True)
    cost = chosen.cost(model, one)
    return Cost(cost.forwards, cost.memory, f"per picture: {chosen.name}", per_item=True)


@register("explain_dataset", family="workflow", takes="dataset", returns="explanations", cost=_explain_dataset_cost,
          layer=CAM_LAYER, report=None,
          paper="Lapuschkin et al. 2019, Unmasking Clever Hans predictors (explanations of a whole dataset, then clustered); "
                "Singla & Feizi 2022, Salient ImageNet",
          quick={"thumbnail": 32})
def explain_dataset(model: Model | torch.nn.Module, dataset: Any,
                    method: Annotated[str, Field(min_length=1, max_length=64)] = "gradcam", *,
                    out: Path | None = None,
                    target: Any = None, layer: Any = None, labels: list[int] | list[str] | PythonOnly[Any] | None = None,
                    top_k: Annotated[int, Field(ge=1, le=10)] = 5, resolution: Literal["method", "input"] = "method",
                    dtype: Literal["float16", "float32"] = "float16", thumbnail: Annotated[int, Field(ge=0, le=256)] = THUMBNAIL,
                    shard_size: Annotated[int, Field(ge=1, le=65536)] = 256, batch_size: BatchSize = None,
                    size: tuple[Annotated[int, Field(ge=8, le=4096)], Annotated[int, Field(ge=8, le=4096)]] | None = None,
                    overwrite: bool = False, engine: Engine = "local", address: Address | None = None, actors: Actors = 2,
                    threads_per_actor: Threads = 1, gpus_per_actor: Gpus = 0.0,
                    progress: ProgressArg = None, **method_options: Any) -> Explanations:
    """Explain every picture of a dataset and write the maps and numbers to ``out`` as they are made.

    dataset:  a folder (ImageFolder layout: sub-folder = label), a file list (.parquet/.csv with a ``path`` column and
              optionally ``label``; .txt: a path per line), a list of paths or pictures, a tensor (N, C, H, W), an
              ``(images, labels)`` pair, or a torch Dataset of (image, label).
    target:   the class each map explains: None (the top-1), ``"label"`` (the true class), an int, or (N,) classes.
    layer:    the method's layer (default: its own choice). Other keyword options go to the method (``steps=``…).
    Returns :class:`convscope.store.Explanations` (the folder, read lazily): ``.table()`` one row per picture
    (``store.COLUMNS``), ``.maps(indices)``, ``.shards()``. Memory holds one shard; a rerun with the same arguments
    resumes (only missing shards are computed, none twice); ``engine="ray"`` spreads the shards over Ray actors.

    Options:
        method: the attribution method that explains each picture (default gradcam).
        out: the folder to write to (created; a folder of the same run is resumed, of another run refused); none: a new
            temporary folder, removed when the process exits (its path is in the result's text).
        labels: the true class of each picture when the dataset does not say it (a tensor of pictures): names or indices.
        top_k: how many of the model's top classes (with their probabilities) the table keeps per picture.
        resolution: maps at the method's own resolution ("method": a CAM's layer grid, e.g. 7x7 — small) or at the
            input's ("input").
        dtype: how maps are stored: float16 (each map divided by its largest absolute value first: 3 significant
            digits, half the space) or float32.
        thumbnail: side in pixels of the small copy of each picture kept with its map (cluster and audit figures; 0: none).
        shard_size: pictures per shard file: the unit of writing and resuming (a crash loses at most one shard's work).
        batch_size: pictures per call of the method (none: about 16 of 224x224, 196 of 64x64); part of the run's identity.
        size: (height, width) to feed a model that has no input size of its own.
        overwrite: replace what the folder holds (another run's explanations) instead of refusing.
        engine: "local" (this process) or "ray" (a Ray cluster: pip install 'convscope[ray]').
        address: the Ray cluster to join: "auto" (the one running on this machine), HOST:PORT or ray://HOST:PORT
            (none: start a local one for this call).
        actors: Ray actors, each with its own copy of the model.
        threads_per_actor: CPU threads (and Ray CPUs) per actor.
        gpus_per_actor: GPUs per actor (1 on a GPU cluster; 0: CPU only).
    """
    from .metrics.nested import method as checked_method

    wrapped = as_model(model)
    checked_method(method, {**method_options, "layer": layer}, who="explain_dataset")  # one line, before any work
    check_engine(engine, address)
    source = data.source(wrapped, dataset, labels, size)
    if source.count == 0:
        raise InputError("the dataset is empty")
    first = source.read(0, 1)[0]
    if first.dim() != 4:
        raise InputError(f"explain_dataset takes pictures (B, C, H, W); this dataset gives {tuple(first.shape)}")
    if batch_size is None:
        batch_size = default_rows(*first.shape[-2:], device=wrapped.device)
    batch_size = min(int(batch_size), int(shard_size))
    shard_size = int(shard_size) // batch_size * batch_size  # whole batches per shard: a shard is always cut the same way
    dataset_target(target, source.count)
    job = ShardJob(wrapped, dataset, labels, tuple(size) if size else None, method, dict(method_options), layer, target,
                   source.count, shard_size, batch_size, int(top_k), resolution, int(thumbnail), dtype)
    manifest = {"count": source.count, "shard_size": shard_size, "batch_size": batch_size, "method": method,
                "method_options": method_options, "layer": None if layer is None else str(layer),
                "target": target if target is None or isinstance(target, (int, str)) else fingerprint(torch.as_tensor(np.asarray(target))),
                "top_k": int(top_k), "resolution": resolution, "dtype": dtype, "thumbnail": int(thumbnail),
                "model": wrapped.name, "weights": fingerprint(wrapped), "dataset": _dataset_fingerprint(dataset, source),
                "class_names": list(wrapped.labels) if wrapped.labels else None}
    if out is None:  # a temporary folder, removed when this process exits (the web app's jobs, quick looks)
        import atexit
        import shutil
        import tempfile

        out = tempfile.mkdtemp(prefix="convscope-explanations-")
        atexit.register(shutil.rmtree, out, ignore_errors=True)
    store = Explanations.create(out, manifest, overwrite=overwrite)
    todo = store.missing()
    total = source.count
    already = total - sum(job.shard_range(n)[1] - job.shard_range(n)[0] for n in todo)
    with tracker(progress, total, f"explain_dataset ({method}, {engine})") as bar:
        if already:
            bar.advance(already)
        if todo and engine == "ray":
            from .ray_engine import run_shards

            run_shards(job, todo, store, bar, address=address, actors=int(actors), threads=int(threads_per_actor),
                       gpus=float(gpus_per_actor))
        elif todo:
            worker = ShardWorker(job)
            for number in todo:
                shard = worker(number)
                store.write(number, shard.encode(dtype), map_shape=shard.maps.shape[1:])
                bar.advance(len(shard.index))
    store.finish()
    return open_explanations(store.folder)
