"""The web API fuzzed from its own OpenAPI schema, and the inputs that once gave a 500, on 127.0.0.1.

Part one: schemathesis generates requests for every operation of ``/api/openapi.json`` — the fixed endpoints and
one ``POST /api/tools/<name>/jobs`` per registered tool — valid ones and invalid ones (wrong types, missing fields,
out-of-range numbers, odd strings), and every answer must be no 5xx, a documented status code and content type,
and a body that matches the documented schema (errors: the one JSON ``Error`` object) with the security headers.
Path, query and body fields named ``model``, ``image``, ``layer``, ``channel``, ``index`` and ``job`` draw real ids
most of the time (schemathesis dictionaries), so requests get past the 404s to the code behind them. Bounded and
reproducible: ``EXAMPLES`` derandomized examples per operation on two tiny models with a low cost limit
(``max_forwards``), so a fuzzed job is cheap or refused; the queue is short, so many answers are 429.

Part two: explicit requests, most written byte by byte on a socket (an HTTP client refuses to send them): odd
digits, huge integers, many query fields, deep JSON, malformed and foreign origins, protocol garbage, uploads over
the limit or in thousands of parts. Each must be a JSON 4xx, and the server must keep serving.

Server bugs this file found, all fixed: a lone surrogate escape answered 500, an empty body and ``"options": null``
against the schema, the event stream's schema, and a request head over the limit answered by a TCP reset instead of
its JSON 400 (the connection now closes gently: the answer first, the rest of the request drained).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

import convscope as cs
import convscope.web as web

MODELS = ("shapes_biased", "digits_cnn")  # tiny CNNs: 64x64 and 32x32 pictures
EXAMPLES = 12  # per operation (plus schemathesis' deterministic coverage cases): ~70 operations, ~60 s on 2 cores
UPLOAD_LIMIT = 100_000  # bytes: small, so the upload tests need little data
SUPERSCRIPT = "²"  # "²".isdigit() is True and int("²") raises: the hand-written server answered 500

Answer = tuple[int, dict[str, str], bytes]


def start_server() -> web.Server:
    return web.make_app([cs.load_model(name) for name in MODELS], port=0, max_forwards=200, max_queued=4,
                        max_upload_bytes=UPLOAD_LIMIT).start()


@pytest.fixture(scope="module")
def fuzzed_server() -> Iterator[web.Server]:
    with start_server() as running:
        yield running


@pytest.fixture(scope="module")
def server() -> Iterator[web.Server]:
    """A second server for the explicit cases: the fuzz's queued jobs do not fill its queue."""
    with start_server() as running:
        yield running


# -- a client that sends what it is given --------------------------------------------------------------------
def call(server: web.Server, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    """One request on a fresh connection with ``Host: 127.0.0.1:<port>``; ``body``: bytes as they are, else JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers={**sent, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def exchange(server: web.Server, head: bytes, *body: bytes, timeout: float = 10) -> Answer:
    """Bytes written as they are (``head``, then each part of ``body``), and the first answer as http.client reads
    it (by its Content-Length, chunks or the close): an answer that comes while the client still owes the rest of
    its body is seen. No answer within ``timeout`` seconds fails the test."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as raw:
        with contextlib.suppress(OSError):  # the server may answer and close before all of it is sent
            raw.sendall(head)
            for part in body:
                raw.sendall(part)
        response = http.client.HTTPResponse(raw)
        try:
            response.begin()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        except TimeoutError:
            pytest.fail(f"no answer within {timeout} s")
        finally:
            response.close()


def request_head(server: web.Server, first_line: str, *headers: str) -> bytes:
    """A request head with this server's Host header first (unless ``headers`` bring their own)."""
    host = [] if any(h.lower().startswith("host:") for h in headers) else [f"Host: 127.0.0.1:{server.port}"]
    return "\r\n".join([first_line, *host, *headers, "", ""]).encode("utf-8")


def json_error(answer: Answer, *statuses: int) -> str:
    """The one-line message of a JSON error answer whose status is one of ``statuses``."""
    status, headers, body = answer
    assert status in statuses, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    message = json.loads(body)["error"]
    assert isinstance(message, str) and message and "\n" not in message
    return message


def still_serving(server: web.Server) -> None:
    status, _, body = call(server, "GET", "/api/samples")
    assert status == 200 and json.loads(body)["samples"]


def wait_for(server: web.Server, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(call(server, "GET", f"/api/jobs/{job_id}")[2])
        if state["status"] in ("done", "error", "cancelled"):
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)


def multipart_head(server: web.Server, *headers: str) -> bytes:
    return request_head(server, "POST /api/images HTTP/1.1", "Content-Type: multipart/form-data; boundary=fuzzfuzz", *headers)


def file_part(size: int) -> bytes:
    return (b'--fuzzfuzz\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
            + b"\x89PNG\r\n\x1a\n" + b"x" * size + b"\r\n--fuzzfuzz--\r\n")


def chunked(data: bytes, size: int = 16_384) -> list[bytes]:
    """``data`` in HTTP/1.1 chunks, without the last (empty) chunk: the body never ends."""
    return [f"{len(data[i:i + size]):x}\r\n".encode() + data[i:i + size] + b"\r\n" for i in range(0, len(data), size)]


# -- part one: every operation, from the schema ----------------------------------------------------------------
def answered_safely(ctx: Any, response: Any, case: Any) -> None:
    """Every answer carries the security headers; every error is JSON with a one-line 'error'."""
    headers = {k.lower(): v for k, v in response.headers.items()}
    for name in ("content-security-policy", "x-content-type-options", "x-frame-options"):
        assert name in headers, f"{case.operation.label}: no {name} header"
    if response.status_code >= 400:
        assert response.headers["content-type"][0].startswith("application/json"), response.headers
        message = json.loads(response.content)["error"]
        assert isinstance(message, str) and message and "\n" not in message, message


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, answered_safely]


def finished_jobs(server: web.Server) -> list[str]:
    """A done Grad-CAM job (result.png, map.png) and a done embedding map (sprite.png): ids the fuzz may use."""
    ids = [json.loads(call(server, "POST", path, body)[2])["id"] for path, body in
           [("/api/tools/gradcam/jobs", {"image": "sample-cat"}), ("/api/tools/embed/jobs", {"dataset": "shapes"})]]
    for job in ids:
        assert wait_for(server, job)["status"] == "done"
    return ids


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: web.Server) -> Any:
    layers = [layer.name for layer in cs.layers(cs.load_model(MODELS[0]))]  # both models have the same layer names
    real = {"models": list(MODELS), "images": ["sample-cat", "sample-coffee"], "layers": layers, "small": ["0", "1", "3"],
            "jobs": finished_jobs(fuzzed_server)}
    uses = {"path.model": "models", "body.model": "models", "path.image": "images", "query.image": "images",
            "body.image": "images", "path.layer": "layers", "body.layer": "layers", "path.channel": "small",
            "path.index": "small", "path.job": "jobs"}
    config = SchemathesisConfig.from_dict({
        "dictionaries": {name: {"values": values} for name, values in real.items()},
        "parameters": {key: {"dictionary": name, "probability": 0.7} for key, name in uses.items()},
    })
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}api/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case: Any, fuzzed_server: web.Server) -> None:
    case.call_and_validate(checks=CHECKS, timeout=60)


def test_after_the_fuzz_every_job_ends_and_the_server_still_serves(fuzzed_server: web.Server) -> None:
    for job in json.loads(call(fuzzed_server, "GET", "/api/jobs")[2])["jobs"]:
        if job["status"] in ("queued", "running"):
            assert call(fuzzed_server, "POST", f"/api/jobs/{job['id']}/cancel", {})[0] in (200, 409)
    for job in json.loads(call(fuzzed_server, "GET", "/api/jobs")[2])["jobs"]:
        assert wait_for(fuzzed_server, job["id"])["status"] in ("done", "error", "cancelled")
    still_serving(fuzzed_server)


def test_the_schema_documents_every_tool_and_json_errors_everywhere(server: web.Server) -> None:
    document = json.loads(call(server, "GET", "/api/openapi.json")[2])
    assert {f"/api/tools/{tool.name}/jobs" for tool in cs.registry.tools()} <= set(document["paths"])
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "default" in responses, (method, path)
            for code, answer in responses.items():
                if code == "default" or code.startswith(("4", "5")):
                    assert answer["content"]["application/json"]["schema"] == error, (method, path, code)


def test_a_body_the_schema_requires_is_required(server: web.Server) -> None:
    document = json.loads(call(server, "GET", "/api/openapi.json")[2])
    accepted = []
    for tool in ("summary", "filters"):
        operation = document["paths"][f"/api/tools/{tool}/jobs"]["post"]
        status, _, body = call(server, "POST", f"/api/tools/{tool}/jobs", b"", {"Content-Type": "application/json"})
        if status == 202:
            wait_for(server, json.loads(body)["id"])
            if operation["requestBody"].get("required"):
                accepted.append(tool)
    assert not accepted, f"empty bodies accepted although the schema requires one: {accepted}"


def test_options_null_is_as_the_schema_says(server: web.Server) -> None:
    document = json.loads(call(server, "GET", "/api/openapi.json")[2])
    body = document["paths"]["/api/tools/gradcam/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    nullable = "null" in json.dumps(body["properties"]["options"])
    answer = call(server, "POST", "/api/tools/gradcam/jobs", {"image": "sample-cat", "options": None})
    if answer[0] == 202:
        wait_for(server, json.loads(answer[2])["id"])
    assert nullable == (answer[0] == 202), (answer[0], body["properties"]["options"])


def test_job_events_match_their_schema(server: web.Server) -> None:
    loaded = schemathesis.openapi.from_url(f"{server.url}api/openapi.json")
    job = json.loads(call(server, "POST", "/api/tools/gradcam/jobs", {"image": "sample-cat"})[2])["id"]
    wait_for(server, job)
    case = loaded["/api/jobs/{job}/events"]["GET"].Case(path_parameters={"job": job})
    case.call_and_validate(checks=[response_schema_conformance], timeout=60)


# -- part two: the inputs that gave a 500 on the hand-written server ----------------------------------------------
@pytest.mark.parametrize("index", [SUPERSCRIPT, "%C2%B2"], ids=["raw-utf8", "percent-encoded"])
def test_a_superscript_digit_as_a_class_index_is_a_json_4xx(server: web.Server, index: str) -> None:
    answer = exchange(server, request_head(server, f"GET /api/models/shapes_biased/classes/{index} HTTP/1.1"))
    json_error(answer, 400, 404)  # raw UTF-8 in the request line: refused by the HTTP parser; encoded: no such class
    still_serving(server)


@pytest.mark.parametrize("channel", [SUPERSCRIPT, "%C2%B2"], ids=["raw-utf8", "percent-encoded"])
def test_a_superscript_digit_as_a_channel_is_a_json_4xx(server: web.Server, channel: str) -> None:
    path = f"/api/models/shapes_biased/layers/block1.0/feature_maps/{channel}.png?image=sample-cat"
    json_error(exchange(server, request_head(server, f"GET {path} HTTP/1.1")), 400, 404)
    still_serving(server)


def test_a_superscript_digit_in_content_length_is_a_json_400(server: web.Server) -> None:
    head = request_head(server, "POST /api/tools/gradcam/jobs HTTP/1.1", "Content-Type: application/json",
                        f"Content-Length: {SUPERSCRIPT}")
    json_error(exchange(server, head, b'{"image": "sample-cat"}'), 400)
    still_serving(server)


def test_a_superscript_digit_in_the_host_port_is_a_json_421(server: web.Server) -> None:
    answer = exchange(server, request_head(server, "GET /api/samples HTTP/1.1", f"Host: 127.0.0.1:{SUPERSCRIPT}"))
    assert "Host" in json_error(answer, 421)
    still_serving(server)


@pytest.mark.parametrize(("path", "status"), [
    ("/api/models/shapes_biased/classes/" + "9" * 5000, 404),
    ("/api/models/shapes_biased/layers/block1.0/feature_maps/" + "9" * 5000 + ".png?image=sample-cat", 404),
    ("/api/models/shapes_biased/predict?image=sample-cat&k=" + "9" * 5000, 422),
    ("/api/images/sample-cat.png?size=" + "9" * 5000, 422),
], ids=["class-index", "channel", "query-k", "query-size"])
def test_an_integer_over_4300_digits_in_the_url_is_a_json_4xx(server: web.Server, path: str, status: int) -> None:
    json_error(call(server, "GET", path), status)
    still_serving(server)


@pytest.mark.parametrize("body", [
    b'{"image": "sample-cat", "target": 1' + b"0" * 5000 + b"}",
    b'{"image": "sample-cat", "options": {"relu": 1' + b"0" * 5000 + b"}}",
    b'{"image": "sample-cat", "target": 1' + b"0" * 5000 + b".5}",  # a float that long is fine for Python: 422
], ids=["target", "option", "float"])
def test_an_integer_over_4300_digits_in_the_body_is_a_json_4xx(server: web.Server, body: bytes) -> None:
    json_error(call(server, "POST", "/api/tools/gradcam/jobs", body), 400, 422)
    still_serving(server)


@pytest.mark.parametrize(("path", "status"), [
    ("/api/models/shapes_biased/classes?" + "&".join(f"f{i}=x" for i in range(200)), 200),  # unknown fields: ignored
    ("/api/models/shapes_biased/classes?" + "&".join(f"q={i}" for i in range(200)), 200),  # one field, 200 values
    ("/api/models/shapes_biased/predict?" + "&".join(f"f{i}=x" for i in range(200)), 422),  # and no 'image'
    ("/api/models/shapes_biased/predict?image=sample-cat&" + "&".join(f"k={i % 5 + 1}" for i in range(60)), 200),
], ids=["unknown-fields", "repeated-field", "missing-field", "repeated-k"])
def test_more_than_50_query_fields_are_never_a_500(server: web.Server, path: str, status: int) -> None:
    answer = call(server, "GET", path)
    if status >= 400:
        json_error(answer, status)
    else:
        assert answer[0] == status and json.loads(answer[2]), answer[:2]
    still_serving(server)


@pytest.mark.parametrize("body", [
    b"[" * 30_000 + b"]" * 30_000,
    b'{"image": "sample-cat", "options": {"relu": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}",
    b'{"image": "sample-cat", "options": {"relu": ' + b'{"":' * 10_000 + b"1" + b"}" * 10_000 + b"}}",
], ids=["body", "in-options", "objects-in-options"])
def test_json_nested_30000_deep_is_a_json_400(server: web.Server, body: bytes) -> None:
    assert "deeper" in json_error(call(server, "POST", "/api/tools/gradcam/jobs", body), 400)
    still_serving(server)


def test_a_malformed_origin_is_a_json_400(server: web.Server) -> None:
    answer = call(server, "POST", "/api/tools/gradcam/jobs", {"image": "sample-cat"}, {"Origin": "http://[::1"})
    assert "Origin" in json_error(answer, 400)
    still_serving(server)


@pytest.mark.parametrize("body", [
    b'{"image": "sample-cat", "layer": "\\ud800"}',
    b'{"image": "sample-cat", "options": {"\\ud800": 1}}',
    b'{"image": "sample-cat", "options": {"relu": "\\ud800"}}',
    b'{"\\ud800": 1}',
], ids=["layer", "option-name", "option-value", "field-name"])
def test_a_lone_surrogate_in_the_json_body_is_a_json_4xx(server: web.Server, body: bytes) -> None:
    json_error(call(server, "POST", "/api/tools/gradcam/jobs", body), 400, 404, 422)
    still_serving(server)


def test_a_lone_surrogate_as_a_dataset_is_a_json_4xx(server: web.Server) -> None:
    json_error(call(server, "POST", "/api/tools/embed/jobs", b'{"dataset": "\\ud800"}'), 400, 422)


# -- the HTTP protocol: errors as JSON, hosts and origins ----------------------------------------------------------
@pytest.mark.parametrize("garbage", [
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a TLS hello\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /api/samples HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon in this header\r\n\r\n",
    b"GET /api/samples\r\n\r\n",
    b"POST /api/tools/gradcam/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /api/tools/gradcam/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"GET /api/samples HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Null: a\x00b\r\n\r\n",
], ids=["request-line", "tls", "http2-preface", "header-line", "no-version", "chunk-size", "two-lengths", "nul-in-header"])
def test_protocol_errors_are_answered_in_json(server: web.Server, garbage: bytes) -> None:
    status, headers, body = exchange(server, garbage)
    assert 400 <= status < 500 and headers["content-type"].startswith("application/json"), (status, headers)
    assert json.loads(body)["error"]
    still_serving(server)


def test_a_second_host_header_is_refused_in_json(server: web.Server) -> None:
    host = f"Host: 127.0.0.1:{server.port}"
    for second in (host, "Host: evil.example"):
        # 421 from the Host check or 400 from the HTTP parser, which refuses a request with two Host headers first
        json_error(exchange(server, request_head(server, "GET /api/samples HTTP/1.1", host, second)), 400, 421)
    still_serving(server)


@pytest.mark.parametrize(("host", "origin", "status"), [
    ("127.0.0.1:{port}", "http://localhost", 403),  # no port: port 80
    ("127.0.0.1:{port}", "http://127.0.0.1", 403),
    ("127.0.0.1:{port}", "https://127.0.0.1:{port}", 403),  # another scheme is another origin
    ("127.0.0.1:{port}", "http://localhost:{port}", 403),  # another host name than the page's
    ("127.0.0.1:{port}", "http://evil.example:{port}", 403),
    ("127.0.0.1:{port}", "null", 403),
    ("127.0.0.1:{port}", "http://127.0.0.1:{port}/", 400),  # a path: not an origin
    ("127.0.0.1:{port}", "http://127.0.0.1:{port}", 202),  # exactly the page's origin
    ("localhost:{port}", "http://localhost:{port}", 202),
], ids=["localhost-no-port", "no-port", "https", "other-host", "foreign", "null", "path", "exact", "exact-localhost"])
def test_only_the_exact_origin_of_the_page_may_change_anything(server: web.Server, host: str, origin: str, status: int) -> None:
    headers = {"Host": host.format(port=server.port), "Origin": origin.format(port=server.port)}
    answer = call(server, "POST", "/api/tools/gradcam/jobs", {"image": "sample-cat"}, headers)
    if status == 202:
        assert answer[0] == 202, answer
        assert wait_for(server, json.loads(answer[2])["id"])["status"] == "done"
    else:
        json_error(answer, status)
    still_serving(server)


def test_an_oversized_request_head_is_answered_in_json(server: web.Server) -> None:
    query = "&".join(f"f{i}=x" for i in range(20_000))
    try:
        answer = exchange(server, request_head(server, f"GET /api/models/shapes_biased/classes?{query} HTTP/1.1"))
    except ConnectionResetError:
        pytest.fail("connection reset instead of an answer")
    json_error(answer, 400, 414, 431)


# -- uploads ---------------------------------------------------------------------------------------------------
def test_a_chunked_multipart_upload_over_the_limit_is_refused_while_reading(server: web.Server) -> None:
    body = file_part(3 * UPLOAD_LIMIT)
    head = multipart_head(server, "Transfer-Encoding: chunked")
    answer = exchange(server, head, *chunked(body)[: len(body) // 16_384 - 2])  # never the end: the answer cannot wait for it
    assert "limit" in json_error(answer, 413)
    still_serving(server)


def test_a_multipart_upload_over_the_limit_is_refused_before_reading(server: web.Server) -> None:
    head = multipart_head(server, f"Content-Length: {50 * UPLOAD_LIMIT}")
    assert "limit" in json_error(exchange(server, head, file_part(UPLOAD_LIMIT)[:20_000]), 413)
    still_serving(server)


def test_a_multipart_upload_whose_content_length_lies_low_is_a_json_4xx(server: web.Server) -> None:
    body = file_part(5 * UPLOAD_LIMIT)
    json_error(exchange(server, multipart_head(server, "Content-Length: 50000"), body), 400, 413)  # the body ends early: malformed
    still_serving(server)


def test_a_raw_upload_over_the_limit_is_refused_while_reading(server: web.Server) -> None:
    head = request_head(server, "POST /api/images HTTP/1.1", "Content-Type: image/png", "Transfer-Encoding: chunked")
    data = b"\x89PNG\r\n\x1a\n" + b"x" * (3 * UPLOAD_LIMIT)
    assert "limit" in json_error(exchange(server, head, *chunked(data)[:-2]), 413)
    still_serving(server)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_multipart_upload_of_thousands_of_parts_is_refused_at_once(server: web.Server, framing: str) -> None:
    parts = b"".join(b'--fuzzfuzz\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(5000))
    if framing == "chunked":
        head, body = multipart_head(server, "Transfer-Encoding: chunked"), chunked(parts)[:4]
    else:  # honest about its length (under the limit), but only its start is sent
        parts = parts[:UPLOAD_LIMIT]
        head, body = multipart_head(server, f"Content-Length: {len(parts) + 14}"), [parts[:16_384]]
    assert "parts" in json_error(exchange(server, head, *body), 400)  # answered before the client sent the rest
    still_serving(server)
