"""The web app under load on 127.0.0.1, bounded in count and time; behaviour only, no timing assertions.

* 50 concurrent clients, half on one keep-alive connection each and half opening a connection per request, mix
  page loads, a script, PNGs (a picture and a feature map) and Grad-CAM jobs on EfficientNet-Lite0: no connection
  reset, no 5xx, every answer of the type its request asks for (HTML, JavaScript, a PNG, a job or a 429), and every
  accepted job finishes.
* A full job queue (``max_queued=2``) answers a burst of jobs with 429 and an integer ``Retry-After`` ≥ 1, and
  every accepted job still finishes; then there is room again.
* 300 idle or slow connections (nothing sent, half a request line, half the headers, part of a body) cost no
  thread each, and the server answers a page, a PNG and a job while they are open, and after.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

import convscope as cs
import convscope.web as web
from convscope.registry import register, unregister

CLIENTS = 50
STEPS = 4  # requests per client
PNG = b"\x89PNG\r\n\x1a\n"
FEATURE_MAP = "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps/0.png?image=sample-cat"
MIX = [("GET", "/", "text/html"), ("GET", "/static/app.js", "text/javascript"),
       ("GET", "/api/images/sample-cat.png?size=160", "image/png"), ("GET", FEATURE_MAP, "image/png"),
       ("POST", "/api/tools/gradcam/jobs", "application/json")]

Answer = tuple[int, dict[str, str], bytes]


@pytest.fixture(scope="module")
def server(lite0: cs.Model) -> Iterator[web.Server]:
    with web.make_app([lite0], port=0, max_queued=8).start() as running:
        yield running


class Client:
    """One keep-alive connection (``fresh=True``: a new connection per request)."""

    def __init__(self, server: web.Server, *, fresh: bool = False) -> None:
        self.port, self.fresh, self.conn = server.port, fresh, None

    def __call__(self, method: str, path: str, body: Any = None) -> Answer:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        data = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            response = self.conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            if self.fresh:
                self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def request(server: web.Server, method: str, path: str, body: Any = None) -> Answer:
    return Client(server, fresh=True)(method, path, body)


def wait_for(server: web.Server, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(request(server, "GET", f"/api/jobs/{job_id}")[2])
        if state["status"] in ("done", "error", "cancelled"):
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)


def check_refusal(headers: dict[str, str], body: bytes) -> None:
    """A 429: JSON that says so, and when to come back — an integer number of seconds ≥ 1."""
    assert headers["content-type"].startswith("application/json")
    wait = headers["retry-after"]
    assert wait.isdigit() and int(wait) >= 1, wait
    answer = json.loads(body)
    assert answer["retry_after"] == int(wait) and "waiting" in answer["error"]


def test_fifty_concurrent_clients_get_answers_not_resets(server: web.Server) -> None:
    assert request(server, "GET", FEATURE_MAP)[0] == 200  # the layer's activations, computed once and cached
    start = threading.Barrier(CLIENTS)

    def client(i: int) -> list[tuple[str, str, Answer]]:
        talk = Client(server, fresh=i % 2 == 1)
        start.wait()  # all at once
        try:
            answers = []
            for step in range(STEPS):
                method, path, kind = MIX[(i + step) % len(MIX)]
                answers.append((path, kind, talk(method, path, {"image": "sample-cat"} if method == "POST" else None)))
            return answers
        finally:
            talk.close()

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        answers = [a for one in pool.map(client, range(CLIENTS)) for a in one]  # a reset or a timeout raises here
    assert len(answers) == CLIENTS * STEPS
    accepted = []
    for path, kind, (status, headers, body) in answers:
        assert status < 500, (path, status, body[:300])
        if status == 429:  # the job queue is full: said so, with when to come back
            assert path.endswith("/jobs")
            check_refusal(headers, body)
            continue
        assert headers["content-type"].startswith(kind), (path, status, headers["content-type"])
        if kind == "text/html":
            assert status == 200 and b'id="layer-tree"' in body
        elif kind == "text/javascript":
            assert status == 200 and body
        elif kind == "image/png":
            assert status == 200 and body.startswith(PNG)
        else:
            assert status == 202
            accepted.append(json.loads(body)["id"])
    assert accepted  # the queue took some jobs
    for job in accepted:  # and every one it took finishes
        assert wait_for(server, job)["status"] == "done"
    status, headers, body = request(server, "GET", f"/api/jobs/{accepted[-1]}/result.png")
    assert status == 200 and body.startswith(PNG)


@contextmanager
def gated_tool() -> Iterator[threading.Event]:
    """A registered tool that holds its model's worker until the test sets the event."""
    gate = threading.Event()

    def web_gate(model: Any) -> cs.Table:
        """Waits for the test: a test's tool.

        Options:
        """
        gate.wait(60)
        return cs.Table("done", columns=("a",), rows=[("done",)], title="gate")

    register("web_gate", family="features", takes="model", returns="table", paper="a test")(web_gate)
    try:
        yield gate
    finally:
        gate.set()
        unregister("web_gate")


def test_a_burst_of_jobs_on_a_full_queue_gets_429_with_retry_after_and_accepted_jobs_finish() -> None:
    with gated_tool() as gate, web.make_app([cs.load_model("shapes_biased")], port=0, max_queued=2).start() as server:
        first = request(server, "POST", "/api/tools/web_gate/jobs", {})
        assert first[0] == 202
        running = json.loads(first[2])["id"]
        deadline = time.monotonic() + 30
        while json.loads(request(server, "GET", f"/api/jobs/{running}")[2])["status"] != "running":  # holding the worker
            assert time.monotonic() < deadline
            time.sleep(0.02)
        burst = threading.Barrier(20)

        def post(_: int) -> Answer:
            burst.wait()
            return request(server, "POST", "/api/tools/web_gate/jobs", {})

        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(post, range(20)))
        accepted = [json.loads(body)["id"] for status, _, body in answers if status == 202]
        refused = [(headers, body) for status, headers, body in answers if status == 429]
        assert len(accepted) == 2 and len(refused) == 18, sorted(status for status, _, _ in answers)  # two places in the queue
        for headers, body in refused:
            check_refusal(headers, body)
        gate.set()
        for job in [running, *accepted]:
            assert wait_for(server, job)["status"] == "done"
        assert request(server, "POST", "/api/tools/web_gate/jobs", {})[0] == 202  # room again


def slow_clients(stack: ExitStack, port: int, count: int) -> None:
    """``count`` connections that never finish a request: silent, half a request line, half the headers, or a
    body that stops short of its Content-Length."""
    starts = [b"", b"GET /api/sam", f"GET /api/samples HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: ".encode(),
              f"POST /api/tools/gradcam/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
              "Content-Length: 1000\r\n\r\n{\"image\": ".encode()]
    for i in range(count):
        raw = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
        if starts[i % len(starts)]:
            raw.sendall(starts[i % len(starts)])


def test_idle_and_slow_connections_cost_no_thread_each() -> None:
    with web.make_app([cs.load_model("shapes_biased")], port=0).start() as server:
        maps = "/api/models/shapes_biased/layers/block1.0/feature_maps/0.png?image=sample-cat"
        for path in ("/", maps):
            assert request(server, "GET", path)[0] == 200
        wait_for(server, json.loads(request(server, "POST", "/api/tools/gradcam/jobs", {"image": "sample-cat"})[2])["id"])
        before = threading.active_count()
        with ExitStack() as stack:
            slow_clients(stack, server.port, 300)
            time.sleep(0.5)
            during = threading.active_count()
            status, _, page = request(server, "GET", "/")  # still answering: a page, a PNG, a job
            assert status == 200 and b'id="layer-tree"' in page
            status, _, picture = request(server, "GET", maps)
            assert status == 200 and picture.startswith(PNG)
            status, _, body = request(server, "POST", "/api/tools/gradcam/jobs", {"image": "sample-cat"})
            assert status == 202 and wait_for(server, json.loads(body)["id"])["status"] == "done"
        assert during - before < 10, (before, during)  # an event loop, not a thread per connection
        status, _, body = request(server, "GET", "/api/samples")  # and after they went away
        assert status == 200 and json.loads(body)["samples"]
