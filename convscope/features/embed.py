"""A data set in the model's feature space: features of many images, and 2-D maps of them.

``embed`` runs the model over a folder (ImageFolder layout: sub-folder = label), a list of paths or
pictures, a preprocessed tensor or a torch ``Dataset``, in batches, and keeps for each image its
feature vector (by default the input of the classifier head, the penultimate features), its label,
the model's top-1 prediction, its path and a small thumbnail — never all the images' tensors at once.
``tsne`` / ``pca`` / ``umap`` map the features to 2-D (van der Maaten & Hinton 2008, t-SNE; McInnes
et al. 2018, UMAP); ``convscope.render.embedding`` draws the maps, ``projector.export_projector``
writes TensorBoard's projector files.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .. import data
from ..engine import Cost, bytes_per_row, default_rows, memory_budget
from ..errors import ConvscopeError, InputError, LayerError
from ..hooks import Guard
from ..images import to_uint8
from ..layers import LayerSpec, resolve_layer
from ..models import Model, as_model
from ..options import PythonOnly, Seed
from ..progress import ProgressArg, Tracker, tracker
from ..registry import CostContext, LayerUse, ReportSpec, register
from ..result import Displayable
from ..sweep import Actors, Address, Engine, Gpus, Threads, check_engine

__all__ = ["POOLS", "PROJECTIONS", "Embedding", "Projection", "embed", "pca", "tsne", "tsne_sweep", "umap"]

POOLS = ("avg", "max", "flatten")
PROJECTIONS = ("tsne", "pca", "none")
T = TypeVar("T")


# -- the result ------------------------------------------------------------------------------------
@dataclass(eq=False)
class Embedding(Displayable):
    """Features of N images and what is known about each (kind "embedding": drawn as its 2-D map).

    features:         (N, D) float32, one vector per image (pooled to a vector, see ``embed``).
    labels:           the true label of each image (folder name, dataset class, ``labels=``), or None.
    predictions:      (N,) int64 top-1 class of the same forward; None when the output is not (N, classes).
    probabilities:    (N,) float32 softmax probability of that class (None likewise).
    predicted_labels: the model's name of each predicted class (None likewise).
    paths:            the file of each image (None for tensors and in-memory pictures).
    thumbnails:       (N, t, t, 3) uint8 pictures as the network saw them, for sprites and maps (None: off).
    layer:            where the features come from ("input of fc" or a layer name); model: the model's name.
    classes:          the model's class names (to tell which labels it could predict at all).
    projection:       the 2-D map its picture uses (``embed(..., projection="tsne")``), or None.
    """

    kind = "embedding"

    features: np.ndarray
    labels: list[str | None]
    predictions: np.ndarray | None
    probabilities: np.ndarray | None
    predicted_labels: list[str] | None
    paths: list[str | None]
    thumbnails: np.ndarray | None
    layer: str
    model: str
    classes: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    projection: Projection | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __repr__(self) -> str:
        known = sum(label is not None for label in self.labels)
        shown = f", projection={self.projection.title!r}" if self.projection is not None else ""
        return (f"Embedding(model={self.model!r}, layer={self.layer!r}, features={tuple(self.features.shape)}, "
                f"labelled={known}, misclassified={int(self.misclassified().sum())}{shown})")

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Embedding:
        """The embedding of some images (an int, a slice, indices or a boolean mask)."""
        rows = np.arange(len(self))[index]
        rows = np.atleast_1d(rows)
        pick = lambda values: None if values is None else (values[rows] if isinstance(values, np.ndarray)
                                                              else [values[i] for i in rows])
        projection = None if self.projection is None else replace(self.projection, coords=self.projection.coords[rows])
        return replace(self, features=self.features[rows], labels=pick(self.labels), predictions=pick(self.predictions),
                       probabilities=pick(self.probabilities), predicted_labels=pick(self.predicted_labels),
                       paths=pick(self.paths), thumbnails=pick(self.thumbnails), meta=dict(self.meta), projection=projection)

    def misclassified(self) -> np.ndarray:
        """(N,) bool: images whose label is one of the model's classes and differs from its prediction.
        Images without a label, or with a label the model does not know (a cats-vs-dogs folder under an
        ImageNet model), count as not misclassified: there is nothing to compare."""
        if self.predicted_labels is None:
            return np.zeros(len(self), dtype=bool)
        known = set(self.classes or ())
        return np.array([label is not None and label in known and label != predicted
                         for label, predicted in zip(self.labels, self.predicted_labels)], dtype=bool)

    def accuracy(self) -> float | None:
        """Top-1 accuracy over the images whose label is one of the model's classes (None if there are none)."""
        if self.predicted_labels is None:
            return None
        known = set(self.classes or ())
        checked = [label == predicted for label, predicted in zip(self.labels, self.predicted_labels) if label in known]
        return float(np.mean(checked)) if checked else None

    def label_names(self) -> list[str]:
        """The distinct labels, numbers in numeric order ("2" before "10"), then the rest alphabetically."""
        return sort_labels({label for label in self.labels if label is not None})


def sort_labels(names: Any) -> list[str]:
    """Labels in a natural order: numeric ones by value, then the others alphabetically."""
    def key(name: str) -> tuple[int, float, str]:
        try:
            return (0, float(name), name)
        except ValueError:
            return (1, 0.0, name.casefold())

    return sorted(names, key=key)


# -- where the features come from --------------------------------------------------------------------
class _HeadInput:
    """Forward pre-hooks on every Linear layer; after a forward, the input of the last one called —
    the classifier head — is the penultimate feature vector."""

    def __init__(self, guard: Guard, module: nn.Module) -> None:
        linears = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            convs = [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]
            hint = f" (e.g. the last convolution {convs[-1]!r}, average-pooled)" if convs else ""
            raise LayerError(f"the model has no Linear classifier head whose input to take; pass layer=...{hint}")
        self.name: str | None = None
        self.value: torch.Tensor | None = None
        for name, linear in linears:
            guard.add_hook(linear, self._hook(name), pre=True)

    def _hook(self, name: str) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, args: Any) -> None:
            self.name, self.value = name, args[0] if args and isinstance(args[0], torch.Tensor) else None

        return hook

    def take(self, pool: str) -> torch.Tensor:
        if self.value is None:
            raise LayerError("no Linear layer ran in the forward pass (or it got no tensor); pass layer=...")
        value, self.value = self.value, None
        if value.dim() > 2:  # a Linear over tokens or positions (B, ..., D): pool the middle dimensions
            middle = tuple(range(1, value.dim() - 1))
            value = value.flatten(1) if pool == "flatten" else (value.mean(middle) if pool == "avg" else value.amax(middle))
        return value.float()


def _pooled(value: torch.Tensor, pool: str) -> torch.Tensor:
    """A layer's output (B, C, ...) as vectors (B, D): average / maximum over the positions, or flattened."""
    value = value.float()
    if value.dim() <= 2:
        return value.reshape(value.shape[0], -1)
    if pool == "flatten":
        return value.flatten(1)
    dims = tuple(range(2, value.dim()))
    return value.mean(dims) if pool == "avg" else value.amax(dims)


def _thumbnails(x: torch.Tensor, model: Model, size: int) -> np.ndarray:
    """A preprocessed batch (B, C, H, W) as square uint8 thumbnails (B, t, t, 3), t = min(size, max(H, W)):
    the longer side scaled to t, the other padded with black."""
    height, width = x.shape[-2:]
    side = min(size, max(height, width))
    scale = side / max(height, width)
    small = (max(1, round(height * scale)), max(1, round(width * scale)))
    data = x.float()
    if small != (height, width):
        data = F.interpolate(data, size=small, mode="bilinear", antialias=True, align_corners=False)
    pictures = to_uint8(model.denormalize(data))
    if small == (side, side):
        return pictures
    out = np.zeros((pictures.shape[0], side, side, 3), dtype=np.uint8)
    top, left = (side - small[0]) // 2, (side - small[1]) // 2
    out[:, top:top + small[0], left:left + small[1]] = pictures
    return out


# -- embed -------------------------------------------------------------------------------------------
Side = Annotated[int, Field(ge=8, le=4096)]


@dataclass
class _FeatureJob:
    """What embedding a range of pictures needs (pickled once per Ray actor): the model, the dataset as given, the
    layer by name (None: the head's input), pooling, pictures per forward and the thumbnails' side."""

    model: Model
    dataset: Any
    labels: Any
    size: Sequence[int] | None
    layer: str | None
    pool: str
    rows: int
    thumbnail_size: int

    def source(self) -> data.Source:
        return data.source(self.model, self.dataset, self.labels, self.size)

    def run(self, source: data.Source, start: int, stop: int, bar: Tracker | None = None) -> dict[str, Any]:
        """Pictures ``start:stop`` in batches of ``rows`` (from ``start``): features (n, D), top-1 classes and
        probabilities (when the output is classes), thumbnails, labels, paths and the layer's name."""
        wrapped, module = self.model, self.model.module
        ref = resolve_layer(wrapped, self.layer) if self.layer is not None else None
        found: dict[str, list[Any]] = {"features": [], "classes": [], "probabilities": [], "thumbnails": [], "labels": [],
                                       "paths": []}
        with_output, layer_name = True, ref.label if ref is not None else ""
        with Guard(module, grad=False) as guard:
            head = _HeadInput(guard, module) if ref is None else None
            capture = guard.capture(ref, grad=False) if ref is not None else None
            for offset in range(start, stop, self.rows):
                x, batch_labels, batch_paths = source.read(offset, min(stop, offset + self.rows))
                wrapped.check_input(x)  # the values (NaN) of a tensor's batch: read once, here
                if capture is not None:
                    capture.calls, capture.value = 0, None
                output = module(wrapped.working_copy(x))
                if head is not None:
                    vectors = head.take(self.pool)
                    layer_name = f"input of {head.name}"
                else:
                    vectors = _pooled(capture.check(), self.pool)
                if vectors.shape[0] != x.shape[0]:
                    raise LayerError(f"layer {layer_name!r} gives {vectors.shape[0]} rows for a batch of {x.shape[0]} images; "
                                     f"pick a layer whose first dimension is the batch")
                if found["features"] and vectors.shape[1] != found["features"][0].shape[1]:
                    raise InputError(f"images of different sizes gave features of {found['features'][0].shape[1]} and "
                                     f"{vectors.shape[1]} values at {layer_name!r}; give them one size or use pool='avg'")
                found["features"].append(vectors.cpu().numpy())
                if isinstance(output, torch.Tensor) and output.dim() == 2 and with_output:
                    top, index = output.float().softmax(dim=1).max(dim=1)
                    found["probabilities"].append(top.cpu().numpy())
                    found["classes"].append(index.cpu().numpy())
                else:
                    with_output = False
                if self.thumbnail_size:
                    found["thumbnails"].append(_thumbnails(x.detach(), wrapped, self.thumbnail_size))
                found["labels"] += batch_labels
                found["paths"] += batch_paths
                if bar is not None:
                    bar.advance(int(x.shape[0]))  # a callback may cancel here: the next batch is never read
        out: dict[str, Any] = {"features": np.concatenate(found["features"]), "labels": found["labels"],
                               "paths": found["paths"], "layer": layer_name}
        if with_output:
            out["classes"] = np.concatenate(found["classes"])
            out["probabilities"] = np.concatenate(found["probabilities"])
        if found["thumbnails"]:
            out["thumbnails"] = np.concatenate(found["thumbnails"])
        return out


def _picture_shape(model: Model, size: Sequence[int] | None) -> tuple[int, int, int]:
    """(C, H, W) the pictures of a dataset are fed at: ``size``, the model's input size, else 224x224 (a guess
    for costs and batch sizes only)."""
    height, width = size if size is not None else (model.input_size or (224, 224))
    return model.channels, int(height), int(width)


def _rows(model: Model, shape: tuple[int, int, int], batch_size: int | None) -> int:
    """Pictures per forward: ``batch_size``, else about 16 of 224x224 on a CPU (64 on a GPU), fewer when the
    model's largest activation times the rows would pass the memory budget — and each batch well under a
    second of work on a CPU, so progress (and a cancel) comes often."""
    if batch_size is not None:
        return int(batch_size)
    fast = default_rows(shape[1], shape[2], device=model.device)
    per_row = bytes_per_row(model, shape)
    return fast if not per_row else max(1, min(fast, memory_budget(model.device) // per_row))


def _embed_cost(context: CostContext) -> Cost:
    """One forward per picture (per item: the dataset's size is not known before it is read); memory: one
    batch's activations."""
    model = context.model
    if model is None:
        return Cost(1, per_item=True)
    shape = _picture_shape(model, context.options.get("size"))
    rows = _rows(model, shape, context.options.get("batch_size"))
    per_row = bytes_per_row(model, shape) or 0
    return Cost(context.area(shape[1], shape[2]), rows * per_row, f"one forward per picture, {rows} pictures at a time",
                per_item=True)


def _in_background(work: Callable[[], T], progress: ProgressArg, bar: Tracker, interval: float = 0.25) -> T:
    """``work()``; with a progress callback, in a worker thread while the callback is called every ``interval``
    seconds, so a cancel is honoured at once: scikit-learn's t-SNE offers no way to stop it, so its thread
    finishes in the background and its result is dropped."""
    if (not callable(progress) or isinstance(progress, bool)) and getattr(bar, "parent", None) is None:
        return work()  # nobody to hear a cancel (a nested tracker passes pings on to its caller's callback)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="convscope-projection", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(interval)
        if thread.is_alive():
            bar.advance(0)  # a heartbeat: the callback may raise Cancelled
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _project(embedding: Embedding, projection: str, perplexity: float, seed: int, progress: ProgressArg) -> Projection | None:
    """The 2-D map ``embed`` stores: t-SNE (PCA below 4 pictures), PCA, or none (below 2 pictures)."""
    count = len(embedding)
    if projection == "none" or count < 2:
        return None
    method = "tsne" if projection == "tsne" and count >= 4 else "pca"
    with tracker(progress, 1, "t-SNE map" if method == "tsne" else "PCA map") as bar:
        if method == "tsne":
            found = _in_background(lambda: tsne(embedding.features, perplexity=perplexity, seed=seed), progress, bar)
        else:
            found = pca(embedding.features, seed=seed)
        bar.advance(1)
    return found


@register("embed", family="embedding", takes="dataset", returns="embedding", cost=_embed_cost,
          layer=LayerUse("output", "the input of the classifier head (its pooled features)"),
          paper="van der Maaten & Hinton 2008, Visualizing Data using t-SNE (the map); penultimate CNN features",
          quick={"projection": "pca", "thumbnail_size": 32},
          report=ReportSpec(options={"thumbnail_size": 32}, quick={"projection": "pca"}, title="The dataset in feature space",
                            note="One dot per image at its place on a 2-D map of the model's features, coloured by label; "
                                 "crosses are misclassified images. Classes the model tells apart form separate clusters."))
def embed(model: Model | nn.Module, images: Any, *, layer: LayerSpec = None, batch_size: Annotated[int, Field(ge=1, le=4096)] | None = None,
          pool: Literal["avg", "max", "flatten"] = "avg", labels: PythonOnly[Any] = None,
          thumbnail_size: Annotated[int, Field(ge=0, le=256)] = 48, size: tuple[Side, Side] | None = None,
          projection: Literal["tsne", "pca", "none"] = "tsne", perplexity: Annotated[float, Field(ge=1, le=100)] = 30.0,
          seed: Seed = 0, engine: Engine = "local", address: Address | None = None, actors: Actors = 2,
          threads_per_actor: Threads = 1, gpus_per_actor: Gpus = 0.0,
          progress: ProgressArg = None) -> Embedding:
    """Embedding: a dataset in the model's feature space, mapped to 2-D (t-SNE), labels and mistakes marked.

    -> :class:`Embedding`: one feature vector per image with its label, the model's top-1 prediction, path
    and thumbnail, and the 2-D map its picture shows.

    ``images``: a folder (ImageFolder layout: each sub-folder's name labels the images under it, searched
    recursively; files at the top are unlabelled), a list of paths or pictures, a preprocessed tensor
    (N, C, H, W), an (images, labels) pair or a torch ``Dataset`` of ``(image, label)`` (PIL pictures
    or preprocessed (C, H, W) tensors; int labels name ``dataset.classes`` or the model's classes). Images
    are loaded, preprocessed and run ``batch_size`` at a time in inference mode: memory holds one batch,
    the features (N × D floats) and the thumbnails (N × t² × 3 bytes), never all the images.
    ``layer``: None for the input of the classifier head (the last Linear layer called: the penultimate
    features), captured in the forward that gives the predictions; or a layer whose output is pooled.
    ``result.projection`` is the 2-D map its picture shows (:func:`tsne` / :func:`pca` for others).

    Options:
        batch_size: images per forward pass; default about 16 of 224x224 on a CPU (64 on a GPU), fewer when memory is short.
        pool: how a layer's maps become one vector per picture: "avg" (each channel's average), "max" (its maximum), or
            "flatten" (every value).
        labels: one label per image for a list or a tensor (folders and datasets carry their own; Python only).
        thumbnail_size: side in pixels of the thumbnails kept for thumbnail maps and projector sprites (0: none).
        size: (height, width) to feed a model that has no input size of its own (a bare module).
        projection: the 2-D map the picture shows: "tsne" (neighbours stay neighbours: clusters; seconds for thousands of
            images), "pca" (the two main directions of variation: instant, clusters overlap) or "none".
        perplexity: t-SNE's number of close neighbours per point (5-50 usual; lowered to (N - 1) / 3 for small datasets).
        seed: random state of the map (same seed, same map).
        engine: "local" (this process) or "ray" (the features computed by Ray actors: pip install 'convscope[ray]').
        address: the Ray cluster to join: "auto", HOST:PORT or ray://HOST:PORT (none: a local one for this call).
        actors: Ray actors, each with its own copy of the model.
        threads_per_actor: CPU threads (and Ray CPUs) per actor.
        gpus_per_actor: GPUs per actor (1 on a GPU cluster; 0: CPU only).
    """
    wrapped = as_model(model)
    if pool not in POOLS:
        raise ConvscopeError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConvscopeError(f"batch_size must be a positive integer, got {batch_size!r}")
    if projection not in PROJECTIONS:
        raise ConvscopeError(f"unknown projection {projection!r}; choose one of {', '.join(PROJECTIONS)}")
    source = data.source(wrapped, images, labels, size)
    ref = resolve_layer(wrapped, layer) if layer is not None else None
    rows = _rows(wrapped, _picture_shape(wrapped, size), batch_size)
    check_engine(engine, address)
    job = _FeatureJob(wrapped, images, labels, size, ref.label if ref is not None else None, pool, rows, int(thumbnail_size))
    with tracker(progress, source.count, "embedding") as bar:
        if engine == "ray":
            from ..ray_engine import gather_shards

            batches = max(1, min(256 // rows, math.ceil(source.count / rows / (4 * int(actors)))))  # >= 4 shards per actor
            parts = gather_shards(job, source.count, rows * batches, bar, address=address, actors=int(actors),
                                  threads=int(threads_per_actor), gpus=float(gpus_per_actor))
        else:
            parts = [job.run(source, 0, source.count, bar)]
    features = [p["features"] for p in parts]
    with_output = all("classes" in p for p in parts)
    classes = [p["classes"] for p in parts] if with_output else []
    probabilities = [p["probabilities"] for p in parts] if with_output else []
    thumbs = [p["thumbnails"] for p in parts if "thumbnails" in p]
    all_labels = [v for p in parts for v in p["labels"]]
    all_paths = [v for p in parts for v in p["paths"]]
    layer_name = parts[0]["layer"]
    if len({f.shape[1] for f in features}) > 1:
        raise InputError(f"images of different sizes gave features of {features[0].shape[1]} and {features[-1].shape[1]} "
                         f"values at {layer_name!r}; give them one size or use pool='avg'")
    predictions = np.concatenate(classes).astype(np.int64) if with_output else None
    found = Embedding(
        features=np.ascontiguousarray(np.concatenate(features), dtype=np.float32),
        labels=all_labels,
        predictions=predictions,
        probabilities=np.concatenate(probabilities).astype(np.float32) if with_output else None,
        predicted_labels=[wrapped.label(int(c)) for c in predictions] if predictions is not None else None,
        paths=all_paths,
        thumbnails=np.concatenate(thumbs) if thumbs else None,
        layer=layer_name,
        model=wrapped.name,
        classes=list(wrapped.labels) if wrapped.labels is not None else None,
        meta={"pool": pool if ref is not None else None, "batch_size": rows, "engine": engine},
    )
    found.projection = _project(found, projection, perplexity, seed, progress)
    return found


# -- 2-D maps ----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Projection(Displayable):
    """2-D coordinates of an embedding's points: ``coords`` (N, 2) float32, the ``method`` ("t-SNE",
    "PCA", "UMAP") and the parameters it ran with (the perplexity actually used, seed, ...). Made from an
    :class:`Embedding`, it keeps it as ``source`` and is drawn as its map (kind "projection"): dots
    coloured by label, misclassified images as crosses; from a bare array, as plain dots."""

    coords: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    source: Embedding | None = field(default=None, repr=False)

    kind = "projection"

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def title(self) -> str:
        """E.g. "t-SNE, perplexity 30"."""
        if self.method == "t-SNE":
            return f"t-SNE, perplexity {self.params.get('perplexity', float('nan')):.3g}"
        if self.method == "PCA" and "explained_variance" in self.params:
            return f"PCA ({sum(self.params['explained_variance']):.0%} of the variance)"
        if self.method == "UMAP":
            return f"UMAP, {self.params.get('n_neighbors')} neighbours"
        return self.method


def _source(data: Any) -> Embedding | None:
    """The embedding a map is made of (kept without its own map: no reference cycle)."""
    return replace(data, projection=None) if isinstance(data, Embedding) else None


def _matrix(data: Embedding | np.ndarray | torch.Tensor, minimum: int = 2) -> np.ndarray:
    """The (N, D) float32 features of an Embedding or an array, checked."""
    values = data.features if isinstance(data, Embedding) else data
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise InputError(f"expected features (N, D) or an Embedding, got an array of shape {values.shape}")
    if values.shape[0] < minimum:
        raise InputError(f"a 2-D map needs at least {minimum} points, got {values.shape[0]}")
    if not np.isfinite(values).all():
        raise InputError("the features contain NaN or infinite values")
    return values


def _reduce(values: np.ndarray, dims: int | None, seed: int) -> np.ndarray:
    """PCA to ``dims`` dimensions first (t-SNE's usual first step: less noise, faster neighbours)."""
    if not dims or values.shape[1] <= dims or values.shape[0] <= dims:
        return values
    from sklearn.decomposition import PCA

    return PCA(n_components=dims, random_state=seed).fit_transform(values).astype(np.float32)


def _tsne_backend(backend: str) -> str:
    if backend not in ("auto", "sklearn", "opentsne"):
        raise ConvscopeError(f"unknown t-SNE backend {backend!r}; choose 'auto', 'sklearn' or 'opentsne'")
    if backend in ("auto", "opentsne"):
        try:
            import openTSNE  # noqa: F401
        except ImportError:
            if backend == "opentsne":
                raise ConvscopeError("backend='opentsne' needs the package openTSNE: pip install openTSNE") from None
            return "sklearn"
        return "opentsne"
    return "sklearn"


def _threads(threads: int) -> Any:
    """A context limiting OpenMP and BLAS threads. scikit-learn's Barnes-Hut gradient (OpenMP) and PCA
    (BLAS) threads spin waiting for each other when the cores are shared: on a busy 2-core machine t-SNE
    of 450 points took 2.2 s with 1 thread and 16-38 s with 2, PCA of 2,000 × 1,280 0.2 s and 2.7 s."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConvscopeError(f"threads must be a positive integer, got {threads!r}")
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def _run_tsne(values: np.ndarray, perplexity: float, seed: int, backend: str, threads: int) -> tuple[np.ndarray, dict[str, Any]]:
    if backend == "opentsne":
        import openTSNE

        result = openTSNE.TSNE(n_components=2, perplexity=perplexity, random_state=seed, initialization="pca",
                               n_jobs=threads, verbose=False).fit(values)
        return np.asarray(result, dtype=np.float32), {"kl_divergence": float(getattr(result, "kl_divergence", float("nan")))}
    from sklearn.manifold import TSNE

    model = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    coords = model.fit_transform(values)
    return coords.astype(np.float32), {"kl_divergence": float(model.kl_divergence_)}


def _perplexity(requested: float, count: int) -> float:
    if not requested or requested <= 0:
        raise ConvscopeError(f"perplexity must be positive, got {requested!r}")
    return float(min(requested, (count - 1) / 3))  # t-SNE needs about 3 × perplexity neighbours


def tsne(data: Embedding | np.ndarray | torch.Tensor, *, perplexity: float = 30.0, seed: int = 0, pca_dims: int | None = 50,
         backend: Literal["auto", "sklearn", "opentsne"] = "auto", threads: int = 1) -> Projection:
    """t-SNE map of the features (van der Maaten & Hinton 2008, "Visualizing Data using t-SNE") -> Projection.

    Features are first reduced to ``pca_dims`` dimensions by PCA. The same seed gives the same map.

    Options:
        perplexity: about how many neighbours each point keeps close (5-50); lowered to (N - 1) / 3 for small N.
        seed: random state of PCA and t-SNE.
        pca_dims: PCA dimensions before t-SNE (None or 0: none).
        backend: "auto" (openTSNE when installed, else scikit-learn), "sklearn" or "opentsne".
        threads: CPU threads for PCA and the optimization (1 by default: threads that share busy cores wait on
            each other; raise it on an idle multi-core machine).
    """
    values = _matrix(data, minimum=4)
    used = _perplexity(perplexity, values.shape[0])
    engine = _tsne_backend(backend)
    with _threads(threads):
        reduced = _reduce(values, pca_dims, seed)
        coords, extra = _run_tsne(reduced, used, seed, engine, threads)
    return Projection(coords, "t-SNE", {"perplexity": used, "requested_perplexity": float(perplexity), "seed": seed,
                                        "pca_dims": reduced.shape[1], "backend": engine, **extra}, _source(data))


def tsne_sweep(data: Embedding | np.ndarray | torch.Tensor, perplexities: Sequence[float] = (5, 15, 30, 50), *,
               seed: int = 0, pca_dims: int | None = 50, backend: Literal["auto", "sklearn", "opentsne"] = "auto",
               threads: int = 1) -> list[Projection]:
    """One t-SNE map per perplexity (the PCA step is shared), for side-by-side comparison; options as ``tsne``."""
    values = _matrix(data, minimum=4)
    engine = _tsne_backend(backend)
    used_values = [_perplexity(requested, values.shape[0]) for requested in perplexities]
    maps = []
    with _threads(threads):
        reduced = _reduce(values, pca_dims, seed)
        for requested, used in zip(perplexities, used_values):
            coords, extra = _run_tsne(reduced, used, seed, engine, threads)
            maps.append(Projection(coords, "t-SNE", {"perplexity": used, "requested_perplexity": float(requested),
                                                     "seed": seed, "pca_dims": reduced.shape[1], "backend": engine, **extra},
                                   _source(data)))
    return maps


def pca(data: Embedding | np.ndarray | torch.Tensor, *, seed: int = 0, threads: int = 1) -> Projection:
    """The first two principal components of the features -> Projection (``params["explained_variance"]``:
    the fraction of the variance each keeps).

    Options:
        seed: random state of the randomized SVD scikit-learn picks for large inputs.
        threads: CPU threads for the linear algebra.
    """
    from sklearn.decomposition import PCA

    values = _matrix(data)
    reducer = PCA(n_components=min(2, *values.shape), random_state=seed)
    with _threads(threads):
        coords = reducer.fit_transform(values).astype(np.float32)
    if coords.shape[1] < 2:  # one feature: pad the second axis
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return Projection(coords, "PCA", {"explained_variance": [float(v) for v in reducer.explained_variance_ratio_],
                                      "seed": seed}, _source(data))


def umap(data: Embedding | np.ndarray | torch.Tensor, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
         pca_dims: int | None = 50) -> Projection:
    """UMAP map of the features (McInnes et al. 2018) -> Projection; needs the package umap-learn.

    Options:
        n_neighbors: size of the neighbourhood each point keeps (lowered to N - 1 for small N).
        min_dist: how tightly points may pack in 2-D.
        seed: random state (UMAP is then single-threaded, and reproducible).
        pca_dims: PCA dimensions first (None or 0: none).
    """
    try:
        import umap as umap_learn
    except ImportError:
        raise ConvscopeError("umap needs the package umap-learn (pip install umap-learn); or use tsne / pca") from None
    values = _matrix(data, minimum=4)
    neighbours = int(min(n_neighbors, values.shape[0] - 1))
    reduced = _reduce(values, pca_dims, seed)
    reducer = umap_learn.UMAP(n_components=2, n_neighbors=neighbours, min_dist=min_dist, random_state=seed)
    coords = np.asarray(reducer.fit_transform(reduced), dtype=np.float32)
    return Projection(coords, "UMAP", {"n_neighbors": neighbours, "min_dist": min_dist, "seed": seed,
                                       "pca_dims": reduced.shape[1]}, _source(data))


def grid_side(count: int) -> int:
    """Cells per side of a square grid holding ``count`` items (a sprite)."""
    return max(1, math.ceil(math.sqrt(count)))
