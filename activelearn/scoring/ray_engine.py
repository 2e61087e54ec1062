"""Pool scoring on a Ray cluster: the local scorer's per-sample work, spread over actors.

The one module that imports Ray, an optional extra (`pip install '.[ray]'`); the scorer
imports it only for `scoring.engine=ray`. Each actor loads the model once from its
`.bentomodel` file and scores blocks of pool paths with the same decoding
(`stream_pool`), forward pass and measures as the local engine (`score_batch`), in
batches aligned with the local engine's. A block returns its score rows and only its
own best and reservoir candidates (with features); the driver merges those into one
candidate set and runs the final selection, diversity-aware or not, exactly as the
local engine does (`activelearn.scoring.score_and_select`).

The pool and the model file are read by path: on a cluster they must sit on storage
every node mounts at the same path. An actor checks both when it starts, and a node that
cannot read them stops the run with an error naming the node and the path.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from activelearn.config import ScoringConfig
from activelearn.core.processes import stop_group
from activelearn.errors import NodeCannotRead, ScorerUnavailable
from activelearn.scoring.stream import (
    CandidateSet,
    ScoredBlock,
    ScoringPlan,
    score_batch,
    stream_pool,
)

INSTALL_HINT = (
    "scoring.engine=ray needs Ray, an optional extra: pip install '.[ray]' "
    "(Ray 2.60); or score on this machine with scoring.engine=local"
)
try:
    import ray
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(INSTALL_HINT) from err

log = logging.getLogger(__name__)

IN_FLIGHT_PER_ACTOR = 2  # blocks queued per actor, so none idles while the driver merges


class PoolScorer:
    """One model on one node, scoring blocks of pool paths (a Ray actor)."""

    def __init__(
        self,
        model_path: str | None,
        pool_dir: str,
        plan: ScoringPlan,
        batch_size: int,
        probe: str,
        decode_workers: int,
        tf_threads: int,
    ) -> None:
        node_id = ray.get_runtime_context().get_node_id()[:8]
        self.where = f"{socket.gethostname()} ({ray.util.get_node_ip_address()}, node {node_id})"
        self.pool_dir, self.plan, self.batch_size = Path(pool_dir), plan, batch_size
        self.decode_workers = decode_workers
        pool_probe = self.pool_dir / probe
        if not self.pool_dir.is_dir() or not os.access(pool_probe, os.R_OK):
            raise NodeCannotRead(
                f"node {self.where} cannot read the pool: {pool_probe} is missing or unreadable "
                f"there. Put the pool on storage every node mounts at {self.pool_dir}, "
                "or score with scoring.engine=local"
            )
        self.classifier = None
        if not plan.cold:
            if model_path is None or not os.access(model_path, os.R_OK):
                raise NodeCannotRead(
                    f"node {self.where} cannot read the model {model_path}: put the "
                    ".bentomodel file on storage every node mounts at the same path"
                )
            self.classifier = _load_classifier(model_path, tf_threads)

    def node(self) -> str:
        return self.where

    def score_block(self, ids: list[str], driver_reads_first: bool) -> ScoredBlock:
        """Scores of `ids` in order, and the block's candidates (at most 2 x plan.candidates).
        Files missing here are unreadable, as on the driver, unless the driver reads them."""
        parts = [
            score_batch(self.classifier, batch, self.plan)
            for batch in stream_pool(
                ids, self.pool_dir, self.plan.prep, self.batch_size, self.decode_workers
            )
        ]
        block = merge_blocks(parts, self.plan.candidates)
        missing_here = all(not (self.pool_dir / s).exists() for s in ids)
        if ids and not block.ids and missing_here and driver_reads_first:
            raise NodeCannotRead(
                f"node {self.where} finds none of the {len(ids)} pool files from {ids[0]} "
                f"to {ids[-1]} under {self.pool_dir}: is the shared pool mounted there?"
            )
        return block


def _load_classifier(model_path: str, tf_threads: int):
    """Load the model in this process, with a private model store.

    `tf_threads` 0 keeps TensorFlow's default thread pools, which the local scorer uses
    too: a forward pass then gives the same bits as the local one on the same kind of
    machine. Other thread counts change the order of float sums (scores move by ~1e-7)
    and can change picks between near-equal scores.
    """
    if tf_threads > 0:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(tf_threads)
    home = tempfile.mkdtemp(prefix="activelearn-bentoml-")
    os.environ["BENTOML_HOME"] = home  # model.py honours it: actors never share a store
    from activelearn.learner.classifier import Classifier

    try:
        return Classifier.load(model_path)
    finally:
        shutil.rmtree(home, ignore_errors=True)  # the network is in memory now


def merge_blocks(parts: list[ScoredBlock], candidates: int) -> ScoredBlock:
    """Consecutive scored batches as one block: rows concatenated, candidates merged."""
    merged = CandidateSet(candidates)
    for part in parts:
        merged.absorb(part.candidates)
    scored = [p for p in parts if len(p.predicted)]
    measures = scored[0].scores if scored else {}
    return ScoredBlock(
        ids=[sid for p in parts for sid in p.ids],
        predicted=np.concatenate([p.predicted for p in scored]) if scored else np.zeros(0, int),
        confidence=np.concatenate([p.confidence for p in scored]) if scored else np.zeros(0),
        scores={m: np.concatenate([p.scores[m] for p in scored]) for m in measures},
        candidates=merged,
        unreadable=[u for p in parts for u in p.unreadable],
    )


def score_on_ray(
    ids: list[str],
    pool_dir: Path,
    plan: ScoringPlan,
    model_path: str | Path | None,
    scoring: ScoringConfig,
    batch_size: int,
) -> Iterator[ScoredBlock]:
    """The Ray engine: scored blocks of `ids`, in pool order (see the module docstring).

    Checks its settings now; connects to Ray, starts the actors and scores when iterated.
    """
    settings = scoring.ray
    if not plan.cold and model_path is None:
        raise ValueError(
            "scoring.engine=ray needs the model's .bentomodel file (model_path): the actors "
            "load it themselves"
        )
    if settings.actors < 0 or settings.cpus_per_actor <= 0 or settings.block_size <= 0:
        raise ValueError(
            f"scoring.ray: actors={settings.actors} must be >= 0 (0 = fill the cluster), "
            f"cpus_per_actor={settings.cpus_per_actor} and block_size={settings.block_size} > 0"
        )
    model = None if plan.cold else str(Path(model_path).resolve())
    if model is not None and not Path(model).is_file():
        raise FileNotFoundError(f"no model at {model}: train one first (dvc repro)")
    return _score_blocks(ids, str(Path(pool_dir).resolve()), plan, model, scoring, batch_size)


def _score_blocks(
    ids: list[str],
    pool_dir: str,
    plan: ScoringPlan,
    model: str | None,
    scoring: ScoringConfig,
    batch_size: int,
) -> Iterator[ScoredBlock]:
    if not ids:
        return
    settings = scoring.ray
    # Block edges on batch edges: every forward pass sees the same rows as the local one.
    block = math.ceil(settings.block_size / batch_size) * batch_size
    n_blocks = math.ceil(len(ids) / block)
    started_here = connect(settings.address)
    actors: list = []
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        n_actors = settings.actors or max(1, int(cpus // settings.cpus_per_actor))
        n_actors = min(n_actors, n_blocks)
        if n_actors * settings.cpus_per_actor > cpus:
            log.warning(
                "scoring.ray asks for %d actors x %s CPUs, the cluster has %s CPUs now: "
                "the rest wait for nodes to join (for %s s at most)",
                n_actors,
                settings.cpus_per_actor,
                cpus,
                settings.start_timeout,
            )
        actor_class = ray.remote(PoolScorer).options(
            num_cpus=settings.cpus_per_actor, scheduling_strategy="SPREAD"
        )
        decode_workers = max(1, round(settings.cpus_per_actor))
        pool = Path(pool_dir)
        probe = next((s for s in ids if (pool / s).is_file()), ids[0])  # one the driver reads
        actors = [
            actor_class.remote(
                model, pool_dir, plan, batch_size, probe, decode_workers, settings.tf_threads
            )
            for _ in range(n_actors)
        ]
        _wait_for_actors(actors, settings.start_timeout, cpus, settings.cpus_per_actor)
        start = time.perf_counter()

        def chunk(i: int) -> tuple[list[str], bool]:
            part = ids[i * block : (i + 1) * block]
            return part, (pool / part[0]).is_file()

        yield from _ordered_results(actors, chunk, n_blocks, block)
        elapsed = time.perf_counter() - start
        log.info(
            "ray: scored %d pool samples in %d blocks on %d actors in %.1f s (%.0f per second)",
            len(ids),
            n_blocks,
            n_actors,
            elapsed,
            len(ids) / max(elapsed, 1e-9),
        )
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def connect(address: str | None) -> bool:
    """Join the cluster at `address` as it is, or start a local Ray sized to this machine.

    Does nothing when this process is already connected (a caller's own `ray.init`).
    Returns whether it connected, so the caller knows to disconnect.
    """
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "configure_logging": False}
    if address:
        log.info("ray: joining the cluster at %s", address)
        _answers(address)
        try:
            ray.init(address=address, **quiet)  # its resources are the cluster's: none of ours
        except (ConnectionError, ray.exceptions.AuthenticationError) as err:
            raise ScorerUnavailable(
                f"cannot join the Ray cluster at scoring.ray.address={address}: {err}. Is it "
                "running (`ray status` on its head node)? A cluster with token authentication "
                "also needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or "
                "~/.ray/auth_token) here"
            ) from err
    else:
        log.info("ray: starting a local Ray on this machine (%d CPUs)", os.cpu_count() or 1)
        ray.init(address="local", include_dashboard=False, **quiet)
    return True


def _answers(address: str) -> None:
    """Fail at once when nothing listens at a HOST:PORT address (`ray://` too): Ray
    itself retries such an address for minutes before it gives up."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():  # `auto`, or a form Ray resolves itself
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=10):
            pass
    except OSError as err:
        raise ScorerUnavailable(
            f"nothing answers at scoring.ray.address={address} ({err}): start the cluster "
            "(`ray start --head` on its head node), or give its address"
        ) from None


def _wait_for_actors(actors: list, timeout: float, cpus: float, cpus_per_actor: float) -> None:
    """Every actor loaded the model and can read the pool, or a clear error."""
    calls = {actor.node.remote(): actor for actor in actors}
    ready, not_ready = ray.wait(list(calls), num_returns=len(calls), timeout=timeout)
    nodes = []
    for ref in ready:
        try:
            nodes.append(ray.get(ref))
        except ray.exceptions.RayError as err:
            raise NodeCannotRead(f"a scoring actor failed to start: {_reason(err)}") from None
    if not_ready:
        raise ScorerUnavailable(
            f"only {len(ready)} of {len(actors)} scoring actors started within {timeout} s; "
            f"the cluster has {cpus} CPUs and each actor takes {cpus_per_actor}: lower "
            "scoring.ray.actors (0 = fill the cluster) or scoring.ray.cpus_per_actor, or "
            "raise scoring.ray.start_timeout"
        )
    per_node = {node: nodes.count(node) for node in sorted(set(nodes))}
    log.info(
        "ray: %d scoring actors on %d nodes: %s",
        len(actors),
        len(per_node),
        ", ".join(f"{node} x{count}" for node, count in per_node.items()),
    )


def _ordered_results(actors: list, chunk, n_blocks: int, block: int) -> Iterator[ScoredBlock]:
    """Blocks to whichever actor frees up first; results handed on in pool order.

    Each actor has IN_FLIGHT_PER_ACTOR blocks queued, so it never waits for the driver;
    blocks finished ahead of their turn are held back, but only so many: the driver's
    memory does not grow with the pool.
    """
    pending: dict = {}  # ObjectRef -> (block index, actor)
    finished: dict[int, ScoredBlock] = {}
    free = [actor for _ in range(IN_FLIGHT_PER_ACTOR) for actor in actors]  # queue slots
    max_outstanding = 2 * len(free)
    submitted = handed_on = 0

    def fill() -> None:
        nonlocal submitted
        while free and submitted < n_blocks and len(pending) + len(finished) < max_outstanding:
            actor = free.pop(0)
            pending[actor.score_block.remote(*chunk(submitted))] = (submitted, actor)
            submitted += 1

    fill()
    while handed_on < n_blocks:
        if handed_on in finished:
            yield finished.pop(handed_on)
            handed_on += 1
            fill()
            continue
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        index, actor = pending.pop(ref)
        try:
            finished[index] = ray.get(ref)
        except ray.exceptions.RayError as err:
            first = index * block
            raise RuntimeError(
                f"Ray scoring failed on pool block {index} (samples {first} to "
                f"{first + block - 1}): {_reason(err)}"
            ) from None
        free.append(actor)
        fill()


def _reason(err: Exception) -> str:
    """What went wrong inside Ray, without Ray's wrapping: the exception's own line."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__  # an actor's __init__: its last line


@contextlib.contextmanager
def local_cluster(
    nodes: int = 2,
    cpus_per_node: int = 1,
    temp_dir: str | Path | None = None,
    timeout: float = 120.0,
) -> Iterator[str]:
    """A Ray cluster of `nodes` nodes on this one machine, for tests and benchmarks.

    `ray start --head` plus `nodes - 1` times `ray start --address`, each blocking in a
    process group of its own; yields the head's address. Leaving stops exactly those
    process groups (SIGTERM, then SIGKILL), never `ray stop`, which stops every Ray on
    the machine. The nodes inherit this process's environment: for token authentication
    set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN first (the driver needs them too); without
    RAY_AUTH_MODE the cluster runs with authentication off, on loopback only.
    """
    temp = Path(temp_dir or tempfile.mkdtemp(prefix="ray-")).resolve()
    temp.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {
        "RAY_AUTH_MODE": "disabled",  # else every node decides alone, from ~/.ray/auth_token
        **os.environ,
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # stop in seconds, not 30
    }
    common = [
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={cpus_per_node}",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
    ]
    cli = [sys.executable, "-m", "ray.scripts.scripts", "start"]
    started: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> None:
        with (temp / f"{name}.log").open("w") as out:
            started.append(
                subprocess.Popen(
                    [*cli, *args, *common],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )

    try:
        start("head", ["--head", f"--port={port}", "--include-dashboard=false"])
        _wait_for_port(port, timeout, started[0], temp / "head.log")
        for i in range(1, nodes):
            start(f"node{i}", [f"--address={address}"])
        for i, process in enumerate(started):
            _wait_for_log(temp / ("head.log" if i == 0 else f"node{i}.log"), timeout, process)
        yield address
    finally:
        for process in reversed(started):  # worker nodes first, the head last
            stop_group(process, grace=20.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float, process: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`ray start --head` exited: see {log_file}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the Ray head did not listen on port {port} within {timeout} s")


def _wait_for_log(log_file: Path, timeout: float, process: subprocess.Popen) -> None:
    """Until `ray start` reports its node up (it has then joined the cluster)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" in log_file.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"`ray start` exited: see {log_file}")
        time.sleep(0.5)
    raise TimeoutError(f"a Ray node did not start within {timeout} s: see {log_file}")
