"""Pool scoring at scale: end-to-end against its parts, against modAL's way, MC dropout.

    .venv/bin/python bench/scoring.py [--pool 20000] [--big 100000] [--small 10000] [--size 32]

A pool of `--size` x `--size` RGB PNGs is generated once into `--cache-dir` (seeded, in
folders of 1000; a rerun reuses it) and scored by a small CNN of the default shape
(conv 32, conv 64, dense 128) with random weights: training changes what it predicts,
not what a forward pass costs. One table, every ratio against a baseline measured in
the same run:

- Overhead: `score_and_select` (entropy; files to queue, scores.csv included) against
  its unavoidable parts measured alone: decoding every file once (`preprocess`, one
  loop) plus the forward pass on the decoded array (`predict_with_features`, batches
  of `--batch`). Goal <= 0.75: decoding hidden behind the forward pass.
- modAL's way: decode the whole pool into one preallocated array, then modAL's
  `entropy_sampling` with the same network behind a minimal `predict_proba` estimator.
  Time and peak RSS (VmHWM; tracemalloc does not see TensorFlow's memory) of each side
  in a fresh child process, at `--pool` and `--big`; ours also at `--small`, for the
  flatness goal (peak at `--big` within 1.2x of `--small`). Goal: ours >= 2.5x faster.
- MC dropout: `predict_with_features(x, mc_samples=T)` against T full passes with
  dropout on (a compiled `network(x, training=True)`), on the first `--mc-pool` images.
- Selection: `select_batch` of every strategy on `--pool` samples (bench/selection.py's
  embedding-like features, 100 labeled), once each; bench/selection.py has the detail.

Every timed call is warmed up first (TF tracing is a one-off cost); times are the best
of `--repeat` runs, the parts interleaved. Overlap needs idle cores: the table reports
how many cores the end-to-end run got (process CPU time / wall time). Other jobs on the
machine show up there and as noise: rerun before trusting a ratio near its goal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from activelearn.config import ModelConfig, StrategyConfig  # noqa: E402
from activelearn.data.images import Preprocessing, preprocess  # noqa: E402
from activelearn.scoring.select import score_and_select  # noqa: E402
from activelearn.workspace.manifest import Manifest  # noqa: E402

CHUNK = 1000  # files per folder, and per generation task
N_CLASSES = 10
QUEUE_SIZE = 100


# ---------------------------------------------------------------- the pool on disk


POOL_CACHE = Path(tempfile.gettempdir()) / "activelearn-bench-scoring"  # also bench/scale.py


def image_id(i: int) -> str:
    return f"{i // CHUNK:03d}/{i:06d}.png"


def _write_chunk(task: tuple[Path, int, int, int]) -> None:
    """Write files chunk*CHUNK ... of the pool: smooth colour fields plus pixel noise."""
    pool_dir, chunk, size, seed = task
    folder = pool_dir / f"{chunk:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, chunk])
    scale = max(1, size // 4)
    for i in range(chunk * CHUNK, (chunk + 1) * CHUNK):
        coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.int16)
        pixels = np.kron(coarse, np.ones((scale, scale, 1), np.int16))[:size, :size]
        pixels = pixels + rng.integers(-12, 13, pixels.shape)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / image_id(i)[4:])
    (folder / ".complete").touch()


def generate_pool(cache_dir: Path, n: int, size: int, seed: int) -> Path:
    """The first `n` images of the cached pool, generating missing folders in parallel."""
    pool_dir = cache_dir / f"pool-{size}px-seed{seed}"
    chunks = range(-(-n // CHUNK))
    missing = [c for c in chunks if not (pool_dir / f"{c:03d}" / ".complete").exists()]
    if missing:
        print(f"generating {len(missing) * CHUNK} PNGs into {pool_dir} ...", flush=True)
        start = time.perf_counter()
        with Pool(os.cpu_count()) as workers:
            workers.map(_write_chunk, [(pool_dir, c, size, seed) for c in missing])
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return pool_dir


# ---------------------------------------------------------------- the two ways to score


def build_classifier(prep: Preprocessing, seed: int):
    from activelearn.learner.classifier import Classifier

    cfg = ModelConfig(filters=[32, 64], dense_units=128)
    names = [f"class{i}" for i in range(N_CLASSES)]
    return Classifier.build(names, prep, cfg, seed=seed)


def pool_manifest(ids: list[str], path: Path) -> Manifest:
    """Every file in state pool (sync_pool would decode each file once more)."""
    manifest = Manifest(path)
    for sid in ids:
        manifest.set_state(sid, "pool")
    return manifest


def score_ours(
    classifier, ids: list[str], pool_dir: Path, prep: Preprocessing, batch: int
) -> list[str]:
    """Files to queue: the streaming scorer with entropy, as a round calls it."""
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        result = score_and_select(
            classifier,
            pool_manifest(ids, work / "manifest.csv"),
            pool_dir,
            StrategyConfig(name="entropy", batch_size=QUEUE_SIZE),
            work / "rounds" / "1",
            labeled_x=None,
            prep=prep,
            seed=0,
            batch_size=batch,
        )
    return [item.sample_id for item in result.queue]


class KerasEstimator:
    """The least modAL's query strategies read from an estimator: predict_proba."""

    def __init__(self, classifier) -> None:
        self.classifier = classifier

    def predict_proba(self, X, **kwargs):  # noqa: N803 (sklearn's argument name)
        return self.classifier.predict_proba(X)


def read_all(pool_dir: Path, n: int) -> None:
    for i in range(n):
        (pool_dir / image_id(i)).read_bytes()


def decode_all(ids: list[str], pool_dir: Path, prep: Preprocessing) -> np.ndarray:
    """Every file decoded once, in one loop, into one preallocated array."""
    x = np.empty((len(ids), *prep.input_shape), np.float32)
    for i, sid in enumerate(ids):
        x[i] = preprocess(pool_dir / sid, prep)
    return x


def score_modal(classifier, ids: list[str], pool_dir: Path, prep: Preprocessing) -> list[str]:
    """modAL's way: the whole pool as one array, then entropy sampling over it."""
    from modAL.uncertainty import entropy_sampling

    x = decode_all(ids, pool_dir, prep)
    picks, _ = entropy_sampling(KerasEstimator(classifier), x, n_instances=QUEUE_SIZE)
    return [ids[i] for i in picks]


def forward_pass(classifier, x: np.ndarray, batch: int, mc_samples: int = 0) -> None:
    for i in range(0, len(x), batch):
        classifier.predict_with_features(x[i : i + batch], mc_samples)


def full_mc_passes(network, batch: int, mc_samples: int) -> Callable[[np.ndarray], None]:
    """T full forward passes with dropout on: the baseline for cheap MC dropout."""
    import tensorflow as tf

    stochastic = tf.function(lambda x: network(x, training=True))

    def run(x: np.ndarray) -> None:
        for i in range(0, len(x), batch):
            chunk = tf.constant(x[i : i + batch])
            np.stack([stochastic(chunk).numpy() for _ in range(mc_samples)], axis=-1)

    return run


def batch_shapes(n: int, batch: int) -> set[int]:
    """Row counts a pass over n samples in batches of `batch` calls the model with."""
    return {min(n, batch), n % batch or min(n, batch)}


def warm_up(classifier, prep: Preprocessing, n: int, batch: int) -> None:
    """Trace the compiled passes for every batch shape a timed run will use."""
    for rows in batch_shapes(n, batch):
        x = np.zeros((rows, *prep.input_shape), np.float32)
        classifier.predict_with_features(x)
        classifier.predict_proba(x)


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process's threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def best_of(repeat: int, call: Callable[[], object]) -> float:
    return min(timed(call)[0] for _ in range(repeat))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), in MiB.

    Not getrusage's ru_maxrss: Linux carries the parent's peak into a child across
    fork + exec, so a child started by a big parent reports at least the parent's peak.
    """
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024


def measure_child(args: argparse.Namespace) -> None:
    """One side at one pool size in this fresh process: best time and peak RSS, as JSON."""
    prep = Preprocessing((args.size, args.size), 3)
    pool_dir = generate_pool(args.cache_dir, args.n, args.size, args.seed)
    ids = [image_id(i) for i in range(args.n)]
    classifier = build_classifier(prep, args.seed)
    warm_up(classifier, prep, args.n, args.batch)
    if args.measure == "ours":
        seconds = best_of(
            args.repeat, lambda: score_ours(classifier, ids, pool_dir, prep, args.batch)
        )
    else:
        seconds = best_of(args.repeat, lambda: score_modal(classifier, ids, pool_dir, prep))
    print(json.dumps({"seconds": seconds, "peak_mib": peak_rss_mib()}))


def in_child(args: argparse.Namespace, side: str, n: int) -> dict:
    command = [
        sys.executable,
        __file__,
        f"--measure={side}",
        f"--n={n}",
        f"--size={args.size}",
        f"--batch={args.batch}",
        f"--seed={args.seed}",
        f"--repeat={args.child_repeat if n <= args.pool else 1}",
        f"--cache-dir={args.cache_dir}",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"child {side} at {n} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the report


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return f"{os.cpu_count()} cores ({cpu}), {mem_kib / 2**20:.0f} GiB RAM, load avg {_load()}"


def _load() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def selection_times(n: int, seed: int) -> list[tuple[str, float]]:
    """Every strategy's select_batch on n samples: bench/selection.py's set-up, once each."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from selection import clustered_features

    from activelearn import strategies as st

    rng = np.random.default_rng(seed)
    features = clustered_features(rng, n, 128, 20)
    labeled = clustered_features(rng, 100, 128, 20)
    probas_mc = rng.dirichlet(np.full(20, 0.3), size=(n, 10)).transpose(0, 2, 1)
    probas = probas_mc.mean(axis=2)
    rows = []
    for name, strategy in st.STRATEGIES.items():
        mc = strategy.measure in ("bald", "variation_ratio")
        seconds = best_of(
            1,
            lambda name=name, mc=mc: st.select_batch(
                name,
                probas_mc if mc else probas,
                QUEUE_SIZE,
                seed,
                features=features,
                labeled_features=labeled,
            ),
        )
        rows.append((name, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=20_000, help="files for overhead and modAL")
    parser.add_argument("--big", type=int, default=100_000, help="the large pool against modAL")
    parser.add_argument("--small", type=int, default=10_000, help="ours' memory baseline")
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--batch", type=int, default=256, help="forward-pass batch")
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--mc-pool", type=int, default=2_000, help="images for MC dropout")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many, in-process")
    parser.add_argument("--child-repeat", type=int, default=2, help="best of, child processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=POOL_CACHE,
        help="generated pool, reused by reruns",
    )
    parser.add_argument(
        "--against-tfdata",
        action="store_true",
        help="only the two rows against a plain tf.data pipeline (JPEG photos, small PNGs)",
    )
    parser.add_argument("--photos", type=int, default=300, help="3000x2000 JPEGs, tf.data rows")
    parser.add_argument("--measure", choices=["ours", "modal"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_child(args)
        return

    if args.against_tfdata:
        against_tfdata(args)
        return
    started = time.perf_counter()
    print(f"machine: {machine()}")
    generate_pool(args.cache_dir, max(args.pool, args.big, args.small), args.size, args.seed)
    prep = Preprocessing((args.size, args.size), 3)
    ids = [image_id(i) for i in range(args.pool)]
    pool_dir = args.cache_dir / f"pool-{args.size}px-seed{args.seed}"
    classifier = build_classifier(prep, args.seed)
    warm_up(classifier, prep, args.pool, args.batch)
    print(f"pool of {args.size}x{args.size} RGB PNGs, untrained CNN conv32-conv64-dense128")

    # Overhead: end-to-end against decode + forward, all in this process, interleaved so
    # that a burst of load from other jobs hits every part alike.
    x = decode_all(ids, pool_dir, prep)  # also warms the page cache
    times: dict[str, list[tuple[float, float]]] = {"decode": [], "forward": [], "e2e": []}
    for _ in range(args.repeat):
        times["decode"].append(timed(lambda: decode_all(ids, pool_dir, prep)))
        times["forward"].append(timed(lambda: forward_pass(classifier, x, args.batch)))
        times["e2e"].append(timed(lambda: score_ours(classifier, ids, pool_dir, prep, args.batch)))
    (decode_s, _), (forward_s, _), (end_to_end_s, end_to_end_cpu) = (min(times[k]) for k in times)

    # MC dropout on the same decoded array.
    x_mc = x[: args.mc_pool]
    full = full_mc_passes(classifier.network, args.batch, args.mc_samples)
    for rows in batch_shapes(len(x_mc), args.batch):
        forward_pass(classifier, x_mc[:rows], args.batch, args.mc_samples)
        full(x_mc[:rows])
    mc_times: dict[str, list[float]] = {"ours": [], "full": []}
    for _ in range(2):
        mc_times["ours"].append(
            best_of(1, lambda: forward_pass(classifier, x_mc, args.batch, args.mc_samples))
        )
        mc_times["full"].append(best_of(1, lambda: full(x_mc)))
    mc_ours_s, mc_full_s = min(mc_times["ours"]), min(mc_times["full"])

    # modAL's way and memory, each in a fresh process, on files already in the page
    # cache: otherwise whichever side reads the big pool first pays the disk for both.
    read_all(pool_dir, max(args.pool, args.big, args.small))
    children = {}
    for side, n in [
        ("ours", args.small),
        ("ours", args.pool),
        ("modal", args.pool),
        ("ours", args.big),
        ("modal", args.big),
    ]:
        print(f"child: {side} at {n} ...", flush=True)
        children[side, n] = in_child(args, side, n)

    selections = selection_times(args.pool, args.seed)

    rows = [("", "ours", "baseline", "ratio", "goal", "met")]

    def add(what: str, ours: str, baseline: str, ratio: float, goal: str = "") -> None:
        met = ""
        if goal:
            limit = float(goal.split()[1].rstrip("x"))
            met = "yes" if (ratio <= limit if goal.startswith("<=") else ratio >= limit) else "NO"
        rows.append((what, ours, baseline, f"{ratio:.2f}x", goal, met))

    pool, big, small = _k(args.pool), _k(args.big), _k(args.small)
    add(
        f"overhead {pool}: end-to-end / (decode + forward)",
        f"{end_to_end_s:.2f} s",
        f"{decode_s:.2f} + {forward_s:.2f} s",
        end_to_end_s / (decode_s + forward_s),
        "<= 0.75x",
    )
    rows.append(
        (
            "  end-to-end: CPU time / wall time (cores it got)",
            f"{end_to_end_cpu:.2f} s CPU",
            f"{os.cpu_count()} cores",
            f"{end_to_end_cpu / end_to_end_s:.2f}",
            "",
            "",
        )
    )
    for n in (args.pool, args.big):
        ours, modal = children["ours", n], children["modal", n]
        add(
            f"modAL's way {_k(n)}: time, modAL / ours",
            f"{ours['seconds']:.2f} s",
            f"{modal['seconds']:.2f} s",
            modal["seconds"] / ours["seconds"],
            ">= 2.5x",
        )
        add(
            f"modAL's way {_k(n)}: peak RSS, modAL / ours",
            f"{ours['peak_mib']:.0f} MiB",
            f"{modal['peak_mib']:.0f} MiB",
            modal["peak_mib"] / ours["peak_mib"],
        )
    add(
        f"ours: time {big} / {small} (linear: {args.big / args.small:.1f}x)",
        f"{children['ours', args.big]['seconds']:.2f} s",
        f"{children['ours', args.small]['seconds']:.2f} s",
        children["ours", args.big]["seconds"] / children["ours", args.small]["seconds"],
    )
    add(
        f"ours: peak RSS {big} / {small}",
        f"{children['ours', args.big]['peak_mib']:.0f} MiB",
        f"{children['ours', args.small]['peak_mib']:.0f} MiB",
        children["ours", args.big]["peak_mib"] / children["ours", args.small]["peak_mib"],
        "<= 1.2x",
    )
    add(
        f"MC dropout T={args.mc_samples}, {_k(args.mc_pool)}: T full passes / ours",
        f"{mc_ours_s:.2f} s",
        f"{mc_full_s:.2f} s",
        mc_full_s / mc_ours_s,
    )
    for name, seconds in selections:
        rows.append((f"select {QUEUE_SIZE} of {pool}: {name}", f"{seconds:.2f} s", "", "", "", ""))

    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    print()
    print(f"load avg after: {_load()}; total {time.perf_counter() - started:.0f} s")


def against_tfdata(args: argparse.Namespace) -> None:
    """Two rows: `--photos` 3000x2000 JPEGs and `--pool` small PNGs, ours against tf.data."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from against_tfdata import compare, generate_photos

    print(f"machine: {machine()}")
    prep = Preprocessing((args.size, args.size), 3)
    classifier = build_classifier(prep, args.seed)
    photos = generate_photos(args.photos, seed=args.seed)
    photo_ids = sorted(p.name for p in photos.glob("*.jpg"))[: args.photos]
    generate_pool(args.cache_dir, args.pool, args.size, args.seed)
    png_dir = args.cache_dir / f"pool-{args.size}px-seed{args.seed}"
    png_ids = [image_id(i) for i in range(args.pool)]
    rows = [
        (f"{len(photo_ids)} JPEG 3000x2000", photos, photo_ids, True),
        (f"{_k(args.pool)} PNG {args.size}x{args.size}", png_dir, png_ids, False),
    ]
    print(f"model input {args.size}x{args.size} RGB, untrained CNN conv32-conv64-dense128,")
    print(f"top-{QUEUE_SIZE} entropy, best of {args.repeat}, interleaved\n")
    print("| pool | ours | plain tf.data | ratio | pool sync | sync / scoring |")
    print("|---|---|---|---|---|---|")
    for name, folder, ids, sync in rows:
        got = compare(classifier, folder, ids, prep, args.batch, args.repeat, score_ours, sync)
        sync_cell = f"{got['sync']:.2f} s" if got["sync"] is not None else "-"
        share = f"{got['sync'] / got['ours']:.3f}" if got["sync"] is not None else "-"
        print(
            f"| {name} | {got['ours']:.2f} s | {got['tfdata']:.2f} s (ratio 1/{got['ratio']}) "
            f"| {got['ours'] / got['tfdata']:.2f}x | {sync_cell} | {share} |",
            flush=True,
        )
    print(f"\nload avg after: {_load()}")


def _k(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


if __name__ == "__main__":
    main()
