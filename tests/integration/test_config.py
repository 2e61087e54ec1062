"""Every config group composes; typos fail at composition; the CLI stays light."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from activelearn.config import Config
from activelearn.errors import ConfigError
from activelearn.rounds.checks import check_config
from activelearn.strategies.registry import check_strategy
from tests.helpers import CONF_DIR, GROUPS, compose_config, options, write_class_folders


def assert_sets(section, expected: dict, where: str = "") -> None:
    """Every value the option's file sets is in the composed config."""
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_sets(section[key], value, f"{where}{key}.")
            continue
        actual = section[key]
        actual = OmegaConf.to_container(actual) if OmegaConf.is_config(actual) else actual
        assert actual == value, f"{where}{key}"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "activelearn", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def refused_before_any_work(tmp_path, *args: str) -> str:
    """What the CLI said when it exited 1, without a traceback or touching the workspace."""
    ws = tmp_path / "campaign"
    result = run_cli(*args, f"workspace={ws}", f"hydra.run.dir={tmp_path / 'run'}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert "Traceback" not in output
    assert not ws.exists()
    return output


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes_to_the_schema(group, option):
    composed = compose_config([f"{group}={option}"])
    assert isinstance(OmegaConf.to_object(composed), Config)
    chosen = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / group / f"{option}.yaml"))
    section = composed if group == "experiment" else composed[group]  # a preset is global
    assert_sets(section, chosen)
    if group == "strategy":
        config = OmegaConf.to_object(composed)
        assert config.strategy.name == option
        check_strategy(config.strategy)  # its settings work, e.g. MC samples for bald


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]])
def test_cli_help_and_cfg_do_not_import_tensorflow(args):
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "tensorflow" not in imported and "keras" not in imported
    if args == ["--cfg", "job"]:
        assert "strategy:" in result.stdout and "image_size:" in result.stdout


def test_cli_misspelled_override_exits_nonzero_naming_the_key():
    result = run_cli("model.dropuot=0.5")
    assert result.returncode != 0
    assert "dropuot" in result.stderr


def test_cli_bad_strategy_parameter_exits_before_any_work(tmp_path):
    output = refused_before_any_work(tmp_path, "+strategy.params.typical_per_klass=5")
    assert "hybrid has no parameter typical_per_klass; it accepts" in output
    assert "typical_per_class" in output


@pytest.mark.parametrize(
    "override,message",
    [
        ("scoring.engine=gpu", "Invalid value 'gpu', expected one of [local, ray]"),
        (
            "strategy.cold_start=kcentre",
            "Invalid value 'kcentre', expected one of [random, kcenter, typiclust]",
        ),
        ("labeling.vote=most", "Invalid value 'most', expected one of [majority, unanimous]"),
        ("+model.dropuot=0.5", "model.dropuot: no such setting; check the spelling"),
        ("data.test_fraction=0", "data.test_fraction=0.0: must be between 0 and 1"),
        ("campaign.stop_set=0", "campaign.stop_set=0: the stop rule compares models"),
        ("data.image_size=[16]", "data.image_size=[16]: give height and width"),
        ("data.channels=2", "data.channels=2: use 1 (grayscale) or 3 (RGB)"),
        (
            "labeling=labelstudio labeling.project_title=" + "x" * 51,
            "Label Studio takes 3 to 50 characters, this has 51",
        ),
        ("seed=-1", "seed=-1: must be 0 or more"),
    ],
)
def test_cli_a_setting_that_cannot_work_exits_before_any_work(tmp_path, override, message):
    assert message in refused_before_any_work(tmp_path, "round=0", *override.split())


@pytest.mark.parametrize(
    "override,message",
    [
        ("labeling.error_rate=5", "labeling.error_rate=5.0: a share of answers, from 0 to 1"),
        ("labeling.error_rate=-0.1", "labeling.error_rate=-0.1"),
        ("campaign.rounds=-2", "campaign.rounds=-2: must be 0"),
        ("campaign.stop_agreement=1.1", "campaign.stop_agreement=1.1: a share of the stop set"),
        ("campaign.stop_agreement=0", "campaign.stop_agreement=0.0"),
    ],
)
def test_a_share_or_count_out_of_range_is_refused(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(OmegaConf.to_object(compose_config([override])))


@pytest.mark.parametrize(
    "swept,message",
    [
        ("strategy.batch_size=10,0", "strategy.batch_size=0: must be at least 1"),
        ("strategy.name=margin,entropi", "strategy.name='entropi' is not a strategy"),
    ],
)
def test_cli_a_sweep_with_one_bad_job_runs_no_job(tmp_path, swept, message):
    sweep = tmp_path / "sweep"
    tiny = ["model.filters=[8]", "model.min_steps=40", "model.min_epochs=2"]  # if it ran
    result = run_cli(
        "-m", "campaign.rounds=1", "seed=0,1", swept, *tiny, f"hydra.sweep.dir={sweep}"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert output.count(message) == 1 and "Traceback" not in output  # once for both seeds
    assert not list(sweep.glob("*/campaign"))


@pytest.mark.parametrize(
    "args,message",
    [
        (["round=1"], "round 0 has not finished in"),
        (["campaign.rounds=2", "labeling=labelstudio"], "campaign.rounds needs labeling=simulated"),
        (["round=0", "data=folder"], "no labeled images in"),
        (["round=0", "campaign.budget=20"], "campaign.budget=20 is spent before the first round"),
        (
            ["round=0", "labeling=labelstudio", "labeling.url=127.0.0.1:8080"],
            "labeling.url='127.0.0.1:8080': give the server's address with its scheme",
        ),
    ],
    ids=[
        "round-before-the-last-finished",
        "unattended-with-people",
        "no-images",
        "budget-spent-at-the-start",
        "ls-url",
    ],
)
def test_cli_a_round_that_cannot_go_on_says_why_and_exits_1(tmp_path, args, message):
    result = run_cli(*args, f"workspace={tmp_path / 'campaign'}", f"hydra.run.dir={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert message in output and "Traceback" not in output


def test_cli_a_workspace_that_is_a_file_says_so_in_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.touch()
    result = run_cli("round=0", f"workspace={afile}", f"hydra.run.dir={tmp_path / 'run'}")
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-2000:]
    assert f"workspace={afile}: a file, not a folder" in output


def test_cli_own_images_without_a_pool_folder_name_it_and_exit_1(tmp_path):
    ws = tmp_path / "campaign"
    write_class_folders(ws / "data" / "raw", per_class=3)
    result = run_cli("round=0", "data=folder", f"workspace={ws}", f"hydra.run.dir={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-2000:]
    assert f"no pool folder {ws / 'data' / 'pool'}: put the unlabeled images under" in output


def test_cli_a_workspace_in_use_is_refused(tmp_path):
    import fcntl

    from activelearn.workspace.layout import LOCK

    ws = tmp_path / "campaign"
    ws.mkdir()
    with open(ws / LOCK, "a") as held:  # another run is working here
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_cli("round=0", f"workspace={ws}", f"hydra.run.dir={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert f"another activelearn run is working in {ws}" in output and "Traceback" not in output
    assert not (ws / "rounds").exists() and not (ws / "data").exists()


def test_cli_a_round_without_test_images_says_how_to_get_some_and_exits_1(tmp_path):
    ws = tmp_path / "campaign"
    write_class_folders(ws / "data" / "raw", per_class=1)  # none to hold out, no test set
    result = run_cli("round=0", "data=folder", f"workspace={ws}", f"hydra.run.dir={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert (
        f"no test images in {ws.resolve() / 'data' / 'test'} to evaluate on: put a fixed test "
        "set into data/test/<class>/, or label at least 2 images per class so one is held out"
    ) in output
    assert "Traceback" not in output


def test_cli_own_images_without_answers_name_the_labels_file_and_exit_1(tmp_path):
    ws = tmp_path / "campaign"
    write_class_folders(ws / "data" / "raw", per_class=2)
    write_class_folders(ws / "data" / "pool", per_class=3, seed=1)
    result = run_cli("round=0", "data=folder", f"workspace={ws}", f"hydra.run.dir={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert "pool_labels.csv not found" in output and "use labeling=labelstudio" in output
    assert "Traceback" not in output


def test_importing_activelearn_turns_the_tools_usage_reports_off(tmp_path):
    """Asked of each vendor's own switch, in a process whose environment says nothing
    (MLflow also stays quiet under pytest or CI, so neither may be in it)."""
    check = (
        "import activelearn\n"
        "from bentoml._internal.utils.analytics.usage_stats import do_not_track\n"
        "from mlflow.telemetry.utils import is_telemetry_disabled\n"
        "from ray._common.usage.usage_lib import usage_stats_enabled\n"
        "print(do_not_track(), is_telemetry_disabled(), usage_stats_enabled())\n"
    )
    clean = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", check], env=clean, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["True", "True", "False"]


def test_cli_ctrl_c_says_how_to_go_on_in_one_line(tmp_path):
    ws = tmp_path / "campaign"
    process = subprocess.Popen(
        [sys.executable, "-m", "activelearn", "round=0", f"workspace={ws}"]
        + [f"hydra.run.dir={tmp_path / 'run'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while not (ws / "data" / "pool").exists() and process.poll() is None:
        time.sleep(0.05)  # the demo data is being written: mid-round
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output[-2000:]
    assert "interrupted: run the same command again" in output
    assert "Traceback" not in output
