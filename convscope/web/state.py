"""What the endpoints of ``convscope serve`` share: the models, the pictures (in memory, LRU-bounded, never on
disk), small caches (preprocessed inputs, predictions, activations, datasets) and the job queue."""

from __future__ import annotations

import copy
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import convscope as cs
from convscope import render
from convscope.adapters.keras import is_keras
from convscope.data import DATASETS, named_dataset
from convscope.errors import ConvscopeError, LayerError

from .jobs import JobManager
from .server import HTTPError

__all__ = ["LRU", "App", "Picture", "UploadedDataset", "as_picture", "finite", "png"]

DEFAULT_MODEL = "efficientnet_lite0"
STORED_SIDE = 1024  # pictures are kept at most this many pixels on their longer side (models crop 224-520)


class LRU(OrderedDict):
    """A small thread-safe least-recently-used cache."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size, self.lock = size, threading.RLock()

    def fetch(self, key: Any, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
        value = make()  # outside the lock: slow work must not block other keys
        with self.lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self.size:
                self.popitem(last=False)
        return value


@dataclass
class Picture:
    """An uploaded or sample picture, held in memory as RGB (longer side at most STORED_SIDE)."""

    id: str
    name: str  # for display only: never used as a path
    image: Any  # PIL.Image, RGB
    width: int  # as uploaded
    height: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "width": self.width, "height": self.height,
                "url": f"/api/images/{self.id}.png", "thumbnail": f"/api/images/{self.id}.png?size=160"}


class App:
    """Everything the endpoints share. ``models``: names, files or ``cs.Model`` objects (default Lite0)."""

    def __init__(self, models: Sequence[Any] | Any = None, *, max_upload_bytes: int, max_pixels: int,
                 max_images: int = 64, max_jobs: int = 100, max_queued: int = 16, max_forwards: float | None = None,
                 data: Any = None) -> None:
        self.max_upload_bytes, self.max_pixels = int(max_upload_bytes), int(max_pixels)
        self.max_forwards = None if max_forwards is None else float(max_forwards)  # None: convscope's own limit
        items = [DEFAULT_MODEL] if models is None else list(models) if isinstance(models, (list, tuple)) else [models]
        self.models: dict[str, cs.Model] = {}
        for item in items:
            model = _as_model(item)
            key = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.name or "model")[:60] or "model"
            base, n = key, 2
            while key in self.models:
                key, n = f"{base}-{n}", n + 1
            self.models[key] = model
        self._job_models: dict[str, cs.Model] = {}
        self._job_lock = threading.Lock()
        self.images: LRU = LRU(max_images)
        self.samples: dict[str, Picture] = {}
        self.png_cache, self.inputs, self.predictions = LRU(64), LRU(16), LRU(64)
        self.activations, self.layer_rows, self.datasets = LRU(8), LRU(8), LRU(4)
        self.jobs = JobManager(max_jobs=max_jobs, max_queued=max_queued)
        self.uploads: LRU = LRU(4)  # uploaded datasets (zip files of pictures and masks), in memory
        self.data = None if data is None else Path(data).expanduser().resolve()
        if self.data is not None and not self.data.is_dir():
            raise ConvscopeError(f"--data {data}: not a folder of pictures")

    def close(self) -> None:
        self.jobs.close()

    # -- lookups that answer 404 -----------------------------------------------------------------------
    def model(self, key: str) -> cs.Model:
        if key not in self.models:
            raise HTTPError(404, f"unknown model {key!r}; this server has {', '.join(self.models)}")
        return self.models[key]

    def job_model(self, key: str) -> cs.Model:
        """The worker's own copy of a model, so that a long job never blocks the page's quick requests
        (a model the Guard is using is locked); the shared model if it cannot be copied."""
        with self._job_lock:
            if key not in self._job_models:
                model = self.model(key)
                try:
                    module = copy.deepcopy(model.module)
                    self._job_models[key] = cs.Model(module, input_size=model.input_size, mean=model.mean, std=model.std,
                                                     labels=model.labels, name=model.name, resize_size=model.resize_size,
                                                     channels=model.channels)
                except Exception:  # TorchScript and other uncopyable modules: share (and wait for the lock)
                    self._job_models[key] = model
            return self._job_models[key]

    def picture(self, image_id: str | None) -> Picture:
        if not image_id:
            raise HTTPError(400, "pass ?image=ID: an id from POST /api/images or GET /api/samples")
        if image_id.startswith("sample-"):
            name = image_id.removeprefix("sample-")
            if name not in self.samples:
                if name not in cs.images.SAMPLE_IMAGES:
                    raise HTTPError(404, f"unknown sample {name!r}; choose one of {', '.join(cs.images.SAMPLE_IMAGES)}")
                self.samples[name] = as_picture(image_id, name, cs.sample_image(name))
            return self.samples[name]
        with self.images.lock:
            picture = self.images.get(image_id)
            if picture is None:
                raise HTTPError(404, f"unknown image {image_id[:40]!r} (pictures are kept in memory; upload it again)")
            self.images.move_to_end(image_id)
            return picture

    def x(self, key: str, image_id: str) -> torch.Tensor:
        """The picture preprocessed for the model, (1, C, H, W); cached, never modified by methods."""
        model, picture = self.model(key), self.picture(image_id)
        return self.inputs.fetch((key, picture.id), lambda: model.preprocess(picture.image))

    @property
    def dataset_names(self) -> list[str]:
        """The datasets a job may name: the built-in ones, ``data`` when the server was given a folder, and the
        uploaded ones (``upload-…``, kept in memory)."""
        with self.uploads.lock:
            uploaded = list(self.uploads)
        return [*DATASETS, *(["data"] if self.data is not None else []), *uploaded]

    def dataset_list(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [{"name": d.name, "description": d.description} for d in DATASETS.values()]
        if self.data is not None:
            rows.append({"name": "data", "description": f"the pictures in {self.data.name}/ (given with --data when the server started)"})
        with self.uploads.lock:
            rows += [upload.as_json() for upload in self.uploads.values()]
        return rows

    def dataset(self, key: str, name: str) -> tuple[Any, dict[str, Any]]:
        """A dataset for the model: a built-in one (``convscope.data.named_dataset``: (dataset, what it brings:
        labels, masks)), made once per model and name (tools never modify their inputs); or ``data``, the folder
        given on the command line (the page never sends paths)."""
        if name == "data" and self.data is not None:
            return self.data, {}
        model = self.model(key)
        with self.uploads.lock:
            upload = self.uploads.get(name)
        if upload is not None:
            return self.datasets.fetch((key, name), lambda: upload.for_model(model))
        return self.datasets.fetch((key, name), lambda: named_dataset(name, model))

    def layer(self, key: str, name: str) -> cs.LayerRef:
        try:
            return cs.resolve_layer(self.model(key), name)
        except LayerError as exc:
            raise HTTPError(404, str(exc)) from None

    def num_classes(self, key: str) -> int:
        model = self.model(key)
        if model.labels:
            return len(model.labels)
        return self.predictions.fetch((key, "#classes"), lambda: int(model(torch.zeros(1, model.channels, *model.input_size,
                                                                                       device=model.device)).shape[1]))


def _as_model(item: Any) -> cs.Model:
    """A ``cs.Model`` from a Model, a bare module (ImageNet's 224-pixel defaults), a Keras model, or a name / file for
    ``cs.load_model``."""
    if isinstance(item, cs.Model):
        return item
    if is_keras(item):
        return cs.load_model(item)  # adapted so its layers can be hooked
    if isinstance(item, torch.nn.Module):
        return cs.Model(item)
    return cs.load_model(str(item))


@dataclass
class UploadedDataset:
    """Pictures (and object masks) from an uploaded zip file, held in memory: ``pictures`` PIL RGB, ``labels``
    (the sub-folder of each picture, or None), ``masks`` (PIL grey, white = object, or None per picture)."""

    id: str
    name: str
    pictures: list[Any]
    labels: list[str | None]
    masks: list[Any]

    @property
    def has_masks(self) -> bool:
        return all(mask is not None for mask in self.masks)

    def as_json(self) -> dict[str, Any]:
        labels = sorted({label for label in self.labels if label is not None})
        what = f"{len(self.pictures)} pictures" + (f" of {len(labels)} labels ({', '.join(labels[:6])})" if labels else "")
        masks = "with object masks" if self.has_masks else "no masks" if not any(m is not None for m in self.masks) else \
            f"masks for {sum(m is not None for m in self.masks)} of them"
        return {"name": self.id, "description": f"uploaded {self.name}: {what}, {masks}", "pictures": len(self.pictures),
                "labels": labels, "masks": self.has_masks}

    def for_model(self, model: cs.Model) -> tuple[Any, dict[str, Any]]:
        """(the pictures, what they bring: labels when every picture has one, object masks cropped as the model crops
        its input — (N, H, W) bool — when every picture has one)."""
        brought: dict[str, Any] = {}
        if all(label is not None for label in self.labels):
            brought["labels"] = list(self.labels)
        if self.has_masks and model.input_size is not None:
            crops = [np.asarray(model.crop(mask.convert("RGB")).convert("L")) > 127 for mask in self.masks]
            brought["regions"] = torch.from_numpy(np.stack(crops))
        return list(self.pictures), brought


def as_picture(image_id: str, name: str, image: Any) -> Picture:
    width, height = image.size
    if max(width, height) > STORED_SIDE:
        image = image.copy()
        image.thumbnail((STORED_SIDE, STORED_SIDE))
    return Picture(image_id, name, image, width, height)


def png(array: np.ndarray) -> bytes:
    return render.png_bytes(np.ascontiguousarray(array))


def finite(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), 6)
