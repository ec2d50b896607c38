"""Where pictures come from: every kind of dataset becomes batches of ``(x, labels, paths)``.

A folder (ImageFolder layout: each sub-folder's name labels the images under it), a list of paths or
pictures, a preprocessed tensor (N, C, H, W), an ``(images, labels)`` pair, or a torch ``Dataset`` of
``(image, label)`` — read ``batch_size`` at a time, so memory holds one batch, never the whole dataset.
``embed`` and ``audit`` (and anything else that walks a dataset) read them through :func:`source`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .models import Model

__all__ = ["DATASETS", "IMAGE_EXTENSIONS", "Batch", "NamedDataset", "Source", "check_labels", "from_dataset", "from_pictures",
           "from_tensor", "is_image_file", "is_pair", "label_text", "named_dataset", "read_file_list", "scan_folder", "source"]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")

Batch = tuple[torch.Tensor, list[str | None], list[str | None]]


@dataclass
class Source:
    """``count`` pictures; ``read(start, stop)`` gives pictures ``start:stop`` as (x (b, C, H, W) preprocessed,
    labels, paths), ``batches(batch_size)`` all of them in order, one batch in memory at a time."""

    count: int
    read: Callable[[int, int], Batch]
    paths: list[str | None] | None = None  # every picture's path and label, when known without reading the pictures
    labels: list[str | None] | None = None

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, self.count, batch_size):
            yield self.read(start, min(self.count, start + batch_size))


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def scan_folder(folder: str | os.PathLike) -> tuple[list[str], list[str | None]]:
    """Image files of an ImageFolder-style folder, sorted: (paths, labels). A file in a sub-folder is
    labelled by the first-level sub-folder's name (searched recursively); a file at the top has no label.
    Files without an image extension and hidden files are skipped."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise InputError(f"{root}: no such folder")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; pass a folder of images (one sub-folder per label) or a list of paths")
    paths: list[str] = []
    labels: list[str | None] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found = sorted(p for p in entry.rglob("*") if is_image_file(p) and not _hidden(p, entry))
            paths += [str(p) for p in found]
            labels += [entry.name] * len(found)
        elif is_image_file(entry):
            paths.append(str(entry))
            labels.append(None)
    if not paths:
        raise InputError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found, in it or in its sub-folders")
    return paths, labels


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def label_text(model: Model, label: Any, classes: Sequence[str] | None = None) -> str | None:
    """A label as text: ints index the data set's ``classes`` (if any) or the model's labels."""
    if label is None:
        return None
    if isinstance(label, torch.Tensor):
        if label.numel() != 1:
            raise InputError(f"a label must be one value, got a tensor of shape {tuple(label.shape)}")
        label = label.item()
    if isinstance(label, (bool, np.bool_)):
        return str(label)
    if isinstance(label, (int, np.integer)):
        index = int(label)
        if classes is not None and 0 <= index < len(classes):
            return str(classes[index])
        return model.label(index)
    if isinstance(label, float) and label.is_integer():
        return model.label(int(label))
    return str(label)


def check_labels(model: Model, labels: Sequence[Any] | None, count: int) -> list[str | None]:
    if labels is None:
        return [None] * count
    if isinstance(labels, (str, bytes)) or len(labels) != count:
        size = "a string" if isinstance(labels, (str, bytes)) else f"{len(labels)} labels"
        raise InputError(f"labels= must give one label per image: {size} for {count} images")
    return [label_text(model, label) for label in labels]


def from_pictures(model: Model, items: Sequence[Any], labels: list[str | None], paths: list[str | None],
                  size: Sequence[int] | None) -> Source:
    def read(start: int, stop: int) -> Batch:
        return model.preprocess(list(items[start:stop]), size=size), labels[start:stop], paths[start:stop]

    return Source(len(items), read, paths, labels)


def from_tensor(model: Model, x: torch.Tensor, labels: list[str | None]) -> Source:
    """Batches of a preprocessed tensor; its type and shape checked now, its values (NaN) by whoever runs the
    model on each batch (no pass over all of it first, and none twice)."""
    model.check_input(x, values=False)

    def read(start: int, stop: int) -> Batch:
        return x[start:stop], labels[start:stop], [None] * len(labels[start:stop])

    return Source(int(x.shape[0]), read)


def from_dataset(model: Model, dataset: Any, size: Sequence[int] | None) -> Source:
    count = len(dataset)
    if count == 0:
        raise InputError("the dataset is empty (len 0)")
    classes = getattr(dataset, "classes", None)
    classes = list(classes) if isinstance(classes, (list, tuple)) else None
    samples = getattr(dataset, "samples", None)  # torchvision ImageFolder: (path, class) pairs

    def item_path(index: int) -> str | None:
        if isinstance(samples, (list, tuple)) and len(samples) == count and isinstance(samples[index], (list, tuple)):
            first = samples[index][0]
            return str(first) if isinstance(first, (str, os.PathLike)) else None
        return None

    def read(start: int, stop: int) -> Batch:
        pictures, tensors, labels, paths = [], [], [], []
        for index in range(start, min(count, stop)):
            item = dataset[index]
            image, label = (item[0], item[1] if len(item) > 1 else None) if isinstance(item, (tuple, list)) else (item, None)
            (tensors if isinstance(image, torch.Tensor) else pictures).append(image)
            labels.append(label_text(model, label, classes))
            paths.append(item_path(index))
        if pictures and tensors:
            raise InputError("the dataset mixes tensors and pictures; make its transform return one kind")
        if tensors:
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) > 1 or len(next(iter(shapes))) != 3:
                raise InputError(f"the dataset's image tensors must all be (C, H, W) of one size, got {sorted(shapes)[:3]}; "
                                 f"resize them in its transform")
            return torch.stack(tensors), labels, paths
        return model.preprocess(pictures, size=size), labels, paths

    return Source(count, read)


LIST_SUFFIXES = (".parquet", ".csv", ".txt")  # file lists: a table with a 'path' column (and 'label'), or a path per line


def read_file_list(file: str | os.PathLike) -> tuple[list[str], list[Any]]:
    """A file list: a Parquet or CSV table with a ``path`` column (and optionally ``label``), or a text file with one
    path per line. Relative paths are read from the list's folder. -> (paths, labels (None where not given))."""
    where = Path(file).expanduser()
    suffix = where.suffix.lower()
    if suffix == ".txt":
        paths = [line.strip() for line in where.read_text().splitlines() if line.strip() and not line.startswith("#")]
        labels: list[Any] = [None] * len(paths)
    else:
        from .store import require_pyarrow

        pa = require_pyarrow()
        try:
            table = pa.parquet.read_table(where) if suffix == ".parquet" else pa.csv.read_csv(where)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{where}: not a readable {suffix[1:]} table ({str(exc).splitlines()[0][:120]})") from None
        if "path" not in table.column_names:
            raise InputError(f"{where}: a file list needs a 'path' column (and optionally 'label'); it has {', '.join(table.column_names)}")
        paths = [str(p) for p in table.column("path").to_pylist()]
        labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * len(paths)
    if not paths:
        raise InputError(f"{where}: the file list is empty")
    paths = [p if Path(p).is_absolute() else os.path.normpath(where.parent / p) for p in paths]
    return paths, labels


def is_pair(dataset: Any) -> bool:
    """An ``(images (N, C, H, W), labels (N,))`` pair (not a list of two pictures)."""
    return (isinstance(dataset, tuple) and len(dataset) == 2 and isinstance(dataset[0], torch.Tensor)
            and dataset[0].dim() == 4 and not isinstance(dataset[1], (str, bytes)) and hasattr(dataset[1], "__len__"))


def source(model: Model, images: Any, labels: Sequence[Any] | None = None, size: Sequence[int] | None = None) -> Source:
    """Batches of any dataset (see the module doc), checked before the first batch is read: a folder, a
    file, a list of paths or pictures, a tensor (N, C, H, W), an ``(images, labels)`` pair, or a ``Dataset``.
    ``labels``: one per picture for lists and tensors; ``size``: (H, W) for a model without an input size."""
    if is_pair(images):
        if labels is not None:
            raise InputError("the dataset is an (images, labels) pair; do not also pass labels=")
        images, labels = images[0], list(images[1].tolist() if isinstance(images[1], (torch.Tensor, np.ndarray)) else images[1])
    if isinstance(images, (str, os.PathLike)) and Path(images).expanduser().is_dir():
        if labels is not None:
            raise InputError("a folder is labelled by its sub-folders; labels= is only for lists, tensors")
        paths, folder_labels = scan_folder(images)
        return from_pictures(model, paths, folder_labels, list(paths), size)
    if isinstance(images, (str, os.PathLike)):
        if not Path(images).expanduser().exists():
            raise InputError(f"{images}: no such folder or file")
        if Path(images).suffix.lower() in LIST_SUFFIXES:
            if labels is not None:
                raise InputError(f"{images} is a file list; its labels come from its 'label' column, not labels=")
            paths, listed = read_file_list(images)
            return from_pictures(model, paths, [label_text(model, v) for v in listed], list(paths), size)
        images = [images]
    if isinstance(images, torch.Tensor):
        return from_tensor(model, images, check_labels(model, labels, int(images.shape[0]) if images.dim() else 0))
    if isinstance(images, torch.utils.data.Dataset) and hasattr(images, "__len__"):
        if labels is not None:
            raise InputError("a Dataset gives its own labels; labels= is only for lists and tensors")
        return from_dataset(model, images, size)
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("embed got an empty list of images")
        paths = [str(item) if isinstance(item, (str, os.PathLike)) else None for item in images]
        return from_pictures(model, list(images), check_labels(model, labels, len(images)), paths, size)
    raise InputError(f"embed takes a folder, a list of image paths or pictures, a preprocessed tensor (N, C, H, W) or a "
                     f"torch Dataset of (image, label); got {type(images).__name__}")


# -- built-in datasets (offline): what the CLI and the web app offer by name ------------------------------------
@dataclass(frozen=True)
class NamedDataset:
    """A dataset convscope ships or makes offline. ``make(model)`` -> (the dataset, keyword arguments it brings
    for a tool: ``labels``, ``regions`` (object masks) — a front end passes those the tool takes)."""

    name: str
    description: str
    make: Callable[[Model], tuple[Any, dict[str, Any]]]
    models: tuple[str, ...] = ()  # the built-in models it suits (what a front end offers it with)


def _digits(model: Model) -> tuple[Any, dict[str, Any]]:
    from .zoo.digits import digits_dataset

    return digits_dataset("test"), {}


def _shapes(biased: bool, swap: bool) -> Callable[[Model], tuple[Any, dict[str, Any]]]:
    def make(model: Model) -> tuple[Any, dict[str, Any]]:
        from .zoo.shapes import shapes_dataset

        found = shapes_dataset(400, biased=biased, split="test", swap=swap)
        return found.inputs(model), {"labels": found.labels.tolist(), "regions": found.masks}

    return make


DATASETS = {d.name: d for d in (
    NamedDataset("digits", "scikit-learn's handwritten digits: the 450 test pictures, labelled 0-9 (for digits_cnn)", _digits,
                 ("digits_cnn",)),
    NamedDataset("shapes", "400 snow/sand shapes made to lie: circles on snow, squares on sand, with labels and object masks "
                           "(for shapes_biased / shapes_balanced)", _shapes(True, False), ("shapes_biased", "shapes_balanced")),
    NamedDataset("shapes-swapped", "the same shapes on the other background (circles on sand, squares on snow)",
                 _shapes(True, True), ("shapes_biased", "shapes_balanced")),
    NamedDataset("shapes-balanced", "400 shapes on backgrounds drawn at random", _shapes(False, False),
                 ("shapes_biased", "shapes_balanced")),
)}


def named_dataset(name: str, model: Model) -> tuple[Any, dict[str, Any]]:
    """The built-in dataset ``name`` for ``model``: (dataset, the keyword arguments it brings)."""
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise InputError(f"unknown dataset {name!r}{hint} (built-in: {', '.join(DATASETS)}; or give a folder)")
    return DATASETS[name].make(model)
