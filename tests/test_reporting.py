"""The sweep report's figures of merit on planted learning curves."""

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from activelearn.tracking.report import (
    area_under_curve,
    labels_to_reach,
    main,
    markdown_table,
    report_sweep,
    summarize,
)

FAST = [(20, 0.80), (30, 0.91), (40, 0.96)]
SLOW = [(20, 0.80), (30, 0.85), (40, 0.89)]


def test_labels_to_reach_and_area_under_curve():
    assert labels_to_reach(FAST, 0.9) == 30
    assert labels_to_reach(FAST, 0.95) == 40
    assert math.isnan(labels_to_reach(SLOW, 0.9))
    # mean of the interpolated curve over 20..40 labels
    assert area_under_curve([(20, 0.8), (40, 1.0)], (20, 40)) == pytest.approx(0.9)


def test_summary_ranks_by_planted_curves_and_says_not_reached():
    rows = summarize({"good": [FAST, FAST], "poor": [SLOW]}, [0.9])
    good, poor = rows
    assert good["labels_to_0.9"] == 30 and good["labels_to_0.9_reached"] == "2/2"
    assert good["auc"] > poor["auc"] and poor["labels_to_0.9_reached"] == "0/1"
    table = markdown_table(rows, [0.9])
    assert "| good | 30 ± 0 (2/2)" in table and "not reached (0/1)" in table


def write_job(sweep, job, strategy, curve, overrides=None):
    """A finished job of a Hydra sweep: its config, its overrides and its rounds."""
    (sweep / job / ".hydra").mkdir(parents=True)
    OmegaConf.save({"strategy": {"name": strategy}}, sweep / job / ".hydra" / "config.yaml")
    overrides = [f"strategy={strategy}", "seed=0"] if overrides is None else overrides
    OmegaConf.save(overrides, sweep / job / ".hydra" / "overrides.yaml")
    for n, (labels, accuracy) in enumerate(curve):
        state = {
            "round": n,
            "phases": {"train": {"metrics": {"labeled_images": labels, "accuracy": accuracy}}},
        }
        folder = sweep / job / "campaign" / "rounds" / str(n)
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps(state))


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
    experiment = client.get_experiment_by_name("activelearn-sweeps").experiment_id
    (run,) = client.search_runs([experiment])
    for row in rows:
        assert run.data.metrics[f"{row['strategy']}.auc"] == pytest.approx(row["auc"])
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
    experiment = client.get_experiment_by_name("activelearn-sweeps").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.data.metrics["hybrid typical_per_class_3.auc"] == pytest.approx(rows[0]["auc"])


def test_a_run_that_ended_early_is_not_extended_to_the_others_labels():
    crashed = FAST[:2]  # no round after 30 labels
    rows = summarize({"good": [FAST, crashed], "poor": [SLOW]}, [0.9])
    good, _ = rows
    assert good["auc"] == pytest.approx(area_under_curve(FAST, (20, 30)))
    assert good["final_accuracy"] == pytest.approx(0.91)  # both runs at 30 labels
    assert (good["labels_lo"], good["labels_hi"]) == (20, 30)  # what every run covers
    assert "| AUC (20–30 labels) | accuracy at 30 labels |" in markdown_table(rows, [0.9])


def test_report_of_a_folder_without_campaigns_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no finished campaign rounds"):
        report_sweep(tmp_path, [0.9])


def test_a_report_counting_one_configuration_and_seed_twice_is_refused(tmp_path):
    write_job(tmp_path, "0", "entropy", FAST)  # a job folder of the numbered layout
    write_job(tmp_path, "seed=0,strategy=entropy", "entropy", SLOW)
    with pytest.raises(SystemExit, match="are jobs of the same settings: move one out"):
        report_sweep(tmp_path, [0.9])


def test_a_pool_row_without_a_prediction_is_left_out_of_the_uncertainty_plot(tmp_path, monkeypatch):
    from activelearn.config import Config
    from activelearn.tracking.report import round_figures

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rounds" / "0").mkdir(parents=True)
    (tmp_path / "rounds" / "0" / "scores.csv").write_text(
        "sample_id,predicted,confidence,margin\na.png,cat,0.750000,0.5\nb.png,,,-1.000000\n"
    )
    figures = round_figures(0, Config(), [], [])
    assert [f.name for f in figures] == ["pool_uncertainty.png"]


def test_class_names_mlflow_refuses_become_metric_names_it_takes(tmp_path):
    from activelearn.tracking.tracker import CampaignTracker, tracking_uri

    tracker = CampaignTracker(tracking_uri("sqlite:///mlruns.db", tmp_path), "e", "c", tmp_path)
    run_id = tracker.round_run(0)
    tracker.log_metrics(run_id, {"labeled_t-shirt (top)": 3, "labeled_a+b": 4}, step=0)
    logged = tracker.client.get_run(run_id).data.metrics
    assert logged == {"labeled_t-shirt _top_": 3.0, "labeled_a_b": 4.0}


def test_a_campaign_run_continued_is_running_again(tmp_path):
    from activelearn.tracking.tracker import CampaignTracker, tracking_uri

    def tracker() -> CampaignTracker:
        return CampaignTracker(tracking_uri("sqlite:///mlruns.db", tmp_path), "e", "c", tmp_path)

    first = tracker()
    first.finish(first.parent_id)  # its rounds ran out
    again = tracker()
    assert again.parent_id == first.parent_id
    assert again.client.get_run(again.parent_id).info.status == "FINISHED"  # only looked at
    again.round_run(1)  # more rounds continue the campaign
    assert again.client.get_run(again.parent_id).info.status == "RUNNING"


@pytest.mark.parametrize("target", [90, 1.5, 0, -0.9])
def test_a_target_that_is_not_an_accuracy_is_refused(tmp_path, target):
    write_job(tmp_path, "0", "entropy", FAST)
    with pytest.raises(SystemExit, match=r"--target .*: a target is a test accuracy in \(0, 1\]"):
        report_sweep(tmp_path, [0.9, target])
    assert not (tmp_path / "report").exists()


def test_a_target_given_in_percent_is_refused_with_the_fraction_to_give(tmp_path):
    with pytest.raises(SystemExit, match="--target 90 95: .*; give 0.9 for 90%"):
        main([str(tmp_path), "--target", "90", "95"])


def sweep_runs(tracking_uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("activelearn-sweeps").experiment_id
    return client.search_runs([experiment])


def test_a_report_rerun_updates_the_sweeps_one_run_however_the_path_is_spelled(
    tmp_path, monkeypatch
):
    sweep = tmp_path / "multirun" / "12-00-00"
    write_job(sweep, "0", "entropy", FAST)
    report_sweep(sweep, [0.9, 0.95])
    monkeypatch.chdir(sweep)
    write_job(sweep, "1", "random", SLOW)  # the sweep went on
    report_sweep(Path("."), [0.95, 0.9])
    (run,) = sweep_runs(f"sqlite:///{sweep / 'mlruns.db'}")
    assert run.info.run_name == "sweep-multirun-12-00-00" and run.info.status == "FINISHED"
    assert run.data.params == {"targets": "0.9 0.95"}
    assert "random.auc" in run.data.metrics  # the rerun's figures


def test_mlflow_tracking_uri_takes_the_report_to_that_store(tmp_path, monkeypatch):
    server = f"sqlite:///{tmp_path / 'server.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    write_job(tmp_path / "sweep", "0", "entropy", FAST)
    report_sweep(tmp_path / "sweep", [0.9])
    (run,) = sweep_runs(server)
    assert run.data.metrics["entropy.labels_to_0.9"] == 30
    assert not (tmp_path / "sweep" / "mlruns.db").exists()


def test_runs_without_a_label_range_in_common_are_a_clear_error():
    """`-m data.seed_per_class=1,2`: the 1-per-class run stopped at 10 labels, before the
    other's first round."""
    with pytest.raises(SystemExit, match="no label range is covered by every run: .*'one'"):
        summarize({"one": [[(10, 0.50)]], "two": [[(20, 0.60), (30, 0.70)]]}, [0.9])
    assert math.isnan(area_under_curve([(20, 0.60), (30, 0.70)], (10, 30)))  # not extrapolated


def test_a_target_met_only_after_the_common_range_is_not_reached():
    rows = summarize({"good": [FAST, FAST[:2]]}, [0.95])  # one run stopped at 30 labels
    assert math.isnan(rows[0]["labels_to_0.95"]) and rows[0]["labels_to_0.95_reached"] == "0/2"


def test_a_job_without_a_trained_round_is_named_in_a_warning(tmp_path, caplog):
    write_job(tmp_path, "0", "entropy", FAST)
    write_job(tmp_path, "1", "random", SLOW)
    write_job(tmp_path, "2", "random", [], ["strategy=random", "seed=1"])  # killed early
    rows = report_sweep(tmp_path, [0.9])
    assert [(r["strategy"], r["seeds"]) for r in rows] == [("entropy", 1), ("random", 1)]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "activelearn.tracking.report"]
    assert warning == f"left out {tmp_path / '2'}: no trained round in its campaign"
