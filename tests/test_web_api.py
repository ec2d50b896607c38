"""The web app's JSON API, in-process on a free port: every endpoint, the safety checks, jobs with
progress and cancellation over Server-Sent Events, and a concurrent burst (nothing lost, no 500s)."""

from __future__ import annotations

import copy
import http.client
import io
import json
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import convscope as cs
import convscope.web as web
from convscope import render
from convscope.web.server import ROUTES

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


# -- the schema --------------------------------------------------------------------------------------
def test_openapi_schema_is_generated_from_the_route_table(server: web.Server) -> None:
    schema = ok_json(server, "GET", "/api/openapi.json")
    assert schema["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    routed = {(r.method, r.path) for r in ROUTES if r.path.startswith("/api/")}
    assert documented == routed and len(routed) >= 20
    for path, ops in schema["paths"].items():
        for op in ops.values():
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path))
            assert "400" in op["responses"] and op["summary"]
    job = schema["paths"]["/api/jobs"]["post"]
    assert set(job["requestBody"]["content"]["application/json"]["schema"]["properties"]) >= {"image", "method", "target", "layer"}
    assert {p["name"] for p in schema["paths"]["/api/models/{model}/predict"]["get"]["parameters"]} == {"model", "image", "k"}


# -- models, layers, classes, methods -------------------------------------------------------------------
def test_models_layers_and_classes(server: web.Server, lite0: cs.Model) -> None:
    (model,) = ok_json(server, "GET", "/api/models")["models"]
    assert model["id"] == "efficientnet_lite0" and model["classes"] == 1000 and model["input_size"] == [224, 224]
    assert model["params"] == sum(p.numel() for p in lite0.module.parameters()) and model["default_cam_layer"] == "_swish@1"
    layers = ok_json(server, "GET", "/api/models/efficientnet_lite0/layers")["layers"]
    rows = {r["name"]: r for r in layers}
    for info in cs.layers(lite0):  # every leaf of cs.layers, with its shape and parameters
        assert rows[info.name]["output_shape"] == list(info.output_shape) and rows[info.name]["params"] == info.params
    block = rows["_blocks.3"]  # a container: its output and all its parameters
    assert block["output_shape"] == [40, 28, 28] and not block["leaf"] and block["maps"]
    assert block["params"] == sum(p.numel() for p in lite0.module._blocks[3].parameters())
    assert rows["_blocks"]["ran"] is False and rows["_fc"]["maps"] is False and rows["_conv_stem"]["filters"] is True
    assert "_swish@0" in rows and "_swish" not in rows  # a shared module is named per call
    found = ok_json(server, "GET", "/api/models/efficientnet_lite0/classes?q=TABBY")["classes"]
    assert found == [{"index": 281, "label": "tabby"}]
    assert ok_json(server, "GET", "/api/models/efficientnet_lite0/classes?q=281")["classes"][0]["label"] == "tabby"
    assert ok_json(server, "GET", "/api/models/efficientnet_lite0/classes?limit=3")["classes"][2]["index"] == 2
    assert ok_json(server, "GET", "/api/models/efficientnet_lite0/classes/504")["label"] == "coffee mug"
    status, _, text = call(server, "GET", "/api/models/efficientnet_lite0/summary")
    assert status == 200 and text.decode() == cs.summary(lite0)


def test_methods_come_from_the_registry(server: web.Server) -> None:
    listed = {m["name"]: m for m in ok_json(server, "GET", "/api/methods")["methods"]}
    for info in cs.methods():
        entry = listed[info.name]
        expected = [s.as_json() for s in info.option_specs() if s.name != "progress"]
        assert entry["options"] == expected and entry["family"] == info.family and entry["summary"] == info.summary
        assert entry["long"] == ("progress" in info.options)
    assert {"dream", "maximize", "class_image"} <= set(listed)
    assert all(o["name"] != "progress" for m in listed.values() for o in m["options"])
    assert listed["occlusion"]["long"] and not listed["gradcam"]["long"]


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
    assert server.httpd.server_address[0] == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}/"
    with pytest.raises(ValueError, match="allow_remote"):
        web.make_app(port=0, host="0.0.0.0")
    port = server.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1.nip.io", "", f"localhost.evil:{port}"):
        reply = call(server, "GET", "/api/models", host=host)
        assert reply[0] == 421, host
        assert "Host" in error_of(reply)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST", f"LocalHost:{port}"):
        assert call(server, "GET", "/api/samples", host=host)[0] == 200, host
    body = {"image": "sample-cat", "method": "gradcam"}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": f"http://127.0.0.1:{port + 1}"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):
        reply = call(server, "POST", "/api/jobs", body, headers)
        assert reply[0] == 403, headers
        error_of(reply)
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
    ("GET", "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps?image=sample-cat&per_page=x", None, 400, "integer"),
    ("GET", "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps?image=sample-cat&order=worst", None, 400, "order"),
    ("GET", "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps", None, 400, "image"),
    ("GET", "/api/models/efficientnet_lite0/predict?image=0123456789abcdef", None, 404, "unknown image"),
    ("GET", "/api/models/efficientnet_lite0/predict?image=sample-dog", None, 404, "unknown sample"),
    ("GET", "/api/models/efficientnet_lite0/predict?image=sample-cat&k=0", None, 400, ">= 1"),
    ("GET", "/api/models/efficientnet_lite0/classes/1000", None, 404, "unknown class"),
    ("GET", "/api/models/efficientnet_lite0/classes/-1", None, 404, "unknown class"),
    ("GET", "/api/jobs/feedfacefeedface", None, 404, "unknown job"),
    ("GET", "/api/jobs/feedfacefeedface/result.png", None, 404, "unknown job"),
    ("POST", "/api/jobs/feedfacefeedface/cancel", {}, 404, "unknown job"),
    ("GET", "/api/nothing", None, 404, "no such endpoint"),
    ("DELETE", "/api/models", None, 405, "GET"),
    ("POST", "/api/jobs", b"{not json", 400, "JSON"),
    ("POST", "/api/jobs", [], 400, "JSON object"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcm"}, 404, "gradcam"),
    ("POST", "/api/jobs", {"image": "sample-cat"}, 400, "method"),
    ("POST", "/api/jobs", {"image": "nope", "method": "gradcam"}, 404, "unknown image"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "model": "vgg"}, 404, "unknown model"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "target": 1000}, 400, "0..999"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "target": "cat"}, 400, "class index"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "target": True}, 400, "class index"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "layer": "_blocks.99"}, 400, "unknown layer"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "options": {"relux": True}}, 400, "no option 'relux'"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "options": {"relu": "yes"}}, 400, "not a valid bool"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "options": {"precision": "fp8"}}, 400, "choose one of"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "integrated_gradients", "options": {"steps": 2.5}}, 400, "not a valid int"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "smoothgrad", "options": {"sigma": "NaN"}}, 400, "not a valid float"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "options": {"progress": True}}, 400, "no option"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "maximize"}, 400, "needs a layer"),
    ("POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "options": [1]}, 400, "JSON object"),
])
def test_bad_requests_get_a_json_4xx_never_a_500(server: web.Server, method: str, path: str, body: Any, status: int,
                                                 words: str) -> None:
    reply = call(server, method, path, body)
    assert reply[0] == status, (reply[0], reply[2][:300])
    assert words in error_of(reply)
    assert call(server, "GET", "/api/samples")[0] == 200  # and the server keeps serving


def test_the_server_survives_garbage_and_stalled_connections(server: web.Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")
        raw.recv(1024)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:  # a body that never comes
        raw.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Length: 999\r\n\r\n{{".encode())
    chunked = call(server, "POST", "/api/images", None, {"Transfer-Encoding": "chunked", "Content-Type": "image/png"})
    assert chunked[0] == 411
    reply = call(server, "POST", "/api/jobs", b"x" * 70_000)
    assert reply[0] == 413 and "limit" in error_of(reply)
    assert ok_json(server, "GET", "/api/models")["default"] == "efficientnet_lite0"


def test_keep_alive_connections_survive_errors(server: web.Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        steps = [("GET", "/api/samples", None, 200), ("GET", "/api/nothing", None, 404),
                 ("POST", "/api/nothing", b'{"a": 1}', 404), ("POST", "/api/jobs", b'{"image": 3}', 400),
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
    picture = decode(data)
    expected = render.colorize(render.normalize(acts[top], "minmax"), "viridis")
    assert picture.shape == (28, 28, 3) and np.abs(picture.astype(int) - expected.astype(int)).max() <= 1
    grid = decode(call(server, "GET", pages[0]["grid"])[2])
    assert grid.shape == (2 + 1 * (84 + 2), 2 + 8 * (84 + 2), 3)  # 8 maps of 28 px, 3x, in one row
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
    assert matrix.shape == (40 * 4, 144 * 4, 3)


# -- jobs -----------------------------------------------------------------------------------------------
def test_a_gradcam_job_gives_the_librarys_overlay(server: web.Server, lite0: cs.Model) -> None:
    job = ok_json(server, "POST", "/api/jobs", {"image": "sample-cat", "method": "gradcam", "target": 281,
                                                "layer": "_blocks.15", "options": {"relu": True}}, status=202)
    assert job["status"] in ("queued", "running", "done") and job["urls"]["events"].endswith("/events")
    final = finish(server, job["id"])
    assert final["status"] == "done", final
    assert final["result"]["label"] == "tabby" and final["result"]["target"] == 281 and final["result"]["layer"] == "_blocks.15"
    assert ok_json(server, "GET", f"/api/jobs/{job['id']}")["status"] == "done"
    expected = cs.gradcam(lite0, lite0.preprocess(cs.sample_image("cat")), target=281, layer="_blocks.15")
    overlay = decode(call(server, "GET", final["urls"]["result"])[2])
    assert np.array_equal(overlay, expected.overlay(0))
    heat = decode(call(server, "GET", final["urls"]["map"])[2])
    assert np.array_equal(heat, render.result_map(expected, 0))
    assert job["id"] in [j["id"] for j in ok_json(server, "GET", "/api/jobs")["jobs"]]


def test_long_jobs_report_progress_queue_per_model_and_cancel(server: web.Server) -> None:
    long = ok_json(server, "POST", "/api/jobs", {"image": "sample-cat", "method": "occlusion",
                                                 "options": {"window": 0.1, "stride": 0.05, "batch_size": 8}}, status=202)
    queued = ok_json(server, "POST", "/api/jobs", {"image": "sample-coffee", "method": "saliency"}, status=202)
    stream = events(server, long["id"])
    name, data = next(stream)
    while not (name == "progress" and data["status"] == "running" and data["progress"]["done"] >= 8):
        name, data = next(stream)
    progress = data["progress"]
    assert progress["what"] == "occlusion" and progress["total"] > progress["done"] > 0
    assert ok_json(server, "GET", f"/api/jobs/{queued['id']}")["status"] == "queued"  # one job per model at a time
    cancelled = ok_json(server, "POST", f"/api/jobs/{queued['id']}/cancel")
    assert cancelled["status"] == "cancelled"  # a queued job stops at once
    ok_json(server, "POST", f"/api/jobs/{long['id']}/cancel")
    for name, data in stream:  # noqa: B007 - the last event is the one that counts
        pass
    assert name == "cancelled" and data["status"] == "cancelled" and data["progress"]["done"] < data["progress"]["total"]
    reply = call(server, "GET", f"/api/jobs/{long['id']}/result.png")
    assert reply[0] == 404 and "cancelled" in error_of(reply)
    after = ok_json(server, "POST", "/api/jobs", {"image": "sample-cat", "method": "saliency"}, status=202)
    assert finish(server, after["id"])["status"] == "done"  # the worker carries on


def test_feature_visualization_jobs(server: web.Server) -> None:
    dream = ok_json(server, "POST", "/api/jobs", {"image": "sample-cat", "method": "dream", "layer": "_blocks.5",
                                                  "options": {"octaves": 1, "steps": 2, "size": 64}}, status=202)
    done = finish(server, dream["id"])
    assert done["status"] == "done" and done["result"]["layer"] == "_blocks.5" and done["progress"]["total"] == 2
    picture = decode(call(server, "GET", done["urls"]["result"])[2])
    assert picture.shape == (43, 64, 3)  # the cat photo, 451x300, dreamed at 64 px
    image = ok_json(server, "POST", "/api/jobs", {"image": "sample-cat", "method": "class_image", "target": 281,
                                                  "options": {"steps": 2, "size": 32}}, status=202)
    done = finish(server, image["id"])
    assert done["status"] == "done" and done["result"]["label"] == "tabby" and 0 <= done["result"]["probability"] <= 1
    assert decode(call(server, "GET", done["urls"]["result"])[2]).shape == (32, 32, 3)
    channels = ok_json(server, "POST", "/api/jobs", {"image": "sample-cat", "method": "maximize", "layer": "_blocks.5",
                                                     "options": {"channel": "0-1", "steps": 2, "size": 32}}, status=202)
    done = finish(server, channels["id"])
    assert done["status"] == "done" and done["result"]["shape"] == [2, 3, 32, 32]
    bad = ok_json(server, "POST", "/api/jobs", {"image": "sample-cat", "method": "maximize", "layer": "_blocks.5",
                                                "options": {"channel": "x", "steps": 2, "size": 32}}, status=202)
    failed = finish(server, bad["id"])
    assert failed["status"] == "error" and "objective" in failed["error"]  # the library's message, on the job


def test_a_concurrent_burst_loses_nothing(server: web.Server) -> None:
    def one(i: int) -> tuple[str, int, Any]:
        kind = ("predict", "explain", "layers", "maps")[i % 4]
        image = ("sample-cat", "sample-coffee", "sample-astronaut")[i % 3]
        if kind == "predict":
            status, _, data = call(server, "GET", f"/api/models/efficientnet_lite0/predict?image={image}")
        elif kind == "explain":
            method = ("gradcam", "saliency", "eigencam")[i % 3]
            status, _, data = call(server, "POST", "/api/jobs", {"image": image, "method": method})
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
        job = ok_json(server, "POST", "/api/jobs", {"model": "resnet18", "image": "sample-cat", "method": "gradcam", "target": 3},
                      status=202)
        done = finish(server, job["id"])
        assert done["status"] == "done" and done["model"] == "resnet18" and done["result"]["layer"] == "layer4"
        assert done["result"]["label"] == "tiger shark"
        with pytest.raises(cs.ConvscopeError, match="another port"):
            web.make_app([lite0], port=server.port)
