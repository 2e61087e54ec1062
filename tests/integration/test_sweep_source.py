"""A sweep over one's own images: a dataset source made by `split` from a generated
labeled folder (not the digits), 2 strategies x 2 seeds run by `python -m activelearn -m`,
one MLflow experiment for the sweep, and the same jobs in parallel (joblib launcher).

Real parts throughout: Hydra's launchers, DVC, the sqlite MLflow store (and the MLflow
server the parallel sweep starts), the simulated annotator; tiny images, a tiny model and
two short rounds keep it to a few minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from activelearn.rounds.state import RoundState
from tests.helpers import checksums, write_class_folders

TINY = [
    "data=folder",
    "data.image_size=[8,8]",
    "model.filters=[8]",
    "model.dense_units=16",
    "model.min_steps=30",
    "model.min_epochs=2",
    "strategy.batch_size=5",
    "campaign.stop_patience=0",
]
STRATEGIES, SEEDS = ("hybrid", "random"), (0, 1)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=1200
    )


def sweep_command(sweep: str, rounds: int, seeds: str, *extra: str) -> list[str]:
    return [
        *("-m", "activelearn", "-m", f"campaign.rounds={rounds}"),
        *(f"strategy={','.join(STRATEGIES)}", f"seed={seeds}"),
        *("data.source=source", f"hydra.sweep.dir={sweep}", *TINY, *extra),
    ]


def workspace(sweep: Path, strategy: str, seed: int) -> Path:
    """A job's workspace: the folder whose campaign.run_name names its swept settings."""
    name = f"strategy={strategy},seed={seed}"
    (found,) = [
        p.parent for p in sweep.glob("*/campaign.run_name") if p.read_text().strip() == name
    ]
    return found / "campaign"


def queues(sweep: Path, n: int) -> dict[str, list[str]]:
    """{job folder (named by its settings): the sample ids its round `n` queued, in order}"""
    return {
        p.parents[3].name: [json.loads(line)["sample_id"] for line in p.read_text().splitlines()]
        for p in sorted(sweep.glob(f"*/campaign/rounds/{n}/queue.jsonl"))
    }


@pytest.fixture(scope="module")
def own_sweep(tmp_path_factory):
    """The sequential sweep and its report, on a source split from a labeled folder."""
    root = tmp_path_factory.mktemp("own")
    write_class_folders(root / "labeled", per_class=16)
    split = run(
        *("-m", "activelearn.data.datasets", "split", "labeled", "source"),
        *("--seed-per-class", "2", "--test-per-class", "4", "--seed", "0"),
        cwd=root,
    )
    assert split.returncode == 0, split.stderr[-3000:]
    before = checksums(root / "source")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("BENTOML_HOME", raising=False)  # each workspace its own BentoML store
        done = run(*sweep_command("multirun/own", 2, "0,1"), cwd=root)
        assert done.returncode == 0, done.stderr[-3000:]
        report = run(
            *("-m", "activelearn.tracking.report", "multirun/own", "--target", "0.5"), cwd=root
        )
        assert report.returncode == 0, report.stderr[-3000:]
    yield root, before, report.stdout


def test_a_sweep_on_a_source_runs_every_job_and_leaves_the_source_unchanged(own_sweep):
    root, before, _ = own_sweep
    sweep = root / "multirun" / "own"
    for strategy in STRATEGIES:
        for seed in SEEDS:
            ws = workspace(sweep, strategy, seed)
            states = [RoundState.load(n, ws) for n in (0, 1)]
            assert [s.train.labeled for s in states] == [6, 11]  # 2 per class, then +5
            assert states[0].train.metrics["test_images"] == 12  # the source's test set
            pool_image = ws / "data" / "pool" / "img-000000.png"
            assert pool_image.stat().st_ino == (root / "source/pool/img-000000.png").stat().st_ino
    assert checksums(root / "source") == before  # nothing written to it


def test_the_sweep_is_one_mlflow_experiment_of_named_campaign_runs(own_sweep):
    from mlflow import MlflowClient

    root, _, report_out = own_sweep
    sweep = root / "multirun" / "own"
    client = MlflowClient(tracking_uri=f"sqlite:///{sweep / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("own")  # named after the sweep folder
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    campaigns = {
        r.info.run_name: r
        for r in runs
        if "activelearn.campaign" in r.data.tags and "activelearn.round" not in r.data.tags
    }
    assert set(campaigns) == {f"strategy={s},seed={n}" for s in STRATEGIES for n in SEEDS}
    for name, run in campaigns.items():
        strategy, seed = (part.split("=")[1] for part in name.split(","))
        assert run.data.params["strategy"] == strategy and run.data.params["seed"] == seed
        assert run.data.tags["activelearn.run"] == "campaign"  # the chart URL's filter
        history = {
            metric: [(p.step, p.value) for p in client.get_metric_history(run.info.run_id, metric)]
            for metric in ("test_accuracy", "macro_f1", "labels_spent")
        }
        assert [step for step, _ in sorted(history["test_accuracy"])] == [6, 11]  # labels
        assert [step for step, _ in sorted(history["macro_f1"])] == [6, 11]
        assert sorted(history["labels_spent"]) == [(6, 0.0), (11, 5.0)]
        rounds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
        assert sorted(r.info.run_name for r in rounds) == ["round-0", "round-1"]
    (report,) = [r for r in runs if r.info.run_name == "sweep report"]  # the same experiment
    assert "report/hybrid.auc" in report.data.metrics
    url = f"#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    assert (
        f"{url}&compareRunsMode=CHART" in report_out
        and f"sqlite:///{sweep.resolve() / 'mlruns.db'}" in report_out
    )


def test_a_parallel_sweep_queues_what_the_sequential_one_does(own_sweep, monkeypatch):
    root, _, _ = own_sweep
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    done = run(
        *sweep_command(
            "multirun/parallel", 1, "0", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
        ),
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 jobs in parallel, 1 threads each" in done.stdout + done.stderr
    sweep = root / "multirun" / "parallel"
    sequential = queues(root / "multirun" / "own", 0)
    parallel = queues(sweep, 0)
    assert len(parallel) == 2 and all(len(q) == 5 for q in parallel.values())
    assert parallel == {job: sequential[job] for job in parallel}  # the same jobs' queues
    # both jobs logged through the sweep's server into its one store; the server is gone
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{sweep / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("parallel")
    names = {r.info.run_name for r in client.search_runs([experiment.experiment_id])}
    assert names == {"strategy=hybrid", "strategy=random", "round-0"}  # seed=0 is not swept
    assert "Finished server process" in (sweep / "mlflow-server.log").read_text()


def test_a_source_whose_test_images_changed_is_refused(own_sweep):
    root, before, _ = own_sweep
    changed = sorted((root / "source" / "test" / "class1").iterdir())[0]
    original = changed.read_bytes()
    changed.unlink()  # replaced, as an image editor saves it
    changed.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        done = run(*sweep_command("multirun/own", 3, "0,1"), cwd=root)  # one more round
    finally:
        changed.unlink()
        changed.write_bytes(original)
    assert done.returncode != 0
    said = done.stdout + done.stderr  # Hydra's log goes to stdout
    assert f"changed test/class1/{changed.name}" in said
    assert "seed labels and test set are fixed" in said
    assert checksums(root / "source") == before
