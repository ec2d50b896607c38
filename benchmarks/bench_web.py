"""The web app under load: answer times while a long job runs, memory over bursts of clients, one job's overhead.

Usage::

    python benchmarks/bench_web.py                         # EfficientNet-Lite0; about 30 s on 2 cores
    python benchmarks/bench_web.py --requests 3000 --bursts 5 --rounds 15

Method
------
* **Server.** ``convscope.web.make_app(["efficientnet_lite0"], port=0)`` in this process: uvicorn's event loop in one
  thread, the model's job worker in another. Clients are threads on 127.0.0.1, one keep-alive connection each (as
  a browser keeps one). The clients share the process, and its GIL, with the server: the answer times are an upper
  bound of what a browser in another process sees.
* **Answer times.** Three kinds of request: the static page ``GET /``, a picture PNG
  (``/api/images/sample-cat.png?size=160``, drawn per request) and a feature-map PNG whose activations are cached
  (drawn per request). ``--requests`` of each from ``--clients`` threads, each thread cycling through the kinds,
  so the kinds share the same moments. Phase *idle*: no job. Phase *busy*: while an occlusion job on Lite0 (window
  0.1, stride 0.025: ~1,300 forward passes in batches) runs on the model's worker; the job must still be running
  when the phase ends (else the line says so), then it is cancelled. p50 and p95 in ms; the target is p95 < 100 ms
  for every kind while the job runs (the page must stay usable while the model works).
* **Memory.** The process RSS (``/proc/self/statm``: server and clients, one process) before and after each of
  ``--bursts`` bursts of 50 concurrent clients, each loading the page, the script, both PNGs and posting a Grad-CAM
  job (the queue holds 16: the rest get 429), measured once the burst's jobs are done and after ``gc.collect()``.
  Bounded means it levels off: the growth from the first burst to the last is printed.
* **Overhead.** One Grad-CAM job through the API — POST, wait until it is done, GET its ``result.png`` — against
  ``cs.gradcam(model, x)`` on the preprocessed cat in this process, and against ``cs.gradcam`` plus
  ``render.to_png`` (the picture the API hands back). Waiting two ways: polling ``GET /api/jobs/<id>`` every 5 ms
  (the least the job costs), and following its event stream as the page does. Rounds interleave the contenders;
  the ratios are medians of the per-round ratios, after one warm-up round.

Timings on a shared machine swing with its load; the ``env:`` line gives the load average.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's convscope
import convscope as cs
import convscope.web as web
from convscope import render

MODEL = "efficientnet_lite0"
PAGE, PICTURE = "/", "/api/images/sample-cat.png?size=160"
FEATURE_MAP = f"/api/models/{MODEL}/layers/_blocks.3/feature_maps/0.png?image=sample-cat"
KINDS = {"static page": PAGE, "picture PNG": PICTURE, "feature-map PNG": FEATURE_MAP}
TARGET_MS = 100.0
LONG_JOB = {"image": "sample-cat", "options": {"window": 0.1, "stride": 0.025}}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Client:
    """One keep-alive connection to the server."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def call(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        self.conn.request("GET" if body is None else "POST", path, body=data,
                          headers={"Content-Type": "application/json"} if data is not None else {})
        response = self.conn.getresponse()
        return response.status, response.read()

    def job(self, job_id: str) -> dict[str, Any]:
        return json.loads(self.call(f"/api/jobs/{job_id}")[1])

    def wait(self, job_id: str, every: float = 0.005) -> dict[str, Any]:
        while (state := self.job(job_id))["status"] not in ("done", "error", "cancelled"):
            time.sleep(every)
        return state

    def follow(self, job_id: str) -> str:
        """The job's event stream, read until its last event (a connection of its own, as EventSource opens)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.conn.port, timeout=300)
        try:
            conn.request("GET", f"/api/jobs/{job_id}/events")
            response = conn.getresponse()
            while line := response.readline():
                if line.startswith(b"event: ") and line[7:].strip() != b"progress":
                    return line[7:].strip().decode()
            return "ended"
        finally:
            conn.close()

    def close(self) -> None:
        self.conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def answer_times(port: int, requests: int, clients: int) -> dict[str, list[float]]:
    """ms per request by kind: ``requests`` of each kind from ``clients`` threads cycling through the kinds."""
    kinds = list(KINDS)
    per_thread = len(kinds) * requests // clients

    def worker(offset: int) -> list[tuple[str, float]]:
        client, out = Client(port), []
        try:
            for i in range(per_thread):
                kind = kinds[(offset + i) % len(kinds)]
                start = time.perf_counter()
                status, _ = client.call(KINDS[kind])
                out.append((kind, (time.perf_counter() - start) * 1000))
                if status != 200:
                    raise RuntimeError(f"{KINDS[kind]} answered {status}")
        finally:
            client.close()
        return out

    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    with ThreadPoolExecutor(clients) as pool:
        for part in pool.map(worker, range(clients)):
            for kind, ms in part:
                times[kind].append(ms)
    return times


def burst(port: int, clients: int = 50) -> dict[int, int]:
    """50 clients at once, each: page, script, picture PNG, feature-map PNG, a Grad-CAM job. Answers by status."""
    start, counts, lock = threading.Barrier(clients), {}, threading.Lock()

    def one(_: int) -> None:
        client = Client(port)
        start.wait()
        try:
            for path, body in [(PAGE, None), ("/static/app.js", None), (PICTURE, None), (FEATURE_MAP, None),
                               ("/api/tools/gradcam/jobs", {"image": "sample-cat"})]:
                status, _ = client.call(path, body)
                with lock:
                    counts[status] = counts.get(status, 0) + 1
        finally:
            client.close()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))
    return dict(sorted(counts.items()))


def overhead(model: cs.Model, client: Client, rounds: int) -> dict[str, list[float]]:
    """Seconds per contender per round (rotated start), after one warm-up round."""
    x = model.preprocess(cs.sample_image("cat"))

    def through_api(wait: str) -> None:
        status, body = client.call("/api/tools/gradcam/jobs", {"image": "sample-cat"})
        assert status == 202, (status, body[:200])
        job = json.loads(body)["id"]
        final = client.wait(job)["status"] if wait == "poll" else client.follow(job)
        status, png = client.call(f"/api/jobs/{job}/result.png")
        assert final == "done" and status == 200 and png.startswith(b"\x89PNG"), (final, status)

    contenders = {
        "cs.gradcam": lambda: cs.gradcam(model, x),
        "cs.gradcam + render.to_png": lambda: render.to_png(cs.gradcam(model, x)),
        "API, polling": lambda: through_api("poll"),
        "API, event stream": lambda: through_api("events"),
    }
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds + 1):
        gc.collect()
        for name in names[index % len(names):] + names[:index % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            if index:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per kind and phase")
    parser.add_argument("--clients", type=int, default=4, help="client threads in the answer-time phases")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=9, help="recorded rounds of the job-overhead comparison")
    args = parser.parse_args()
    print(f"convscope from {Path(cs.__file__).parent}")
    print(f"env: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    model = cs.load_model(MODEL)
    with web.make_app([model], port=0).start() as server:
        port, client = server.port, Client(server.port)
        for path in KINDS.values():  # warm: the activations cached, the first PNGs drawn
            assert client.call(path)[0] == 200

        print(f"\nanswer times, {args.requests} requests per kind from {args.clients} keep-alive clients (ms)")
        idle = answer_times(port, args.requests, args.clients)
        status, body = client.call("/api/tools/occlusion/jobs", LONG_JOB)
        assert status == 202, body[:300]
        job = json.loads(body)["id"]
        while (first := client.job(job))["status"] == "queued" or not first["progress"]["done"]:  # in its forward passes
            time.sleep(0.01)
        began = time.perf_counter()
        busy = answer_times(port, args.requests, args.clients)
        took = time.perf_counter() - began
        state = client.job(job)
        client.call(f"/api/jobs/{job}/cancel", {})
        progress = state["progress"]
        worst = 0.0
        print(f"  {'':16s} {'idle p50':>9s} {'p95':>7s}   {'during a job p50':>16s} {'p95':>7s}")
        for kind in KINDS:
            worst = max(worst, percentile(busy[kind], 0.95))
            print(f"  {kind:16s} {percentile(idle[kind], 0.5):9.1f} {percentile(idle[kind], 0.95):7.1f}   "
                  f"{percentile(busy[kind], 0.5):16.1f} {percentile(busy[kind], 0.95):7.1f}")
        running = "still running" if state["status"] == "running" else f"{state['status']} before the end (partly idle)"
        print(f"  the occlusion job: {running} at the end of the phase; windows done {first['progress']['done']} -> "
              f"{progress['done']} of {progress['total']} during its {took:.1f} s")
        print(f"  target p95 < {TARGET_MS:.0f} ms while a job runs: {'holds' if worst < TARGET_MS else 'MISSED'} "
              f"(worst p95 {worst:.1f} ms)")
        client.wait(job)

        print(f"\nmemory over {args.bursts} bursts of 50 concurrent clients (page, script, 2 PNGs, a Grad-CAM job each)")
        gc.collect()
        sizes = [rss_mb()]
        print(f"  before:        RSS {sizes[0]:7.1f} MB")
        for i in range(args.bursts):
            counts = burst(port)
            for listed in json.loads(client.call("/api/jobs")[1])["jobs"]:
                client.wait(listed["id"], every=0.02)
            gc.collect()
            sizes.append(rss_mb())
            print(f"  after burst {i + 1}: RSS {sizes[-1]:7.1f} MB   answers by status {counts}")
        print(f"  growth: {sizes[1] - sizes[0]:+.1f} MB in the first burst, {sizes[-1] - sizes[1]:+.1f} MB over the "
              f"{args.bursts - 1} bursts after it")

        print(f"\none Grad-CAM job (cat, default layer) through the API vs in this process ({args.rounds} rounds)")
        times = overhead(model, client, args.rounds)
        client.close()
    direct = times["cs.gradcam"]
    for name, values in times.items():
        ratio = statistics.median(v / d for v, d in zip(values, direct))
        print(f"  {name:28s} {statistics.median(values) * 1000:7.1f} ms   {ratio:5.2f}x cs.gradcam")
    drawn = times["cs.gradcam + render.to_png"]
    for name in ("API, polling", "API, event stream"):
        ratio = statistics.median(v / d for v, d in zip(times[name], drawn))
        print(f"  {name} / (cs.gradcam + render.to_png): {ratio:.2f}x")


if __name__ == "__main__":
    main()
