"""The web app under load, on 127.0.0.1, bounded in count and time (behaviour only: no timing assertions).

50 concurrent clients mixing page loads, PNG fetches and Grad-CAM jobs: no connection reset, no 5xx, every answer
of the right type; a full job queue answers 429 with ``Retry-After`` and every accepted job still finishes; 300 idle
connections cost no thread each and the server keeps answering while they are open.
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


@pytest.fixture(scope="module")
def server(lite0: cs.Model) -> Iterator[web.Server]:
    with web.make_app([lite0], port=0, max_queued=8).start() as running:
        yield running


def request(server: web.Server, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_fifty_concurrent_clients_get_answers_not_resets(server: web.Server) -> None:
    request(server, "GET", "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps?image=sample-cat")  # warm the cache
    mix = [("GET", "/", "text/html"), ("GET", "/static/app.js", "text/javascript"),
           ("GET", "/api/images/sample-cat.png?size=160", "image/png"),
           ("GET", "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps/0.png?image=sample-cat", "image/png"),
           ("POST", "/api/tools/gradcam/jobs", "application/json")]
    start = threading.Barrier(CLIENTS)

    def client(i: int) -> list[tuple[int, str, str, dict[str, str]]]:
        start.wait()  # all at once
        answers = []
        for step in range(4):
            method, path, kind = mix[(i + step) % len(mix)]
            body = json.dumps({"image": "sample-cat"}).encode() if method == "POST" else None
            status, headers, _ = request(server, method, path, body)
            answers.append((status, kind, headers.get("content-type", ""), headers))
        return answers

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        answers = [a for one in pool.map(client, range(CLIENTS)) for a in one]  # a reset would raise here
    assert len(answers) == CLIENTS * 4
    assert all(status < 500 for status, *_ in answers)
    for status, kind, given, headers in answers:
        if status == 429:  # the job queue is full: said so, with when to come back
            assert kind == "application/json" and int(headers["retry-after"]) >= 1
        else:
            assert status in (200, 202) and given.startswith(kind), (status, kind, given)
    jobs = json.loads(request(server, "GET", "/api/jobs")[2])["jobs"]
    for job in jobs:
        request(server, "POST", f"/api/jobs/{job['id']}/cancel")


@contextmanager
def gated_tool() -> Iterator[threading.Event]:
    """A tool that holds its model's worker until the test sets the event."""
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


def test_a_full_queue_answers_429_with_retry_after_and_accepted_jobs_finish() -> None:
    with gated_tool() as gate, web.make_app([cs.load_model("shapes_biased")], port=0, max_queued=2).start() as server:
        accepted, refused = [], []
        for _ in range(6):
            status, headers, body = request(server, "POST", "/api/tools/web_gate/jobs", b"{}")
            (accepted if status == 202 else refused).append((status, headers, json.loads(body)))
            if len(accepted) == 1:  # the first is running (holding the worker) before the queue fills
                deadline = time.time() + 30
                while json.loads(request(server, "GET", f"/api/jobs/{accepted[0][2]['id']}")[2])["status"] != "running":
                    assert time.time() < deadline
                    time.sleep(0.02)
        assert len(accepted) == 3 and len(refused) == 3  # one running, two waiting
        for status, headers, body in refused:
            assert status == 429 and int(headers["retry-after"]) >= 1 and body["retry_after"] == int(headers["retry-after"])
            assert "waiting" in body["error"]
        gate.set()
        for _, _, body in accepted:
            deadline = time.time() + 60
            while json.loads(request(server, "GET", f"/api/jobs/{body['id']}")[2])["status"] != "done":
                assert time.time() < deadline
                time.sleep(0.05)
        assert request(server, "POST", "/api/tools/web_gate/jobs", b"{}")[0] == 202  # room again


def test_idle_connections_cost_no_thread_each() -> None:
    with web.make_app([cs.load_model("shapes_biased")], port=0).start() as server:
        assert request(server, "GET", "/api/samples")[0] == 200
        before = threading.active_count()
        with ExitStack() as stack:
            for i in range(300):  # slow clients: connected, half a request line or nothing at all
                raw = stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=30))
                if i % 2:
                    raw.sendall(b"GET /api/sam")
            time.sleep(0.5)
            during = threading.active_count()
            status, _, body = request(server, "GET", "/api/samples")  # still answering
            assert status == 200 and json.loads(body)["samples"]
        assert during - before < 10, (before, during)  # an event loop, not a thread per connection
