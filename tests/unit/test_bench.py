"""The pure helpers of the bench/ scripts (the benchmarks themselves never run in tests)."""

import importlib.util
import os
import sys
from pathlib import Path
from unittest.mock import patch

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str):
    """bench/<name>.py as a module; bench/ is on sys.path only while it imports (its file
    names would shadow packages such as `serving`), and its environment defaults are undone."""
    with patch.dict(os.environ), patch.object(sys, "path", [str(BENCH), *sys.path]):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scale():
    return load_bench("scale")


def test_phases_split_the_wall_time(scale):
    assert scale.phases(start=10.0, ready=12.0, done=20.0, finish=21.5) == {
        "total": 11.5,
        "startup": 2.0,
        "streaming": 8.0,
        "after": 1.5,
    }


def test_a_bigger_pool_scales_only_the_streaming(scale):
    run = {"total": 10.0, "streaming": 8.0}  # 2 s fixed: start-up, selection, shutdown
    assert scale.predicted_seconds(run, 1000, 1000) == pytest.approx(10.0)
    assert scale.predicted_seconds(run, 1000, 3000) == pytest.approx(2.0 + 24.0)
    assert scale.predicted_seconds(run, 1000, 3000, per_image=0.001) == pytest.approx(5.0)


def test_scale_model_charges_each_side_its_own_fixed_costs(scale):
    pool = 1000
    runs = {
        "local": {"total": 10.0, "streaming": 8.0},  # 2 s fixed, 8 ms per image
        "ray, 2 nodes": {"total": 20.0, "streaming": 4.0, "actors": 2},  # 16 s fixed
    }
    driver = 1e-4  # caps Ray at 10,000 images/s
    rows = {name: rest for name, *rest in scale.scale_model(runs, driver, pool, 2)}
    _, seconds, rate, bound = rows["local scorer"]
    assert (seconds, rate, bound) == (pytest.approx(2 + scale.MODEL_POOL * 0.008), 125, False)
    # 2 actors x 4 s / 1000 images = 8 actor-ms per image: 250 images/s per 2-CPU node.
    _, seconds, rate, bound = rows["Ray, 1 node"]
    assert (seconds, rate, bound) == (pytest.approx(16 + scale.MODEL_POOL / 250), 250, False)
    _, seconds, rate, bound = rows["Ray, 64 nodes"]
    assert rate == pytest.approx(1 / driver) and bound
    assert seconds == pytest.approx(16 + scale.MODEL_POOL * driver)


@pytest.fixture(scope="module")
def campaigns():
    return load_bench("campaigns")


def rounds(campaigns, strategy: str, seed: int, labels: list[int], stop: str = "") -> list[dict]:
    rows = [dict.fromkeys(campaigns.COLUMNS, "") for _ in labels]
    for n, (row, count) in enumerate(zip(rows, labels, strict=True)):
        row.update(strategy=strategy, seed=str(seed), round=str(n), labels=str(count))
    rows[-1]["stop"] = stop
    return rows


def test_resumable_keeps_rounds_past_a_smaller_budget(campaigns):
    rows = rounds(campaigns, "random", 0, [20, 30, 40], stop="budget")
    assert campaigns.resumable(rows, budget=30) == (True, rows)
    # A bigger budget redoes the round that stopped.
    assert campaigns.resumable(rows, budget=50) == (False, rows[:2])


def test_rounds_are_read_back_from_every_seed_file(campaigns, tmp_path):
    random0 = rounds(campaigns, "random", 0, [20, 30], stop="budget")
    entropy1 = rounds(campaigns, "entropy", 1, [20, 30], stop="budget")
    campaigns.write_rows(campaigns.seed_file(tmp_path, 1), entropy1[::-1])
    campaigns.write_rows(campaigns.seed_file(tmp_path, 0), random0)
    assert campaigns.read_rows(tmp_path) == {("entropy", 1): entropy1, ("random", 0): random0}


def test_rounds_of_a_run_before_seed_files_are_read(campaigns, tmp_path):
    rows = rounds(campaigns, "random", 0, [20, 30], stop="budget")
    campaigns.write_rows(tmp_path / "rounds.csv", rows)
    assert campaigns.read_rows(tmp_path) == {("random", 0): rows}


def test_the_tfdata_baseline_downscales_as_deep_as_the_target_allows():
    against = load_bench("against_tfdata")
    from activelearn.data.images import Preprocessing

    assert against.jpeg_ratio((3000, 2000), Preprocessing((32, 32), 3)) == 8
    assert against.jpeg_ratio((3000, 2000), Preprocessing((224, 224), 3)) == 4
    assert against.jpeg_ratio((300, 200), Preprocessing((64, 64), 3)) == 1


@pytest.fixture(scope="module")
def sweep_bench():
    return load_bench("sweep")


def test_amdahls_share_from_one_and_two_threads(sweep_bench):
    assert sweep_bench.amdahl_share(10.0, 5.0, 2) == pytest.approx(1.0)  # halves: all parallel
    assert sweep_bench.amdahl_share(10.0, 10.0, 2) == 0.0  # no gain: all serial
    assert sweep_bench.amdahl_share(10.0, 7.5, 2) == pytest.approx(0.5)


def test_the_sweep_model_gives_back_what_was_measured_on_this_machine(sweep_bench):
    seq, par = {"wall": 120.0, "fit": 60.0}, {"wall": 80.0, "fit": 80.0}
    now = sweep_bench.predict(seq, par, jobs=6, cores_now=2, n_jobs=2, cores=2)
    assert now["sequential"] == pytest.approx(120.0) and now["parallel"] == pytest.approx(80.0)
    more = sweep_bench.predict(seq, par, jobs=6, cores_now=2, n_jobs=2, cores=16)
    assert more["parallel"] < now["parallel"] and more["sequential"] < now["sequential"]


def test_recipes_name_campaigns_and_count_their_falls(campaigns):
    import argparse

    recipes = campaigns.parse_recipes(["today=", "aug=augment.enabled=true,ema=0.99"])
    assert recipes == {"today": "", "aug": "augment.enabled=true,ema=0.99"}
    assert campaigns.model_config(recipes["aug"]).augment.enabled
    labels = campaigns.campaign_labels(["hybrid"], recipes)
    assert labels == ["hybrid@today", "hybrid@aug"]
    with pytest.raises(SystemExit):
        campaigns.parse_recipes(["bad=augment.enabld=true"])
    rows = {
        ("hybrid@today", 0): rounds(campaigns, "hybrid@today", 0, [20, 30, 40, 50]),
        ("hybrid@aug", 0): rounds(campaigns, "hybrid@aug", 0, [20, 30, 40, 50]),
    }
    for (label, _), rs in rows.items():
        accuracy = [0.80, 0.78, 0.84, 0.825] if label.endswith("today") else [0.8, 0.81, 0.82, 0.83]
        for r, a in zip(rs, accuracy, strict=True):
            r |= {"accuracy": str(a), "train_seconds": "2" if "today" in label else "3"}
            r |= {"ece": "0.05", "ece_uncalibrated": "0.1"}
    args = argparse.Namespace(strategies=labels, recipes=recipes, budget=50)
    table = campaigns.recipe_table(rows, args)
    today = next(line for line in table if line.startswith("| hybrid@today"))
    aug = next(line for line in table if line.startswith("| hybrid@aug"))
    # falls of 2 and 1.5 points: > 1 twice, > 1.5 once (2.0), > 2 never
    assert today.split(" | ")[1:6] == ["3", "2", "1", "0", "2.0"]
    assert aug.split(" | ")[1:6] == ["3", "0", "0", "0", "0.0"]
    assert " 1.50 " in aug  # its training time against the first recipe's
    assert "0.100 -> 0.050" in aug
