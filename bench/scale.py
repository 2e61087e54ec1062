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

Reported per run: wall time of `score_and_select` (Ray start-up included), Ray's start-up
and streaming parts, peak RSS of the driver, and whether `queue.jsonl` and `scores.csv`
equal the local run's byte for byte. Then a model of a 10-million-image pool on 1, 8 and
64 nodes like this one, from the measured per-image costs: actors' cost per image (from
the 2-node run), the driver's cost per image (writing scores.csv and merging candidates,
measured on synthetic blocks), start-up and the final selection on the driver.
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
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only Rays; nothing from ~/.ray
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

import numpy as np  # noqa: E402
from scoring import POOL_CACHE, generate_pool, image_id, peak_rss_mib  # noqa: E402  (bench/scoring.py: one shared pool cache)

from activelearn.config import (  # noqa: E402
    ModelConfig,
    RayScoringConfig,
    ScoringConfig,
    StrategyConfig,
)
from activelearn.data import Preprocessing  # noqa: E402

N_CLASSES = 10
QUEUE_SIZE = 100
MODEL_NODES = (1, 8, 64)
MODEL_POOL = 10_000_000


def save_model(path: Path, prep: Preprocessing, seed: int) -> None:
    from activelearn.model import Classifier

    cfg = ModelConfig(filters=[32, 64], dense_units=128)
    names = [f"class{i}" for i in range(N_CLASSES)]
    Classifier.build(names, prep, cfg, seed=seed, version="bench").save(path)


# ------------------------------------------------------------------ one run, in a child


class RayRecords(logging.Handler):
    """The scorer's own timing: when the actors were up, how long streaming took."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ready_at: float | None = None
        self.streaming: float | None = None
        self.actors: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("ray: %d scoring actors"):
            self.ready_at, self.actors = time.perf_counter(), record.args[0]
        elif record.msg.startswith("ray: scored"):
            self.streaming = record.args[3]


def measure_child(args: argparse.Namespace) -> None:
    from activelearn.manifest import Manifest
    from activelearn.model import Classifier
    from activelearn.scoring import score_and_select

    records = RayRecords()
    logging.getLogger("activelearn").addHandler(records)
    logging.getLogger("activelearn").setLevel(logging.INFO)
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
    score_and_select(
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
    total = time.perf_counter() - start
    result = {
        "total": total,
        "startup": None if records.ready_at is None else records.ready_at - start,
        "streaming": records.streaming,
        "actors": records.actors,
        "peak_rss_mb": peak_rss_mib(),
        "picks": digest(
            "\n".join(json.loads(line)["sample_id"] for line in open(out / "round" / "queue.jsonl"))
        ),
        "scores_file": str(out / "round" / "scores.csv"),
    }
    print("RESULT " + json.dumps(result), flush=True)


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
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["process"] = time.perf_counter() - started
    return result


# ------------------------------------------------------------- the driver's own costs


def driver_cost_per_image(strategy: str, block: int, n_blocks: int = 12) -> float:
    """Seconds per image the driver spends on a block: unpickle, scores.csv rows, merge."""
    import csv
    import io

    from activelearn.scoring import (
        DETERMINISTIC_MEASURES,
        CandidateSet,
        ScoredBlock,
        _write_score_rows,
        tie_keys,
    )

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


def selection_seconds(strategy: str) -> float:
    """The final selection on the driver over a full candidate set (2 x candidates)."""
    from activelearn import strategies

    rng = np.random.default_rng(0)
    n = 2 * StrategyConfig().candidates
    probas = rng.dirichlet(np.ones(N_CLASSES), n)
    features = rng.random((n, 128))
    start = time.perf_counter()
    strategies.select_batch(strategy, probas, QUEUE_SIZE, 0, features=features, candidates=1000)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- report


def scale_model(runs: dict, driver: float, select: float, pool: int, cpus_per_node: int) -> list:
    """Predicted seconds for MODEL_POOL images on n nodes of `cpus_per_node` actors each.

    Actors scale with nodes; the driver (one process) does not: its per-image cost caps
    the throughput however many nodes there are.
    """
    two = runs["ray, 2 nodes"]
    actor = two["streaming"] * two["actors"] / pool  # actor-seconds per image
    startup = two["startup"]
    local = runs["local"]["total"] / pool
    rows = []
    for nodes in MODEL_NODES:
        rate = min(nodes * cpus_per_node / actor, 1 / driver)
        seconds = startup + MODEL_POOL / rate + select
        rows.append((nodes, seconds, MODEL_POOL * local / seconds, rate))
    return rows, actor, local


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

    from activelearn.scoring_ray import local_cluster

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
    select = selection_seconds(args.strategy)

    base = runs["local"]
    print()
    print(
        "| run | actors | wall time | Ray start-up | streaming | images/s | driver peak RSS "
        "| same picks | scores.csv against local |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        startup = "-" if r["startup"] is None else f"{r['startup']:.1f} s"
        streaming = "-" if r["streaming"] is None else f"{r['streaming']:.1f} s"
        same = "identical" if r["same_scores"] else f"max difference {r['max_diff']:.0e}"
        print(
            f"| {name} | {r['actors'] or '-'} | {r['total']:.1f} s | {startup} | {streaming} "
            f"| {args.pool / (r['streaming'] or r['total']):.0f} | {r['peak_rss_mb']:.0f} MB "
            f"| {'yes' if r['picks'] == base['picks'] else 'NO'} "
            f"| {same} |"
        )
    rows, actor, local = scale_model(runs, driver, select, args.pool, cpus)
    print()
    print(
        f"Measured per image: local scorer {local * 1e3:.2f} ms (end to end); a Ray actor "
        f"{actor * 1e3:.2f} actor-ms (decode, forward, block top-k, transfer); the driver "
        f"{driver * 1e6:.0f} us (unpickle, scores.csv row, candidate merge: caps Ray at "
        f"{1 / driver:,.0f} images/s). Start-up {runs['ray, 2 nodes']['startup']:.0f} s, "
        f"final {args.strategy} selection {select:.1f} s."
    )
    print()
    print(f"Model: {MODEL_POOL:,} images, nodes of {cpus} CPUs (an actor per CPU) like this one:")
    print("| nodes | predicted time | images/s | speed-up over the local scorer |")
    print("|---|---|---|---|")
    print(f"| local scorer | {hms(MODEL_POOL * local)} | {1 / local:,.0f} | 1.0x |")
    for nodes, seconds, speedup, rate in rows:
        capped = " (driver-bound)" if rate >= 1 / driver - 1e-9 else ""
        print(f"| {nodes} | {hms(seconds)} | {rate:,.0f}{capped} | {speedup:.1f}x |")
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
