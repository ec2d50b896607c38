"""The web app's JSON API, in-process on a free port: every endpoint, the safety checks, the tool list, forms'
options and OpenAPI paths generated from the registry (a tool registered by a test appears everywhere and
runs), requests refused before any job (422 naming the option, or the cost estimate), every registered tool
run end to end on a small model, cancellation of every tool that loops, jobs with progress over
Server-Sent Events, and a concurrent burst (nothing lost, no 500s)."""

from __future__ import annotations

import contextlib
import copy
import http.client
import io
import json
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import Field

import convscope as cs
import convscope.web as web
from conftest import shapes_zip
from convscope import engine, registry, render
from convscope.data import DATASETS
from convscope.engine import Cost
from convscope.options import PythonOnly, is_server_only
from convscope.progress import ProgressArg, tracker
from convscope.registry import CostContext, register, unregister
from convscope.web.jobs import Job
from convscope.web.tools import offered as options_specs
from convscope.web.tools import options_schema

Reply = tuple[int, dict[str, str], bytes]


# -- a tiny client ----------------------------------------------------------------------------------
def call(server: web.Server, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         host: str | None = None) -> Reply:
    """One request on a fresh connection: (status, headers, body). ``body``: bytes, or JSON-encoded."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        heads = {"Content-Type": "application/json"} if data is not None and not isinstance(body, bytes) else {}
        heads.update(headers or {})
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{server.port}")
        for key, value in heads.items():
            conn.putheader(key, value)
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def ok_json(server: web.Server, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    code, _, data = call(server, method, path, body)
    assert code == status, (code, data[:300])
    return json.loads(data)


def error_of(reply: Reply) -> str:
    """The JSON error message of a 4xx reply."""
    status, headers, data = reply
    assert 400 <= status < 500 and headers["content-type"].startswith("application/json"), (status, headers)
    message = json.loads(data)["error"]
    assert isinstance(message, str) and message and "\n" not in message
    return message


def events(server: web.Server, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The job's Server-Sent Events as (event name, data) pairs, until the stream ends."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("GET", f"/api/jobs/{job_id}/events")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    name, data = None, []
    try:
        while True:
            line = response.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                name = text[7:]
            elif text.startswith("data: "):
                data.append(text[6:])
            elif text == "" and name is not None:
                yield name, json.loads("".join(data))
                name, data = None, []
    finally:
        conn.close()


def finish(server: web.Server, job_id: str) -> dict[str, Any]:
    """Follow the job's events to its last one; that event's data."""
    last = None
    for name, data in events(server, job_id):
        last = (name, data)
    assert last is not None and last[0] in ("done", "error", "cancelled"), last
    assert last[1]["status"] == last[0]
    return last[1]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def server(lite0: cs.Model) -> Iterator[web.Server]:
    with web.make_app([lite0], port=0, max_upload_bytes=2_000_000, max_pixels=1_500_000).start() as running:
        yield running


@pytest.fixture(scope="module")
def cat_png() -> bytes:
    return png(np.asarray(cs.sample_image("cat")))


# -- throwaway tools: registered by the tests, never by convscope ---------------------------------------
Steps = Annotated[int, Field(ge=1, le=50)]
Side = Annotated[int, Field(ge=8, le=64)]
Shade = Annotated[float, Field(ge=0.0, le=1.0)]
THROWAWAY_COST = 1_000  # forwards per step: 21 steps or more are over the default limit of 20,000


def _throwaway_cost(context: CostContext) -> Cost:
    return Cost(context.options["steps"] * THROWAWAY_COST, detail=f"{context.options['steps']} steps")


def throwaway_picture(model: Any, *, steps: Steps = 3, side: Side = 16, shade: Shade = 0.5,
                      pattern: Literal["flat", "ramp"] = "ramp", hook: PythonOnly[Any] = None, folder: Path | None = None,
                      progress: ProgressArg = None) -> cs.Result:
    """A grey picture made in a few steps: a test's tool, registered only while a test runs.

    Options:
        steps: how many steps it takes (each reports progress).
        side: the picture's side in pixels.
        shade: how light the picture is, from black (0) to white (1).
        pattern: "flat" (one shade) or "ramp" (darker to the left).
        hook: a Python callable (never offered by the web).
        folder: a folder of the machine it runs on (never offered by the web).
    """
    with tracker(progress, steps, "throwaway") as bar:
        for _ in range(steps):
            bar.advance()
    ramp = torch.linspace(0.0, 1.0, side) if pattern == "ramp" else torch.ones(side)
    data = (shade * ramp).view(1, 1, 1, side).expand(1, 3, side, side).clone()
    return cs.Result(data, method="throwaway_picture", kind="picture")


def throwaway_models(models: Any, images: Any, *, note: str = "hello") -> cs.Table:
    """Names the models and the pictures it was given: a test's tool.

    Options:
        note: a word to print.
    """
    rows = [(m.name, len(images), note) for m in models]
    return cs.Table("\n".join(" ".join(map(str, r)) for r in rows), columns=("model", "pictures", "note"), rows=rows,
                    title=f"{len(rows)} models")


Limit = Annotated[int, Field(ge=1, le=10_000)]


def throwaway_dataset(model: Any, dataset: Any, *, labels: PythonOnly[Any] = None, limit: Limit = 10) -> cs.Table:
    """Counts a dataset's pictures and labels: a test's tool.

    Options:
        labels: the dataset's labels (brought by the dataset).
        limit: count at most this many pictures.
    """
    count = min(len(dataset), limit)
    known = 0 if labels is None else len(labels)
    return cs.Table(f"{count} pictures, {known} labels", columns=("pictures", "labels"), rows=[(count, known)], title="dataset")


@contextmanager
def registered(fn: Any, name: str, **how: Any) -> Iterator[registry.Tool]:
    """``fn`` registered as the tool ``name`` inside the block (one function + ``@register``)."""
    register(name, paper="a test", **how)(fn)
    try:
        yield registry.get(name)
    finally:
        unregister(name)


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` (into ``#/components/schemas/``) followed."""
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def options_of(schema: dict[str, Any], tool: str) -> dict[str, Any]:
    """The options schema in the request body of ``POST /api/tools/<tool>/jobs``."""
    body = schema["paths"][f"/api/tools/{tool}/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    options, null = body["properties"]["options"]["anyOf"]  # the options object, or null (every option at its default)
    assert null == {"type": "null"}
    return resolve(schema, options)


def flat_routes(routes: list[Any]) -> Iterator[Any]:
    """The app's routes, those of included routers too (FastAPI keeps an included router as one entry)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from flat_routes(inner.routes) if inner is not None else [route]


def job_count(server: web.Server) -> int:
    return len(ok_json(server, "GET", "/api/jobs")["jobs"])


# -- the schema and the tool list, generated from the registry --------------------------------------------
def test_openapi_schema_is_generated_from_the_route_table_and_the_registry(server: web.Server) -> None:
    schema = ok_json(server, "GET", "/api/openapi.json")
    assert schema["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    routed = {(method, route.path) for route in flat_routes(server.asgi.app.routes) for method in route.methods
              if route.path.startswith("/api/") and route.include_in_schema and method != "HEAD"}
    tools = {("POST", f"/api/tools/{t.name}/jobs") for t in registry.tools()}
    assert documented == routed | tools and len(routed) >= 20 and len(tools) >= 19
    operations = [op["operationId"] for ops in schema["paths"].values() for op in ops.values()]
    assert len(operations) == len(set(operations))
    for path, ops in schema["paths"].items():
        for op in ops.values():
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path))
            assert "400" in op["responses"] and op["summary"]
    for tool in registry.tools():  # every tool's body carries its options schema, every $ref resolves
        op = schema["paths"][f"/api/tools/{tool.name}/jobs"]["post"]
        assert op["tags"] == [tool.family] and "422" in op["responses"] and op["summary"].startswith(f"Run {tool.name}")
        options = options_of(schema, tool.name)
        assert set(options["properties"]) == set(options_schema(tool)["properties"])
        refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(op))
        assert all(ref.rsplit("/", 1)[-1] in schema["components"]["schemas"] for ref in refs)
    gradcam = schema["paths"]["/api/tools/gradcam/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(gradcam["properties"]) == {"model", "image", "target", "layer", "options"} and gradcam["required"] == ["image"]
    assert gradcam["additionalProperties"] is False
    assert {p["name"] for p in schema["paths"]["/api/models/{model}/predict"]["get"]["parameters"]} == {"model", "image", "k"}


def test_tools_come_from_the_registry(server: web.Server) -> None:
    listed = ok_json(server, "GET", "/api/tools")
    assert [t["name"] for t in listed["tools"]] == [t.name for t in registry.tools()]
    assert listed["families"] == registry.FAMILIES and listed["takes"] == registry.TAKES
    assert [d["name"] for d in listed["datasets"]] == list(DATASETS)
    for tool, entry in zip(registry.tools(), listed["tools"]):
        specs = [s for s in tool.option_specs() if not is_server_only(s.schema)]  # no paths on the server, no cluster options
        assert all(s.name not in ("engine", "address", "actors", "out", "save_explanations") for s in specs), tool.name
        assert entry["options"] == json.loads(json.dumps([s.as_json() for s in specs]))  # tuples come as lists
        assert entry["options_schema"] == json.loads(json.dumps(options_schema(tool)))
        assert set(entry["options_schema"]["properties"]) == {s.name for s in specs}
        for key in ("family", "group", "takes", "returns", "paper", "uses_layer", "uses_target", "loops"):
            assert entry[key] == getattr(tool, key), (tool.name, key)
        assert (entry["layer"] is not None) == tool.uses_layer  # what a layer must give and the default, for the page
        if tool.uses_layer:
            assert entry["layer"]["needs"] in ("maps", "conv", "output") and entry["layer"]["default"]
            cam_users = ("audit", "robustness", "class_regions", "explain_dataset")  # tools whose maps come from a CAM method
            assert entry["layer"]["cam"] == (tool.group == "cam" or tool.name in cam_users)
        assert entry["summary"] == tool.description and "(B, " not in entry["summary"]  # for a person: no tensor shapes
        assert entry["jobs"] == f"/api/tools/{tool.name}/jobs" and "options" not in entry["inputs"]
        assert ok_json(server, "GET", f"/api/tools/{tool.name}") == entry
    scorecam = {o["name"]: o for o in ok_json(server, "GET", "/api/tools/scorecam")["options"]}
    assert scorecam["top_channels"]["minimum"] == 1 and scorecam["top_channels"]["range"] and scorecam["top_channels"]["help"]
    assert scorecam["precision"]["choices"] == ["fp32", "bf16"] and scorecam["precision"]["default"] == "fp32"
    assert all(o["name"] not in ("progress", "target", "layer") for t in listed["tools"] for o in t["options"])
    assert call(server, "GET", "/api/methods")[0] == 404  # the hand-kept list is gone


def test_a_tool_registered_after_the_server_started_is_listed_documented_and_runs(server: web.Server) -> None:
    before = job_count(server)
    with registered(throwaway_picture, "web_throwaway", family="features", takes="model", returns="picture",
                    cost=_throwaway_cost, quick={"steps": 1}) as tool:
        entry = ok_json(server, "GET", "/api/tools/web_throwaway")
        assert entry["family"] == "features" and entry["loops"] and entry["inputs"] == ["model"]
        assert entry["summary"] == "A grey picture made in a few steps: a test's tool, registered only while a test runs."
        options = {o["name"]: o for o in entry["options"]}
        assert list(options) == ["steps", "side", "shade", "pattern"]  # neither the Python-only hook nor a server path
        assert options["steps"]["range"] == "1 to 50" and options["steps"]["default"] == 3 and options["steps"]["kind"] == "int"
        assert options["shade"]["minimum"] == 0 and options["shade"]["maximum"] == 1 and "light" in options["shade"]["help"]
        assert options["pattern"]["choices"] == ["flat", "ramp"]
        assert "web_throwaway" in [t["name"] for t in ok_json(server, "GET", "/api/tools")["tools"]]
        schema = ok_json(server, "GET", "/api/openapi.json")
        documented = options_of(schema, "web_throwaway")
        assert documented["properties"]["steps"]["maximum"] == 50 and documented["properties"]["pattern"]["enum"] == ["flat", "ramp"]
        assert documented["properties"] == {k: v for k, v in tool.options_schema()["properties"].items() if k != "folder"}
        job = ok_json(server, "POST", "/api/tools/web_throwaway/jobs", {"options": {"steps": 4, "side": 24, "shade": 1.0}}, status=202)
        done = finish(server, job["id"])
        assert done["status"] == "done" and done["tool"] == "web_throwaway" and done["progress"] == {
            "done": 4, "total": 4, "what": "throwaway", "fraction": 1.0}
        expected = throwaway_picture(None, steps=4, side=24, shade=1.0)
        assert done["result"]["kind"] == "picture" and done["result"]["caption"] == render.caption(expected)
        assert call(server, "GET", done["urls"]["result"])[2] == render.to_png(expected)
        assert decode(render.to_png(expected)).shape == (24, 24, 3) and "map" not in done["urls"]
        for name, value in (("hook", "print"), ("folder", "/etc")):
            refused = call(server, "POST", "/api/tools/web_throwaway/jobs", {"options": {name: value}})
            assert refused[0] == 422 and f"no option {name!r} in the web app" in error_of(refused)
    assert job_count(server) == before + 1
    assert call(server, "GET", "/api/tools/web_throwaway")[0] == 404
    assert "/api/tools/web_throwaway/jobs" not in ok_json(server, "GET", "/api/openapi.json")["paths"]
    gone = call(server, "POST", "/api/tools/web_throwaway/jobs", {})
    assert gone[0] == 404 and "unknown tool" in error_of(gone)


# -- refused before 202: no job is created -----------------------------------------------------------------
@pytest.mark.parametrize(("tool", "body", "field", "words", "details"), [
    ("scorecam", {"options": {"top_channels": 0}}, "top_channels", "out of range", {"minimum": 1, "allowed": "1 to 100,000"}),
    ("scorecam", {"options": {"top_channels": 10**9}}, "top_channels", "out of range", {"maximum": 100_000}),
    ("scorecam", {"options": {"top_channels": True}}, "top_channels", "bool", {}),
    ("scorecam", {"options": {"batch_size": 2.5}}, "batch_size", "batch_size", {}),
    ("gradcam", {"options": {"precision": "fp8"}}, "precision", "not one of", {"choices": ["fp32", "bf16"], "default": "fp32"}),
    ("gradcam", {"options": {"relux": True}}, "relux", "did you mean 'relu'", {}),
    ("gradcam", {"options": {"relu": "maybe"}}, "relu", "relu", {}),
    ("gradcam", {"options": [1]}, "options", "JSON object", {}),
    ("gradcam", {"options": {"progress": True}}, "progress", "no option", {}),
    ("gradcam", {"layer": "_blocks.99"}, "layer", "unknown layer", {}),
    ("gradcam", {"target": 1000}, "target", "0..999", {"maximum": 999}),
    ("gradcam", {"target": "cat"}, "target", "class index", {}),
    ("gradcam", {"target": True}, "target", "class index", {}),
    ("gradcam", {"dataset": "digits"}, "dataset", "takes no 'dataset'", {}),
    ("gradcam", {"image": None}, "image", "needs 'image'", {}),
])
def test_an_invalid_request_is_422_naming_the_field_before_any_job(server: web.Server, tool: str, body: dict[str, Any], field: str,
                                                                   words: str, details: dict[str, Any]) -> None:
    before = job_count(server)
    reply = call(server, "POST", f"/api/tools/{tool}/jobs", {"image": "sample-cat", **body})
    assert reply[0] == 422, (reply[0], reply[2][:300])
    answer = json.loads(reply[2])
    assert words in error_of(reply) and answer["field"] == field
    assert answer["in"] == ("options" if field not in ("layer", "target", "dataset", "image", "options") else "body")
    for key, value in details.items():
        assert answer[key] == value, (key, answer)
    assert job_count(server) == before


def test_over_the_cost_limit_is_refused_before_202_with_the_estimate(server: web.Server) -> None:
    before = job_count(server)
    reply = call(server, "POST", "/api/tools/occlusion/jobs", {"image": "sample-cat", "options": {"window": 2, "stride": 1}})
    if reply[0] == 202:  # not refused: stop the hours-long job before failing, so the other tests still run
        call(server, "POST", f"/api/jobs/{json.loads(reply[2])['id']}/cancel")
    assert reply[0] == 422 and "forward passes" in error_of(reply)
    answer = json.loads(reply[2])
    assert answer["estimate"]["forwards"] > answer["limit"]["max_forwards"] == engine.DEFAULT_MAX_FORWARDS
    assert answer["field"] is None and answer["estimate"]["forwards"] >= 223 * 223
    with registered(throwaway_picture, "web_throwaway", family="features", takes="model", returns="picture", cost=_throwaway_cost):
        over = call(server, "POST", "/api/tools/web_throwaway/jobs", {"options": {"steps": 21}})
        assert over[0] == 422 and json.loads(over[2])["estimate"] == {"forwards": 21_000, "memory": 0, "detail": "21 steps",
                                                                     "per_item": False}
        assert "21,000 forward passes" in error_of(over) and "20,000" in error_of(over)
        assert call(server, "POST", "/api/tools/web_throwaway/jobs", {"options": {"steps": 20}})[0] == 202
    assert job_count(server) == before + 1


def test_the_server_has_its_own_cost_limit(lite0: cs.Model) -> None:
    with web.make_app([lite0], port=0, max_forwards=50).start() as server:
        cheap = call(server, "POST", "/api/tools/gradcam/jobs", {"image": "sample-cat"})
        assert cheap[0] == 202
        assert finish(server, json.loads(cheap[2])["id"])["status"] == "done"
        costly = call(server, "POST", "/api/tools/occlusion/jobs", {"image": "sample-cat", "options": {"window": 0.25, "stride": 0.0625}})
        assert costly[0] == 422 and json.loads(costly[2])["limit"]["max_forwards"] == 50
        assert job_count(server) == 1


# -- every registered tool through the API, on a small model ---------------------------------------------
@pytest.fixture(scope="module")
def small_server() -> Iterator[web.Server]:
    with web.make_app([cs.load_model("shapes_biased")], port=0).start() as running:
        yield running


def _quick_body(tool: registry.Tool) -> dict[str, Any]:
    """A job body running ``tool`` with its quick options on the sample cat or the shapes dataset; a required
    option quick leaves out gets its minimum (numbers) or its schema's first example."""
    body: dict[str, Any] = {"options": dict(tool.quick)}
    for spec in options_specs(tool):
        if spec.required and spec.name not in tool.quick:
            examples = [e for member in spec.schema.get("anyOf") or [spec.schema] for e in member.get("examples", [])]
            if {"int", "float"} & set(spec.kind.split("|")):
                body["options"][spec.name] = spec.minimum if spec.minimum is not None else 0
            elif examples:
                body["options"][spec.name] = examples[0]
            else:  # the registration's gap, not the web's: the run is reported, and runs once quick fills it
                pytest.xfail(f"{tool.name}: its quick options give no value for its required option {spec.name!r}: add one to its "
                             "quick options (the page's 'quick options' fill the form with them) or give the option examples")
    if tool.takes == "model" and tool.uses_target:  # a class to draw (the page sends the chosen class)
        body["target"] = 1
    if tool.takes in ("images", "image", "models"):
        body["image"] = "sample-cat"
    if tool.takes == "dataset":
        body["dataset"] = "shapes"
    return body


@pytest.mark.parametrize("name", [t.name for t in registry.tools()], ids=[f"{t.family}-{t.name}" for t in registry.tools()])
def test_every_registered_tool_runs_through_the_api(small_server: web.Server, name: str) -> None:
    tool = registry.get(name)
    job = ok_json(small_server, "POST", f"/api/tools/{name}/jobs", _quick_body(tool), status=202)
    done = finish(small_server, job["id"])
    assert done["status"] == "done", done["error"]
    result = done["result"]
    assert result["kind"] in render.kinds() and result["caption"] and result["text"]  # tool.returns, or another kind for some options
    status, headers, data = call(small_server, "GET", done["urls"]["result"])
    assert status == 200 and headers["content-type"] == "image/png"
    picture = decode(data)
    assert picture.ndim == 3 and min(picture.shape[:2]) >= 8 and picture.std() > 0  # a picture, not a blank
    assert ("map" in done["urls"]) == (result["kind"] in ("map", "pixels"))


def _hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
               for m in module.modules())


@pytest.mark.parametrize("name", [t.name for t in registry.tools() if t.loops], ids=[t.name for t in registry.tools() if t.loops])
def test_every_tool_that_loops_stops_at_its_next_progress_step_after_a_cancel(small_server: web.Server, name: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's progress callback raises Cancelled once cancelled: here the cancel comes with the first step."""
    copy_ = small_server.app.job_model("shapes_biased").module
    state = (_hooks(copy_), [m.training for m in copy_.modules()], [p.requires_grad for p in copy_.parameters()])
    original, calls = Job.progress, []

    def cancel_at_first_step(job: Job, done: int, total: int, what: str) -> None:
        calls.append((done, total))
        if done >= 1:
            small_server.app.jobs.cancel(job)
        original(job, done, total, what)  # raises Cancelled once cancelled

    monkeypatch.setattr(Job, "progress", cancel_at_first_step)
    job = ok_json(small_server, "POST", f"/api/tools/{name}/jobs", _quick_body(registry.get(name)), status=202)
    final = finish(small_server, job["id"])
    assert final["status"] == "cancelled", f"{name} ran to the end without reporting progress: {final['status']} {final['error']}"
    assert final["cancel_requested"] and sum(done >= 1 for done, _ in calls) == 1  # Cancelled went through: no step after it
    assert (_hooks(copy_), [m.training for m in copy_.modules()], [p.requires_grad for p in copy_.parameters()]) == state
    assert all(p.grad is None for p in copy_.parameters())


def test_tools_taking_several_models_or_a_dataset_get_them_from_the_server(lite0: cs.Model) -> None:
    shapes = cs.load_model("shapes_biased")
    with registered(throwaway_models, "web_models", family="workflow", takes="models", returns="table"), \
            registered(throwaway_dataset, "web_dataset", family="embedding", takes="dataset", returns="table"), \
            web.make_app([shapes, lite0], port=0).start() as server:
        tools = {t["name"]: t for t in ok_json(server, "GET", "/api/tools")["tools"]}
        assert tools["web_models"]["inputs"] == ["models", "image"] and tools["web_dataset"]["inputs"] == ["model", "dataset"]
        assert [o["name"] for o in tools["web_dataset"]["options"]] == ["limit"]  # labels come with the dataset
        every = finish(server, ok_json(server, "POST", "/api/tools/web_models/jobs", {"image": "sample-cat"}, status=202)["id"])
        assert every["status"] == "done" and every["models"] == ["shapes_biased", "efficientnet_lite0"]
        assert every["result"]["text"] == "shapes_biased 1 hello\nefficientnet_lite0 1 hello" and every["result"]["kind"] == "table"
        one = ok_json(server, "POST", "/api/tools/web_models/jobs", {"image": "sample-cat", "models": ["efficientnet_lite0"],
                                                                     "options": {"note": "hi"}}, status=202)
        assert finish(server, one["id"])["result"]["text"] == "efficientnet_lite0 1 hi" and one["model"] == "efficientnet_lite0"
        unknown = call(server, "POST", "/api/tools/web_models/jobs", {"image": "sample-cat", "models": ["vgg"]})
        assert unknown[0] == 404 and "unknown model" in error_of(unknown)
        assert call(server, "POST", "/api/tools/web_models/jobs", {"image": "sample-cat", "models": []})[0] == 422
        counted = ok_json(server, "POST", "/api/tools/web_dataset/jobs", {"dataset": "shapes", "options": {"limit": 1000}}, status=202)
        assert finish(server, counted["id"])["result"]["text"] == "400 pictures, 400 labels"  # the dataset's labels, passed on
        for body, words in [({}, "needs 'dataset'"), ({"dataset": "/etc"}, "one of digits"), ({"dataset": "shapes", "image": "sample-cat"},
                                                                                            "takes no 'image'")]:
            reply = call(server, "POST", "/api/tools/web_dataset/jobs", body)
            assert reply[0] == 422 and words in error_of(reply), reply
        paths = call(server, "POST", "/api/tools/web_dataset/jobs", {"dataset": "shapes", "options": {"labels": ["a"]}})
        assert paths[0] == 422 and "no option 'labels'" in error_of(paths)  # python-only: not from the web


# -- pictures ----------------------------------------------------------------------------------------
def test_upload_raw_and_multipart_then_predict(server: web.Server, lite0: cs.Model, cat_png: bytes) -> None:
    status, _, data = call(server, "POST", "/api/images", cat_png, {"Content-Type": "image/png"})
    assert status == 201
    raw = json.loads(data)
    assert re.fullmatch(r"[0-9a-f]{16}", raw["id"]) and (raw["width"], raw["height"]) == (451, 300)
    boundary = "----convscope-test"
    jpeg = io.BytesIO()
    cs.sample_image("coffee").save(jpeg, format="JPEG", quality=90)
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/passwd.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + jpeg.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    status, _, data = call(server, "POST", "/api/images", form, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 201
    multi = json.loads(data)
    assert "/" not in multi["name"] and multi["name"].endswith("passwd.jpg")  # shown as text, never used as a path
    # the API's top-5 equals the library's on the same bytes
    top = ok_json(server, "GET", f"/api/models/efficientnet_lite0/predict?image={raw['id']}")["top"]
    expected = lite0.predict(lite0.preprocess(cs.load_image(cat_png)), k=5)[0]
    assert [t["index"] for t in top] == [p.index for p in expected]
    assert np.allclose([t["probability"] for t in top], [p.probability for p in expected], atol=1e-6)
    coffee = ok_json(server, "GET", f"/api/models/efficientnet_lite0/predict?image={multi['id']}&k=1")["top"]
    assert coffee[0]["label"] == "espresso"
    assert np.array_equal(decode(call(server, "GET", multi["url"])[2]), np.asarray(cs.load_image(jpeg.getvalue())))  # byte-exact
    # pictures come back as PNG, the sample ids work everywhere an id does
    status, headers, data = call(server, "GET", f"/api/images/{raw['id']}.png")
    assert status == 200 and headers["content-type"] == "image/png"
    assert np.array_equal(decode(data), np.asarray(cs.sample_image("cat")))
    assert decode(call(server, "GET", f"/api/images/{raw['id']}.png?size=100")[2]).shape == (67, 100, 3)
    samples = ok_json(server, "GET", "/api/samples")["samples"]
    assert [s["name"] for s in samples] == ["cat", "coffee", "astronaut", "rocket"]
    assert ok_json(server, "GET", "/api/images/sample-rocket")["height"] == 427
    crop = decode(call(server, "GET", f"/api/models/efficientnet_lite0/input.png?image={raw['id']}")[2])
    assert crop.shape == (224, 224, 3)


def test_upload_limits_and_formats(lite0: cs.Model, cat_png: bytes) -> None:
    small = np.zeros((40, 50, 3), np.uint8)
    with web.make_app([lite0], port=0, max_upload_bytes=60_000, max_pixels=100 * 100, max_images=2).start() as server:
        too_big = call(server, "POST", "/api/images", cat_png, {"Content-Type": "image/png"})
        assert too_big[0] == 413 and "limit" in error_of(too_big)
        many_pixels = call(server, "POST", "/api/images", png(np.zeros((120, 120, 3), np.uint8)), {"Content-Type": "image/png"})
        assert many_pixels[0] == 413 and "pixels" in error_of(many_pixels)
        for data, kind in [(b"hello, not a picture", "image/png"), (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
                           (b"%!PS-Adobe-3.0 EPSF-3.0\n", "application/octet-stream"), (png(small), "text/plain")]:
            reply = call(server, "POST", "/api/images", data, {"Content-Type": kind})
            assert reply[0] == 415, reply
            error_of(reply)
        broken = call(server, "POST", "/api/images", png(small)[:60], {"Content-Type": "image/png"})
        assert broken[0] == 400 and "the upload" in error_of(broken)
        assert call(server, "POST", "/api/images", b"", {"Content-Type": "image/png"})[0] == 400
        # pictures are kept in memory, least recently used first out
        ids = [json.loads(call(server, "POST", "/api/images", png(small + i), {"Content-Type": "image/png"})[2])["id"] for i in range(3)]
        assert call(server, "GET", f"/api/images/{ids[0]}")[0] == 404
        assert all(call(server, "GET", f"/api/images/{i}")[0] == 200 for i in ids[1:])
        assert ok_json(server, "GET", "/api/models")["models"]  # still serving


# -- safety --------------------------------------------------------------------------------------------
def test_binds_localhost_and_rejects_foreign_hosts_and_origins(server: web.Server) -> None:
    assert server.socket.getsockname()[0] == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}/"
    assert server.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # no 40 ms delayed-ACK stall on keep-alive
    with pytest.raises(ValueError, match="allow_remote"):
        web.make_app(port=0, host="0.0.0.0")
    port = server.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1.nip.io", "", f"localhost.evil:{port}"):
        reply = call(server, "GET", "/api/models", host=host)
        assert reply[0] == 421, host
        assert "Host" in error_of(reply)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST", f"LocalHost:{port}"):
        assert call(server, "GET", "/api/samples", host=host)[0] == 200, host
    body = {"image": "sample-cat"}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": f"http://127.0.0.1:{port + 1}"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://localhost"}, {"Origin": f"https://127.0.0.1:{port}"},
                    {"Origin": f"http://localhost:{port}"}):  # only the exact origin the page is served from (Host: 127.0.0.1:port)
        reply = call(server, "POST", "/api/tools/gradcam/jobs", body, headers)
        assert reply[0] == 403, headers
        error_of(reply)
    malformed = call(server, "POST", "/api/tools/gradcam/jobs", body, {"Origin": "http://[::1"})
    assert malformed[0] == 400 and "Origin" in error_of(malformed)
    same = call(server, "POST", "/api/tools/gradcam/jobs", body, {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"})
    assert same[0] == 202
    finish(server, json.loads(same[2])["id"])
    status, headers, page = call(server, "GET", "/")
    assert status == 200 and b'id="layer-tree"' in page and "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"


def test_the_page_loads_nothing_from_the_network_and_inserts_no_html(server: web.Server) -> None:
    page = call(server, "GET", "/")[2].decode()
    scripts = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert scripts and all(s.startswith(("/static/", "/api/", "data:")) for s in scripts)
    for name in ("app.js", "app.css"):
        status, headers, text = call(server, "GET", f"/static/{name}")
        assert status == 200 and ("javascript" in headers["content-type"] or "css" in headers["content-type"])
        assert not re.search(r"https?://", text.decode())
    code = call(server, "GET", "/static/app.js")[2].decode()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", code)
    for path in ("/static/server.py", "/static/..%2fserver.py", "/static/../api.py", "/static/%2e%2e%2fapi.py", "/static/app.js.map"):
        reply = call(server, "GET", path)
        assert reply[0] == 404, path


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), [
    ("GET", "/api/models/resnet9/layers", None, 404, "unknown model"),
    ("GET", "/api/models/efficientnet_lite0/layers/_blocks.99/feature_maps?image=sample-cat", None, 404, "unknown layer"),
    ("GET", "/api/models/efficientnet_lite0/layers/_conv_haed/filters", None, 404, "_conv_head"),
    ("GET", "/api/models/efficientnet_lite0/layers/_fc/feature_maps?image=sample-cat", None, 400, "not a feature map"),
    ("GET", "/api/models/efficientnet_lite0/layers/_swish/feature_maps?image=sample-cat", None, 400, "_swish@0"),
    ("GET", "/api/models/efficientnet_lite0/layers/_bn0/filters", None, 400, "no convolution filters"),
    ("GET", "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps?image=sample-cat&page=99", None, 404, "page 99"),
    ("GET", "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps/40.png?image=sample-cat", None, 404, "channel"),
    ("GET", "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps?image=sample-cat&per_page=x", None, 422, "integer"),
    ("GET", "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps?image=sample-cat&order=worst", None, 422, "order"),
    ("GET", "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps", None, 422, "image"),
    ("GET", "/api/models/efficientnet_lite0/predict?image=0123456789abcdef", None, 404, "unknown image"),
    ("GET", "/api/models/efficientnet_lite0/predict?image=sample-dog", None, 404, "unknown sample"),
    ("GET", "/api/models/efficientnet_lite0/predict?image=sample-cat&k=0", None, 422, "greater than or equal to 1"),
    ("GET", "/api/models/efficientnet_lite0/classes/1000", None, 404, "unknown class"),
    ("GET", "/api/models/efficientnet_lite0/classes/-1", None, 404, "unknown class"),
    ("GET", "/api/jobs/feedfacefeedface", None, 404, "unknown job"),
    ("GET", "/api/jobs/feedfacefeedface/result.png", None, 404, "unknown job"),
    ("POST", "/api/jobs/feedfacefeedface/cancel", {}, 404, "unknown job"),
    ("GET", "/api/nothing", None, 404, "no such endpoint"),
    ("DELETE", "/api/models", None, 405, "GET"),
    ("POST", "/api/tools/gradcam/jobs", b"{not json", 400, "JSON"),
    ("POST", "/api/tools/gradcam/jobs", [], 400, "JSON object"),
    ("POST", "/api/tools/gradcm/jobs", {"image": "sample-cat"}, 404, "gradcam"),
    ("GET", "/api/tools/gradcm", None, 404, "did you mean"),
    ("GET", "/api/tools/gradcam/jobs", None, 405, "POST"),
    ("POST", "/api/jobs", {"image": "sample-cat", "tool": "gradcam"}, 405, "GET"),
    ("POST", "/api/tools/gradcam/jobs", {"image": "nope"}, 404, "unknown image"),
    ("POST", "/api/tools/gradcam/jobs", {"image": "sample-cat", "model": "vgg"}, 404, "unknown model"),
])
def test_bad_requests_get_a_json_4xx_never_a_500(server: web.Server, method: str, path: str, body: Any, status: int,
                                                 words: str) -> None:
    reply = call(server, method, path, body)
    assert reply[0] == status, (reply[0], reply[2][:300])
    assert words in error_of(reply)
    assert call(server, "GET", "/api/samples")[0] == 200  # and the server keeps serving


def read_all(raw: socket.socket) -> bytes:
    """What the server sends until it closes the connection (or 10 s pass)."""
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := raw.recv(65536):
            data += chunk
    return data


def test_the_server_survives_garbage_and_stalled_connections(server: web.Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:  # even a protocol error is answered in JSON
        raw.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")
        answer = read_all(raw)
        assert answer.startswith(b"HTTP/1.1 400") and b"application/json" in answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("malformed HTTP request")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:  # a body that never comes
        raw.sendall(f"POST /api/tools/gradcam/jobs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Length: 999\r\n\r\n{{".encode())
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:  # chunked: the limit holds while reading
        raw.sendall(f"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: image/png\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"\x89PNG\r\n\x1a\n" + b"x" * 100_000
        with contextlib.suppress(OSError):  # the server may answer and close before all of it is sent
            for _ in range(22):  # 2.2 MB, over the 2 MB limit, and never the last chunk: the answer cannot wait for the end
                raw.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        answer = read_all(raw)
        assert answer.startswith(b"HTTP/1.1 413")
        assert "limit" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    reply = call(server, "POST", "/api/tools/gradcam/jobs", b"x" * 70_000)
    assert reply[0] == 413 and "limit" in error_of(reply)
    assert ok_json(server, "GET", "/api/models")["default"] == "efficientnet_lite0"


def test_keep_alive_connections_survive_errors(server: web.Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        steps = [("GET", "/api/samples", None, 200), ("GET", "/api/nothing", None, 404),
                 ("POST", "/api/nothing", b'{"a": 1}', 404), ("POST", "/api/tools/gradcam/jobs", b'{"image": 3}', 422),
                 ("GET", "/api/models", None, 200)]
        for method, path, body, status in steps:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            response = conn.getresponse()
            data = response.read()
            assert response.status == status, (path, data)
            assert json.loads(data)
    finally:
        conn.close()


# -- feature maps and filters ----------------------------------------------------------------------------
def _independent_activation(model: cs.Model, x: torch.Tensor, index: int) -> torch.Tensor:
    """_blocks[index]'s output from a plain forward hook on a private copy of the model."""
    module = copy.deepcopy(model.module).eval()
    seen: list[torch.Tensor] = []
    module._blocks[index].register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    with torch.no_grad():
        module(x)
    return seen[0][0]


def test_feature_maps_top_channels_first_paged(server: web.Server, lite0: cs.Model) -> None:
    acts = _independent_activation(lite0, lite0.preprocess(cs.sample_image("cat")), 3)  # (40, 28, 28)
    means = acts.mean(dim=(1, 2))
    base = "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps?image=sample-cat&per_page=8"
    pages = [ok_json(server, "GET", f"{base}&page={p}") for p in range(5)]
    assert pages[0]["shape"] == [40, 28, 28] and pages[0]["pages"] == 5
    ranked = [item["channel"] for page in pages for item in page["items"]]
    assert sorted(ranked) == list(range(40))
    assert ranked[:8] == means.argsort(descending=True)[:8].tolist()
    got = torch.tensor([item["mean"] for page in pages for item in page["items"]])
    assert torch.allclose(got, means[ranked], atol=1e-4, rtol=1e-4)
    by_index = ok_json(server, "GET", f"{base}&order=index&page=1")
    assert [item["channel"] for item in by_index["items"]] == list(range(8, 16))
    top = ranked[0]
    status, headers, data = call(server, "GET", pages[0]["items"][0]["url"])
    assert status == 200 and headers["content-type"] == "image/png"
    assert headers["content-disposition"] == f'inline; filename="cat__blocks.3_channel{top}.png"'
    picture = decode(data)
    # coloured as the library draws feature maps: each channel relative to its own peak, on the layer's scale
    # (this block's output has negative values: the diverging map, 0 = white)
    scale = render.features.maps_scale(acts)
    assert scale.signed and pages[0]["scale"]["signed"] and "0 (white)" in pages[0]["scale"]["text"]
    expected = scale.colours(render.scale.relative(acts[top], True))
    assert picture.shape == (28, 28, 3) and np.abs(picture.astype(int) - expected.astype(int)).max() <= 1
    zero = np.unravel_index(int(acts[top].abs().argmin()), (28, 28))
    assert picture[zero].min() > 200  # ~0 is (near) white
    assert pages[0]["items"][0]["min"] == pytest.approx(float(acts[top].min()), abs=1e-4)
    legend = decode(call(server, "GET", pages[0]["scale"]["legend"])[2])
    assert legend.shape[0] == 160 and legend.shape[1] > 20
    grid = decode(call(server, "GET", pages[0]["grid"])[2])
    height = 2 + 1 * (84 + 2)  # 8 maps of 28 px, 3x, in one row, then its colour bar (enlarged to be readable)
    assert grid.shape[0] % height == 0 and grid.shape[1] > (2 + 8 * (84 + 2)) * grid.shape[0] // height
    stem = ok_json(server, "GET", "/api/models/efficientnet_lite0/layers/_swish%400/feature_maps?image=sample-cat&per_page=256")
    assert stem["layer"] == "_swish@0" and stem["shape"] == [32, 112, 112] and len(stem["items"]) == 32


def test_filters(server: web.Server, lite0: cs.Model) -> None:
    first = ok_json(server, "GET", "/api/models/efficientnet_lite0/layers/_conv_stem/filters")
    assert first["shape"] == [32, 3, 3, 3] and first["kind"] == "rgb" and first["pages"] == 1
    grid = decode(call(server, "GET", first["grid"])[2])
    scale = 40 // 3  # each 3x3 kernel is drawn 13x larger, 16 per row
    assert grid.shape == (2 + 2 * (3 * scale + 2), 2 + 16 * (3 * scale + 2), 3)
    w = lite0.module._conv_stem.weight.detach()
    for k in (0, 17):
        row, col = divmod(k, 16)
        top, left = 2 + row * (3 * scale + 2), 2 + col * (3 * scale + 2)
        expected = ((0.5 + 0.5 * w[k] / w[k].abs().max()).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(grid[top:top + 3 * scale:scale, left:left + 3 * scale:scale], expected)
    depthwise = ok_json(server, "GET", "/api/models/efficientnet_lite0/layers/_blocks.3._depthwise_conv/filters?per_page=100")
    assert depthwise["shape"] == [144, 1, 5, 5] and depthwise["kind"] == "gray" and depthwise["pages"] == 2
    pointwise = ok_json(server, "GET", "/api/models/efficientnet_lite0/layers/_blocks.3._project_conv/filters")
    assert pointwise["shape"] == [40, 144, 1, 1] and pointwise["kind"] == "matrix"
    matrix = decode(call(server, "GET", pointwise["grid"])[2])
    assert matrix.shape[0] == 40 * 4 and matrix.shape[1] > 144 * 4 + 40  # the (filters x inputs) matrix, 4x, and its colour bar
    w = lite0.module._blocks[3]._project_conv.weight.detach()[:, :, 0, 0]
    scale = render.scale.scale_of(w, signed=True)
    assert np.abs(matrix[::4, :144 * 4:4].astype(int) - scale.colours(w).astype(int)).max() <= 1  # red > 0 > blue, 0 white
    rows = pointwise["rows"]
    assert [r["filter"] for r in rows] == list(range(40)) and len(rows[0]["strongest"]) == 6
    first = rows[0]["strongest"][0]
    assert first["input"] == int(w[0].abs().argmax()) and abs(first["weight"] - float(w[0, first["input"]])) < 1e-5
    assert abs(rows[0]["norm"] - float(w[0].norm())) < 1e-5 and 1 <= rows[0]["inputs_for_90_percent"] <= 144
    assert first["weight"] != 0 and depthwise["rows"] is None


# -- jobs -----------------------------------------------------------------------------------------------
def test_a_gradcam_job_gives_the_librarys_picture(server: web.Server, lite0: cs.Model) -> None:
    job = ok_json(server, "POST", "/api/tools/gradcam/jobs", {"image": "sample-cat", "target": 281, "layer": "_blocks.15",
                                                              "options": {"relu": True}}, status=202)
    assert job["status"] in ("queued", "running", "done") and job["urls"]["events"].endswith("/events")
    assert job["tool"] == "gradcam" and job["options"] == {"relu": True} and job["layer"] == "_blocks.15"
    final = finish(server, job["id"])
    assert final["status"] == "done", final
    expected = cs.gradcam(lite0, lite0.preprocess(cs.sample_image("cat")), target=281, layer="_blocks.15")
    result = final["result"]
    assert result["label"] == "tabby" and result["target"] == 281 and result["layer"] == "_blocks.15" and result["kind"] == "map"
    assert result["caption"] == render.caption(expected) and "tabby" in result["caption"] and result["text"] == render.text(expected)
    assert ok_json(server, "GET", f"/api/jobs/{job['id']}")["status"] == "done"
    assert np.array_equal(decode(call(server, "GET", final["urls"]["result"])[2]), decode(render.to_png(expected)))
    alone = decode(call(server, "GET", final["urls"]["map"])[2])  # the map alone and its colour bar
    assert alone.shape[0] == 224 and alone.shape[1] > 224 + 60
    assert np.array_equal(alone[:, :224], render.result_map(expected, 0))
    assert result["scale"].startswith("activation x gradient: 0 to ")
    assert job["id"] in [j["id"] for j in ok_json(server, "GET", "/api/jobs")["jobs"]]


def test_long_jobs_report_progress_queue_per_model_and_cancel(server: web.Server) -> None:
    long = ok_json(server, "POST", "/api/tools/occlusion/jobs", {"image": "sample-cat", "options": {"window": 0.1, "stride": 0.05,
                                                                                                     "batch_size": 8}}, status=202)
    queued = ok_json(server, "POST", "/api/tools/saliency/jobs", {"image": "sample-coffee"}, status=202)
    stream = events(server, long["id"])
    name, data = next(stream)
    while not (name == "progress" and data["status"] == "running" and data["progress"]["done"] >= 8):
        name, data = next(stream)
    progress = data["progress"]
    assert progress["what"] == "occlusion" and progress["total"] > progress["done"] > 0
    assert ok_json(server, "GET", f"/api/jobs/{queued['id']}")["status"] == "queued"  # one job per model at a time
    cancelled = ok_json(server, "POST", f"/api/jobs/{queued['id']}/cancel")
    assert cancelled["status"] == "cancelled"  # a queued job stops at once
    asked = time.perf_counter()
    ok_json(server, "POST", f"/api/jobs/{long['id']}/cancel")
    for name, data in stream:  # noqa: B007 - the last event is the one that counts
        pass
    assert time.perf_counter() - asked < 5  # honoured at the next step (a batch of 8 windows), not at the end
    assert name == "cancelled" and data["status"] == "cancelled" and data["progress"]["done"] < data["progress"]["total"]
    reply = call(server, "GET", f"/api/jobs/{long['id']}/result.png")
    assert reply[0] == 404 and "cancelled" in error_of(reply)
    after = ok_json(server, "POST", "/api/tools/saliency/jobs", {"image": "sample-cat"}, status=202)
    assert finish(server, after["id"])["status"] == "done"  # the worker carries on


def test_a_concurrent_burst_loses_nothing(server: web.Server) -> None:
    def one(i: int) -> tuple[str, int, Any]:
        kind = ("predict", "explain", "layers", "maps")[i % 4]
        image = ("sample-cat", "sample-coffee", "sample-astronaut")[i % 3]
        if kind == "predict":
            status, _, data = call(server, "GET", f"/api/models/efficientnet_lite0/predict?image={image}")
        elif kind == "explain":
            tool = ("gradcam", "saliency", "eigencam")[i % 3]
            status, _, data = call(server, "POST", f"/api/tools/{tool}/jobs", {"image": image})
        elif kind == "layers":
            status, _, data = call(server, "GET", "/api/models/efficientnet_lite0/layers")
        else:
            status, _, data = call(server, "GET", f"/api/models/efficientnet_lite0/layers/_blocks.{i % 16}/feature_maps?image={image}")
        return kind, status, json.loads(data)

    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(one, range(32)))
    assert [status for _, status, _ in replies if status >= 300] == []
    jobs = [body["id"] for kind, _, body in replies if kind == "explain"]
    assert len(jobs) == 8 and len(set(jobs)) == 8
    assert all(body["top"][0]["label"] for kind, _, body in replies if kind == "predict")
    deadline = time.time() + 120
    while time.time() < deadline:
        states = [ok_json(server, "GET", f"/api/jobs/{j}")["status"] for j in jobs]
        if all(s == "done" for s in states):
            break
        assert "error" not in states and "cancelled" not in states
        time.sleep(0.3)
    assert all(call(server, "GET", f"/api/jobs/{j}/result.png")[0] == 200 for j in jobs)


def test_several_models_each_with_its_own_queue(lite0: cs.Model, model_factory: Any) -> None:
    resnet = model_factory("resnet18")
    with web.make_app([lite0, resnet, resnet], port=0).start() as server:
        models = ok_json(server, "GET", "/api/models")["models"]
        assert [m["id"] for m in models] == ["efficientnet_lite0", "resnet18", "resnet18-2"]
        rows = {r["name"] for r in ok_json(server, "GET", "/api/models/resnet18/layers")["layers"]}
        assert {"layer1.0.relu@0", "layer1.0.relu@1", "layer4", "layer4.1.conv2", "fc"} <= rows
        job = ok_json(server, "POST", "/api/tools/gradcam/jobs", {"model": "resnet18", "image": "sample-cat", "target": 3}, status=202)
        done = finish(server, job["id"])
        assert done["status"] == "done" and done["model"] == "resnet18" and done["result"]["layer"] == "layer4"
        assert done["result"]["label"] == "tiger shark"
        with pytest.raises(cs.ConvscopeError, match="another port"):
            web.make_app([lite0], port=server.port)


# -- datasets: uploaded as a zip of pictures and masks, or a folder given on the command line ------------------
def test_an_uploaded_zip_of_pictures_and_masks_is_audited() -> None:
    shapes = cs.load_model("shapes_biased")
    data, labels = shapes_zip(shapes, 48)
    with web.make_app([shapes], port=0).start() as server:
        status, _, body = call(server, "POST", "/api/datasets", data, {"Content-Type": "application/zip"})
        assert status == 201, body
        upload = json.loads(body)
        assert upload["name"].startswith("upload-") and upload["pictures"] == 48 and upload["masks"]
        assert upload["labels"] == sorted(set(labels)) == ["circle", "square"]
        listed = ok_json(server, "GET", "/api/datasets")["datasets"]
        assert [d["name"] for d in listed] == [*DATASETS, upload["name"]]
        assert upload["name"] in [d["name"] for d in ok_json(server, "GET", "/api/tools")["datasets"]]
        job = ok_json(server, "POST", "/api/tools/audit/jobs", {"dataset": upload["name"], "options": {"swaps": 8}}, status=202)
        done = finish(server, job["id"])
        assert done["status"] == "done", done["error"]
        # the same audit in Python on the same pictures and masks: the web ran it on the upload, labels and masks included
        pictures = [Image.open(io.BytesIO(zipfile.ZipFile(io.BytesIO(data)).read(n))).convert("RGB")
                    for n in sorted(n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if "/masks/" not in n and n.endswith(".png")
                                    and not n.startswith("__"))]
        sorted_labels = [n.split("/")[1] for n in sorted(n for n in zipfile.ZipFile(io.BytesIO(data)).namelist()
                                                         if "/masks/" not in n and n.endswith(".png") and not n.startswith("__"))]
        _, brought = server.app.dataset("shapes_biased", upload["name"])
        expected = cs.audit(shapes, pictures, labels=sorted_labels, regions=brought["regions"], swaps=8)
        assert done["result"]["text"] == render.text(expected)
        assert expected.flagged.mean() > 0.5  # the biased model looks at the background: the audit says so
        unmasked = json.loads(call(server, "POST", "/api/datasets", shapes_zip(shapes, 4, masks=False)[0],
                                   {"Content-Type": "application/zip"})[2])
        assert not unmasked["masks"] and "no masks" in unmasked["description"]
        clustered = ok_json(server, "POST", "/api/tools/audit/jobs", {"dataset": unmasked["name"]}, status=202)
        done = finish(server, clustered["id"])  # without masks: each class's explanations clustered (SpRAy)
        assert done["status"] == "done", done["error"]
        assert done["result"]["kind"] == "strategy_audit" and "verdict" in done["result"]["text"]
        embedded = ok_json(server, "POST", "/api/tools/embed/jobs", {"dataset": unmasked["name"], "options": {"projection": "pca"}},
                           status=202)
        points = finish(server, embedded["id"])["result"]["points"]
        assert points["count"] == 4 and {p["label"] for p in points["points"]} <= {"circle", "square"}
        for body, kind, status, words in [(b"PK not a zip", "application/zip", 400, "not a zip"),
                                          (b"hello", "text/plain", 415, "zip"),
                                          (_zip_of({"a.txt": b"x"}), "application/zip", 400, "no pictures"),
                                          (_zip_of({"a.png": b"\x89PNG\r\n\x1a\nbroken"}), "application/zip", 400, "a.png")]:
            reply = call(server, "POST", "/api/datasets", body, {"Content-Type": kind})
            assert reply[0] == status and words in error_of(reply), reply


def _zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_while_unpacking() -> None:
    with web.make_app([cs.load_model("shapes_biased")], port=0, max_upload_bytes=1_000_000).start() as server:
        bomb = _zip_of({"big.png": b"\x89PNG\r\n\x1a\n" + bytes(50_000_000)})  # 50 MB of zeros: ~50 kB zipped
        assert len(bomb) < 200_000
        started = time.perf_counter()
        reply = call(server, "POST", "/api/datasets", bomb, {"Content-Type": "application/zip"})
        assert reply[0] == 413 and "over the limit" in error_of(reply)
        assert time.perf_counter() - started < 30
        assert ok_json(server, "GET", "/api/samples")["samples"]


def test_a_folder_given_on_the_command_line_is_the_dataset_data(tmp_path: Path) -> None:
    from conftest import digit_folder

    folder = digit_folder(tmp_path / "digits", count=30)
    with web.make_app(["digits_cnn"], port=0, data=folder).start() as server:
        names = [d["name"] for d in ok_json(server, "GET", "/api/tools")["datasets"]]
        assert names == [*DATASETS, "data"]
        job = ok_json(server, "POST", "/api/tools/embed/jobs", {"dataset": "data", "options": {"projection": "pca"}}, status=202)
        done = finish(server, job["id"])
        assert done["status"] == "done" and done["result"]["points"]["count"] == 30
        sprite = decode(call(server, "GET", done["urls"]["sprite"])[2])
        columns, size = done["result"]["points"]["columns"], done["result"]["points"]["size"]
        assert sprite.shape[1] == columns * size and sprite.shape[0] >= 30 // columns * size
        by_label = {p["label"] for p in done["result"]["points"]["points"]}
        assert by_label == {str(d) for d in range(10)} & by_label and len(by_label) >= 5
        assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in done["result"]["points"]["points"])
        refused = call(server, "POST", "/api/tools/embed/jobs", {"dataset": str(folder)})
        assert refused[0] == 422  # the page never sends paths: only the name "data"
    with pytest.raises(cs.ConvscopeError, match="not a folder"):
        web.make_app(["digits_cnn"], port=0, data=tmp_path / "nowhere")


class Slow(torch.nn.Module):
    """A model of 40 layers that each wait until the test lets them go: a forward pass as long as the test wants."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Identity() for _ in range(40))
        self.gate = threading.Semaphore(0)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            self.gate.acquire()
            self.calls += 1
            x = layer(x)
        return x.flatten(1)[:, :3]


def throwaway_slow(model: Any) -> cs.Table:
    """One long forward pass with no progress steps: a test's tool.

    Options:
    """
    with torch.no_grad():
        model(torch.zeros(1, 3, 8, 8))
    return cs.Table("ran", columns=("a",), rows=[("ran",)], title="slow")


def test_a_cancel_stops_a_job_between_two_layers_of_one_forward_pass() -> None:
    """A tool with no progress steps (or one long step) is still stopped by a cancel: at the next module the model
    calls, by a global forward pre-hook that only acts in the job's thread and is gone after the job."""
    slow = Slow()
    model = cs.Model(slow, input_size=(8, 8), name="slow")
    with registered(throwaway_slow, "web_slow", family="features", takes="model", returns="table"), \
            web.make_app([model], port=0).start() as server:
        job = ok_json(server, "POST", "/api/tools/web_slow/jobs", {}, status=202)
        worker = server.app.job_model("slow").module
        for _ in range(5):  # let five layers run
            worker.gate.release()
        deadline = time.time() + 30
        while worker.calls < 5 and time.time() < deadline:
            time.sleep(0.01)
        assert ok_json(server, "GET", f"/api/jobs/{job['id']}")["status"] == "running" and worker.calls == 5
        ok_json(server, "POST", f"/api/jobs/{job['id']}/cancel")
        worker.gate.release()  # the sixth layer finishes; the seventh is never called
        final = finish(server, job["id"])
        assert final["status"] == "cancelled" and worker.calls == 6
        for _ in range(40):
            worker.gate.release()
        assert not torch.nn.modules.module._global_forward_pre_hooks  # the hook is gone with the job
        again = ok_json(server, "POST", "/api/tools/web_slow/jobs", {}, status=202)
        assert finish(server, again["id"])["status"] == "done"  # and the next job runs to its end


def test_multipart_uploads_are_parsed_as_they_stream_with_bounded_parts(lite0: cs.Model, cat_png: bytes) -> None:
    """python-multipart's streaming parser: thousands of tiny parts are refused at the ninth, a part over the limit
    while it streams in; the picture is found among a few fields."""
    boundary = "----convscope-parts"
    with web.make_app([lite0], port=0, max_upload_bytes=200_000).start() as server:
        many = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n" for i in range(2_500))
        body = (many + f"--{boundary}--\r\n").encode()
        assert 100_000 < len(body) < 200_000  # under the size limit: refused for its parts, at the ninth
        reply = call(server, "POST", "/api/images", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert reply[0] == 400 and "more than 8 parts" in error_of(reply)
        big = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
               "Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG\r\n\x1a\n" + bytes(300_000) + f"\r\n--{boundary}--\r\n".encode()
        reply = call(server, "POST", "/api/images", big, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert reply[0] == 413 and "limit" in error_of(reply)
        small = png(np.asarray(cs.sample_image("cat").resize((60, 40))))
        fields = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
                  f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cat.png\"\r\nContent-Type: image/png\r\n\r\n"
                  ).encode() + small + f"\r\n--{boundary}--\r\n".encode()
        status, _, data = call(server, "POST", "/api/images", fields, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status == 201 and json.loads(data)["name"] == "cat.png" and json.loads(data)["width"] == 60
        for kind in ("multipart/form-data", f"multipart/form-data; boundary={'b' * 300}"):
            reply = call(server, "POST", "/api/images", fields, {"Content-Type": kind})
            assert reply[0] == 400 and "boundary" in error_of(reply)
