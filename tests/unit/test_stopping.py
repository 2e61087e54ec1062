"""The stopping criteria on planted progress: which round stops a campaign, and why."""

import pytest

from activelearn.config import CampaignConfig
from activelearn.strategies.stopping import (
    Agreement,
    LabelBudget,
    Progress,
    StablePredictions,
    agreement,
    campaign_criteria,
    stop_reason,
)


def test_stable_predictions_stop_after_patience_rounds_in_a_row():
    rule = StablePredictions(min_agreement=0.9, patience=2)
    assert rule.stop(Progress(10)) is None  # nothing measured yet
    assert rule.stop(Progress(10, agreements=[None, 0.95])) is None  # one round is not two
    assert rule.stop(Progress(10, agreements=[0.95, 0.8, 0.95])) is None  # the row broke
    assert rule.stop(Progress(10, agreements=[0.99, None, 0.99])) is None  # measured nothing
    assert rule.stop(Progress(10, agreements=[None, 0.5, 0.91, 0.9])) == (
        "predictions stable: agreement 0.900 for 2 rounds"
    )
    assert rule.stop(Progress(10, agreements=[0.99, 0.95, 0.97])) == (
        "predictions stable: agreement 0.970 for 3 rounds"
    )
    with pytest.raises(ValueError, match="patience=0"):
        StablePredictions(0.9, 0)


def test_the_label_budget_counts_the_labels_still_awaited():
    budget = LabelBudget(12)
    assert budget.stop(Progress(11)) is None
    assert budget.stop(Progress(12)) == "label budget of 12 spent"
    assert budget.stop(Progress(9, waiting=2)) is None
    assert budget.stop(Progress(9, waiting=3)) == (
        "label budget of 12 spent (9 labeled, 3 still queued)"
    )


def test_the_campaign_settings_give_the_criteria_and_the_first_reason_stops():
    both = campaign_criteria(CampaignConfig(budget=12, stop_agreement=0.9, stop_patience=1))
    assert both == [StablePredictions(0.9, 1), LabelBudget(12)]
    assert campaign_criteria(CampaignConfig(budget=12, stop_patience=0)) == [LabelBudget(12)]
    assert stop_reason(both, Progress(9, waiting=3, agreements=[0.95])) == (
        "predictions stable: agreement 0.950 for 1 rounds"  # asked first
    )
    assert stop_reason(both, Progress(9, waiting=3, agreements=[0.5])) == (
        "label budget of 12 spent (9 labeled, 3 still queued)"
    )
    assert stop_reason(both, Progress(5, agreements=[0.5])) is None


def test_agreement_is_over_the_images_both_models_predicted_and_still_unlabeled():
    before = ["a", "b", None, "a", "c", "b"]
    now = ["a", "a", "a", None, "c", "a"]
    labeled = [False, False, False, False, False, True]
    # same, differs, no earlier prediction, no prediction now, same, labeled since
    assert agreement(before, now, labeled) == Agreement(share=2 / 3, images=3)
    assert agreement(["a", None], [None, "b"], [False, False]) is None
    assert agreement(["a"], ["b"], [True]) is None


# rounds/<N>/state.json of a campaign as the version before the typed results wrote them
# (dfc89c3): a cold round 0, a trained round 1, and round 2 stopped by the stop rule.
