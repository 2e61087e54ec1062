"""The sweep report's figures of merit on planted learning curves."""

from __future__ import annotations

import math

import pytest

from activelearn.tracking.report import (
    area_under_curve,
    labels_to_reach,
    main,
    markdown_table,
    report_sweep,
    summarize,
)
from tests.helpers import FAST, SLOW, write_job


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


@pytest.mark.parametrize("target", [90, 1.5, 0, -0.9])
def test_a_target_that_is_not_an_accuracy_is_refused(tmp_path, target):
    write_job(tmp_path, "0", "entropy", FAST)
    with pytest.raises(SystemExit, match=r"--target .*: a target is a test accuracy in \(0, 1\]"):
        report_sweep(tmp_path, [0.9, target])
    assert not (tmp_path / "report").exists()


def test_a_target_given_in_percent_is_refused_with_the_fraction_to_give(tmp_path):
    with pytest.raises(SystemExit, match="--target 90 95: .*; give 0.9 for 90%"):
        main([str(tmp_path), "--target", "90", "95"])


def test_runs_without_a_label_range_in_common_are_a_clear_error():
    """`-m data.seed_per_class=1,2`: the 1-per-class run stopped at 10 labels, before the
    other's first round."""
    with pytest.raises(SystemExit, match="no label range is covered by every run: .*'one'"):
        summarize({"one": [[(10, 0.50)]], "two": [[(20, 0.60), (30, 0.70)]]}, [0.9])
    assert math.isnan(area_under_curve([(20, 0.60), (30, 0.70)], (10, 30)))  # not extrapolated


def test_a_target_met_only_after_the_common_range_is_not_reached():
    rows = summarize({"good": [FAST, FAST[:2]]}, [0.95])  # one run stopped at 30 labels
    assert math.isnan(rows[0]["labels_to_0.95"]) and rows[0]["labels_to_0.95_reached"] == "0/2"
