"""A dataset source (`data.source`) taken into a workspace, and the `split` command that
makes one from a labeled folder: on small generated image folders, no training."""

import errno
import json
import os
from pathlib import Path

import pytest

from activelearn.data import source as source_module
from activelearn.data.datasets import main as datasets_main
from activelearn.data.datasets import split_labeled
from activelearn.data.source import take_source
from activelearn.errors import ConfigError, SourceChanged
from tests.helpers import checksums, write_class_folders


@pytest.fixture
def source(tmp_path) -> Path:
    labeled = tmp_path / "labeled"
    write_class_folders(labeled, per_class=8)
    out = tmp_path / "source"
    split_labeled(labeled, out, seed_per_class=2, test_per_class=3, seed=0)
    return out


def take(src: Path, ws: Path) -> dict[str, int]:
    return take_source(
        src,
        ws / "data/source.json",
        raw_dir=ws / "data/raw",
        test_dir=ws / "data/test",
        pool_dir=ws / "data/pool",
        pool_labels=ws / "data/pool_labels.csv",
    )


def test_split_writes_a_source_whose_pool_names_hide_the_class(tmp_path, source):
    labeled = checksums(tmp_path / "labeled")
    assert sorted(p.name for p in (source / "raw").iterdir()) == ["class0", "class1", "class2"]
    assert all(len(list((source / "raw" / c).iterdir())) == 2 for c in ("class0", "class1"))
    assert all(len(list((source / "test" / c).iterdir())) == 3 for c in ("class0", "class2"))
    pool = sorted(p.name for p in (source / "pool").iterdir())
    assert len(pool) == 3 * (8 - 5) and all(name.startswith("img-") for name in pool)
    rows = (source / "pool_labels.csv").read_text().splitlines()
    assert rows[0] == "path,label" and sorted(r.split(",")[0] for r in rows[1:]) == pool
    # each pool image is the labeled image of the class its row names
    by_content = {
        (tmp_path / "labeled" / name).read_bytes(): name.split("/")[0] for name in labeled
    }
    for row in rows[1:]:
        name, label = row.split(",")
        assert by_content[(source / "pool" / name).read_bytes()] == label
    assert checksums(tmp_path / "labeled") == labeled  # the labeled folder is not changed


def test_split_refuses_classes_with_too_few_images_and_names_them(tmp_path, capsys):
    labeled = tmp_path / "labeled"
    write_class_folders(labeled, per_class=8)
    for extra in range(4):  # class2 has enough, the others not
        (labeled / "class2" / f"x{extra}.png").write_bytes(
            (labeled / "class2").iterdir().__next__().read_bytes()
        )
    with pytest.raises(SystemExit) as exit:
        datasets_main(["split", str(labeled), str(tmp_path / "out"), "--test-per-class", "9"])
    message = str(exit.value)
    assert "class0 (8), class1 (8)" in message and "class2" not in message
    assert "needs 12" in message
    assert not (tmp_path / "out").exists()


def test_the_split_command_prints_how_to_use_the_source(tmp_path, capsys):
    labeled = tmp_path / "labeled"
    write_class_folders(labeled, per_class=6)
    out = tmp_path / "out"
    datasets_main(
        ["split", str(labeled), str(out), "--seed-per-class", "1", "--test-per-class", "2"]
    )
    assert f"data.source={out}" in capsys.readouterr().out
    assert len(list((out / "pool").iterdir())) == 9


def test_a_workspace_takes_the_source_by_hard_link_and_never_writes_to_it(tmp_path, source):
    before = checksums(source)
    ws = tmp_path / "ws"
    assert take(source, ws) == {"link": 6 + 9 + 9}
    for part in ("raw/class0", "test/class1", "pool"):
        for path in (source / part).iterdir():
            taken = ws / "data" / part / path.name
            assert taken.stat().st_ino == path.stat().st_ino  # a link, not a copy
            assert not taken.is_symlink()
    assert (ws / "data/pool_labels.csv").read_text() == (source / "pool_labels.csv").read_text()
    record = json.loads((ws / "data/source.json").read_text())
    assert record["source"] == str(source)
    assert set(record["checksums"]) == {
        p.relative_to(source).as_posix()
        for part in ("raw", "test")
        for p in (source / part).rglob("*.png")
    }
    assert take(source, ws) == {}  # nothing new: nothing taken again
    assert checksums(source) == before


def test_pool_images_added_to_the_source_are_taken_next_time(tmp_path, source):
    ws = tmp_path / "ws"
    take(source, ws)
    (ws / "data/raw/class0/extra.png").write_bytes(b"labeled in a round")  # the workspace's own
    added = source / "pool" / "later" / "new.png"
    added.parent.mkdir()
    added.write_bytes((source / "pool" / "img-000000.png").read_bytes())
    with (source / "pool_labels.csv").open("a") as f:
        f.write("later/new.png,class1\n")
    assert take(source, ws) == {"link": 1}
    assert (ws / "data/pool/later/new.png").read_bytes() == added.read_bytes()
    assert "later/new.png,class1" in (ws / "data/pool_labels.csv").read_text()


@pytest.mark.parametrize("part", ["test", "raw"])
def test_a_source_whose_labeled_or_test_images_changed_is_refused(tmp_path, source, part):
    ws = tmp_path / "ws"
    take(source, ws)
    changed = sorted((source / part / "class1").iterdir())[0]
    changed.unlink()  # replaced, as an editor saves: the workspace's link keeps the old one
    changed.write_bytes(b"another image")
    with pytest.raises(SourceChanged, match=f"changed {part}/class1/{changed.name}"):
        take(source, ws)
    changed.unlink()
    with pytest.raises(SourceChanged, match=f"removed {part}/class1/{changed.name}"):
        take(source, ws)


def test_another_source_for_the_same_workspace_is_refused(tmp_path, source):
    ws = tmp_path / "ws"
    take(source, ws)
    other = tmp_path / "other"
    split_labeled(tmp_path / "labeled", other, seed_per_class=2, test_per_class=3, seed=1)
    with pytest.raises(ConfigError, match="took its data from"):
        take(other, ws)


def test_a_source_without_pool_is_refused_naming_the_layout(tmp_path):
    write_class_folders(tmp_path / "src" / "raw", per_class=2)
    with pytest.raises(ConfigError, match=r"no images in pool/.*raw/<class>/<file>"):
        take(tmp_path / "src", tmp_path / "ws")


def test_files_are_copied_where_links_cannot_be_made(tmp_path, source, monkeypatch):
    # Another file system cannot be mounted in a test: os.link fails as it would there.
    def cross_device(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(source_module.os, "link", cross_device)
    ws = tmp_path / "ws"
    assert take(source, ws) == {"copy": 24}
    taken = ws / "data/pool/img-000000.png"
    assert taken.read_bytes() == (source / "pool/img-000000.png").read_bytes()
    assert taken.stat().st_ino != (source / "pool/img-000000.png").stat().st_ino
