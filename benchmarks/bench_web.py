"""The web app's latency while a long job runs, its memory over bursts of clients, and a job's overhead.

Usage::

    python benchmarks/bench_web.py                      # EfficientNet-Lite0, 200 requests per kind, 3 bursts of 50 clients
    python benchmarks/bench_web.py --requests 400 --bursts 5

Method
------
* **Server.** ``convscope.web.make_app(["efficientnet_lite0"], port=0)`` in this process (uvicorn in a thread), a client
  on 127.0.0.1 with one keep-alive connection per thread.
* **Latency.** ``GET /`` (static page), ``GET /api/images/sample-cat.png?size=160`` and a cached feature-map PNG, each
  ``--requests`` times from 4 client threads: first with the server idle, then while an occlusion job (window 0.1,
  stride 0.05: ~400 forward passes) runs on the model's worker. p50 / p95 in ms; the target is p95 < 100 ms while the
  job runs (the page must stay usable while the model works).
* **Memory.** The process RSS (``/proc/self/statm``) after each of ``--bursts`` bursts of 50 concurrent clients (page,
  PNGs and Grad-CAM jobs, the queue full → 429 included): bounded means it levels off, not grows per burst.
* **Overhead.** One Grad-CAM job through the API (POST, wait for the event stream's ``done``, GET the PNG) ÷ one
  ``cs.gradcam`` call plus ``render.to_png`` on the same picture in this process: the median of interleaved rounds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's convscope

import convscope as cs
import convscope.web as web
from convscope import render

PAGE, PICTURE = "/", "/api/images/sample-cat.png?size=160"
MAPS = "/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps/0.png?image=sample-cat"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Client:
    """One keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def get(self, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        response = self.conn.getresponse()
        return response.status, response.read()


def latencies(port: int, path: str, count: int, threads: int = 4) -> list[float]:
    def worker(n: int) -> list[float]:
        client, out = Client(port), []
        for _ in range(n):
            start = time.perf_counter()
            status, _ = client.get(path)
            out.append((time.perf_counter() - start) * 1000)
            assert status == 200, status
        return out

    with ThreadPoolExecutor(threads) as pool:
        return [t for part in pool.map(worker, [count // threads] * threads) for t in part]


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    return f"p50 {statistics.median(ordered):6.1f} ms   p95 {ordered[int(0.95 * (len(ordered) - 1))]:6.1f} ms"


def wait(client: Client, job: str) -> dict:
    while True:
        _, body = client.get(f"/api/jobs/{job}")
        state = json.loads(body)
        if state["status"] in ("done", "error", "cancelled"):
            return state
        time.sleep(0.02)


def burst(port: int, clients: int = 50) -> dict[int, int]:
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        client = Client(port)
        for path, method, body in [(PAGE, "GET", None), (PICTURE, "GET", None), (MAPS, "GET", None),
                                   ("/api/tools/gradcam/jobs", "POST", {"image": "sample-cat"})]:
            status, _ = client.get(path, method, body)
            with lock:
                counts[status] = counts.get(status, 0) + 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per kind and phase")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the job-overhead comparison")
    args = parser.parse_args()
    print(f"convscope from {Path(cs.__file__).parent}")
    model = cs.load_model("efficientnet_lite0")
    with web.make_app([model], port=0).start() as server:
        port, client = server.port, Client(server.port)
        client.get(MAPS)  # cache the activations
        print(f"\nlatency, {args.requests} requests per kind from 4 threads")
        idle = {name: latencies(port, path, args.requests) for name, path in [("static", PAGE), ("picture PNG", PICTURE),
                                                                                ("feature map PNG", MAPS)]}
        _, body = client.get("/api/tools/occlusion/jobs", "POST", {"image": "sample-cat", "options": {"window": 0.1, "stride": 0.05}})
        job = json.loads(body)["id"]
        while json.loads(client.get(f"/api/jobs/{job}")[1])["status"] != "running":
            time.sleep(0.01)
        busy = {name: latencies(port, path, args.requests) for name, path in [("static", PAGE), ("picture PNG", PICTURE),
                                                                                ("feature map PNG", MAPS)]}
        still = json.loads(client.get(f"/api/jobs/{job}")[1])["status"]
        client.get(f"/api/jobs/{job}/cancel", "POST", {})
        worst = 0.0
        for name in idle:
            p95 = sorted(busy[name])[int(0.95 * (len(busy[name]) - 1))]
            worst = max(worst, p95)
            print(f"  {name:16s} idle: {percentiles(idle[name])}   during a job: {percentiles(busy[name])}")
        print(f"  (the occlusion job was {still} at the end of the measurement)")
        print(f"  target p95 < 100 ms while a job runs: {'holds' if worst < 100 else 'MISSED'} (worst p95 {worst:.1f} ms)")
        wait(client, job)

        print(f"\nmemory over {args.bursts} bursts of 50 concurrent clients (page, 2 PNGs, a Grad-CAM job each)")
        print(f"  before: RSS {rss_mb():7.1f} MB")
        for i in range(args.bursts):
            counts = burst(port)
            for listed in json.loads(client.get("/api/jobs")[1])["jobs"]:
                wait(client, listed["id"])
            print(f"  after burst {i + 1}: RSS {rss_mb():7.1f} MB   answers {dict(sorted(counts.items()))}")

        print(f"\none Grad-CAM job through the API vs cs.gradcam + render.to_png in-process ({args.rounds} rounds)")
        x = model.preprocess(cs.sample_image("cat"))
        ratios, api_times, direct_times = [], [], []
        for _ in range(args.rounds + 1):
            start = time.perf_counter()
            render.to_png(cs.gradcam(model, x))
            direct = time.perf_counter() - start
            start = time.perf_counter()
            _, body = client.get("/api/tools/gradcam/jobs", "POST", {"image": "sample-cat"})
            state = wait(client, json.loads(body)["id"])
            status, _ = client.get(state["urls"]["result"])
            through = time.perf_counter() - start
            assert status == 200
            api_times.append(through)
            direct_times.append(direct)
            ratios.append(through / direct)
        ratios, api_times, direct_times = ratios[1:], api_times[1:], direct_times[1:]  # the first round warms up
        print(f"  direct {statistics.median(direct_times) * 1000:6.1f} ms   through the API {statistics.median(api_times) * 1000:6.1f} ms"
              f"   ratio {statistics.median(ratios):.2f}x (median of {len(ratios)})")


if __name__ == "__main__":
    main()
