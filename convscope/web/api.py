"""The JSON API of ``convscope serve``: one ``@route`` per endpoint, each calling only the public convscope API.

State lives in :class:`App`: the models (by key), the pictures (in memory, LRU-bounded, never on disk),
small caches (preprocessed inputs, predictions, activations, built-in datasets) and the job queue. The
route table these decorators fill is what the server dispatches on and what ``/api/openapi.json``
describes. The tools are not listed here: ``/api/tools``, the job endpoint ``POST /api/tools/{tool}/jobs``
(one documented path per tool) and the page's forms are generated from ``convscope.registry``; a job is
``tool.plan(...)`` (validated and cost-checked before the 202) then ``plan.run(progress=...)`` on a worker,
and its result is drawn by ``convscope.render`` whatever its kind.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import email.parser
import email.policy
import inspect
import json
import math
import re
import secrets
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

import convscope as cs
from convscope import engine, registry, render
from convscope.data import DATASETS, named_dataset
from convscope.errors import ConvscopeError, CostError, ImageError, LayerError, OptionError
from convscope.options import OptionSpec

from .jobs import JobManager, JobOutput, QueueFull
from .server import ROUTES, HTTPError, Param, Request, Response, Route, openapi, route, static_file

__all__ = ["App", "body_fields", "job_body", "job_output", "offered", "options_schema", "plan_job", "tool_json", "tool_routes"]

DEFAULT_MODEL = "efficientnet_lite0"
STORED_SIDE = 1024  # pictures are kept at most this many pixels on their longer side (models crop 224-520)
IMAGE_MAGIC: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("PNG", lambda b: b.startswith(b"\x89PNG\r\n\x1a\n")),
    ("JPEG", lambda b: b.startswith(b"\xff\xd8\xff")),
    ("GIF", lambda b: b[:6] in (b"GIF87a", b"GIF89a")),
    ("BMP", lambda b: b.startswith(b"BM")),
    ("WEBP", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
    ("TIFF", lambda b: b[:4] in (b"II*\x00", b"MM\x00*")),
)


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
                 max_images: int = 64, max_jobs: int = 100, max_forwards: float | None = None) -> None:
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
        self.jobs = JobManager(max_jobs=max_jobs)

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
                self.samples[name] = _picture(image_id, name, cs.sample_image(name))
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

    def dataset(self, key: str, name: str) -> tuple[Any, dict[str, Any]]:
        """A built-in dataset for the model (``convscope.data.named_dataset``): (dataset, what it brings: labels,
        masks); made once per model and name (tools never modify their inputs)."""
        model = self.model(key)
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
    """A ``cs.Model`` from a Model, a bare module, or a name / file for ``cs.load_model``."""
    if isinstance(item, cs.Model):
        return item
    if isinstance(item, torch.nn.Module):
        return cs.Model(item)
    return cs.load_model(str(item))


def _picture(image_id: str, name: str, image: Any) -> Picture:
    width, height = image.size
    if max(width, height) > STORED_SIDE:
        image = image.copy()
        image.thumbnail((STORED_SIDE, STORED_SIDE))
    return Picture(image_id, name, image, width, height)


def _png(array: np.ndarray) -> bytes:
    return render.png_bytes(np.ascontiguousarray(array))


def _finite(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), 6)


# == the page and the schema ==============================================================================
@route("GET", "/", "The web page", produces="text/html", tag="page")
def index(app: App, req: Request) -> Response:
    data, kind = static_file("index.html")
    return Response(data, kind, headers={"Cache-Control": "no-store"})


@route("GET", "/static/{file}", "A file of the page (JavaScript, CSS)", produces="text/plain", errors=(404,), tag="page")
def static(app: App, req: Request) -> Response:
    data, kind = static_file(req.params["file"])
    return Response(data, kind, headers={"Cache-Control": "no-store"})


@route("GET", "/api/openapi.json", "This API's OpenAPI 3 schema (generated from the route table)")
def schema(app: App, req: Request) -> dict[str, Any]:
    return openapi(ROUTES, version=cs.__version__)


# == models and layers ====================================================================================
@route("GET", "/api/models", "The models this server explains")
def list_models(app: App, req: Request) -> dict[str, Any]:
    rows = []
    for key, model in app.models.items():
        size = list(model.input_size) if model.input_size else None
        try:
            cam_layer = cs.default_cam_layer(model, (model.channels, *model.input_size)).label if size else None
        except ConvscopeError:
            cam_layer = None
        rows.append({"id": key, "name": model.name, "input_size": size, "channels": model.channels,
                     "classes": app.num_classes(key) if size or model.labels else None,
                     "params": sum(p.numel() for p in model.module.parameters()), "default_cam_layer": cam_layer})
    return {"models": rows, "default": next(iter(app.models))}


def _layer_rows(app: App, key: str) -> list[dict[str, Any]]:
    """Every module in ``named_modules()`` order (a tree by dotted names) with its type, output shape
    (from one traced forward), parameters, and whether it has feature maps / filters to show."""
    from convscope.layers import is_conv, trace

    model = app.model(key)
    if model.input_size is None:
        raise HTTPError(400, f"model {key!r} has no input_size; wrap it as cs.Model(module, input_size=(H, W))")
    records = trace(model.module, (model.channels, *model.input_size))
    leaves = {info.name: info for info in cs.layers(model)}
    calls: dict[int, list[Any]] = {}
    for r in records:
        calls.setdefault(id(r.module), []).append(r)
    rows = []
    for name, module in model.module.named_modules():
        if not name:
            continue
        seen = calls.get(id(module), [])
        names = [name] if len(seen) <= 1 else [f"{name}@{r.call}" for r in seen]
        for i, label in enumerate(names):
            record = seen[i] if seen else None
            shape = list(record.output_shape) if record is not None and record.output_shape is not None else None
            leaf = label in leaves
            params = leaves[label].params if leaf else sum(p.numel() for p in module.parameters())
            rows.append({"name": label, "type": type(module).__name__, "output_shape": shape, "params": params,
                         "depth": name.count("."), "leaf": leaf, "ran": record is not None,
                         "maps": shape is not None and len(shape) == 3, "filters": is_conv(module)})
    return rows


@route("GET", "/api/models/{model}/layers", "The model's layers as a tree: name, type, output shape, parameters",
       errors=(404,), path_help={"model": "a model id from /api/models"})
def list_layers(app: App, req: Request) -> dict[str, Any]:
    key = req.params["model"]
    model = app.model(key)
    rows = app.layer_rows.fetch(key, lambda: _layer_rows(app, key))
    return {"model": key, "input": [model.channels, *(model.input_size or ())], "layers": rows,
            "total_params": sum(p.numel() for p in model.module.parameters())}


@route("GET", "/api/models/{model}/summary", "The Keras-style text summary (cs.summary)", errors=(404,), produces="text/plain")
def model_summary(app: App, req: Request) -> Response:
    return Response(cs.summary(app.model(req.params["model"])).encode("utf-8"), "text/plain; charset=utf-8")


# == classes and predictions ==============================================================================
@route("GET", "/api/models/{model}/classes", "Search the class labels (substring or index)", errors=(404,),
       query=[Param("q", str, help="text to find in the labels, or a class index"),
              Param("limit", int, default=50, minimum=1, maximum=1000, help="at most this many")])
def list_classes(app: App, req: Request) -> dict[str, Any]:
    key = req.params["model"]
    model, total = app.model(key), app.num_classes(key)
    q = (req.query["q"] or "").strip().lower()
    found = []
    for index in range(total):
        label = model.label(index)
        if not q or q in label.lower() or q == str(index):
            found.append({"index": index, "label": label})
    return {"total": total, "matches": len(found), "classes": found[:req.query["limit"]]}


@route("GET", "/api/models/{model}/classes/{index}", "One class: its label", errors=(404,))
def get_class(app: App, req: Request) -> dict[str, Any]:
    key, text = req.params["model"], req.params["index"]
    total = app.num_classes(key)
    if not text.isdigit() or int(text) >= total:
        raise HTTPError(404, f"unknown class {text[:20]!r}: model {key!r} has classes 0..{total - 1}")
    return {"index": int(text), "label": app.model(key).label(int(text))}


@route("GET", "/api/models/{model}/predict", "The top-k classes for a picture, with probabilities", errors=(404,),
       query=[Param("image", str, required=True, help="an image id"),
              Param("k", int, default=5, minimum=1, maximum=100, help="how many classes")])
def predict(app: App, req: Request) -> dict[str, Any]:
    key, image_id, k = req.params["model"], req.query["image"], req.query["k"]
    model = app.model(key)
    x = app.x(key, image_id)
    top = app.predictions.fetch((key, image_id, k), lambda: model.predict(x, k=k)[0])
    return {"model": key, "image": image_id, "top": [p._asdict() for p in top]}


# == pictures =============================================================================================
@route("GET", "/api/samples", "The built-in sample photos (their image ids work everywhere an id does)")
def list_samples(app: App, req: Request) -> dict[str, Any]:
    return {"samples": [{"name": n, "id": f"sample-{n}", "url": f"/api/images/sample-{n}.png",
                         "thumbnail": f"/api/images/sample-{n}.png?size=160"} for n in cs.images.SAMPLE_IMAGES]}


def _upload_bytes(req: Request) -> tuple[bytes, str]:
    """The picture's bytes and a display name from a raw body or a multipart/form-data upload."""
    kind = (req.headers.get("Content-Type") or "application/octet-stream").lower()
    if kind.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + req.headers["Content-Type"].encode("latin-1") + b"\r\n\r\n" + req.body)
        parts = [] if not message.is_multipart() else [
            p for p in message.iter_parts() if p.get_filename() is not None or p.get_param("name", header="content-disposition") == "file"]
        if not parts:
            raise HTTPError(400, "the multipart upload has no file part (send the picture as the field 'file')")
        data = parts[0].get_payload(decode=True) or b""
        return data, parts[0].get_filename() or "upload"
    if not (kind.startswith("image/") or kind.startswith("application/octet-stream")):
        raise HTTPError(415, f"Content-Type {kind[:60]!r} is not a picture; send image/png, image/jpeg, ... or multipart/form-data")
    return req.body, req.headers.get("X-Filename") or "upload"


@route("POST", "/api/images", "Upload a picture (raw image bytes, or multipart/form-data with a 'file' field)",
       body="image", status=201, errors=(413, 415))
def upload_image(app: App, req: Request) -> Response:
    data, filename = _upload_bytes(req)
    if not data:
        raise HTTPError(400, "the upload is empty")
    if len(data) > app.max_upload_bytes:
        raise HTTPError(413, f"the picture is {len(data):,} bytes, over the limit of {app.max_upload_bytes:,} bytes")
    if not any(test(data[:16]) for _, test in IMAGE_MAGIC):
        formats = ", ".join(name for name, _ in IMAGE_MAGIC)
        raise HTTPError(415, f"not a picture in a supported format ({formats})")
    try:
        image = cs.load_image(data, max_pixels=app.max_pixels)
    except ImageError as exc:
        message = str(exc).replace("<bytes>", "the upload")
        raise HTTPError(413 if "exceeds the limit" in message or "decompression bomb" in message else 400, message) from None
    name = re.sub(r"[^\w .()-]+", "_", filename.replace("\\", "/").rsplit("/", 1)[-1])[:80] or "upload"
    picture = _picture(secrets.token_hex(8), name, image)
    app.images.fetch(picture.id, lambda: picture)
    return Response.json(picture.as_json(), 201)


@route("GET", "/api/images/{image}", "A picture's facts (id, size, name)", errors=(404,))
def image_info(app: App, req: Request) -> dict[str, Any]:
    return app.picture(req.params["image"]).as_json()


@route("GET", "/api/images/{image}.png", "A picture as PNG (size: longest side for a thumbnail)", produces="image/png",
       errors=(404,), query=[Param("size", int, minimum=16, maximum=STORED_SIDE, help="longest side in pixels")])
def image_png(app: App, req: Request) -> Response:
    picture, size = app.picture(req.params["image"]), req.query["size"]

    def make() -> bytes:
        image = picture.image
        if size is not None and max(image.size) > size:
            image = image.copy()
            image.thumbnail((size, size))
        return _png(np.asarray(image))

    return Response.png(app.png_cache.fetch(("image", picture.id, size), make), cache=True)


@route("GET", "/api/models/{model}/input.png", "The picture as the model sees it (resized and center-cropped)",
       produces="image/png", errors=(404,), query=[Param("image", str, required=True, help="an image id")])
def model_input_png(app: App, req: Request) -> Response:
    key, image_id = req.params["model"], req.query["image"]
    model, picture = app.model(key), app.picture(image_id)
    return Response.png(app.png_cache.fetch(("crop", key, image_id), lambda: _png(np.asarray(model.crop(picture.image).convert("RGB")))),
                        cache=True)


# == feature maps and filters =============================================================================
def _activations(app: App, key: str, image_id: str, layer: str) -> torch.Tensor:
    """The layer's output for the picture, (K, h, w) on the CPU (convscope.features.feature_maps)."""
    ref = app.layer(key, layer)
    model, x = app.model(key), app.x(key, image_id)

    def make() -> torch.Tensor:
        from convscope.features import feature_maps

        data = feature_maps(model, x, layers=ref.label).data  # one forward, stopped after the layer
        if data.dim() != 4:
            raise HTTPError(400, f"layer {layer!r} outputs shape {tuple(data.shape[1:])}, not a feature map (C, H, W); "
                                 "pick a convolutional layer")
        return data[0].detach().float().cpu()

    return app.activations.fetch((key, image_id, ref.label), make)


def _channel_order(acts: torch.Tensor, order: str) -> list[int]:
    if order == "index":
        return list(range(acts.shape[0]))
    return acts.mean(dim=(1, 2)).argsort(descending=True, stable=True).tolist()


MAP_QUERY = [Param("image", str, required=True, help="an image id"),
             Param("page", int, default=0, minimum=0, help="page number, from 0"),
             Param("per_page", int, default=16, minimum=1, maximum=256, help="channels per page"),
             Param("order", str, default="top", help="'top' (largest mean activation first) or 'index'")]


@route("GET", "/api/models/{model}/layers/{layer}/feature_maps", "A layer's feature maps for a picture, top channels first, paged",
       errors=(404,), query=MAP_QUERY, path_help={"layer": "a dotted layer name (URL-encoded), e.g. _blocks.3"})
def feature_maps(app: App, req: Request) -> dict[str, Any]:
    key, layer, q = req.params["model"], req.params["layer"], req.query
    if q["order"] not in ("top", "index"):
        raise HTTPError(400, f"order must be 'top' or 'index', got {q['order'][:20]!r}")
    acts = _activations(app, key, q["image"], layer)
    order = _channel_order(acts, q["order"])
    channels, per = acts.shape[0], q["per_page"]
    pages = max(1, -(-channels // per))
    if q["page"] >= pages:
        raise HTTPError(404, f"page {q['page']} does not exist: layer {layer!r} has {channels} channels, {pages} pages of {per}")
    means, maxes = acts.mean(dim=(1, 2)), acts.amax(dim=(1, 2))
    base = f"/api/models/{key}/layers/{_quote(layer)}/feature_maps"
    items = [{"channel": c, "rank": q["page"] * per + i, "mean": _finite(float(means[c])), "max": _finite(float(maxes[c])),
              "url": f"{base}/{c}.png?image={q['image']}"} for i, c in enumerate(order[q["page"] * per:(q["page"] + 1) * per])]
    return {"model": key, "layer": layer, "image": q["image"], "shape": list(acts.shape), "channels": channels,
            "page": q["page"], "per_page": per, "pages": pages, "order": q["order"], "items": items,
            "grid": f"{base}.png?image={q['image']}&page={q['page']}&per_page={per}&order={q['order']}"}


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _map_picture(channel: torch.Tensor) -> np.ndarray:
    """One activation map (h, w) -> viridis RGB, min-max scaled."""
    return render.colorize(render.normalize(channel, "minmax"), "viridis")


@route("GET", "/api/models/{model}/layers/{layer}/feature_maps/{channel}.png", "One channel's feature map as PNG (viridis, min-max)",
       produces="image/png", errors=(404,), query=[Param("image", str, required=True, help="an image id")])
def feature_map_png(app: App, req: Request) -> Response:
    key, layer, text = req.params["model"], req.params["layer"], req.params["channel"]
    acts = _activations(app, key, req.query["image"], layer)
    if not text.isdigit() or int(text) >= acts.shape[0]:
        raise HTTPError(404, f"unknown channel {text[:20]!r}: layer {layer!r} has channels 0..{acts.shape[0] - 1}")
    return Response.png(_png(_map_picture(acts[int(text)])), cache=True, filename=f"{layer}_{text}.png")


def _tile_grid(tiles: list[np.ndarray], columns: int, scale: int, gap: int = 2) -> np.ndarray:
    """uint8 (h, w, 3) tiles -> one picture, each tile enlarged ``scale`` times (nearest), white gaps."""
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    th, tw = h * scale, w * scale
    out = np.full((rows * (th + gap) + gap, columns * (tw + gap) + gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        big = tile.repeat(scale, axis=0).repeat(scale, axis=1)
        out[gap + r * (th + gap):gap + r * (th + gap) + th, gap + c * (tw + gap):gap + c * (tw + gap) + tw] = big
    return out


@route("GET", "/api/models/{model}/layers/{layer}/feature_maps.png", "A page of feature maps as one grid PNG",
       produces="image/png", errors=(404,), query=MAP_QUERY)
def feature_maps_png(app: App, req: Request) -> Response:
    key, layer, q = req.params["model"], req.params["layer"], req.query
    acts = _activations(app, key, q["image"], layer)
    chosen = _channel_order(acts, q["order"] if q["order"] in ("top", "index") else "top")[q["page"] * q["per_page"]:][:q["per_page"]]
    if not chosen:
        raise HTTPError(404, f"page {q['page']} does not exist for layer {layer!r}")
    tiles = [_map_picture(acts[c]) for c in chosen]
    scale = max(1, 96 // max(tiles[0].shape[:2]))
    return Response.png(_png(_tile_grid(tiles, min(8, len(tiles)), scale)), filename=f"{layer}_maps_{q['page']}.png")


def _weights(app: App, key: str, layer: str) -> tuple[torch.Tensor, bool]:
    """The layer's kernels (out, in, kh, kw) on the CPU, and whether they are RGB (convscope.features.filters)."""
    ref = app.layer(key, layer)
    from convscope.layers import is_conv

    if not is_conv(ref.module):
        raise HTTPError(400, f"layer {layer!r} ({type(ref.module).__name__}) has no convolution filters; pick a Conv2d layer")
    from convscope.features import filters

    result = filters(app.model(key), layer=ref.name)
    return result.data.detach().float().cpu(), bool(result.meta.get("colour"))


def _filter_tiles(weights: torch.Tensor, chosen: list[int], colour: bool) -> tuple[list[np.ndarray], str]:
    """RGB kernels for the first layer of a colour model, else each filter's strongest
    input-channel kernel in grayscale (mid-gray = 0); 1x1 convolutions as one (filters x inputs) matrix."""
    kh, kw = weights.shape[-2:]
    if kh == kw == 1:  # pointwise: the (filters x input channels) weight matrix, blue < 0 < red
        matrix = render.colorize(render.normalize(weights[chosen, :, 0, 0], "signed"), "coolwarm")  # (n, in, 3)
        return [matrix], "matrix"
    tiles = []
    for o in chosen:
        kernel = weights[o]
        if colour:
            pic = 0.5 + 0.5 * kernel / (kernel.abs().max() or 1.0)  # (3, kh, kw)
            tiles.append((pic.clamp(0, 1).permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy())
        else:
            strongest = int(kernel.flatten(1).norm(dim=1).argmax())
            k = kernel[strongest]
            pic = (0.5 + 0.5 * k / (k.abs().max() or 1.0)).clamp(0, 1)
            tiles.append(np.repeat((pic * 255 + 0.5).to(torch.uint8).numpy()[..., None], 3, axis=2))
    return tiles, "rgb" if colour else "gray"


FILTER_QUERY = [Param("page", int, default=0, minimum=0, help="page number, from 0"),
                Param("per_page", int, default=64, minimum=1, maximum=512, help="filters per page")]


@route("GET", "/api/models/{model}/layers/{layer}/filters", "A convolution layer's filters: shape, pages and grid URLs",
       errors=(404,), query=FILTER_QUERY)
def filters(app: App, req: Request) -> dict[str, Any]:
    key, layer, q = req.params["model"], req.params["layer"], req.query
    weights, colour = _weights(app, key, layer)
    out_c, in_c, kh, kw = weights.shape
    pages = max(1, -(-out_c // q["per_page"]))
    if q["page"] >= pages:
        raise HTTPError(404, f"page {q['page']} does not exist: layer {layer!r} has {out_c} filters, {pages} pages")
    kind = "matrix" if kh == kw == 1 else "rgb" if colour else "gray"
    explain = {"rgb": "each filter's 3 colour channels as a small picture (gray = 0)",
               "gray": "each filter's strongest input-channel kernel (gray = 0, light = positive, dark = negative)",
               "matrix": "a 1×1 convolution: one row per filter, one column per input channel (red > 0, blue < 0)"}[kind]
    base = f"/api/models/{key}/layers/{_quote(layer)}/filters.png"
    return {"model": key, "layer": layer, "shape": [out_c, in_c, kh, kw], "kind": kind, "help": explain,
            "page": q["page"], "per_page": q["per_page"], "pages": pages,
            "grid": f"{base}?page={q['page']}&per_page={q['per_page']}"}


@route("GET", "/api/models/{model}/layers/{layer}/filters.png", "A page of a layer's filters as one grid PNG",
       produces="image/png", errors=(404,), query=FILTER_QUERY)
def filters_png(app: App, req: Request) -> Response:
    key, layer, q = req.params["model"], req.params["layer"], req.query
    weights, colour = _weights(app, key, layer)
    chosen = list(range(weights.shape[0]))[q["page"] * q["per_page"]:][:q["per_page"]]
    if not chosen:
        raise HTTPError(404, f"page {q['page']} does not exist for layer {layer!r}")
    tiles, kind = _filter_tiles(weights, chosen, colour)
    if kind == "matrix":
        matrix = tiles[0]
        scale = max(1, min(12, 640 // matrix.shape[1]))
        return Response.png(_png(matrix.repeat(scale, axis=0).repeat(scale, axis=1)), filename=f"{layer}_filters_{q['page']}.png")
    scale = max(1, 40 // max(tiles[0].shape[:2]))
    return Response.png(_png(_tile_grid(tiles, min(16, len(tiles)), scale)), filename=f"{layer}_filters_{q['page']}.png")


# == tools and jobs =======================================================================================
# Everything below is generated from the registry: a tool registered anywhere (even after the server
# started) is listed, documented, validated, cost-checked and run with no edit here.
PICTURE_TAKES = ("images", "image", "models")  # tools whose job body names a picture
EXPLANATION_KINDS = ("map", "pixels")  # results whose colour map alone is offered too (map.png)
TEXT_LIMIT = 20_000  # characters of a result's text kept in the job's facts
PATH_FORMATS = ("path", "file-path", "directory-path")  # pydantic's Path types: files of the server, never from the web
_TOOL_JSON: weakref.WeakKeyDictionary[registry.Tool, dict[str, Any]] = weakref.WeakKeyDictionary()


def _tool(name: str) -> registry.Tool:
    try:
        return registry.get(name)
    except ConvscopeError as exc:
        raise HTTPError(404, str(exc)) from None


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out


def _is_path(schema: dict[str, Any]) -> bool:
    return any(member.get("format") in PATH_FORMATS for member in schema.get("anyOf") or [schema])


def offered(tool: registry.Tool) -> list[OptionSpec]:
    """The options the web offers: the tool's front-end options (``tool.option_specs()``) except paths on the
    server (typed ``Path``): the page never sends paths, datasets come by name."""
    return [spec for spec in tool.option_specs() if not _is_path(spec.schema)]


def options_schema(tool: registry.Tool) -> dict[str, Any]:
    """``tool.options_schema()`` restricted to the options the web offers."""
    schema = tool.options_schema()
    names = {spec.name for spec in offered(tool)}
    schema["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k in names}
    if "required" in schema:
        schema["required"] = [k for k in schema["required"] if k in names]
    return schema


def body_fields(tool: registry.Tool) -> dict[str, dict[str, Any]]:
    """The fields of a job's request body besides ``options``, by what ``tool`` takes and whether it uses a
    target or a layer, each with its JSON schema. The page shows the same inputs."""
    fields: dict[str, dict[str, Any]] = {}
    if tool.takes == "models":
        fields["models"] = {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True,
                            "description": "model ids from /api/models (default: every model of this server)"}
    else:
        fields["model"] = {"type": "string", "description": "a model id from /api/models (default: the first)"}
    if tool.takes in PICTURE_TAKES:
        fields["image"] = {"type": "string", "description": "a picture id from POST /api/images or GET /api/samples"}
    if tool.takes == "dataset":
        fields["dataset"] = {"type": "string", "enum": list(DATASETS), "description": "a built-in dataset: " + "; ".join(
            f"{d.name}: {d.description}" for d in DATASETS.values())}
    if tool.uses_target:
        fields["target"] = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}], "default": None,
                            "description": "the class index to explain (default: the top-1 class)"}
    if tool.uses_layer:
        fields["layer"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None,
                           "description": "a layer name from /api/models/{model}/layers (default: the tool's own choice)"}
    return fields


REQUIRED_FIELDS = ("image", "dataset")


def _refs(value: Any, rename: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {k: rename(v) if k == "$ref" and isinstance(v, str) else _refs(v, rename) for k, v in value.items()}
    if isinstance(value, list):
        return [_refs(v, rename) for v in value]
    return value


def job_body(tool: registry.Tool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON schema of ``POST /api/tools/<name>/jobs``'s body and the component schemas it refers to: the
    tool's options schema (``tool.options_schema()``) as ``#/components/schemas/options.<name>``."""
    options = options_schema(tool)
    prefix = f"options.{tool.name}"
    definitions = options.pop("$defs", {})

    def rename(ref: str) -> str:
        return f"#/components/schemas/{prefix}.{ref.rsplit('/', 1)[-1]}" if ref.startswith("#/$defs/") else ref

    components = {prefix: _refs(options, rename), **{f"{prefix}.{k}": _refs(v, rename) for k, v in definitions.items()}}
    fields = body_fields(tool)
    required = [k for k in fields if k in REQUIRED_FIELDS] + (["options"] if options.get("required") else [])
    schema = {"type": "object", "additionalProperties": False, "required": required,
              "properties": {**fields, "options": {"$ref": f"#/components/schemas/{prefix}",
                                                   "description": f"{tool.name}'s options (see /api/tools/{tool.name})"}}}
    return schema, components


def tool_json(tool: registry.Tool) -> dict[str, Any]:
    """A tool as the page and API clients see it: what it is, what it takes, its options and its job URL."""
    cached = _TOOL_JSON.get(tool)
    if cached is None:
        cached = _TOOL_JSON[tool] = {
            "name": tool.name, "family": tool.family, "group": tool.group, "takes": tool.takes, "returns": tool.returns,
            "summary": tool.description, "paper": tool.paper, "uses_layer": tool.uses_layer, "uses_target": tool.uses_target,
            "loops": tool.loops, "aliases": list(tool.aliases), "quick": _json_safe(tool.quick), "inputs": list(body_fields(tool)),
            "options": [spec.as_json() for spec in offered(tool)], "options_schema": options_schema(tool),
            "jobs": f"/api/tools/{tool.name}/jobs"}
    return cached


@route("GET", "/api/tools", "Every registered tool: family, what it takes and returns, its options (kind, default, range, "
       "choices, help), plus the families and the built-in datasets")
def list_tools(app: App, req: Request) -> dict[str, Any]:
    return {"tools": [tool_json(t) for t in registry.tools()], "families": registry.FAMILIES, "groups": list(registry.GROUPS),
            "takes": registry.TAKES, "datasets": [{"name": d.name, "description": d.description} for d in DATASETS.values()]}


@route("GET", "/api/tools/{tool}", "One tool, as listed by /api/tools", errors=(404,), path_help={"tool": "a tool name from /api/tools"})
def get_tool(app: App, req: Request) -> dict[str, Any]:
    return tool_json(_tool(req.params["tool"]))


def _invalid(field: str, message: str, given: Any = None, where: str = "body", **extra: Any) -> HTTPError:
    """422 naming the refused field (``where``: "body" or "options") and what it allows."""
    try:
        json.dumps(given, allow_nan=False)
    except (TypeError, ValueError):
        given = str(given)[:80]
    return HTTPError(422, message, details={"field": field, "in": where, "given": given, **extra})


def _option_error(tool: registry.Tool, exc: OptionError, options: dict[str, Any]) -> HTTPError:
    """The options model's one-line error as a 422 naming the option, its allowed range, choices and default."""
    message = str(exc)
    name = exc.field or _failing_option(tool, options, message)
    spec = next((s for s in offered(tool) if s.name == name), None)
    extra: dict[str, Any] = {"allowed": None, "minimum": None, "maximum": None, "choices": []}
    if spec is not None:
        described = spec.as_json()
        extra = {"allowed": spec.range or None, "minimum": described["minimum"], "maximum": described["maximum"],
                 "choices": described["choices"], "default": described["default"]}
    return _invalid(name, message, options.get(name) if name else None, "options", **extra)


def _failing_option(tool: registry.Tool, options: dict[str, Any], message: str) -> str | None:
    """Which option the message is about (the options model's errors, matched against the message)."""
    names: list[str] = []
    try:
        tool.options_model.model_validate(options)
    except ValidationError as exc:
        names = [str(e["loc"][0]) for e in exc.errors(include_url=False) if e.get("loc")]
    for name in [*names, *options]:
        if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message.removeprefix(f"{tool.name}:")):
            return name
    return names[0] if names else None


def _limits(app: App) -> Any:
    return engine.limits(max_forwards=app.max_forwards) if app.max_forwards is not None else contextlib.nullcontext()


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _plan(app: App, tool: registry.Tool, inputs: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> registry.Plan:
    """``tool.plan(...)``: the options validated by the tool's model and the cost estimated against the limits,
    before any work. An invalid option -> 422 naming it and its range; over the limits -> 422 with the estimate."""
    try:
        with _limits(app):
            return tool.plan(*inputs, **kwargs)
    except OptionError as exc:
        raise _option_error(tool, exc, options) from None
    except CostError as exc:
        cost, bound = exc.cost, exc.limits
        estimate = None if cost is None else {"forwards": _finite_or_none(float(cost.forwards)), "memory": int(cost.memory),
                                               "detail": cost.detail, "per_item": cost.per_item}
        raise HTTPError(422, str(exc), details={"field": None, "estimate": estimate, "limit": {
            "max_forwards": _finite_or_none(bound.max_forwards), "max_memory": bound.max_memory}}) from None
    except ConvscopeError as exc:  # the inputs do not suit the tool (a layer, a picture size): refused before 202
        raise HTTPError(422, str(exc), details={"field": None}) from None


@dataclass
class Call:
    """A job ready to queue: its lane (model key), what was asked (JSON) and the checked plan."""

    tool: registry.Tool
    lane: str
    keys: list[str]  # the models it runs on
    request: dict[str, Any]
    plan: registry.Plan


def plan_job(app: App, tool: registry.Tool, body: dict[str, Any]) -> Call:
    """Check a job's request body (fields by ``tool.takes``, ids, target, layer, option names), build the tool's
    inputs from this server's models, pictures and datasets, and plan the call (validation and cost)."""
    fields = body_fields(tool)
    for name in body:
        if name not in fields and name != "options":
            raise _invalid(name, f"{tool.name} takes no {name!r}; its request fields: {', '.join([*fields, 'options'])}",
                           body[name])
    if tool.takes == "models":
        chosen = body.get("models")
        chosen = list(app.models) if chosen is None else chosen
        if not isinstance(chosen, list) or not chosen or not all(isinstance(k, str) for k in chosen):
            raise _invalid("models", f"'models' must be a non-empty list of model ids ({', '.join(app.models)})", chosen)
        keys = list(dict.fromkeys(chosen))
        models = [app.model(k) for k in keys]
    else:
        key = body.get("model") or next(iter(app.models))
        if not isinstance(key, str):
            raise _invalid("model", f"'model' must be a model id ({', '.join(app.models)})", key)
        keys, models = [key], [app.model(key)]
    key, model = keys[0], models[0]
    request: dict[str, Any] = {"models": keys} if tool.takes == "models" else {"model": key}
    picture = None
    if tool.takes in PICTURE_TAKES:
        image_id = body.get("image")
        if not isinstance(image_id, str):
            raise _invalid("image", f"{tool.name} needs 'image': a picture id from POST /api/images or GET /api/samples", image_id)
        picture = app.picture(image_id)
        request["image"] = image_id
    extra: dict[str, Any] = {}
    if tool.takes == "dataset":
        name = body.get("dataset")
        if not isinstance(name, str) or name not in DATASETS:
            raise _invalid("dataset", f"{tool.name} needs 'dataset': one of {', '.join(DATASETS)}", name, choices=list(DATASETS))
        dataset, brought = app.dataset(key, name)
        takes = inspect.signature(tool.impl).parameters
        extra = {k: v for k, v in brought.items() if k in takes}  # labels, object masks: those the tool takes
        request["dataset"] = name
    target = body.get("target")
    if target is not None:
        total = None if tool.takes == "models" else app.num_classes(key)
        if isinstance(target, bool) or not isinstance(target, int) or target < 0 or (total is not None and target >= total):
            span = f"0..{total - 1}" if total is not None else "≥ 0"
            raise _invalid("target", f"target must be a class index {span} or null (the top-1 class), got {target!r}", target,
                           minimum=0, maximum=None if total is None else total - 1)
        request["target"] = target
    layer = body.get("layer") or None
    if layer is not None:
        if not isinstance(layer, str):
            raise _invalid("layer", "'layer' must be a layer name (see /api/models/{model}/layers)", layer)
        for each in models:
            try:
                cs.resolve_layer(each, layer)
            except LayerError as exc:
                raise _invalid("layer", str(exc), layer) from None
        request["layer"] = layer
    options = body.get("options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise _invalid("options", "options must be a JSON object of option name -> value (see /api/tools)", options)
    names = [spec.name for spec in offered(tool)]
    for name in options:  # python-only options (tensors, callables) and server paths are not for the web
        if name not in names:
            close = difflib.get_close_matches(name, names, n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise _invalid(name, f"{tool.name} has no option {name!r} in the web app{hint} (options: {', '.join(names) or 'none'})",
                           options[name], "options", choices=names)
    request["options"] = options
    inputs: tuple[Any, ...] = {
        "images": lambda: (model, app.x(key, request.get("image", ""))),
        "image": lambda: (model, picture.image),
        "model": lambda: (model,),
        "models": lambda: (models, [picture.image]),
        "dataset": lambda: (model, dataset),
    }[tool.takes]()
    kwargs = {**extra, **options, **({"target": target} if target is not None else {}), **({"layer": layer} if layer else {})}
    return Call(tool, key, keys, request, _plan(app, tool, inputs, kwargs, options))


def job_output(result: Any) -> JobOutput:
    """What a finished job leaves, all drawn by ``convscope.render``: result.png (``render.to_png``), an
    explanation's colour map alone (map.png), and the facts: kind, caption, text (+ a Result's provenance)."""
    kind = getattr(result, "kind", None)
    files = {"result.png": render.to_png(result)}
    info: dict[str, Any] = {"kind": kind, "caption": render.caption(result), "text": render.text(result)[:TEXT_LIMIT]}
    if kind in EXPLANATION_KINDS:  # the map alone, with the same colour bar as the overlay
        scale = render.scale.result_scale(result, 0)
        files["map.png"] = _png(render.scale.with_colorbar(render.result_map(result, 0, scale=scale), scale))
        info["scale"] = scale.describe()
    if isinstance(result, cs.Result):
        target = result.target
        first = int(target.reshape(-1)[0]) if isinstance(target, torch.Tensor) and target.numel() else None
        info.update(method=result.method, layer=result.layer, target=first, shape=list(result.data.shape),
                    label=result.labels[0] if result.labels else None)
    return JobOutput(info, files)


def queue_job(app: App, call: Call) -> Response:
    """Queue a planned call on its model's worker: 202 and the job. It runs on the worker's own copies of the
    models; a tool that loops gets the job's progress callback (which raises ``Cancelled`` after a cancel)."""
    tool, plan = call.tool, call.plan
    first = tool.inputs[0] if tool.inputs else None

    def run(progress: Callable[[int, int, str], None]) -> JobOutput:
        if first is not None:
            copies = [app.job_model(k) for k in call.keys]
            plan_here = dataclasses.replace(plan, inputs={**plan.inputs, first: copies if tool.takes == "models" else copies[0]})
        else:
            plan_here = plan
        if tool.loops:
            return job_output(plan_here.run(progress=progress))
        progress(0, 1, tool.name)
        output = job_output(plan_here.run())
        progress(1, 1, tool.name)
        return output

    try:
        job = app.jobs.submit(call.lane, tool.name, call.request, run)
    except QueueFull as exc:
        raise HTTPError(429, str(exc)) from None
    return Response.json(_job_json(job), 202)


def _tool_handler(tool: registry.Tool) -> Callable[[App, Request], Response]:
    def handler(app: App, req: Request) -> Response:
        return queue_job(app, plan_job(app, tool, req.json()))

    handler.__name__ = f"run_{tool.name}"
    return handler


def tool_routes() -> list[Route]:
    """One route per registered tool, ``POST /api/tools/<name>/jobs``, its body schema carrying the tool's options
    schema: what ``/api/openapi.json`` documents (and what a framework with one route per path would mount)."""
    routes = []
    for tool in registry.tools():
        body, components = job_body(tool)
        routes.append(Route("POST", f"/api/tools/{tool.name}/jobs", _tool_handler(tool),
                            f"Run {tool.name} ({tool.family}): {tool.summary}", body="json", status=202,
                            errors=(404, 422, 429), tag=tool.family, body_schema=body, operation_id=f"run_{tool.name}",
                            components=components))
    return routes


@route("POST", "/api/tools/{tool}/jobs", "Run a tool: the request is validated and cost-checked, then queued (one job per model at "
       "a time) -> 202 and the job", body="json", status=202, errors=(404, 422, 429), path_help={"tool": "a tool name from /api/tools"},
       expand=lambda: tool_routes())
def run_tool(app: App, req: Request) -> Response:
    tool = _tool(req.params["tool"])
    return queue_job(app, plan_job(app, tool, req.json()))


def _job_json(job: Any) -> dict[str, Any]:
    snap = job.snapshot()
    base = f"/api/jobs/{job.id}"
    snap["urls"] = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel", "result": f"{base}/result.png"}
    if job.output is not None and "map.png" in job.output.files:
        snap["urls"]["map"] = f"{base}/map.png"
    return snap


def _job(app: App, job_id: str) -> Any:
    job = app.jobs.get(job_id)
    if job is None:
        raise HTTPError(404, f"unknown job {job_id[:40]!r} (finished jobs are forgotten after a while)")
    return job


@route("GET", "/api/jobs", "The most recent jobs")
def list_jobs(app: App, req: Request) -> dict[str, Any]:
    return {"jobs": [_job_json(job) for job in app.jobs.recent()]}


@route("GET", "/api/jobs/{job}", "A job's status, progress and result facts", errors=(404,))
def get_job(app: App, req: Request) -> dict[str, Any]:
    return _job_json(_job(app, req.params["job"]))


@route("GET", "/api/jobs/{job}/events", "Server-Sent Events: 'progress' while it runs, then 'done', 'error' or 'cancelled'",
       produces="text/event-stream", errors=(404,))
def job_events(app: App, req: Request) -> Response:
    job = _job(app, req.params["job"])
    return Response(content_type="text/event-stream; charset=utf-8", chunks=app.jobs.events(job, _job_json),
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@route("POST", "/api/jobs/{job}/cancel", "Cancel a job (a queued job at once, a running one at its next progress step)",
       errors=(404,))
def cancel_job(app: App, req: Request) -> dict[str, Any]:
    job = _job(app, req.params["job"])
    if not job.terminal:
        app.jobs.cancel(job)
    return _job_json(job)


def _job_file(app: App, req: Request, name: str) -> Response:
    job = _job(app, req.params["job"])
    if job.status != "done":
        raise HTTPError(409 if not job.terminal else 404, f"job {job.id} is {job.status}; its result is not available")
    if job.output is None or name not in job.output.files:
        raise HTTPError(404, f"job {job.id} has no {name}")
    return Response.png(job.output.files[name], cache=True, filename=f"{job.tool}_{job.id}.png")


@route("GET", "/api/jobs/{job}/result.png", "The job's picture: the explanation over the input (or the dreamed picture)",
       produces="image/png", errors=(404, 409))
def job_result(app: App, req: Request) -> Response:
    return _job_file(app, req, "result.png")


@route("GET", "/api/jobs/{job}/map.png", "The explanation's colour map alone", produces="image/png", errors=(404, 409))
def job_map(app: App, req: Request) -> Response:
    return _job_file(app, req, "map.png")
