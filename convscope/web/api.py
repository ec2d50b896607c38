"""The JSON API of ``convscope serve``: one ``@route`` per endpoint, each calling only the public convscope API.

State lives in :class:`App`: the models (by key), the pictures (in memory, LRU-bounded, never on disk),
small caches (preprocessed inputs, predictions, activations) and the job queue. The route table these
decorators fill is what the server dispatches on and what ``/api/openapi.json`` describes.
"""

from __future__ import annotations

import copy
import dataclasses
import email.parser
import email.policy
import math
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import convscope as cs
from convscope import options as option_types
from convscope import registry, render
from convscope.errors import ConvscopeError, ImageError, LayerError

from .jobs import JobManager, JobOutput, QueueFull
from .server import ROUTES, HTTPError, Param, Request, Response, openapi, route, static_file

__all__ = ["App"]

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
SKIP_OPTIONS = ("progress",)  # set by the server, not by the form


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


@dataclass(frozen=True)
class Tool:
    """A long job outside the registry's ``fn(model, x, target=, layer=)`` shape (feature visualization):
    how to call it from the page's choices, and its options (the function's own, with web defaults)."""

    name: str
    fn: Callable[..., Any]
    summary: str
    paper: str
    call: Callable[..., Any]  # (fn, model, picture, x, layer, target, options) -> Result
    needs_layer: bool = False
    uses_layer: bool = True
    uses_target: bool = False
    skip: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)  # lighter defaults for an interactive page
    extra: tuple[option_types.OptionSpec, ...] = ()  # options the page adds (consumed by ``call``)

    def option_specs(self) -> list[option_types.OptionSpec]:
        specs = [dataclasses.replace(s, default=self.defaults[s.name], help=f"{s.help} Here {self.defaults[s.name]} to start quickly.")
                 if s.name in self.defaults else s for s in option_types.describe_options(self.fn, skip=("layer", "target", *self.skip))]
        return [*self.extra, *specs]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "family": "feature", "output": "picture", "uses_layer": self.uses_layer,
                "needs_layer": self.needs_layer, "uses_target": self.uses_target, "summary": self.summary, "paper": self.paper,
                "long": True, "options": [s.as_json() for s in self.option_specs() if s.name not in SKIP_OPTIONS]}


def _tools() -> dict[str, Tool]:
    """Deep Dream, activation maximization and class images from ``convscope.features`` (when installed)."""
    try:
        from convscope import features
    except ImportError:  # pragma: no cover - features ship with convscope
        return {}
    channel = option_types.OptionSpec("channel", "0", "str", (), "the channel(s) of the selected layer to maximize: 7, 3,5,9 or 0-7 "
                                  "(several give one picture each, optimized together).", {"type": "string"})
    tools = [
        Tool("dream", features.dream, "Deep Dream: change the photo so that the selected layer sees more of what it already "
             "sees (gradient ascent on its mean squared activation, at several scales).",
             "Mordvintsev, Olah & Tyka 2015, Inceptionism", skip=("objective",), defaults={"size": 256},
             call=lambda fn, model, picture, x, layer, target, options: fn(model, picture.image, layer, **options)),
        Tool("maximize", features.maximize, "Activation maximization: the picture that excites a channel of the selected "
             "layer most (Lucid's recipe: FFT parameterization, decorrelated colours, random transforms).",
             "Olah, Mordvintsev & Schubert 2017, Feature Visualization", needs_layer=True, extra=(channel,),
             defaults={"steps": 128, "size": 160},
             call=lambda fn, model, picture, x, layer, target, options: fn(
                 model, f"{layer}:{options.pop('channel', '0')}", **options)),
        Tool("class_image", features.class_image, "Class image: the picture the model finds most like the target class "
             "(activation maximization of the class logit).",
             "Simonyan, Vedaldi & Zisserman 2013; Olah et al. 2017", uses_layer=False, uses_target=True,
             defaults={"steps": 128, "size": 160},
             call=lambda fn, model, picture, x, layer, target, options: fn(
                 model, target if target is not None else int(model.predict(x, k=1)[0][0].index), **options)),
    ]
    return {t.name: t for t in tools}


class App:
    """Everything the endpoints share. ``models``: names, files or ``cs.Model`` objects (default Lite0)."""

    def __init__(self, models: Sequence[Any] | Any = None, *, max_upload_bytes: int, max_pixels: int,
                 max_images: int = 64, max_jobs: int = 100) -> None:
        self.max_upload_bytes, self.max_pixels = int(max_upload_bytes), int(max_pixels)
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
        self.activations, self.layer_rows = LRU(8), LRU(8)
        self.jobs = JobManager(max_jobs=max_jobs)
        self.tools = _tools()

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

    result = filters(app.model(key), ref.name)
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


# == methods and jobs =====================================================================================
def _method_json(info: registry.MethodInfo) -> dict[str, Any]:
    specs = info.option_specs()
    return {"name": info.name, "family": info.group or info.family, "output": info.output, "uses_layer": info.uses_layer, "needs_layer": False,
            "uses_target": True,
            "summary": info.summary, "paper": info.paper, "long": any(s.name == "progress" for s in specs),
            "options": [s.as_json() for s in specs if s.name not in SKIP_OPTIONS]}


@route("GET", "/api/methods", "Every method the page can run, with its options (name, default, kind, choices, help)")
def list_methods(app: App, req: Request) -> dict[str, Any]:
    methods = [_method_json(info) for info in cs.methods()]
    methods += [tool.as_json() for tool in app.tools.values()]
    return {"methods": methods}


def _option_values(name: str, specs: list[option_types.OptionSpec], given: Any) -> dict[str, Any]:
    """JSON option values checked against the method's option specs (name, kind, choices) -> keyword options."""
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise HTTPError(400, "options must be a JSON object of option name -> value")
    known = {s.name: s for s in specs if s.name not in SKIP_OPTIONS}
    out: dict[str, Any] = {}
    for key, value in given.items():
        spec = known.get(key)
        if spec is None:
            raise HTTPError(400, f"{name} has no option {key!r}; options: {', '.join(known) or 'none'}")
        if value is None or value == "":
            if spec.default is None:
                out[key] = None
                continue
            raise HTTPError(400, f"option {key} needs a value (default {spec.default!r})")
        try:
            if spec.kind == "bool":
                if not isinstance(value, bool):
                    raise ValueError
            elif spec.kind == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                value = int(value)
            elif spec.kind == "float":
                if isinstance(value, bool):
                    raise ValueError
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError
            elif not isinstance(value, (str, int, float, bool)):
                raise ValueError
        except (TypeError, ValueError):
            raise HTTPError(400, f"option {key}={str(value)[:40]!r} is not a valid {spec.kind}") from None
        if spec.choices and value not in spec.choices:
            raise HTTPError(400, f"option {key}={value!r}: choose one of {', '.join(map(str, spec.choices))}")
        out[key] = value
    return out


JOB_BODY = {"type": "object", "required": ["image", "method"], "properties": {
    "model": {"type": "string", "description": "a model id (default: the first model)"},
    "image": {"type": "string", "description": "an image id"},
    "method": {"type": "string", "description": "a method name from /api/methods"},
    "target": {"type": "integer", "nullable": True, "description": "class index to explain (default: the top-1 class)"},
    "layer": {"type": "string", "nullable": True, "description": "a layer name (default: the method's choice)"},
    "options": {"type": "object", "description": "option name -> value (see /api/methods)"}}}


def _overlay_output(result: Any) -> JobOutput:
    target = None if result.target is None else int(result.target[0])
    probs = result.meta.get("probabilities")
    info = {"method": result.method, "target": target, "label": result.labels[0] if result.labels else None,
            "probability": None if probs is None else _finite(float(probs[0])), "layer": result.layer,
            "shape": list(result.data.shape)}
    files = {"result.png": _png(result.overlay(0)), "map.png": _png(render.result_map(result, 0))}
    return JobOutput(info, files)


def _picture_output(result: Any) -> JobOutput:
    """A job whose answer is pictures in [0, 1] (feature visualization): one PNG, a row of tiles for a batch."""
    data = result.data.detach().float().cpu().clamp(0, 1)  # (B, C, H, W), display space
    tiles = list(render.tensor_to_images(data, mean=(0.0,) * data.shape[1], std=(1.0,) * data.shape[1]))
    picture = tiles[0] if len(tiles) == 1 else _tile_grid(tiles, min(4, len(tiles)), 1, gap=4)
    probs = result.meta.get("probability")
    info = {"method": result.method, "layer": result.layer, "target": None if result.target is None else int(result.target[0]),
            "label": result.labels[0] if result.labels else None,
            "probability": None if probs is None else _finite(float(probs[0])), "shape": list(data.shape)}
    return JobOutput(info, {"result.png": _png(picture)})


@route("POST", "/api/jobs", "Start a method on a picture (queued; one job per model at a time) -> job id",
       body="json", status=202, errors=(404, 429), body_schema=JOB_BODY)
def create_job(app: App, req: Request) -> Response:
    body = req.json()
    key = str(body.get("model") or next(iter(app.models)))
    model = app.model(key)
    image_id = body.get("image")
    if not isinstance(image_id, str):
        raise HTTPError(400, "'image' must be an image id (POST /api/images or GET /api/samples)")
    picture = app.picture(image_id)
    name = body.get("method")
    if not isinstance(name, str):
        raise HTTPError(400, "'method' must be a method name (GET /api/methods)")
    tool = app.tools.get(name)
    if tool is None:
        try:
            info = registry.get(name)
        except ConvscopeError as exc:
            raise HTTPError(404, str(exc)) from None
        specs, uses_layer = info.option_specs(), info.uses_layer
    else:
        specs, uses_layer = tool.option_specs(), tool.uses_layer
    options = _option_values(name, specs, body.get("options"))
    target = body.get("target")
    if target is not None:
        total = app.num_classes(key)
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < total:
            raise HTTPError(400, f"target must be a class index 0..{total - 1} or null (the top-1 class), got {target!r}")
    layer = body.get("layer") or None
    if layer is not None:
        if not isinstance(layer, str):
            raise HTTPError(400, "'layer' must be a layer name")
        try:
            cs.resolve_layer(model, layer)
        except LayerError as exc:
            raise HTTPError(400, str(exc)) from None
        if not uses_layer:
            layer = None  # the method has no layer: ignore it rather than fail
    if tool is not None and layer is None and tool.needs_layer:
        raise HTTPError(400, f"{name} needs a layer: pick one in the layer tree")
    x = app.x(key, image_id)
    long_job = any(s.name == "progress" for s in specs)

    def run(progress: Callable[[int, int, str], None]) -> JobOutput:
        progress(0, 1, name)
        job_model = app.job_model(key)
        kwargs = dict(options)
        if long_job:
            kwargs["progress"] = progress
        if tool is not None:
            kwargs = {**{k: v for k, v in tool.defaults.items() if k not in kwargs}, **kwargs}
            return _picture_output(tool.call(tool.fn, job_model, picture, x, layer, target, kwargs))
        if target is not None:
            kwargs["target"] = target
        if layer is not None:
            kwargs["layer"] = layer
        output = _overlay_output(info.fn(job_model, x, **kwargs))
        progress(1, 1, name)
        return output

    request = {"method": name, "image": image_id, "target": target, "layer": layer, "options": options}
    try:
        job = app.jobs.submit(key, name, request, run)
    except QueueFull as exc:
        raise HTTPError(429, str(exc)) from None
    return Response.json(_job_json(job), 202)


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
    return Response.png(job.output.files[name], cache=True, filename=f"{job.kind}_{job.id}.png")


@route("GET", "/api/jobs/{job}/result.png", "The job's picture: the explanation over the input (or the dreamed picture)",
       produces="image/png", errors=(404, 409))
def job_result(app: App, req: Request) -> Response:
    return _job_file(app, req, "result.png")


@route("GET", "/api/jobs/{job}/map.png", "The explanation's colour map alone", produces="image/png", errors=(404, 409))
def job_map(app: App, req: Request) -> Response:
    return _job_file(app, req, "map.png")
