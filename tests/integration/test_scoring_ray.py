"""The Ray engine picks what the local scorer picks: on a local Ray and a two-node cluster.

Needs the `ray` extra (pip install '.[ray]'; `make setup` installs it). A few hundred
generated images, a tiny model, one actor per test on a local Ray of 2 CPUs, and one
test on a cluster of two `ray start` nodes on this machine, stopped afterwards.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import ray  # noqa: F401 (a test dependency: fail here, never skip, without it)

from activelearn.config import ModelConfig, RayScoringConfig, ScoringConfig, StrategyConfig
from activelearn.data.images import Preprocessing, class_names_of, load_labeled
from activelearn.learner.classifier import Classifier
from activelearn.scoring.select import score_and_select
from activelearn.workspace.manifest import Manifest
from tests.helpers import calibrated_weights, write_class_folders

PREP = Preprocessing((12, 12), 1)
BATCH = 32


@pytest.fixture(scope="module")
def short_tmp():
    """Ray's socket paths must stay short: not pytest's deep tmp_path."""
    with tempfile.TemporaryDirectory(prefix="al-ray-", dir="/tmp") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module", autouse=True)
def ray_env(short_tmp):
    """Loopback-only Rays without token authentication, whatever ~/.ray holds.

    (Ray reads RAY_AUTH_MODE once per process, at import: "token" set here would not
    reach this driver, only the nodes it starts.)
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("BENTOML_HOME", str(short_tmp / "bentoml"))
        yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def campaign(short_tmp):
    """A trained tiny model saved as a .bentomodel file, and a pool of 300 images."""
    root = short_tmp / "campaign"
    write_class_folders(root / "train", per_class=10)
    write_class_folders(root / "pool", per_class=100, seed=5)
    (root / "pool" / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    names = class_names_of(root / "train")
    labeled = load_labeled(root / "train", names, PREP)
    cfg = ModelConfig(filters=[8], dense_units=16, dropout=0.3, min_steps=20, min_epochs=2)
    model = Classifier.build(names, PREP, cfg, seed=0)
    model.fit(labeled.x, labeled.y, cfg, seed=0)
    model.save(root / "model.bentomodel")
    # Both engines score with the model as read back from its file, as a round does.
    return root, Classifier.load(root / "model.bentomodel"), labeled.x[:15]


@pytest.fixture
def local_ray(short_tmp):
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=150_000_000,
            _temp_dir=str(short_tmp / "ray"),
            log_to_driver=False,
        )
    yield


def score(
    campaign, out: Path, strategy: str, scoring: ScoringConfig | None, pool=None, gone=(), mc=0
):
    """One round's scoring; `gone`: pool samples in the manifest whose files are deleted."""
    root, model, labeled_x = campaign
    manifest = Manifest(out / "manifest.csv")
    for sid in sorted(
        [*gone, *(p.relative_to(root / "pool").as_posix() for p in (root / "pool").rglob("*.png"))]
    ):
        manifest.set_state(sid, "pool")
    result = score_and_select(
        model,
        manifest,
        pool or root / "pool",
        StrategyConfig(name=strategy, batch_size=10, candidates=40, mc_samples=mc),
        out / "round",
        labeled_x=labeled_x,
        prep=PREP,
        seed=7,
        batch_size=BATCH,
        scoring=scoring,
        model_path=root / "model.bentomodel",
    )
    return result, manifest


def assert_same_round(local_dir: Path, ray_dir: Path, local, on_ray) -> None:
    (local_result, local_manifest), (ray_result, ray_manifest) = local, on_ray
    assert len(ray_result.queue) == 10
    assert ray_result.queue == local_result.queue  # ids, ranks, predictions, scores
    for name in ("scores.csv", "queue.jsonl", "queue_summary.json"):
        assert (ray_dir / "round" / name).read_text() == (local_dir / "round" / name).read_text()
    assert ray_result.summary["unreadable"] == 1
    assert ray_manifest.samples["class0/broken.png"].state == "rejected"
    assert local_manifest.samples["class0/broken.png"].reason == (
        ray_manifest.samples["class0/broken.png"].reason
    )


def ray_scoring(**settings) -> ScoringConfig:
    # Blocks of 64: five of them, each keeping only its own 40 best and 40 random.
    return ScoringConfig(engine="ray", batch_size=BATCH, ray=RayScoringConfig(**settings))


def test_ray_scorer_picks_and_scores_as_the_local_one_uncertainty(
    tmp_path, campaign, local_ray, caplog
):
    caplog.set_level(logging.INFO, logger="activelearn")
    local = score(campaign, tmp_path / "local", "entropy", None)
    on_ray = score(campaign, tmp_path / "ray", "entropy", ray_scoring(actors=1, block_size=64))
    assert_same_round(tmp_path / "local", tmp_path / "ray", local, on_ray)
    assert "1 scoring actors on 1 nodes" in caplog.text


def test_a_pool_file_deleted_everywhere_is_rejected_on_ray_as_locally(
    tmp_path, campaign, local_ray
):
    gone = ["aaa/gone.png", "aab/gone.png"]  # first in the pool: the probe and block 0
    local = score(campaign, tmp_path / "local", "entropy", None, gone=gone)
    on_ray = score(
        campaign, tmp_path / "ray", "entropy", ray_scoring(actors=1, block_size=64), gone=gone
    )
    assert on_ray[0].queue == local[0].queue
    for sid in gone:
        assert on_ray[1].samples[sid].state == "rejected"
        assert on_ray[1].samples[sid].reason == local[1].samples[sid].reason


def test_mc_dropout_on_ray_samples_as_the_local_one(tmp_path, campaign, local_ray):
    """The dropout masks are seeded per batch, so the actor draws what the local scorer does."""
    local = score(campaign, tmp_path / "local", "bald", None, mc=5)
    on_ray = score(campaign, tmp_path / "ray", "bald", ray_scoring(actors=1, block_size=64), mc=5)
    assert_same_round(tmp_path / "local", tmp_path / "ray", local, on_ray)


@pytest.mark.parametrize("kind", ["backbone", "custom"])
def test_ray_scores_a_backbone_and_a_custom_model_as_the_local_scorer(
    tmp_path, short_tmp, campaign, local_ray, kind
):
    """The actors load the whole network from the file: any kind scores the same (the
    backbone from a weights file saved here first: nothing downloaded)."""
    root = short_tmp / "campaign"  # the module's pool
    prep = Preprocessing((32, 32), 3, "raw" if kind == "backbone" else "unit")
    recipe = dict(dense_units=8, min_steps=5, min_epochs=1)
    cfg = (
        ModelConfig(kind="backbone", weights=None, **recipe)
        if kind == "backbone"
        else ModelConfig(kind="custom", _target_="tests.models.tiny.build_model", **recipe)
    )
    names = class_names_of(root / "train")
    labeled = load_labeled(root / "train", names, prep)
    if kind == "backbone":
        cfg = replace(cfg, weights=calibrated_weights(tmp_path, labeled.x, cfg))
    model = Classifier.build(names, prep, cfg, seed=0)
    model.fit(labeled.x, labeled.y, cfg, seed=0)
    path = tmp_path / f"{kind}.bentomodel"
    model.save(path)
    model = Classifier.load(path)
    pool = tmp_path / "pool"
    write_class_folders(pool, per_class=20, seed=6)

    def one(out, scoring):
        manifest = Manifest(out / "manifest.csv")
        manifest.sync_pool(pool, prep)
        return score_and_select(
            model,
            manifest,
            pool,
            StrategyConfig(name="entropy", batch_size=5, candidates=20),
            out / "round",
            labeled_x=labeled.x[:6],
            prep=prep,
            seed=7,
            batch_size=BATCH,
            scoring=scoring,
            model_path=path,
        )

    local = one(tmp_path / "local", None)
    on_ray = one(tmp_path / "ray", ray_scoring(actors=1, block_size=32))
    assert len(on_ray.queue) == 5 and on_ray.queue == local.queue
    assert len({item.confidence for item in local.queue}) > 1  # not one answer for all
    assert (tmp_path / "ray/round/scores.csv").read_text() == (
        tmp_path / "local/round/scores.csv"
    ).read_text()


def test_cold_start_on_ray_picks_as_the_local_one(tmp_path, campaign, local_ray):
    """No model yet: actors decode pixel features only, TypiClust runs on the driver."""
    root = campaign[0]
    picks = {}
    for engine in ("local", "ray"):
        manifest = Manifest(tmp_path / engine / "manifest.csv")
        for path in sorted((root / "pool").rglob("*.png")):
            manifest.set_state(path.relative_to(root / "pool").as_posix(), "pool")
        result = score_and_select(
            None,
            manifest,
            root / "pool",
            StrategyConfig(batch_size=8, candidates=40, cold_start="typiclust"),
            tmp_path / engine,
            labeled_x=None,
            prep=PREP,
            seed=3,
            batch_size=BATCH,
            scoring=ray_scoring(actors=1, block_size=64) if engine == "ray" else None,
        )
        picks[engine] = [item.sample_id for item in result.queue]
    assert len(picks["ray"]) == 8 and picks["ray"] == picks["local"]


def test_a_node_that_cannot_read_the_pool_is_a_clear_error(tmp_path, campaign, local_ray):
    from activelearn.scoring.ray_engine import NodeCannotRead

    with pytest.raises(NodeCannotRead, match="cannot read the pool.*/nowhere/class0"):
        score(
            campaign,
            tmp_path,
            "entropy",
            ray_scoring(actors=1, block_size=64),
            pool=Path("/nowhere"),
        )
    assert not list((tmp_path / "round").glob("*.partial"))  # no half-written scores


def test_two_node_cluster_picks_as_the_local_scorer_diversity(
    tmp_path, campaign, short_tmp, caplog
):
    """hybrid with 15 of 30 labeled: TypiClust and cluster-margin, on the driver."""
    from activelearn.scoring.ray_engine import local_cluster

    if ray.is_initialized():
        ray.shutdown()  # this test's driver joins the cluster through the scorer itself
    caplog.set_level(logging.INFO, logger="activelearn")
    local = score(campaign, tmp_path / "local", "hybrid", None)
    cluster_dir = short_tmp / "cluster"
    with local_cluster(nodes=2, cpus_per_node=1, temp_dir=cluster_dir) as address:
        on_ray = score(
            campaign,
            tmp_path / "ray",
            "hybrid",
            ray_scoring(address=address, actors=2, block_size=64),
        )
    assert_same_round(tmp_path / "local", tmp_path / "ray", local, on_ray)
    assert "2 scoring actors on 2 nodes" in caplog.text
    assert not ray.is_initialized()  # the scorer left the cluster it joined
    assert not processes_mentioning(str(cluster_dir)), "Ray processes survived the cluster"


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def test_a_cluster_nobody_answers_at_stops_the_round_at_once(tmp_path):
    """Ray would retry the address for minutes; the round stops with one line instead."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"  # closed when the block ends
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "activelearn",
            "round=0",
            "scoring=ray",
            f"scoring.ray.address={address}",
            "model.min_steps=20",
            f"workspace={tmp_path / 'campaign'}",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert f"nothing answers at scoring.ray.address={address}" in output
    assert "Traceback" not in output


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    monkeypatch.delitem(sys.modules, "activelearn.scoring.ray_engine", raising=False)
    with pytest.raises(ImportError, match=r"pip install '\.\[ray\]'"):
        import activelearn.scoring.ray_engine  # noqa: F401
