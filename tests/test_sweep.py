"""A Hydra sweep end to end: `python -m activelearn -m ...` runs one campaign per job,
each in its own workspace, then `python -m activelearn.report` compares them.

Real parts throughout: the digits demo data, DVC, the sqlite MLflow store, the simulated
annotator; a tiny model and two short campaigns keep it to a minute or two.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

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
    for job, strategy in ((0, "margin"), (1, "random")):
        ws = sweep / str(job) / "campaign"
        states = [json.loads((ws / "rounds" / str(n) / "state.json").read_text()) for n in (0, 1)]
        assert [s["phases"]["train"]["labeled"] for s in states] == [20, 30]
        final[strategy] = states[-1]["phases"]["train"]["metrics"]["accuracy"]
        assert (ws / "mlruns.db").is_file()  # each campaign its own MLflow store
        # ... and its own BentoML store, though the jobs run in one process
        models = ws / ".bentoml" / "models" / "classifier"
        assert sorted(p.name for p in models.iterdir() if p.is_dir()) == ["round-0", "round-1"]
        assert f"name: {strategy}" in (sweep / str(job) / ".hydra" / "config.yaml").read_text()
        queued[strategy] = (ws / "rounds" / "1" / "queue.jsonl").read_text()
    assert queued["margin"] != queued["random"]

    report = run("-m", "activelearn.report", str(sweep), "--target", "0.5", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    with (sweep / "report" / "summary.csv").open() as f:
        rows = {row["strategy"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"margin", "random"}
    for strategy, accuracy in final.items():  # the report reads what the campaigns measured
        assert float(rows[strategy]["final_accuracy"]) == pytest.approx(accuracy)
    assert (sweep / "report" / "learning_curves.png").stat().st_size > 0
