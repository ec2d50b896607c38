"""The tools and their jobs in ``convscope serve``, all generated from the registry.

A tool registered anywhere (even after the server started) is listed by ``GET /api/tools``, documented as
``POST /api/tools/<name>/jobs`` in ``/api/openapi.json`` (its request body carrying the tool's options schema
from its options model), validated and cost-checked (``tool.plan``) before the 202, and run on its model's
worker with progress and cancellation; its result is drawn by ``convscope.render`` whatever its kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import inspect
import json
import math
import re
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

import convscope as cs
from convscope import engine, registry, render
from convscope.data import DATASETS
from convscope.errors import ConvscopeError, CostError, LayerError, OptionError
from convscope.options import OptionSpec, is_server_only

from .jobs import TERMINAL, Job, JobOutput, QueueFull
from .server import ERROR_SCHEMA, PNG_OK, HTTPError, PNGResponse, errors, png_response, read_json, safe_filename
from .state import App, png

__all__ = ["body_fields", "extend_schema", "job_body", "job_output", "offered", "options_schema", "plan_job", "router", "tool_json"]


def current(request: Request) -> App:
    return request.app.state.convscope


State = Annotated[App, Depends(current)]
router = APIRouter()

PICTURE_TAKES = ("images", "image", "models")  # tools whose job body names a picture
EXPLANATION_KINDS = ("map", "pixels")  # results whose colour map alone is offered too (map.png)
TEXT_LIMIT = 20_000  # characters of a result's text kept in the job's facts
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


def offered(tool: registry.Tool) -> list[OptionSpec]:
    """The options the web offers: the tool's front-end options (``tool.option_specs()``) except paths on the
    server (typed ``Path``: the page never sends paths, datasets come by name) and options marked server-only
    (``options.SERVER_ONLY``: which cluster to run on, how many actors — the machine's owner decides those)."""
    return [spec for spec in tool.option_specs() if not is_server_only(spec.schema)]


def options_schema(tool: registry.Tool) -> dict[str, Any]:
    """``tool.options_schema()`` restricted to the options the web offers."""
    schema = tool.options_schema()
    names = {spec.name for spec in offered(tool)}
    schema["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k in names}
    if "required" in schema:
        schema["required"] = [k for k in schema["required"] if k in names]
    return schema


def body_fields(tool: registry.Tool, datasets: Sequence[str] = tuple(DATASETS)) -> dict[str, dict[str, Any]]:
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
        described = [f"{d.name}: {d.description}" for d in DATASETS.values()] + (["data: the folder given with --data"]
                                                                                 if "data" in datasets else [])
        fields["dataset"] = {"type": "string", "enum": list(datasets), "description": "a dataset: " + "; ".join(described)}
    if tool.uses_target:
        fields["target"] = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}], "default": None,
                            "description": "the class index to explain (default: the top-1 class)"}
    if tool.uses_layer:
        default = tool.layer.default if tool.layer is not None else "the tool's own choice"
        fields["layer"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None,
                           "description": f"a layer name from /api/models/{{model}}/layers (default: {default})"}
    return fields


REQUIRED_FIELDS = ("image", "dataset")


def _refs(value: Any, rename: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {k: rename(v) if k == "$ref" and isinstance(v, str) else _refs(v, rename) for k, v in value.items()}
    if isinstance(value, list):
        return [_refs(v, rename) for v in value]
    return value


def job_body(tool: registry.Tool, datasets: Sequence[str] = tuple(DATASETS)) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON schema of ``POST /api/tools/<name>/jobs``'s body and the component schemas it refers to: the
    tool's options schema (``tool.options_schema()``) as ``#/components/schemas/options.<name>``."""
    options = options_schema(tool)
    prefix = f"options.{tool.name}"
    definitions = options.pop("$defs", {})

    def rename(ref: str) -> str:
        return f"#/components/schemas/{prefix}.{ref.rsplit('/', 1)[-1]}" if ref.startswith("#/$defs/") else ref

    components = {prefix: _refs(options, rename), **{f"{prefix}.{k}": _refs(v, rename) for k, v in definitions.items()}}
    fields = body_fields(tool, datasets)
    required = [k for k in fields if k in REQUIRED_FIELDS] + (["options"] if options.get("required") else [])
    schema = {"type": "object", "additionalProperties": False, "required": required,
              "properties": {**fields, "options": {"anyOf": [{"$ref": f"#/components/schemas/{prefix}"}, {"type": "null"}],
                                                   "description": f"{tool.name}'s options (see /api/tools/{tool.name}; "
                                                                  "null or left out: every option at its default)"}}}
    return schema, components


def tool_json(tool: registry.Tool) -> dict[str, Any]:
    """A tool as the page and API clients see it: what it is, what it takes, its options and its job URL."""
    cached = _TOOL_JSON.get(tool)
    if cached is None:
        cached = _TOOL_JSON[tool] = {
            "name": tool.name, "family": tool.family, "group": tool.group, "takes": tool.takes, "returns": tool.returns,
            "summary": tool.description, "paper": tool.paper, "uses_layer": tool.uses_layer, "uses_target": tool.uses_target,
            "layer": tool.layer.as_json() if tool.layer is not None else None,
            "loops": tool.loops, "aliases": list(tool.aliases), "quick": _json_safe(tool.quick), "inputs": list(body_fields(tool)),
            "options": [spec.as_json() for spec in offered(tool)], "options_schema": options_schema(tool),
            "jobs": f"/api/tools/{tool.name}/jobs"}
    return cached


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
    subject: str = ""  # what it explains, for download names: the picture's name


def plan_job(app: App, tool: registry.Tool, body: dict[str, Any]) -> Call:
    """Check a job's request body (fields by ``tool.takes``, ids, target, layer, option names), build the tool's
    inputs from this server's models, pictures and datasets, and plan the call (validation and cost)."""
    fields = body_fields(tool, app.dataset_names)
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
        if not isinstance(name, str) or name not in app.dataset_names:
            raise _invalid("dataset", f"{tool.name} needs 'dataset': one of {', '.join(app.dataset_names)}", name,
                           choices=app.dataset_names)
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
    return Call(tool, key, keys, request, _plan(app, tool, inputs, kwargs, options), picture.name if picture is not None else "")


def job_output(result: Any) -> JobOutput:
    """What a finished job leaves, all drawn by ``convscope.render``: result.png (``render.to_png``), an
    explanation's colour map alone (map.png), and the facts: kind, caption, text (+ a Result's provenance)."""
    kind = getattr(result, "kind", None)
    files = {"result.png": render.to_png(result)}
    info: dict[str, Any] = {"kind": kind, "caption": render.caption(result), "text": render.text(result)[:TEXT_LIMIT]}
    if kind in EXPLANATION_KINDS:  # the map alone, with the same colour bar as the overlay
        scale = render.scale.result_scale(result, 0)
        files["map.png"] = png(render.scale.with_colorbar(render.result_map(result, 0, scale=scale), scale))
        info["scale"] = scale.describe()
    if isinstance(result, cs.Result):
        target = result.target
        first = int(target.reshape(-1)[0]) if isinstance(target, torch.Tensor) and target.numel() else None
        info.update(method=result.method, layer=result.layer, target=first, shape=list(result.data.shape),
                    label=result.labels[0] if result.labels else None)
    if kind == "embedding" and getattr(result, "projection", None) is not None:
        points, sprite = embedding_points(result)
        info["points"] = points
        if sprite is not None:
            files["sprite.png"] = png(sprite)
    return JobOutput(info, files)


MAX_POINTS = 5_000  # points of an embedding map sent to the page (thumbnails in one sprite sheet)
SPRITE_SIDE = 48  # pixels of each thumbnail in the sprite


def embedding_points(embedding: Any) -> tuple[dict[str, Any], Any]:
    """An embedding's 2-D map for the page: each point's place (x, y in [0, 1], y up), true and predicted label,
    probability and its thumbnail's cell in one sprite sheet (``sprite.png``, ``columns`` cells of ``size`` px
    per row), so hovering a point shows the picture with no request per point."""
    import numpy as np

    coords = np.asarray(embedding.projection.coords, dtype=np.float64)[:MAX_POINTS]
    low, span = coords.min(axis=0), np.ptp(coords, axis=0)
    span[span == 0] = 1.0
    unit = (coords - low) / span
    n = len(unit)
    predicted = embedding.predicted_labels or [None] * n
    probability = embedding.probabilities if embedding.probabilities is not None else [None] * n
    thumbs = embedding.thumbnails[:n] if embedding.thumbnails is not None and len(embedding.thumbnails) else None
    columns = max(1, math.ceil(math.sqrt(n))) if thumbs is not None else 0
    rows = [{"x": round(float(unit[i, 0]), 5), "y": round(float(unit[i, 1]), 5), "label": embedding.labels[i],
             "predicted": predicted[i], "probability": None if probability[i] is None else round(float(probability[i]), 4),
             "cell": i if thumbs is not None else None} for i in range(n)]
    sprite = None
    if thumbs is not None:
        from PIL import Image

        side = SPRITE_SIDE
        sprite = np.full((math.ceil(n / columns) * side, columns * side, 3), 255, np.uint8)
        for i, thumb in enumerate(thumbs):
            r, c = divmod(i, columns)
            tile = np.asarray(Image.fromarray(np.ascontiguousarray(thumb)).resize((side, side), Image.NEAREST))
            sprite[r * side:(r + 1) * side, c * side:(c + 1) * side] = tile[..., :3] if tile.ndim == 3 else tile[..., None]
    return {"method": embedding.projection.title, "count": n, "total": len(embedding), "columns": columns, "size": SPRITE_SIDE,
            "points": rows}, sprite


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


def queue_job(app: App, call: Call) -> Job:
    """Queue a planned call on its model's worker. It runs on the worker's own copies of the models; a tool that
    loops gets the job's progress callback (which raises ``Cancelled`` after a cancel). A full queue -> 429 with
    ``Retry-After``: about how long until the model's worker takes the next job."""
    tool, plan = call.tool, call.plan
    first = tool.inputs[0] if tool.inputs else None
    subject = call.request.get("dataset") or call.subject or call.lane

    def run(progress: Callable[[int, int, str], None]) -> JobOutput:
        if first is not None:
            copies = [app.job_model(k) for k in call.keys]
            plan_here = dataclasses.replace(plan, inputs={**plan.inputs, first: copies if tool.takes == "models" else copies[0]})
        else:
            plan_here = plan
        if tool.loops:
            output = job_output(plan_here.run(progress=progress))
        else:
            progress(0, 1, tool.name)
            output = job_output(plan_here.run())
            progress(1, 1, tool.name)
        label = output.info.get("label")
        output.info["filename"] = safe_filename(f"{_stem(subject)}_{tool.name}" + (f"_{label}" if label else "") + ".png")
        return output

    try:
        return app.jobs.submit(call.lane, tool.name, call.request, run)
    except QueueFull as exc:
        wait = max(1, min(120, math.ceil(app.jobs.typical_seconds(call.lane))))
        raise HTTPError(429, str(exc), headers={"Retry-After": str(wait)}, details={"retry_after": wait}) from None


def _job_json(job: Job) -> dict[str, Any]:
    snap = job.snapshot()
    base = f"/api/jobs/{job.id}"
    snap["urls"] = {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel", "result": f"{base}/result.png"}
    for name in ("map", "sprite"):
        if job.output is not None and f"{name}.png" in job.output.files:
            snap["urls"][name] = f"{base}/{name}.png"
    return snap


# == the routes ===========================================================================================
@router.get("/api/tools", summary="Every registered tool: family, what it takes and returns, its options (kind, default, range, "
            "choices, help), plus the families and the datasets", responses=errors())
def list_tools(app: State) -> dict[str, Any]:
    return {"tools": [tool_json(t) for t in registry.tools()], "families": registry.FAMILIES, "groups": list(registry.GROUPS),
            "takes": registry.TAKES, "datasets": app.dataset_list()}


@router.get("/api/tools/{tool}", summary="One tool, as listed by /api/tools", responses=errors(404))
def get_tool(tool: str) -> dict[str, Any]:
    return tool_json(_tool(tool))


@router.post("/api/tools/{tool}/jobs", status_code=202, include_in_schema=False)  # documented per tool by extend_schema
async def run_tool(request: Request, tool: str) -> JSONResponse:
    app = current(request)
    found = _tool(tool)
    body = await read_json(request)
    call = await run_in_threadpool(plan_job, app, found, body)  # pictures are preprocessed, datasets made: off the event loop
    return JSONResponse(_job_json(queue_job(app, call)), 202)


def _job(app: App, job_id: str) -> Job:
    job = app.jobs.get(job_id)
    if job is None:
        raise HTTPError(404, f"unknown job {job_id[:40]!r} (finished jobs are forgotten after a while)")
    return job


@router.get("/api/jobs", summary="The most recent jobs", responses=errors())
def list_jobs(app: State) -> dict[str, Any]:
    return {"jobs": [_job_json(job) for job in app.jobs.recent()]}


@router.get("/api/jobs/{job}", summary="A job's status, progress and result facts", responses=errors(404))
def get_job(app: State, job: str) -> dict[str, Any]:
    return _job_json(_job(app, job))


async def _events(app: App, job: Job, *, keepalive: float = 15.0, min_interval: float = 0.15,
                  poll: float = 0.02) -> AsyncIterator[bytes]:
    """Server-Sent Events: ``progress`` while queued/running (at most one per ``min_interval``), then one ``done``,
    ``error`` or ``cancelled`` as soon as the job ends, each with the job as JSON; comments keep the stream alive.
    Waiting is a sleep on the event loop (no thread per stream); the stream ends when the client goes or the server
    stops."""
    yield b"retry: 3000\n\n"
    version, quiet, last = -1, 0.0, -min_interval
    loop = asyncio.get_running_loop()
    while not app.jobs.closed.is_set():
        ended = job.terminal
        if job.version == version or (not ended and loop.time() - last < min_interval):
            await asyncio.sleep(poll)
            quiet += poll
            if quiet >= keepalive:
                quiet = 0.0
                yield b": keepalive\n\n"
            continue
        version, quiet, last = job.version, 0.0, loop.time()
        snap = _job_json(job)
        name = snap["status"] if snap["status"] in TERMINAL else "progress"
        yield f"event: {name}\ndata: {json.dumps(snap)}\n\n".encode()
        if name != "progress":
            return


@router.get("/api/jobs/{job}/events", summary="Server-Sent Events: 'progress' while it runs, then 'done', 'error' or 'cancelled'",
            response_class=StreamingResponse,
            responses={200: {"description": "an event stream: one event per change of the job", "content": {"text/event-stream": {
                "schema": {"type": "object", "description": "one Server-Sent Event: 'progress', 'done', 'error' or 'cancelled', its data "
                           "the job as JSON (as GET /api/jobs/{job})",
                           "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"},
                                          "retry": {"type": "integer"}}}}}},
                       **errors(404)})
def job_events(app: State, job: str) -> StreamingResponse:
    found = _job(app, job)
    return StreamingResponse(_events(app, found), media_type="text/event-stream; charset=utf-8",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.post("/api/jobs/{job}/cancel", summary="Cancel a job (a queued job at once, a running one at its next progress step)",
             responses=errors(404))
def cancel_job(app: State, job: str) -> dict[str, Any]:
    found = _job(app, job)
    if not found.terminal:
        app.jobs.cancel(found)
    return _job_json(found)


def _job_file(app: App, job_id: str, name: str) -> Response:
    job = _job(app, job_id)
    if job.status != "done":
        raise HTTPError(409 if not job.terminal else 404, f"job {job.id} is {job.status}; its result is not available")
    if job.output is None or name not in job.output.files:
        raise HTTPError(404, f"job {job.id} has no {name}")
    filename = job.output.info.get("filename") or f"{job.tool}.png"
    if name != "result.png":
        filename = filename.removesuffix(".png") + "_" + name
    return png_response(job.output.files[name], cache=True, filename=filename)


@router.get("/api/jobs/{job}/result.png", summary="The job's picture: the explanation over the input (or the dreamed picture)",
            response_class=PNGResponse, responses={**PNG_OK, **errors(404, 409)})
def job_result(app: State, job: str) -> Response:
    return _job_file(app, job, "result.png")


@router.get("/api/jobs/{job}/map.png", summary="The explanation's colour map alone, with its colour bar", response_class=PNGResponse,
            responses={**PNG_OK, **errors(404, 409)})
def job_map(app: State, job: str) -> Response:
    return _job_file(app, job, "map.png")


@router.get("/api/jobs/{job}/sprite.png", summary="An embedding map's thumbnails as one sprite sheet (cells as the points say)",
            response_class=PNGResponse, responses={**PNG_OK, **errors(404, 409)})
def job_sprite(app: State, job: str) -> Response:
    return _job_file(app, job, "sprite.png")


# == the schema ===========================================================================================
def extend_schema(schema: dict[str, Any], app: App) -> dict[str, Any]:
    """FastAPI's schema, completed: one ``POST /api/tools/<name>/jobs`` per registered tool (its body with the
    tool's options schema as ``#/components/schemas/options.<name>``), errors as the one JSON ``Error`` object
    (FastAPI's own validation error schema replaced: this server answers ``{"error": ..., "field": ...}``)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components["Error"] = ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    paths = schema.setdefault("paths", {})
    for tool in registry.tools():
        body, parts = job_body(tool, app.dataset_names)
        components.update(parts)
        paths[f"/api/tools/{tool.name}/jobs"] = {"post": {
            "summary": f"Run {tool.name} ({tool.family}): {tool.description}", "operationId": f"run_{tool.name}", "tags": [tool.family],
            "description": "Validated and cost-checked, then queued (one job per model at a time) -> 202 and the job.",
            "requestBody": {"required": bool(body["required"]), "content": {"application/json": {"schema": body}}},
            "responses": {"202": {"description": "the job, queued", "content": {"application/json": {"schema": {"type": "object"}}}},
                          **{str(code): {"description": reason, "content": error} for code, reason in (
                              (400, "a malformed body"), (404, "unknown tool, model or picture"),
                              (422, "an invalid field or option (named, with its range) or over the cost limit"),
                              (429, "too many jobs waiting for this model (see Retry-After)"))},
                          "default": {"description": "any other error, as JSON", "content": error}}}}
    for ops in paths.values():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            for code, answer in list(responses.items()):
                if code == "422" or (answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
                                     .endswith("HTTPValidationError")):
                    responses[code] = {"description": answer.get("description") or "invalid", "content": error}
            responses.setdefault("400", {"description": "a malformed request", "content": error})
            responses.setdefault("default", {"description": "any other error, as JSON", "content": error})
            op.setdefault("parameters", [])
    return schema
