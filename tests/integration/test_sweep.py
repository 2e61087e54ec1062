"""A Hydra sweep end to end: `python -m activelearn -m ...` runs one campaign per job,
each in its own workspace, then `python -m activelearn.tracking.report` compares them.

Real parts throughout: the digits demo data, DVC, the sqlite MLflow store, the simulated
annotator; a tiny model and two short campaigns keep it to a minute or two.
"""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from activelearn.rounds.state import RoundState

TINY = [
    "data.image_size=[8,8]",
    "model.filters=[8]",
    "model.dense_units=16",
    "model.min_steps=40",
    "model.min_epochs=2",
    "strategy.batch_size=10",
    "campaign.stop_patience=0",
]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )


def job_folder(sweep: Path, *overrides: str) -> Path:
    """A job's folder in the sweep: named by its overrides (the tiny ones included), sorted."""
    return sweep / ",".join(sorted([*TINY, *overrides]))


def test_a_sweep_runs_independent_campaigns_and_the_report_compares_them(tmp_path, monkeypatch):
    monkeypatch.delenv("BENTOML_HOME")  # the default store: the workspace's own
    sweep = tmp_path / "sweep"
    done = run(
        "-m",
        "activelearn",
        "-m",
        "campaign.rounds=2",
        "strategy=margin,random",
        "seed=0",
        f"workspace={tmp_path / 'main'}",
        f"hydra.sweep.dir={sweep}",
        *TINY,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "main").exists()  # the main workspace is never touched

    queued, final = {}, {}
    for strategy in ("margin", "random"):
        job = job_folder(sweep, "seed=0", f"strategy={strategy}")
        ws = job / "campaign"
        states = [RoundState.load(n, ws) for n in (0, 1)]
        assert [s.train.labeled for s in states] == [20, 30]
        final[strategy] = states[-1].train.metrics["accuracy"]
        assert not (ws / "mlruns.db").exists()  # the sweep's one store, not each campaign's
        # ... and its own BentoML store, though the jobs run in one process
        models = ws / ".bentoml" / "models" / "classifier"
        assert sorted(p.name for p in models.iterdir() if p.is_dir()) == ["round-0", "round-1"]
        assert f"name: {strategy}" in (job / ".hydra" / "config.yaml").read_text()
        queued[strategy] = (ws / "rounds" / "1" / "queue.jsonl").read_text()
    assert queued["margin"] != queued["random"]
    assert (sweep / "mlruns.db").is_file()

    report = run("-m", "activelearn.tracking.report", str(sweep), "--target", "0.5", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    with (sweep / "report" / "summary.csv").open() as f:
        rows = {row["strategy"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"margin", "random"}
    for strategy, accuracy in final.items():  # the report reads what the campaigns measured
        assert float(rows[strategy]["final_accuracy"]) == pytest.approx(accuracy)
    assert (sweep / "report" / "learning_curves.png").stat().st_size > 0


def campaigns_by_strategy(sweep: Path) -> dict[str, str]:
    """{strategy a job's config names (as the report reads it): its campaign's id}"""
    return {
        OmegaConf.load(config).strategy.name: (config.parents[1] / "campaign" / "campaign.id")
        .read_text()
        .strip()
        for config in sweep.glob("*/.hydra/config.yaml")
    }


def test_a_sweep_continued_with_more_values_resumes_each_campaign_by_its_settings(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("BENTOML_HOME")
    sweep = tmp_path / "sweep"

    def sweep_run(rounds: int, strategies: str) -> None:
        done = run(
            "-m",
            "activelearn",
            "-m",
            f"campaign.rounds={rounds}",
            f"strategy={strategies}",
            "seed=0",
            f"hydra.sweep.dir={sweep}",
            *TINY,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    sweep_run(1, "margin")
    made = campaigns_by_strategy(sweep)
    sweep_run(2, "random,margin")  # one more strategy, listed first, and one more round
    continued = campaigns_by_strategy(sweep)
    assert continued["margin"] == made["margin"]  # not random's, nor made again
    assert continued["random"] != made["margin"]
    for strategy in ("margin", "random"):
        ws = job_folder(sweep, "seed=0", f"strategy={strategy}") / "campaign"
        states = [RoundState.load(n, ws) for n in (0, 1)]
        assert [s.train.labeled for s in states] == [20, 30]


def test_a_job_whose_folder_holds_a_campaign_of_other_settings_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    folder = job_folder(sweep, "seed=0")
    folder.mkdir(parents=True)
    (folder / "campaign.settings").write_text("made,with,other,settings\n")
    done = run(
        "-m",
        "activelearn",
        "-m",
        "campaign.rounds=1",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        *TINY,
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert f"{folder} holds a campaign made with 'made,with,other,settings'" in output
    assert "Traceback" not in output
    assert not list(sweep.glob("*/campaign"))  # no job ran, the good one neither
