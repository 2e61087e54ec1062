"""The sweep report's figures of merit on planted learning curves."""

from __future__ import annotations

from pathlib import Path

import pytest

from activelearn.tracking.report import (
    report_sweep,
)
from tests.helpers import FAST, SLOW, write_job


def sweep_runs(tracking_uri: str, sweep: Path) -> list:
    """The runs of the sweep's experiment, named after its folder."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(sweep.name).experiment_id
    return client.search_runs([experiment])


def test_report_sweep_writes_table_figure_and_mlflow_run(tmp_path):
    write_job(tmp_path, "0", "entropy", FAST)
    write_job(tmp_path, "1", "random", SLOW)
    rows = report_sweep(tmp_path, [0.9])
    assert [r["strategy"] for r in rows] == ["entropy", "random"]
    out = tmp_path / "report"
    assert (out / "learning_curves.png").stat().st_size > 0
    assert "entropy" in (out / "summary.md").read_text()
    assert (out / "summary.csv").read_text().startswith("strategy,")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    found = client.get_experiment_by_name(tmp_path.name)  # the sweep's, named after its folder
    assert found.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = client.search_runs([found.experiment_id])
    assert run.info.run_name == "sweep report"
    for row in rows:
        assert run.data.metrics[f"report/{row['strategy']}.auc"] == pytest.approx(row["auc"])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/summary.csv", "report/learning_curves.png"} <= logged


def test_report_averages_only_seeds_of_one_configuration(tmp_path):
    """`-m +strategy.params.typical_per_class=3,5 seed=0,1`: two configurations."""
    jobs = [(3, 0, FAST), (5, 0, SLOW), (3, 1, FAST), (5, 1, SLOW)]
    for job, (per_class, seed, curve) in enumerate(jobs):
        swept = [
            f"+strategy.params.typical_per_class={per_class}",
            f"seed={seed}",
            "campaign.rounds=3",
        ]
        write_job(tmp_path, str(job), "hybrid", curve, swept)
    rows = report_sweep(tmp_path, [0.9])
    assert [(r["strategy"], r["seeds"]) for r in rows] == [
        ("hybrid typical_per_class=3", 2),
        ("hybrid typical_per_class=5", 2),
    ]
    assert rows[0]["labels_to_0.9_reached"] == "2/2" and rows[1]["labels_to_0.9_reached"] == "0/2"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.get_experiment_by_name(tmp_path.name).experiment_id
    (run,) = client.search_runs([experiment])
    assert run.data.metrics["report/hybrid typical_per_class_3.auc"] == pytest.approx(
        rows[0]["auc"]
    )


def test_class_names_mlflow_refuses_become_metric_names_it_takes(tmp_path):
    from activelearn.tracking.tracker import CampaignTracker, tracking_uri

    tracker = CampaignTracker(tracking_uri("sqlite:///mlruns.db", tmp_path), "e", "c")
    run_id = tracker.round_run(0)
    tracker.log_metrics(run_id, {"labeled_t-shirt (top)": 3, "labeled_a+b": 4}, step=0)
    logged = tracker.client.get_run(run_id).data.metrics
    assert logged == {"labeled_t-shirt _top_": 3.0, "labeled_a_b": 4.0}


def test_a_campaign_run_continued_is_running_again(tmp_path):
    from activelearn.tracking.tracker import CampaignTracker, tracking_uri

    def tracker() -> CampaignTracker:
        return CampaignTracker(tracking_uri("sqlite:///mlruns.db", tmp_path), "e", "c")

    first = tracker()
    first.finish(first.parent_id)  # its rounds ran out
    again = tracker()
    assert again.parent_id == first.parent_id
    assert again.client.get_run(again.parent_id).info.status == "FINISHED"  # only looked at
    again.round_run(1)  # more rounds continue the campaign
    assert again.client.get_run(again.parent_id).info.status == "RUNNING"


def test_a_report_rerun_updates_the_sweeps_one_run_however_the_path_is_spelled(
    tmp_path, monkeypatch
):
    sweep = tmp_path / "multirun" / "12-00-00"
    write_job(sweep, "0", "entropy", FAST)
    report_sweep(sweep, [0.9, 0.95])
    monkeypatch.chdir(sweep)
    write_job(sweep, "1", "random", SLOW)  # the sweep went on
    report_sweep(Path("."), [0.95, 0.9])
    (run,) = sweep_runs(f"sqlite:///{sweep / 'mlruns.db'}", sweep)
    assert run.info.run_name == "sweep report" and run.info.status == "FINISHED"
    assert run.data.params == {"targets": "0.9 0.95"}
    assert "report/random.auc" in run.data.metrics  # the rerun's figures


def test_mlflow_tracking_uri_takes_the_report_to_that_store(tmp_path, monkeypatch):
    server = f"sqlite:///{tmp_path / 'server.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    write_job(tmp_path / "sweep", "0", "entropy", FAST)
    report_sweep(tmp_path / "sweep", [0.9])
    (run,) = sweep_runs(server, tmp_path / "sweep")
    assert run.data.metrics["report/entropy.labels_to_0.9"] == 30
    assert not (tmp_path / "sweep" / "mlruns.db").exists()


def test_a_job_without_a_trained_round_is_named_in_a_warning(tmp_path, caplog):
    write_job(tmp_path, "0", "entropy", FAST)
    write_job(tmp_path, "1", "random", SLOW)
    write_job(tmp_path, "2", "random", [], ["strategy=random", "seed=1"])  # killed early
    rows = report_sweep(tmp_path, [0.9])
    assert [(r["strategy"], r["seeds"]) for r in rows] == [("entropy", 1), ("random", 1)]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "activelearn.tracking.report"]
    assert warning == f"left out {tmp_path / '2'}: no trained round in its campaign"
