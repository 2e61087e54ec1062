"""Pool scoring, local against Ray: same picks, time, driver memory, and a scale-out model.

    .venv/bin/python bench/scale.py [--pool 20000] [--strategy hybrid] [--size 32]

Needs the `ray` extra. The pool (`--size` x `--size` RGB PNGs, the same cached files as
bench/scoring.py) is scored by a small CNN of the default shape with random weights,
saved as a `.bentomodel` file, three ways, each in a fresh child process (the driver)
that loads the model from the file as a round does:

- local: `scoring.engine=local`, this process decodes and runs the model.
- ray, 1 node: `scoring.engine=ray` with no address: the scorer starts a local Ray sized
  to the machine and fills it with actors.
- ray, 2 nodes: a cluster of two `ray start` nodes of 1 CPU each on this machine
  (the same cores: it shows the cost of going through a cluster, not a speed-up).

Every run's wall time of `score_and_select` is split the same way for both engines:
start-up (until the engine can score; Ray: connecting and starting the actors), streaming
(until the driver has handled the last block: decode, forward, scores.csv rows and
candidate merge, which the driver does while blocks stream in) and after streaming (the
final selection, queue.jsonl, Ray's shutdown). Images/s is the streaming rate for every
run; ratios are against the local run of the same pool. Also per run: peak RSS of the
driver, and whether `queue.jsonl` and `scores.csv` equal the local run's.
Model rows: a 10-million-image pool, local on this machine and Ray on 1, 8 and 64 nodes
like it, each side paying its measured fixed costs (start-up + after streaming) once and
its streaming cost per image 10 million times: the local run's, or for Ray the actors'
(from the 2-node run) spread over the nodes, capped by the driver's per-image cost
(unpickle, scores.csv row, merge; measured on synthetic blocks).
One run each: other jobs on the machine are noise, rerun before trusting a ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only Rays; nothing from ~/.ray
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

import numpy as np  # noqa: E402
from scoring import POOL_CACHE, generate_pool, image_id, peak_rss_mib  # noqa: E402  (bench/scoring.py: one shared pool cache)

from activelearn.config import ModelConfig, RayScoringConfig, ScoringConfig, StrategyConfig  # noqa: E402
from activelearn.data.images import Preprocessing  # noqa: E402

N_CLASSES = 10
QUEUE_SIZE = 100
MODEL_NODES = (1, 8, 64)
MODEL_POOL = 10_000_000


def save_model(path: Path, prep: Preprocessing, seed: int) -> None:
    from activelearn.learner.classifier import Classifier

    cfg = ModelConfig(filters=[32, 64], dense_units=128)
    names = [f"class{i}" for i in range(N_CLASSES)]
    Classifier.build(names, prep, cfg, seed=seed, version="bench").save(path)


# ------------------------------------------------------------------ one run, in a child


class RayReady(logging.Handler):
    """When the Ray scorer's actors were up (its log record), and how many."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: float | None = None
        self.actors: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("ray: %d scoring actors"):
            self.at, self.actors = time.perf_counter(), record.args[0]


def timed_stream(engine, marks: dict):
    """`engine` with its blocks timed: `asked` when the scorer first asks for a block,
    `done` when the scorer has handled the last one (before the engine shuts down)."""

    def wrapped(*args, **kwargs):
        blocks = engine(*args, **kwargs)
        marks["asked"] = marks["done"] = None

        def stream():
            marks["asked"] = time.perf_counter()
            for block in blocks:
                yield block
                marks["done"] = time.perf_counter()

        return stream()

    return wrapped


def measure_child(args: argparse.Namespace) -> None:
    from activelearn.learner.classifier import Classifier
    from activelearn.scoring import select as scoring_module
    from activelearn.workspace.manifest import Manifest

    ray_ready = RayReady()
    logging.getLogger("activelearn").addHandler(ray_ready)
    logging.getLogger("activelearn").setLevel(logging.INFO)
    marks: dict = {}
    if args.measure == "local":
        scoring_module.score_locally = timed_stream(scoring_module.score_locally, marks)
    else:  # imported only here: the local driver's memory holds no Ray
        from activelearn import scoring_ray

        scoring_ray.score_on_ray = timed_stream(scoring_ray.score_on_ray, marks)
    out = Path(args.out)
    ids = [image_id(i) for i in range(args.pool)]
    manifest = Manifest(out / "manifest.csv")
    for sid in ids:
        manifest.set_state(sid, "pool")
    classifier = Classifier.load(args.model)
    scoring = ScoringConfig(
        engine="local" if args.measure == "local" else "ray",
        batch_size=args.batch,
        ray=RayScoringConfig(address=args.address, actors=0, block_size=args.block),
    )
    start = time.perf_counter()
    scoring_module.score_and_select(
        classifier,
        manifest,
        args.pool_dir,
        StrategyConfig(name=args.strategy, batch_size=QUEUE_SIZE),
        out / "round",
        labeled_x=None,
        prep=classifier.prep,
        seed=0,
        scoring=scoring,
        model_path=args.model,
    )
    finish = time.perf_counter()
    # Streaming starts when the engine can score: at once for local, with actors up for Ray.
    ready = ray_ready.at if ray_ready.at is not None else marks["asked"]
    result = {
        **phases(start, ready, marks["done"], finish),
        "actors": ray_ready.actors,
        "peak_rss_mb": peak_rss_mib(),
        "picks": digest(
            "\n".join(json.loads(line)["sample_id"] for line in open(out / "round" / "queue.jsonl"))
        ),
        "scores_file": str(out / "round" / "scores.csv"),
    }
    print("RESULT " + json.dumps(result), flush=True)


def phases(start: float, ready: float, done: float, finish: float) -> dict:
    """One run's wall time split the same way for every engine: start-up (until it can
    score), streaming (until the driver has handled the last block: decode, forward,
    scores.csv rows, candidate merge) and after (final selection, queue, shutdown)."""
    return {
        "total": finish - start,
        "startup": ready - start,
        "streaming": done - ready,
        "after": finish - done,
    }


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def scores_difference(a: str, b: str) -> tuple[bool, float]:
    """Whether two scores.csv are equal byte for byte, and their largest numeric difference."""
    import csv

    if Path(a).read_bytes() == Path(b).read_bytes():
        return True, 0.0
    with open(a) as fa, open(b) as fb:
        rows_a, rows_b = list(csv.reader(fa)), list(csv.reader(fb))
    if [r[:2] for r in rows_a] != [r[:2] for r in rows_b]:
        return False, float("inf")  # other samples or other predicted classes
    diff = max(
        abs(float(x) - float(y))
        for ra, rb in zip(rows_a[1:], rows_b[1:], strict=True)
        for x, y in zip(ra[2:], rb[2:], strict=True)
    )
    return False, diff


def run_child(args: argparse.Namespace, mode: str, work: Path, address: str | None) -> dict:
    out = work / mode
    out.mkdir()
    command = [
        sys.executable,
        __file__,
        f"--measure={mode}",
        f"--pool={args.pool}",
        f"--pool-dir={args.pool_dir}",
        f"--model={args.model}",
        f"--out={out}",
        f"--strategy={args.strategy}",
        f"--batch={args.batch}",
        f"--block={args.block}",
    ]
    if address:
        command.append(f"--address={address}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# ------------------------------------------------------------- the driver's own costs


def driver_cost_per_image(strategy: str, block: int, n_blocks: int = 12) -> float:
    """Seconds per image the driver spends on a block: unpickle, scores.csv rows, merge."""
    import csv
    import io

    from activelearn.scoring.select import _write_score_rows
    from activelearn.scoring.stream import CandidateSet, ScoredBlock, tie_keys
    from activelearn.strategies.registry import DETERMINISTIC_MEASURES

    rng = np.random.default_rng(0)
    size = StrategyConfig().candidates
    blocks = []
    for b in range(n_blocks):
        ids = [image_id(b * block + i) for i in range(block)]
        probas = rng.dirichlet(np.ones(N_CLASSES), block).astype(np.float32)
        scores = {m: rng.random(block) for m in DETERMINISTIC_MEASURES}
        part = CandidateSet(size)
        columns = {
            "id": np.array(ids, dtype=object),
            "probas": probas,
            "features": rng.random((block, 128), dtype=np.float32),
            "predicted": probas.argmax(1),
            "confidence": probas.max(1),
            "_u": tie_keys(ids, 0),
        }
        part.add(scores["margin"], **columns)  # what an actor returns: its block's best
        scored = ScoredBlock(ids, columns["predicted"], columns["confidence"], scores, part)
        blocks.append(pickle.dumps(scored))
    names = [f"class{i}" for i in range(N_CLASSES)]
    merged = CandidateSet(size)
    writer = csv.writer(io.StringIO())
    start = time.perf_counter()
    for raw in blocks:
        scored = pickle.loads(raw)
        merged.absorb(scored.candidates)
        _write_score_rows(writer, scored, names, DETERMINISTIC_MEASURES)
    return (time.perf_counter() - start) / (n_blocks * block)


# --------------------------------------------------------------------------- report


def predicted_seconds(run: dict, measured_pool: int, pool: int, per_image: float | None = None):
    """`run`'s time on `pool` images: its fixed costs (start-up, final selection, queue,
    shutdown: the same on any pool) once, plus `pool` times its streaming cost per image
    (measured, unless `per_image` says otherwise)."""
    if per_image is None:
        per_image = run["streaming"] / measured_pool
    return run["total"] - run["streaming"] + pool * per_image


def scale_model(runs: dict, driver: float, pool: int, cpus_per_node: int) -> list:
    """(name, measured run, predicted seconds, images/s streaming, driver-bound?) for
    MODEL_POOL images: the local scorer on this machine, Ray on n nodes of `cpus_per_node`
    actors (from the 2-node run).

    Actors scale with nodes; the driver (one process) does not: its per-image cost caps
    the throughput however many nodes there are. Every side pays its own fixed costs once.
    """
    local = runs["local"]
    local_rate = pool / local["streaming"]
    rows = [("local scorer", local, predicted_seconds(local, pool, MODEL_POOL), local_rate, False)]
    two = runs["ray, 2 nodes"]
    actor = two["streaming"] * two["actors"] / pool  # actor-seconds per image
    for nodes in MODEL_NODES:
        rate = min(nodes * cpus_per_node / actor, 1 / driver)
        seconds = predicted_seconds(two, pool, MODEL_POOL, per_image=1 / rate)
        name = f"Ray, {nodes} node{'s' * (nodes > 1)}"
        rows.append((name, two, seconds, rate, rate >= 1 / driver))
    return rows


def hms(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=20_000, help="images scored by every run")
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--strategy", default="hybrid", help="hybrid: diversity on the driver")
    parser.add_argument("--batch", type=int, default=256, help="forward-pass batch")
    parser.add_argument("--block", type=int, default=4096, help="scoring.ray.block_size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=POOL_CACHE,
        help="generated pool, shared with bench/scoring.py",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--pool-dir", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_child(args)
        return

    from activelearn.scoring.ray_engine import local_cluster

    started = time.perf_counter()
    cpus = os.cpu_count() or 1
    print(f"machine: {cpus} CPUs, load average {os.getloadavg()[0]:.1f}")
    args.pool_dir = generate_pool(args.cache_dir, args.pool, args.size, args.seed)
    with tempfile.TemporaryDirectory(prefix="al-scale-", dir="/tmp") as tmp:
        work = Path(tmp)
        os.environ["BENTOML_HOME"] = str(work / "bentoml")
        args.model = work / "classifier.bentomodel"
        save_model(args.model, Preprocessing((args.size, args.size), 3), args.seed)
        print(
            f"pool: {args.pool} {args.size}x{args.size} RGB PNGs; untrained CNN "
            f"conv32-conv64-dense128; strategy {args.strategy}, queue {QUEUE_SIZE}",
            flush=True,
        )
        runs = {"local": run_child(args, "local", work, None)}
        print(f"  local done in {runs['local']['total']:.0f} s", flush=True)
        runs["ray, 1 node"] = run_child(args, "ray1", work, None)
        print(f"  ray, 1 node done in {runs['ray, 1 node']['total']:.0f} s", flush=True)
        with local_cluster(nodes=2, cpus_per_node=1, temp_dir=work / "cluster") as address:
            runs["ray, 2 nodes"] = run_child(args, "ray2", work, address)
        print(f"  ray, 2 nodes done in {runs['ray, 2 nodes']['total']:.0f} s", flush=True)
        for r in runs.values():
            r["same_scores"], r["max_diff"] = scores_difference(
                runs["local"]["scores_file"], r["scores_file"]
            )
    driver = driver_cost_per_image(args.strategy, args.block)

    print()
    print(
        "| run | images | start-up | streaming | after streaming | total | images/s streaming "
        "| streaming vs local | total vs local | driver peak RSS | picks / scores.csv vs local |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    local = runs["local"]
    for name, r in runs.items():
        actors = f", {r['actors']} actors" if r["actors"] else ""
        picks = "same" if r["picks"] == local["picks"] else "DIFFERENT"
        same = "identical" if r["same_scores"] else f"max difference {r['max_diff']:.0e}"
        print(
            f"| {name}{actors} | {args.pool:,} | {r['startup']:.1f} s | {r['streaming']:.1f} s "
            f"| {r['after']:.1f} s | {r['total']:.1f} s | {args.pool / r['streaming']:,.0f} "
            f"| {local['streaming'] / r['streaming']:.2f}x | {local['total'] / r['total']:.2f}x "
            f"| {r['peak_rss_mb']:.0f} MB | {picks} / {same} |"
        )
    model = scale_model(runs, driver, args.pool, cpus)
    local_seconds = model[0][2]
    for name, r, seconds, rate, driver_bound in model:
        capped = " (driver-bound)" if driver_bound else ""
        print(
            f"| model: {name} | {MODEL_POOL:,} | {r['startup']:.1f} s | {hms(MODEL_POOL / rate)} "
            f"| {r['after']:.1f} s | {hms(seconds)} "
            f"| {rate:,.0f}{capped} | {rate * local['streaming'] / args.pool:.2f}x "
            f"| {local_seconds / seconds:.1f}x | | |"
        )
    two = runs["ray, 2 nodes"]
    print()
    print(
        f"Streaming: from when the engine can score (Ray: actors up) until the driver has "
        f"handled the last block. Model rows: {cpus}-CPU nodes like this one, an actor per "
        f"CPU at {two['streaming'] * two['actors'] / args.pool * 1e3:.2f} actor-ms per image "
        f"(2-node run); the driver's {driver * 1e6:.0f} us per image (unpickle, scores.csv "
        f"row, merge) caps Ray at {1 / driver:,.0f} images/s; each side's fixed costs "
        f"(start-up + after streaming) as measured, paid once."
    )
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
