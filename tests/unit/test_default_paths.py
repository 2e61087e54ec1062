"""Default paths are stated, with what they are relative to: the simulated annotator's
labels file (relative to the workspace) and `serve`'s folders (its pool derived from
`--workspace`, as the rounds take it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from activelearn.config import Config, DataConfig
from activelearn.errors import RoundBlocked
from activelearn.labeling import SimulatedAnnotator
from activelearn.labeling.labelstudio.cli import main, parse_args
from activelearn.rounds.campaign import make_annotator
from activelearn.workspace.layout import PROJECT_ROOT


def test_a_missing_labels_file_says_it_is_relative_to_the_workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # rounds make the annotator in the workspace
    with pytest.raises(RoundBlocked) as refused:
        make_annotator(Config(), ["cat", "dog"])
    message = str(refused.value)
    assert f"{tmp_path / 'data' / 'pool_labels.csv'} not found" in message
    assert f"data.pool_labels=data/pool_labels.csv is relative to the workspace {tmp_path}" in (
        message
    )
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "elsewhere.csv")):
        SimulatedAnnotator("elsewhere.csv", ["cat"])


def test_serve_takes_the_pool_of_the_workspace():
    default = parse_args(["serve"])
    assert default.workspace == Path(Config.workspace) == Path("campaign")
    assert default.pool_dir == Path("campaign") / DataConfig.pool_dir == Path("campaign/data/pool")
    assert default.data_dir == PROJECT_ROOT / ".labelstudio" and default.data_dir.is_absolute()
    other = parse_args(["serve", "--workspace", "sweeps/job-1"])
    assert other.pool_dir == Path("sweeps/job-1/data/pool")
    chosen = parse_args(["serve", "--workspace", "sweeps/job-1", "--pool-dir", "/images/pool"])
    assert chosen.pool_dir == Path("/images/pool")


def test_serve_help_states_every_default_path_and_what_it_is_relative_to(capsys):
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # as one line, however wrapped
    assert "Relative paths are relative to the current folder." in help_text
    assert f"(default: {PROJECT_ROOT / '.labelstudio'}, in this checkout" in help_text
    assert "(default: campaign, in the current folder)" in help_text
    assert "(default: WORKSPACE/data/pool," in help_text
