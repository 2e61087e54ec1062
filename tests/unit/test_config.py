"""Every config group composes; typos fail at composition; the CLI stays light."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from activelearn.config import job_folder
from activelearn.errors import ConfigError
from activelearn.rounds.checks import check_config, check_keys, check_workspace
from tests.helpers import GROUPS, compose_config, options, write_class_folders


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


def test_defaults_are_the_demo():
    config = OmegaConf.to_object(compose_config([]))
    assert config.data.demo == "digits"
    assert config.labeling.kind == "simulated"
    assert config.tracking.uri.startswith("sqlite:///")


@pytest.mark.parametrize(
    "override",
    [
        "model.dropuot=0.5",
        "data.channels=three",
        "strategy=nonexistent",
        "sed=1",
        "model.augment.interpolation=cubic",
    ],
)
def test_bad_override_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_config([override])


def test_strategy_params_compose_as_a_mapping():
    config = OmegaConf.to_object(compose_config(["+strategy.params.typical_per_class=5"]))
    assert config.strategy.params == {"typical_per_class": 5}


def test_the_stop_agreement_is_not_checked_when_the_stop_rule_is_off():
    off = ["campaign.stop_agreement=1.5", "campaign.stop_patience=0"]
    check_config(OmegaConf.to_object(compose_config(off)))


def test_a_sweep_job_folder_is_one_folder_named_by_its_overrides():
    assert job_folder("data.raw_dir=/data/raw,seed=0") == "data.raw_dir=_data_raw,seed=0"
    assert job_folder("") == "defaults"


def test_test_fraction_0_is_fine_with_a_fixed_test_set(tmp_path):
    ws = tmp_path / "campaign"
    write_class_folders(ws / "data" / "test", per_class=1)
    check_config(OmegaConf.to_object(compose_config(["data.test_fraction=0", f"workspace={ws}"])))
    with pytest.raises(ConfigError, match="data.test_fraction=0.0"):
        empty = f"workspace={tmp_path / 'empty'}"
        check_config(OmegaConf.to_object(compose_config(["data.test_fraction=0", empty])))


def test_a_workspace_that_is_a_file_or_under_one_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.touch()
    with pytest.raises(ConfigError, match=f"workspace={afile}: a file, not a folder"):
        check_workspace(afile)
    with pytest.raises(ConfigError, match=f"{afile} is a file, not a folder; give another path"):
        check_workspace(afile / "campaign")
    check_workspace(tmp_path / "new" / "campaign")  # made when the round starts


def test_added_keys_are_refused_except_in_free_dicts():
    with pytest.raises(ConfigError, match=r"^data.colour, campaign.budgett: no such setting"):
        check_keys(compose_config(["+campaign.budgett=3", "+data.colour=red"]))
    check_keys(compose_config(["strategy=ranked_batch", "+strategy.params.alpha=0.5"]))


def test_model_kinds_compose_and_set_the_models_input(tmp_path):
    from activelearn.data.images import Preprocessing, preprocessing

    ws = f"workspace={tmp_path / 'ws'}"
    backbone = OmegaConf.to_object(compose_config(["model=backbone", ws]))
    assert backbone.model.kind == "backbone" and backbone.model.weights == "imagenet"
    assert preprocessing(backbone) == Preprocessing((224, 224), 3, "raw")  # digits are gray
    resnet = OmegaConf.to_object(compose_config(["model=backbone", "model.backbone=ResNet50"]))
    assert preprocessing(resnet).scaling == "caffe"
    custom = OmegaConf.to_object(
        compose_config(["model=custom", "model._target_=pkg.build", "+model.params.width=5", ws])
    )
    assert custom.model._target_ == "pkg.build" and custom.model.params == {"width": 5}
    assert preprocessing(custom) == Preprocessing((16, 16), 1, "unit")  # the data's
    check_config(custom)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=custom"], "needs model._target_"),
        (["model=backbone", "model.weights=nowhere.weights.h5"], "model.weights=nowhere"),
        (["model=backbone", "model.backbone=DenseNet121"], "^model.backbone=DenseNet121"),
    ],
)
def test_model_settings_that_would_fail_in_training_fail_at_start_up(tmp_path, overrides, message):
    config = compose_config([*overrides, f"workspace={tmp_path / 'ws'}"])
    with pytest.raises(ConfigError, match=message):
        check_config(OmegaConf.to_object(config))


@pytest.mark.parametrize(
    "override, message",
    [
        ("labeling.max_skips=-1", "labeling.max_skips=-1: must be 0 or more"),
        ("labeling.new_class_after=-2", "labeling.new_class_after=-2: must be 0 or more"),
        ("labeling.other_label=' Other'", "labeling.other_label=' Other': without leading"),
    ],
)
def test_open_set_settings_that_cannot_work_are_refused(tmp_path, override, message):
    cfg = compose_config([override, f"workspace={tmp_path / 'campaign'}"])
    with pytest.raises(ConfigError, match=message):
        check_config(OmegaConf.to_object(cfg))
