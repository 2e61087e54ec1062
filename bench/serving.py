"""The ML backend's /predict on uvicorn: latency, images per second, concurrency, batching.

    .venv/bin/python bench/serving.py [--seconds 30] [--clients 8] [--image-size 32]

Builds a model of the default CNN shape (untrained: inference costs the same) and a pool
of PNGs in a temporary folder, starts `uvicorn serving.app:app` on a free 127.0.0.1
port and measures:
- /predict with 1 and with 100 tasks per request, one client: latency and images/s;
- `--clients` concurrent clients sending 1-task requests for `--seconds`: throughput
  and errors (any non-200 answer or task with an error counts);
- 100 tasks in one request against 100 one-task requests (Label Studio's fallback when
  a backend answers a batch with one result) as a ratio;
- the floor: the same `preprocess` + `Classifier.predict_proba` calls in-process.
The clients share the machine with the server: on 2 cores, client time is in the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<Choices name="label" toName="image">{}</Choices></View>'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pool(root: Path, n: int, size: int, rng: np.random.Generator) -> list[str]:
    """`n` RGB PNGs of 2x the model's input size (so serving decodes and resizes)."""
    pool = root / "data" / "pool"
    pool.mkdir(parents=True)
    names = []
    for i in range(n):
        pixels = rng.integers(0, 256, (2 * size, 2 * size, 3), dtype=np.uint8)
        name = f"img-{i:04d}.png"
        Image.fromarray(pixels).save(pool / name)
        names.append(name)
    return names


def make_model(root: Path, size: int, classes: int):
    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    from activelearn.config import ModelConfig
    from activelearn.data.images import Preprocessing
    from activelearn.learner.classifier import Classifier

    names = [f"class{i}" for i in range(classes)]
    classifier = Classifier.build(
        names, Preprocessing((size, size), 3), ModelConfig(), seed=0, version="round-1"
    )
    classifier.save(root / "model" / "classifier.bentomodel")
    return classifier


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Server:
    """`uvicorn serving.app:app` in a subprocess, settings from its environment."""

    def __init__(self, workspace: Path, port: int):
        env = os.environ | {
            "ACTIVELEARN_SERVING_WORKSPACE": str(workspace),
            "BENTOML_HOME": str(workspace / "bentoml"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        self.url = f"http://127.0.0.1:{port}"
        self.log = (workspace / "uvicorn.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serving.app:app"]
            + ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: see {self.log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).json().get("model_version"):
                    return
            time.sleep(0.5)
        self.stop()  # not left holding its port
        raise RuntimeError(f"no model served after 180 s: see {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def predict_body(images: list[str], start: int, n: int, label_config: str) -> dict:
    tasks = [
        {"id": start + i, "data": {"image": f"/data/local-files/?d=pool/{images[j]}"}}
        for i, j in enumerate((start + k) % len(images) for k in range(n))
    ]
    return {"tasks": tasks, "project": "1.1700000000", "label_config": label_config}


def timed_requests(
    client: httpx.Client, url: str, bodies: list[dict]
) -> tuple[list[float], float, int]:
    """(latencies, wall seconds, failures) of sequential requests."""
    latencies, failures = [], 0
    start = time.perf_counter()
    for body in bodies:
        t = time.perf_counter()
        response = client.post(f"{url}/predict", json=body)
        latencies.append(time.perf_counter() - t)
        failures += failed(response, len(body["tasks"]))
    return latencies, time.perf_counter() - start, failures


def failed(response: httpx.Response, n_tasks: int) -> int:
    if response.status_code != 200:
        return n_tasks
    results = response.json()["results"]
    return sum(1 for r in results if r.get("error") or not r["result"]) + n_tasks - len(results)


def concurrent_load(
    url: str, images: list[str], clients: int, seconds: float, label_config: str
) -> tuple[list[float], int, int, float]:
    """(latencies, requests, failed tasks, wall seconds) of `clients` threads of 1-task calls."""
    latencies: list[float] = []
    counts = {"requests": 0, "failed": 0}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client_loop(index: int) -> None:
        with httpx.Client(timeout=100) as client:
            i = index * 1000
            while time.perf_counter() < stop_at:
                body = predict_body(images, i, 1, label_config)
                t = time.perf_counter()
                try:
                    response = client.post(f"{url}/predict", json=body)
                    bad = failed(response, 1)
                except httpx.HTTPError:
                    bad = 1
                elapsed = time.perf_counter() - t
                with lock:
                    latencies.append(elapsed)
                    counts["requests"] += 1
                    counts["failed"] += bad
                i += 1

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, counts["requests"], counts["failed"], time.perf_counter() - start


def in_process_floor(classifier, root: Path, images: list[str], n: int, repeat: int) -> float:
    """Median seconds of `preprocess` + `predict_proba` on `n` pool images, in this process."""
    from activelearn.data.images import preprocess

    times = []
    for r in range(repeat):
        files = [root / "data" / "pool" / images[(r * n + k) % len(images)] for k in range(n)]
        t = time.perf_counter()
        x = np.stack([preprocess(f, classifier.prep) for f in files])
        classifier.predict_proba(x, batch_size=n)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="concurrent phase length")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--single", type=int, default=100, help="1-task requests to time")
    parser.add_argument("--batched", type=int, default=20, help="100-task requests to time")
    parser.add_argument("--image-size", type=int, default=32, help="model input, pixels")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--pool", type=int, default=500, help="distinct images")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        images = make_pool(root, args.pool, args.image_size, rng)
        classifier = make_model(root, args.image_size, args.classes)
        config = LABEL_CONFIG.format(
            "".join(f'<Choice value="{name}"/>' for name in classifier.class_names)
        )
        floor_1 = in_process_floor(classifier, root, images, 1, 20)
        floor_100 = in_process_floor(classifier, root, images, 100, 5)

        server = Server(root, free_port())
        try:
            with httpx.Client(timeout=100) as client:
                warm = [predict_body(images, i, n, config) for i, n in ((0, 1), (1, 100))] * 3
                timed_requests(client, server.url, warm)
                single = [predict_body(images, i, 1, config) for i in range(args.single)]
                lat_1, wall_1, fail_1 = timed_requests(client, server.url, single)
                batched = [predict_body(images, 100 * i, 100, config) for i in range(args.batched)]
                lat_100, wall_100, fail_100 = timed_requests(client, server.url, batched)
            lat_c, requests_c, fail_c, wall_c = concurrent_load(
                server.url, images, args.clients, args.seconds, config
            )
        finally:
            server.stop()

    # Like with like: the mean wall time of 100 tasks either way, each timed back to back.
    one_by_one = wall_1 / args.single * 100  # 100 one-task requests
    one_request = wall_100 / args.batched  # one 100-task request
    print(
        f"/predict on uvicorn (1 worker), model {args.image_size}x{args.image_size}x3 "
        f"{args.classes} classes (default CNN), PNGs {2 * args.image_size}px, "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        f"{'scenario':<34}{'requests':>9}{'median ms':>11}{'p95 ms':>9}"
        f"{'images/s':>10}{'failed':>8}"
    )
    print(header)
    print("-" * len(header))
    rows = [
        ("1 task per request", len(lat_1), lat_1, args.single / wall_1, fail_1),
        ("100 tasks per request", len(lat_100), lat_100, 100 * args.batched / wall_100, fail_100),
        (
            f"{args.clients} clients x 1 task, {args.seconds:.0f} s",
            requests_c,
            lat_c,
            requests_c / wall_c,
            fail_c,
        ),
    ]
    for name, n, lat, rate, bad in rows:
        print(
            f"{name:<34}{n:>9}{1000 * statistics.median(lat):>11.1f}"
            f"{1000 * pct(lat, 95):>9.1f}{rate:>10.1f}{bad:>8}"
        )
    for name, n, seconds in (("1 image", 1, floor_1), ("100 images", 100, floor_100)):
        print(
            f"{'in-process floor, ' + name:<34}{'':>9}{1000 * seconds:>11.1f}{'':>9}"
            f"{n / seconds:>10.1f}"
        )
    print("-" * len(header))
    print(
        f"100 tasks, mean wall time: one request {1000 * one_request:.0f} ms vs 100 one-task "
        f"requests {1000 * one_by_one:.0f} ms: ratio {one_by_one / one_request:.1f}x"
    )


if __name__ == "__main__":
    main()
