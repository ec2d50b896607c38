"""The JSON API of ``convscope serve``: the page, models and layers, pictures, feature maps and filters.

Each endpoint is a FastAPI route calling only the public convscope API; query and path parameters are typed
(bounds included) so FastAPI validates them and documents them in ``/api/openapi.json``. The tools and their
jobs (generated from the registry) are in ``tools.py``; what the endpoints share (models, pictures, caches,
the job queue) is the ``state.App`` on ``request.app.state.convscope``.
"""

from __future__ import annotations

import io
import re
import secrets
from typing import Annotated, Any, Literal

import numpy as np
import torch
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

import convscope as cs
from convscope import render
from convscope.errors import ConvscopeError, ImageError

from . import tools
from .server import PNG_OK, HTTPError, PNGResponse, errors, png_response, read_body, request_length, size_text, static_file
from .state import STORED_SIDE, App, Picture, as_picture, finite, png
from .tools import State, current

__all__ = ["IMAGE_MAGIC", "router"]

IMAGE_MAGIC: tuple[tuple[str, Any], ...] = (
    ("PNG", lambda b: b.startswith(b"\x89PNG\r\n\x1a\n")),
    ("JPEG", lambda b: b.startswith(b"\xff\xd8\xff")),
    ("GIF", lambda b: b[:6] in (b"GIF87a", b"GIF89a")),
    ("BMP", lambda b: b.startswith(b"BM")),
    ("WEBP", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
    ("TIFF", lambda b: b[:4] in (b"II*\x00", b"MM\x00*")),
)
MAX_PARTS = 8  # parts of a multipart upload (the picture and a few small fields)
DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII digits only ("²".isdigit() is True, int("²") is not)

ModelId = Annotated[str, "a model id from /api/models"]
ImageQuery = Annotated[str, Query(min_length=1, max_length=200, description="a picture id from POST /api/images or GET /api/samples")]

router = APIRouter()


# == the page, the schema and the docs ====================================================================
@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index() -> Response:
    data, kind = static_file("index.html")
    return Response(data, media_type=kind, headers={"Cache-Control": "no-store"})


@router.get("/static/{file}", include_in_schema=False)
def static(file: str) -> Response:
    data, kind = static_file(file)
    return Response(data, media_type=kind, headers={"Cache-Control": "no-store"})


@router.get("/api/openapi.json", summary="This API's OpenAPI 3.1 schema (FastAPI's, with one path per registered tool)",
            responses=errors())
def schema(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/api/docs", summary="The API documented as a web page (drawn from the schema; works offline)",
            response_class=HTMLResponse, responses=errors())
def docs(request: Request) -> HTMLResponse:
    from .docs import docs_page

    return HTMLResponse(docs_page(request.app.openapi()), headers={"Cache-Control": "no-store"})


# == models and layers ====================================================================================
@router.get("/api/models", summary="The models this server explains", responses=errors())
def list_models(app: State) -> dict[str, Any]:
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
    from convscope.spatial import layout_for

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
                         "maps": shape is not None and _has_maps(module, shape, model, layout_for),
                         "filters": is_conv(module)})
    return rows


def _has_maps(module: Any, shape: list[int], model: cs.Model, layout_for: Any) -> bool:
    """A layer whose output has a spatial view (a (C, h, w) map, a token grid, a channels-last map) of 2+ positions."""
    layout = layout_for(module, shape, model.input_size, prefix_tokens=getattr(model.module, "num_prefix_tokens", None))
    return layout is not None and layout.positions >= 2


@router.get("/api/models/{model}/layers", summary="The model's layers as a tree: name, type, output shape, parameters",
            responses=errors(404))
def list_layers(app: State, model: ModelId) -> dict[str, Any]:
    found = app.model(model)
    rows = app.layer_rows.fetch(model, lambda: _layer_rows(app, model))
    return {"model": model, "input": [found.channels, *(found.input_size or ())], "layers": rows,
            "total_params": sum(p.numel() for p in found.module.parameters())}


@router.get("/api/models/{model}/summary", summary="The Keras-style text summary (cs.summary)", response_class=Response,
            responses={200: {"description": "the summary", "content": {"text/plain": {"schema": {"type": "string"}}}}, **errors(404)})
def model_summary(app: State, model: ModelId) -> Response:
    return Response(cs.summary(app.model(model)).encode("utf-8"), media_type="text/plain; charset=utf-8")


# == classes and predictions ==============================================================================
@router.get("/api/models/{model}/classes", summary="Search the class labels (substring or index)", responses=errors(404, 422))
def list_classes(app: State, model: ModelId,
                 q: Annotated[str, Query(max_length=200, description="text to find in the labels, or a class index")] = "",
                 limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 50) -> dict[str, Any]:
    found_model, total = app.model(model), app.num_classes(model)
    text = q.strip().lower()
    found = []
    for index in range(total):
        label = found_model.label(index)
        if not text or text in label.lower() or text == str(index):
            found.append({"index": index, "label": label})
    return {"total": total, "matches": len(found), "classes": found[:limit]}


@router.get("/api/models/{model}/classes/{index}", summary="One class: its label", responses=errors(404))
def get_class(app: State, model: ModelId, index: str) -> dict[str, Any]:
    total = app.num_classes(model)
    if not DIGITS.fullmatch(index) or int(index) >= total:
        raise HTTPError(404, f"unknown class {index[:20]!r}: model {model!r} has classes 0..{total - 1}")
    return {"index": int(index), "label": app.model(model).label(int(index))}


@router.get("/api/models/{model}/predict", summary="The top-k classes for a picture, with probabilities", responses=errors(404, 422))
def predict(app: State, model: ModelId, image: ImageQuery,
            k: Annotated[int, Query(ge=1, le=100, description="how many classes")] = 5) -> dict[str, Any]:
    found = app.model(model)
    x = app.x(model, image)
    top = app.predictions.fetch((model, image, k), lambda: found.predict(x, k=k)[0])
    return {"model": model, "image": image, "top": [p._asdict() for p in top]}


# == pictures =============================================================================================
@router.get("/api/samples", summary="The built-in sample photos (their image ids work everywhere an id does)", responses=errors())
def list_samples() -> dict[str, Any]:
    return {"samples": [{"name": n, "id": f"sample-{n}", "url": f"/api/images/sample-{n}.png",
                         "thumbnail": f"/api/images/sample-{n}.png?size=160"} for n in cs.images.SAMPLE_IMAGES]}


class _Parts:
    """python-multipart callbacks collecting the first file part (or the field named 'file') in memory,
    refusing more than MAX_PARTS parts or more than ``limit`` bytes of it."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0
        self.header_field, self.header_value = bytearray(), bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()
        self.keep = False
        self.file: bytes | None = None
        self.filename = "upload"

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.begin, "on_header_field": self.field, "on_header_value": self.value,
                "on_header_end": self.header_end, "on_headers_finished": self.headers_done, "on_part_data": self.part_data,
                "on_part_end": self.end}

    def begin(self) -> None:
        self.count += 1
        if self.count > MAX_PARTS:
            raise HTTPError(400, f"the upload has more than {MAX_PARTS} parts; send one picture as the field 'file'")
        self.headers, self.keep, self.data = {}, False, bytearray()

    def field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field, self.header_value = bytearray(), bytearray()

    def headers_done(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        is_file = params.get(b"name") == b"file" or b"filename" in params
        self.keep = is_file and self.file is None
        if self.keep and params.get(b"filename"):
            self.filename = params[b"filename"].decode("utf-8", "replace")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.keep:
            self.data += data[start:end]
            if len(self.data) > self.limit:
                raise HTTPError(413, f"the picture is over the limit of {size_text(self.limit)}")

    def end(self) -> None:
        if self.keep:
            self.file = bytes(self.data)
        self.keep, self.data = False, bytearray()


def _upload_body(*binary_types: str) -> dict[str, Any]:
    """The documented request body of an upload: the raw file as one of ``binary_types``, or multipart with a 'file'."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": {
        **{kind: binary for kind in binary_types},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": binary["schema"]}}}}}}


async def _upload_bytes(request: Request, limit: int, accept: tuple[str, ...] = ("image/",),
                        what: str = "a picture; send image/png, image/jpeg, ...") -> tuple[bytes, str]:
    """The picture's bytes and a display name from a raw body or a multipart/form-data upload, streamed: over
    ``limit`` bytes is refused (413) while reading, before the rest arrives."""
    kind = (request.headers.get("content-type") or "application/octet-stream").lower()
    if kind.startswith("multipart/form-data"):
        _, params = parse_options_header(request.headers["content-type"])
        boundary = params.get(b"boundary")
        if not boundary or len(boundary) > 200:
            raise HTTPError(400, "the multipart upload has no boundary in its Content-Type")
        length = request_length(request)
        if length is not None and length > limit + 64 * 2**10:
            raise HTTPError(413, f"the upload is {size_text(length)}, over the limit of {size_text(limit)}")
        parts = _Parts(limit)
        parser = MultipartParser(boundary, parts.callbacks(), max_size=limit + 64 * 2**10)
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except HTTPError:
            raise
        except ClientDisconnect:
            raise HTTPError(400, "the client went away before sending all of the upload") from None
        except Exception as exc:  # python-multipart's MultipartParseError and friends: a malformed body
            raise HTTPError(400, f"the multipart upload is malformed ({str(exc)[:120]})") from None
        if parts.file is None:
            raise HTTPError(400, "the multipart upload has no file part (send the picture as the field 'file')")
        return parts.file, parts.filename
    if not kind.startswith((*accept, "application/octet-stream")):
        raise HTTPError(415, f"Content-Type {kind[:60]!r} is not {what} or multipart/form-data")
    return await read_body(request, limit, "the picture"), request.headers.get("x-filename") or "upload"


def _store_picture(app: App, data: bytes, filename: str) -> Picture:
    if not data:
        raise HTTPError(400, "the upload is empty")
    if not any(test(data[:16]) for _, test in IMAGE_MAGIC):
        formats = ", ".join(name for name, _ in IMAGE_MAGIC)
        raise HTTPError(415, f"not a picture in a supported format ({formats})")
    try:
        image = cs.load_image(data, max_pixels=app.max_pixels)
    except ImageError as exc:
        message = str(exc).replace("<bytes>", "the upload")
        raise HTTPError(413 if "exceeds the limit" in message or "decompression bomb" in message else 400, message) from None
    name = re.sub(r"[^\w .()-]+", "_", filename.replace("\\", "/").rsplit("/", 1)[-1])[:80] or "upload"
    picture = as_picture(secrets.token_hex(8), name, image)
    app.images.fetch(picture.id, lambda: picture)
    return picture


@router.post("/api/images", status_code=201, responses=errors(413, 415), openapi_extra=_upload_body("image/*", "application/octet-stream"),
    summary="Upload a picture (raw image bytes, or multipart/form-data with a 'file' field); streamed, the size limit "
            "enforced while reading")
async def upload_image(request: Request) -> JSONResponse:
    app: App = current(request)
    data, filename = await _upload_bytes(request, app.max_upload_bytes)
    picture = await run_in_threadpool(_store_picture, app, data, filename)  # decoding is CPU work: off the event loop
    return JSONResponse(picture.as_json(), 201)


@router.get("/api/images/{image}.png", summary="A picture as PNG (size: longest side for a thumbnail)", response_class=PNGResponse,
            responses={**PNG_OK, **errors(404, 422)})
def image_png(app: State, image: str,
              size: Annotated[int | None, Query(ge=16, le=STORED_SIDE, description="longest side in pixels")] = None) -> Response:
    picture = app.picture(image)

    def make() -> bytes:
        shown = picture.image
        if size is not None and max(shown.size) > size:
            shown = shown.copy()
            shown.thumbnail((size, size))
        return png(np.asarray(shown))

    return png_response(app.png_cache.fetch(("image", picture.id, size), make), cache=True,
                        filename=f"{picture.name.rsplit('.', 1)[0]}.png")


@router.get("/api/images/{image}", summary="A picture's facts (id, size, name)", responses=errors(404))
def image_info(app: State, image: str) -> dict[str, Any]:
    return app.picture(image).as_json()


@router.get("/api/models/{model}/input.png", summary="The picture as the model sees it (resized and center-cropped)",
            response_class=PNGResponse, responses={**PNG_OK, **errors(404, 422)})
def model_input_png(app: State, model: ModelId, image: ImageQuery) -> Response:
    found, picture = app.model(model), app.picture(image)
    data = app.png_cache.fetch(("crop", model, image), lambda: png(np.asarray(found.crop(picture.image).convert("RGB"))))
    return png_response(data, cache=True, filename=f"{picture.name.rsplit('.', 1)[0]}_{model}_input.png")


# == uploaded datasets (a zip of pictures and masks) ======================================================
MAX_DATASET_BYTES = 200 * 2**20  # an uploaded zip file
MAX_DATASET_PICTURES = 2_000
MAX_DATASET_UNZIPPED = 512 * 2**20  # bytes of all its files, unpacked (a zip bomb stops here)
MASK_FOLDERS = ("masks", "mask", "regions")


def _zip_entries(data: bytes, max_file: int) -> dict[str, bytes]:
    """The files of a zip (path -> bytes), refusing more than MAX_DATASET_PICTURES pictures or MAX_DATASET_UNZIPPED
    bytes unpacked (sizes are checked while reading: a header can lie). Hidden files and __MACOSX are skipped; one
    folder holding everything is taken off the paths."""
    import zipfile
    from pathlib import PurePosixPath

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise HTTPError(400, f"not a zip file ({str(exc)[:100]}); zip a folder of pictures (sub-folders: labels; masks/ for the "
                             "object masks)") from None
    files, total = {}, 0
    for info in infos:
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") or p == ".." for p in parts):
            continue
        if len(files) >= 2 * MAX_DATASET_PICTURES:
            raise HTTPError(413, f"the zip holds more than {MAX_DATASET_PICTURES:,} pictures")
        try:
            with archive.open(info) as member:
                content = member.read(max_file + 1)
        # what zipfile raises for a member it cannot read: corrupt data (BadZipFile, OSError, ValueError), an encrypted
        # member (RuntimeError), a compression method it does not know (NotImplementedError)
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError) as exc:
            raise HTTPError(400, f"cannot read {info.filename[:80]!r} from the zip ({str(exc)[:100]})") from None
        if len(content) > max_file:
            raise HTTPError(413, f"{info.filename[:80]!r} in the zip is over the limit of {size_text(max_file)} per picture")
        total += len(content)
        if total > MAX_DATASET_UNZIPPED:
            raise HTTPError(413, f"the zip unpacks to more than {size_text(MAX_DATASET_UNZIPPED)}")
        files["/".join(parts)] = content
    roots = {path.split("/", 1)[0] for path in files}
    if len(roots) == 1 and all("/" in path for path in files) and next(iter(roots)).lower() not in MASK_FOLDERS:
        files = {path.split("/", 1)[1]: content for path, content in files.items()}
    return files


def _unzip_dataset(app: App, data: bytes, filename: str) -> Any:
    """An :class:`~convscope.web.state.UploadedDataset` from a zip: pictures (``label/name.png`` gives a label) and,
    under ``masks/``, one mask per picture (same path, any picture format; white = the object)."""
    from PIL import Image

    from convscope.data import IMAGE_EXTENSIONS

    from .state import UploadedDataset

    files = _zip_entries(data, app.max_upload_bytes)
    suffix = lambda path: "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    stem = lambda path: path.rsplit(".", 1)[0]
    masks = {stem(path.split("/", 1)[1]): content for path, content in files.items()
             if "/" in path and path.split("/", 1)[0].lower() in MASK_FOLDERS and suffix(path) in IMAGE_EXTENSIONS}
    masks_by_name = {key.rsplit("/", 1)[-1]: content for key, content in masks.items()}
    pictures, labels, regions = [], [], []
    for path in sorted(files):
        if suffix(path) not in IMAGE_EXTENSIONS or ("/" in path and path.split("/", 1)[0].lower() in MASK_FOLDERS):
            continue
        if len(pictures) >= MAX_DATASET_PICTURES:
            raise HTTPError(413, f"the zip holds more than {MAX_DATASET_PICTURES:,} pictures")
        try:
            pictures.append(cs.load_image(files[path], max_pixels=app.max_pixels))
        except ImageError as exc:
            raise HTTPError(400, f"{path[:80]!r} in the zip: {str(exc).replace('<bytes>', 'the picture')}") from None
        labels.append(path.rsplit("/", 2)[-2] if "/" in path else None)
        mask = masks.get(stem(path), masks_by_name.get(stem(path).rsplit("/", 1)[-1]))
        if mask is not None:
            try:
                image = Image.open(io.BytesIO(mask))
                image.load()
            except Exception as exc:
                raise HTTPError(400, f"the mask of {path[:80]!r} is not a picture ({str(exc)[:80]})") from None
            regions.append(image.convert("L"))
        else:
            regions.append(None)
    if not pictures:
        raise HTTPError(400, "the zip holds no pictures (png, jpeg, ...); masks go under masks/, pictures anywhere else")
    name = re.sub(r"[^\w .()-]+", "_", filename.replace("\\", "/").rsplit("/", 1)[-1])[:80] or "upload.zip"
    upload = UploadedDataset(f"upload-{secrets.token_hex(6)}", name, pictures, labels, regions)
    app.uploads.fetch(upload.id, lambda: upload)
    return upload


@router.post("/api/datasets", status_code=201, responses=errors(413, 415), openapi_extra=_upload_body("application/zip"),
    summary="Upload a dataset: a zip of pictures (sub-folders: labels) and, under masks/, the object mask of each (white = "
            "object) — then name it in a job's 'dataset' (audit, embed, ...); kept in memory, the last 4")
async def upload_dataset(request: Request) -> JSONResponse:
    app: App = current(request)
    data, filename = await _upload_bytes(request, MAX_DATASET_BYTES, accept=("application/zip", "application/x-zip"),
                                         what="a zip file; send application/zip")
    upload = await run_in_threadpool(_unzip_dataset, app, data, filename)
    return JSONResponse(upload.as_json(), 201)


@router.get("/api/datasets", summary="The datasets a job may name: built-in, --data, uploaded", responses=errors())
def list_datasets(app: State) -> dict[str, Any]:
    return {"datasets": app.dataset_list()}


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


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _map_picture(channel: torch.Tensor, scale: Any) -> np.ndarray:
    """One activation map (h, w) -> RGB on the layer's scale (its own peak = the top of the colour bar)."""
    return scale.colours(render.scale.relative(channel, scale.signed))


Page = Annotated[int, Query(ge=0, le=100_000, description="page number, from 0")]
PerPage = Annotated[int, Query(ge=1, le=256, description="channels per page")]
Order = Annotated[Literal["top", "index"], Query(description="'top' (largest mean activation first) or 'index'")]


@router.get("/api/models/{model}/layers/{layer}/feature_maps.png", summary="A page of feature maps as one grid PNG with its colour bar",
            response_class=PNGResponse, responses={**PNG_OK, **errors(404, 422)})
def feature_maps_png(app: State, model: ModelId, layer: str, image: ImageQuery, page: Page = 0, per_page: PerPage = 16,
                     order: Order = "top") -> Response:
    acts = _activations(app, model, image, layer)
    chosen = _channel_order(acts, order)[page * per_page:][:per_page]
    if not chosen:
        raise HTTPError(404, f"page {page} does not exist for layer {layer!r}")
    scale = render.features.maps_scale(acts)
    tiles = [_map_picture(acts[c], scale) for c in chosen]
    scale_up = max(1, 96 // max(tiles[0].shape[:2]))
    grid = _tile_grid(tiles, min(8, len(tiles)), scale_up)
    picture = render.scale.with_colorbar(grid, scale)
    name = app.picture(image).name.rsplit(".", 1)[0]
    return png_response(png(picture), filename=f"{name}_{layer}_maps_{page}.png")


@router.get("/api/models/{model}/layers/{layer}/feature_maps/legend.png", summary="The colour bar of a layer's feature maps",
            response_class=PNGResponse, responses={**PNG_OK, **errors(404, 422)})
def feature_maps_legend(app: State, model: ModelId, layer: str, image: ImageQuery,
                        height: Annotated[int, Query(ge=64, le=1024, description="pixels")] = 160) -> Response:
    scale = render.features.maps_scale(_activations(app, model, image, layer))
    return png_response(png(render.scale.colorbar_strip(scale, height)), cache=True)


@router.get("/api/models/{model}/layers/{layer}/feature_maps/{channel}.png", summary="One channel's feature map as PNG",
            response_class=PNGResponse, responses={**PNG_OK, **errors(404, 422)})
def feature_map_png(app: State, model: ModelId, layer: str, channel: str, image: ImageQuery) -> Response:
    acts = _activations(app, model, image, layer)
    if not DIGITS.fullmatch(channel) or int(channel) >= acts.shape[0]:
        raise HTTPError(404, f"unknown channel {channel[:20]!r}: layer {layer!r} has channels 0..{acts.shape[0] - 1}")
    name = app.picture(image).name.rsplit(".", 1)[0]
    return png_response(png(_map_picture(acts[int(channel)], render.features.maps_scale(acts))), cache=True,
                        filename=f"{name}_{layer}_channel{channel}.png")


@router.get("/api/models/{model}/layers/{layer}/feature_maps", summary="A layer's feature maps for a picture, top channels "
            "first, paged, with their colour scale", responses=errors(404, 422))
def feature_maps(app: State, model: ModelId, layer: str, image: ImageQuery, page: Page = 0, per_page: PerPage = 16,
                 order: Order = "top") -> dict[str, Any]:
    acts = _activations(app, model, image, layer)
    ranked = _channel_order(acts, order)
    channels = acts.shape[0]
    pages = max(1, -(-channels // per_page))
    if page >= pages:
        raise HTTPError(404, f"page {page} does not exist: layer {layer!r} has {channels} channels, {pages} pages of {per_page}")
    means, maxes, mins = acts.mean(dim=(1, 2)), acts.amax(dim=(1, 2)), acts.amin(dim=(1, 2))
    base = f"/api/models/{model}/layers/{_quote(layer)}/feature_maps"
    query = f"image={_quote(image)}"
    items = [{"channel": c, "rank": page * per_page + i, "mean": finite(float(means[c])), "max": finite(float(maxes[c])),
              "min": finite(float(mins[c])), "url": f"{base}/{c}.png?{query}"}
             for i, c in enumerate(ranked[page * per_page:(page + 1) * per_page])]
    scale = render.features.maps_scale(acts)
    return {"model": model, "layer": layer, "image": image, "shape": list(acts.shape), "channels": channels,
            "page": page, "per_page": per_page, "pages": pages, "order": order, "items": items,
            "scale": {"signed": scale.signed, "text": ("each map from −its largest |value| (blue) through 0 (white) to +it (red)"
                                                        if scale.signed else "each map from 0 (dark) to its own peak (yellow)"),
                      "legend": f"{base}/legend.png?{query}"},
            "grid": f"{base}.png?{query}&page={page}&per_page={per_page}&order={order}"}


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


def _weights(app: App, key: str, layer: str) -> tuple[torch.Tensor, bool]:
    """The layer's kernels (out, in, kh, kw) on the CPU, and whether they are RGB (convscope.features.filters)."""
    ref = app.layer(key, layer)
    from convscope.layers import is_conv

    if not is_conv(ref.module):
        raise HTTPError(400, f"layer {layer!r} ({type(ref.module).__name__}) has no convolution filters; pick a Conv2d layer")
    from convscope.features import filters as filters_of

    result = filters_of(app.model(key), layer=ref.name)
    return result.data.detach().float().cpu(), bool(result.meta.get("colour"))


def _filter_tiles(weights: torch.Tensor, chosen: list[int], colour: bool) -> list[np.ndarray]:
    """RGB kernels for the first layer of a colour model, else each filter's strongest input-channel kernel in
    grayscale (mid-gray = 0)."""
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
    return tiles


STRONGEST_INPUTS = 6  # input channels listed per 1x1 filter


def _pointwise_rows(weights: torch.Tensor, chosen: list[int]) -> list[dict[str, Any]]:
    """A 1×1 convolution's filters as numbers: each mixes the input channels with one weight each; its size (L2
    norm), how many inputs it really uses, and its strongest inputs with their weights (signed)."""
    rows = []
    for o in chosen:
        w = weights[o, :, 0, 0]
        norm = float(w.norm())
        strongest = w.abs().argsort(descending=True)[:STRONGEST_INPUTS].tolist()
        share = (w.abs() / (w.abs().sum() or 1.0)).sort(descending=True).values.cumsum(0)
        used = int((share < 0.9).sum()) + 1  # the fewest inputs that carry 90% of its |weight|
        rows.append({"filter": o, "norm": finite(norm), "inputs_for_90_percent": min(used, w.numel()),
                     "strongest": [{"input": int(i), "weight": finite(float(w[i]))} for i in strongest]})
    return rows


FilterPerPage = Annotated[int, Query(ge=1, le=512, description="filters per page")]


@router.get("/api/models/{model}/layers/{layer}/filters.png", summary="A page of a layer's filters as one grid PNG (1×1 "
            "convolutions: the filters × inputs weight matrix with its colour bar)", response_class=PNGResponse,
            responses={**PNG_OK, **errors(404, 422)})
def filters_png(app: State, model: ModelId, layer: str, page: Page = 0, per_page: FilterPerPage = 64) -> Response:
    weights, colour = _weights(app, model, layer)
    chosen = list(range(weights.shape[0]))[page * per_page:][:per_page]
    if not chosen:
        raise HTTPError(404, f"page {page} does not exist for layer {layer!r}")
    name = f"{model}_{layer}_filters_{page}.png"
    if weights.shape[-2:] == (1, 1):  # pointwise: (filters x input channels), blue < 0 < red, with its colour bar
        values = weights[chosen, :, 0, 0]
        scale = render.scale.scale_of(values, signed=True, units="weight", scope="this page")
        matrix = scale.colours(values)
        enlarge = max(1, min(12, 640 // matrix.shape[1]))
        return png_response(png(render.scale.with_colorbar(matrix.repeat(enlarge, axis=0).repeat(enlarge, axis=1), scale)),
                            filename=name)
    tiles = _filter_tiles(weights, chosen, colour)
    scale_up = max(1, 40 // max(tiles[0].shape[:2]))
    return png_response(png(_tile_grid(tiles, min(16, len(tiles)), scale_up)), filename=name)


@router.get("/api/models/{model}/layers/{layer}/filters", summary="A convolution layer's filters: shape, pages, grid URLs "
            "(1×1 convolutions: each filter's strongest inputs as numbers)", responses=errors(404, 422))
def filters(app: State, model: ModelId, layer: str, page: Page = 0, per_page: FilterPerPage = 64) -> dict[str, Any]:
    weights, colour = _weights(app, model, layer)
    out_c, in_c, kh, kw = weights.shape
    pages = max(1, -(-out_c // per_page))
    if page >= pages:
        raise HTTPError(404, f"page {page} does not exist: layer {layer!r} has {out_c} filters, {pages} pages")
    kind = "matrix" if kh == kw == 1 else "rgb" if colour else "gray"
    explain = {"rgb": "each filter's 3 colour channels as a small picture (gray = 0)",
               "gray": "each filter's strongest input-channel kernel (gray = 0, light = positive, dark = negative)",
               "matrix": "a 1×1 convolution mixes the input channels at each pixel, with one weight per input: each row is a "
                         "filter, with its strongest inputs and their weights (red > 0, blue < 0)"}[kind]
    base = f"/api/models/{model}/layers/{_quote(layer)}/filters.png"
    chosen = list(range(out_c))[page * per_page:][:per_page]
    return {"model": model, "layer": layer, "shape": [out_c, in_c, kh, kw], "kind": kind, "help": explain,
            "page": page, "per_page": per_page, "pages": pages, "grid": f"{base}?page={page}&per_page={per_page}",
            "rows": _pointwise_rows(weights, chosen) if kind == "matrix" else None}


router.include_router(tools.router)
