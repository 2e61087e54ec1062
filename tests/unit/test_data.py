"""The data layer on generated images of every format and mode, and on broken files."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from activelearn.config import Config, DataConfig
from activelearn.data.images import (
    Preprocessing,
    UnreadableImage,
    class_names_of,
    list_files,
    load_labeled,
    preprocess,
    split_test_set,
)
from activelearn.errors import ConfigError
from activelearn.pipeline.run import prepare_data
from activelearn.workspace.manifest import NOT_IN_POOL, Manifest
from tests.helpers import write_class_folders

GRAY = Preprocessing((8, 8), 1)


RGB = Preprocessing((8, 8), 3)


def gradient(mode: str, size=(20, 13)) -> Image.Image:
    """A left-to-right ramp from black to white in the given mode."""
    ramp = np.tile(np.linspace(0, 1, size[0]), (size[1], 1))
    if mode == "I;16":
        return Image.fromarray((ramp * 65535).astype(np.uint16))
    img = Image.fromarray((ramp * 255).astype(np.uint8))
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(255)
        return img
    return img.convert(mode)


FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "gif": "GIF", "webp": "WEBP"}


MODES = ["L", "RGB", "RGBA", "P", "I;16"]


def cases():
    for ext, fmt in FORMATS.items():
        for mode in MODES:
            if mode == "I;16" and ext != "png":
                continue  # only PNG stores 16-bit here
            if mode in ("RGBA", "P") and ext == "jpg":
                continue  # JPEG has neither alpha nor a palette
            yield ext, fmt, mode


def write_broken_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    good = folder / "good.png"
    gradient("L", (64, 64)).save(good)
    (folder / "truncated.png").write_bytes(good.read_bytes()[:60])
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 10)
    return {"empty.png", "notes.txt", "truncated.png", "corrupt.jpg"}


@pytest.mark.parametrize("ext,fmt,mode", list(cases()))
@pytest.mark.parametrize("prep", [GRAY, RGB], ids=["gray", "rgb"])
def test_every_format_and_mode_gives_the_same_tensor(tmp_path, ext, fmt, mode, prep):
    path = tmp_path / f"img.{ext}"
    gradient(mode).save(path, format=fmt)
    x = preprocess(path, prep)
    assert x.shape == (8, 8, prep.channels) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    # The ramp survives every format: dark on the left, bright on the right.
    assert x[:, 0].mean() < 0.2 and x[:, -1].mean() > 0.8


def test_gif_uses_the_first_frame(tmp_path):
    black, white = Image.new("L", (6, 6), 0), Image.new("L", (6, 6), 255)
    black.save(tmp_path / "anim.gif", save_all=True, append_images=[white])
    assert preprocess(tmp_path / "anim.gif", GRAY).max() == 0.0


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert preprocess(tmp_path / "clear.png", RGB).min() == 1.0


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_transparent_colour_becomes_white(tmp_path, mode):
    """Gray and RGB PNGs mark one colour transparent (a tRNS chunk), not by alpha."""
    img = Image.new(mode, (4, 4), 0)
    img.save(tmp_path / "keyed.png", transparency=0 if mode == "L" else (0, 0, 0))
    assert preprocess(tmp_path / "keyed.png", GRAY).min() == 1.0


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_exif_orientation_turns_the_image_upright(tmp_path, fmt):
    left_dark = Image.fromarray(np.array([[10, 250]] * 2, np.uint8)).resize((64, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to show it
    left_dark.save(tmp_path / "photo", format=fmt, exif=exif.tobytes())
    x = preprocess(tmp_path / "photo", Preprocessing((2, 2), 1))[..., 0]
    assert x[0].max() < 0.3 and x[1].min() > 0.7  # dark on top, as a viewer shows it


def test_wide_range_images_scale_by_their_type_not_their_brightest_pixel(tmp_path):
    dim = np.full((4, 4), 250, np.uint16)  # 16-bit: 250 of 65535 is nearly black
    one_bright = dim.copy()
    one_bright[0, 0] = 60000
    for name, pixels in (("dim.png", dim), ("bright.png", one_bright)):
        Image.fromarray(pixels).save(tmp_path / name)
    assert preprocess(tmp_path / "dim.png", GRAY).max() < 0.01
    assert preprocess(tmp_path / "bright.png", GRAY)[-1, -1, 0] < 0.01
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "half.tif")
    assert preprocess(tmp_path / "half.tif", GRAY).mean() == pytest.approx(0.5, abs=0.01)


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    import activelearn.data.images

    monkeypatch.setattr(activelearn.data.images, "MAX_PIXELS", 10_000)  # a real limit is 100s of MB
    Image.new("L", (101, 100)).save(tmp_path / "big.png")
    with pytest.raises(UnreadableImage, match=r"big.png: 101 x 100 pixels, over the limit"):
        preprocess(tmp_path / "big.png", GRAY)
    Image.new("L", (100, 100)).save(tmp_path / "fits.png")
    assert preprocess(tmp_path / "fits.png", GRAY).shape == (8, 8, 1)


@pytest.mark.parametrize("size, channels", [((16,), 1), ((0, 8), 1), ((8, 8), 2)])
def test_a_preprocessing_that_cannot_work_is_refused(size, channels):
    with pytest.raises(ValueError, match="image_size=.*height and width|channels=2: use 1"):
        Preprocessing(size, channels)


def test_bytes_and_paths_decode_alike(tmp_path):
    gradient("RGB").save(tmp_path / "a.png")
    assert np.array_equal(
        preprocess(tmp_path / "a.png", RGB), preprocess((tmp_path / "a.png").read_bytes(), RGB)
    )


def test_broken_files_raise_a_named_error(tmp_path):
    for name in write_broken_files(tmp_path):
        with pytest.raises(UnreadableImage, match=name):
            preprocess(tmp_path / name, GRAY)


def test_a_file_the_decoder_chokes_on_is_unreadable_too(tmp_path):
    """Pillow raises more than OSError on odd files: here NotImplementedError."""
    import io
    import struct

    dds = io.BytesIO()
    Image.new("RGB", (4, 4)).save(dds, "DDS")
    header = bytearray(dds.getvalue())
    header[80:88] = struct.pack("<I4s", 4, bytes(4))  # pixel format: FourCC code zero
    (tmp_path / "odd.dds").write_bytes(header)
    with pytest.raises(UnreadableImage, match="odd.dds: not a readable image"):
        preprocess(tmp_path / "odd.dds", GRAY)


def test_load_labeled_skips_and_reports_broken_files(tmp_path):
    write_class_folders(tmp_path, per_class=3, n_classes=2)
    broken = write_broken_files(tmp_path / "class1")
    names = class_names_of(tmp_path)
    arrays = load_labeled(tmp_path, names, GRAY)
    assert names == ["class0", "class1"]
    assert arrays.x.shape == (7, 8, 8, 1)  # 3 + 3 patterns + good.png
    assert sorted(arrays.y.tolist()) == [0, 0, 0, 1, 1, 1, 1]
    assert {p.rsplit("/", 1)[-1] for p, _ in arrays.rejected} == broken


def test_manifest_records_pool_and_rejects_and_survives_a_reload(tmp_path):
    pool = tmp_path / "pool"
    write_class_folders(pool / "nested", per_class=2, n_classes=2)
    broken = write_broken_files(pool / "incoming")
    manifest = Manifest(tmp_path / "manifest.csv")
    added = manifest.sync_pool(pool, GRAY)
    # New files are admitted on their header: truncated.png has a whole one, and is
    # refused when it is decoded, at scoring (tests/unit/test_fast_decode.py).
    assert added == {"pool": 6, "rejected": len(broken) - 1}
    assert manifest.samples["incoming/truncated.png"].state == "pool"
    manifest.save()

    again = Manifest.load(tmp_path / "manifest.csv")
    assert again.counts() == {"pool": 6, "queued": 0, "labeled": 0, "other": 0, "rejected": 3}
    assert "nested/class0/s0-000.png" in again.samples  # id = pool-relative POSIX path
    rejected = again.samples["incoming/empty.png"]
    assert rejected.state == "rejected" and "empty.png" in rejected.reason
    assert again.sync_pool(pool, GRAY) == {}  # nothing new, nothing readable again

    gradient("L").save(pool / "incoming" / "empty.png")  # the file arrived in full after all
    again.set_state("nested/class1/s0-000.png", "rejected", round=2, reason="unknown label")
    assert again.sync_pool(pool, GRAY) == {"readable again": 1}
    assert again.samples["incoming/empty.png"].state == "pool"
    assert again.samples["nested/class1/s0-000.png"].state == "rejected"  # annotators' say


def test_a_pool_file_removed_is_rejected_until_it_is_put_back(tmp_path):
    pool = tmp_path / "pool"
    write_class_folders(pool, per_class=2, n_classes=1)
    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.sync_pool(pool, GRAY)
    waiting, queued = "class0/s0-000.png", "class0/s0-001.png"
    manifest.set_state(queued, "queued", round=0)  # the ingest decides: a copy may exist
    image = (pool / waiting).read_bytes()
    for sid in (waiting, queued):
        (pool / sid).unlink()
    assert manifest.sync_pool(pool, GRAY) == {"removed": 1}
    assert manifest.samples[waiting].state == "rejected"
    assert manifest.samples[waiting].reason == NOT_IN_POOL
    assert manifest.samples[queued].state == "queued"

    (pool / waiting).write_bytes(image)
    assert manifest.sync_pool(pool, GRAY) == {"readable again": 1}
    assert manifest.samples[waiting].state == "pool"


def test_a_pool_file_whose_name_is_not_utf8_is_skipped_not_fatal(tmp_path, caplog):

    pool = tmp_path / "pool"
    write_class_folders(pool, per_class=2, n_classes=1)
    latin1 = os.path.join(os.fsencode(pool), b"caf\xe9.png")  # a Latin-1 name
    Image.new("L", (4, 4)).save(os.fsdecode(latin1))
    manifest = Manifest(tmp_path / "manifest.csv")
    assert manifest.sync_pool(pool, GRAY) == {"pool": 2, "skipped": 1}
    manifest.save()
    assert len(Manifest.load(tmp_path / "manifest.csv").samples) == 2
    assert "caf\\xe9.png" in caplog.text and "not UTF-8" in caplog.text


def test_manifest_save_leaves_old_file_when_writing_fails(tmp_path):
    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.set_state("a.png", "pool")
    manifest.save()
    before = (tmp_path / "manifest.csv").read_text()
    manifest.samples["b.png"] = object()  # not a Sample: writing fails midway
    with pytest.raises(TypeError):
        manifest.save()
    assert (tmp_path / "manifest.csv").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]  # no temp file left


def test_test_set_is_drawn_once_and_never_redrawn(tmp_path):
    raw, test = tmp_path / "raw", tmp_path / "test"
    write_class_folders(raw, per_class=10, n_classes=3)
    assert split_test_set(raw, test, 0.2, seed=0) == 6
    fixed = [p.relative_to(test) for p in list_files(test)]
    assert len(fixed) == 6 and {p.parts[0] for p in fixed} == {"class0", "class1", "class2"}

    write_class_folders(raw, per_class=10, n_classes=3, seed=1)  # new labels arrive
    assert split_test_set(raw, test, 0.2, seed=0) == 0
    assert [p.relative_to(test) for p in list_files(test)] == fixed
    assert not {p.relative_to(raw) for p in list_files(raw)} & set(fixed)


def test_a_test_folder_with_only_hidden_files_gets_its_draw(tmp_path):
    raw, test = tmp_path / "raw", tmp_path / "test"
    write_class_folders(raw, per_class=10, n_classes=2)
    (test / "class0").mkdir(parents=True)
    (test / ".DS_Store").write_bytes(b"Finder's")  # no image: the folder counts as empty
    (test / "class0" / ".gitkeep").touch()
    assert split_test_set(raw, test, 0.2, seed=0) == 4
    assert len(list_files(test)) == 4 and len(list_files(raw)) == 16
    assert (test / ".DS_Store").read_bytes() == b"Finder's"  # kept
    assert (test / "class0" / ".gitkeep").exists()


def test_prepare_names_a_class_without_test_images(tmp_path, monkeypatch, caplog):
    from activelearn.config import Config, DataConfig
    from activelearn.pipeline import stages

    monkeypatch.chdir(tmp_path)
    write_class_folders(tmp_path / "raw", per_class=3, n_classes=3)
    write_class_folders(tmp_path / "test", per_class=2, n_classes=2)  # none of class2
    data = DataConfig(raw_dir="raw", test_dir="test", image_size=[8, 8], channels=1, demo=None)
    stages.prepare(Config(data=data))
    assert "no test image of class class2" in caplog.text
    # two test images each of class0 and class1: too few to trust their accuracy
    assert "fewer than 10 test images of class class0 (2), class1 (2)" in caplog.text


def test_prepare_is_quiet_about_a_test_set_big_enough(tmp_path, monkeypatch, caplog):
    from activelearn.config import Config, DataConfig
    from activelearn.pipeline import stages

    monkeypatch.chdir(tmp_path)
    write_class_folders(tmp_path / "raw", per_class=3, n_classes=2)
    write_class_folders(tmp_path / "test", per_class=10, n_classes=2)
    data = DataConfig(raw_dir="raw", test_dir="test", image_size=[8, 8], channels=1, demo=None)
    stages.prepare(Config(data=data))
    assert "test images of class" not in caplog.text


def test_test_split_keeps_files_of_the_same_name_apart(tmp_path):
    raw, test = tmp_path / "raw", tmp_path / "test"
    for camera in range(4):  # four different images, all called img.png
        folder = raw / "cat" / f"cam{camera}"
        folder.mkdir(parents=True)
        Image.new("L", (4, 4), camera * 60).save(folder / "img.png")
    assert split_test_set(raw, test, 0.5, seed=0) == 2
    assert len(list_files(raw)) == len(list_files(test)) == 2
    pixels = {preprocess(p, GRAY).max() for p in list_files(raw) + list_files(test)}
    assert len(pixels) == 4  # none overwritten


def test_test_split_is_seeded(tmp_path):
    picks = []
    for run in range(2):
        raw, test = tmp_path / f"raw{run}", tmp_path / f"test{run}"
        write_class_folders(raw, per_class=10, n_classes=2)
        split_test_set(raw, test, 0.3, seed=7)
        picks.append([p.relative_to(test) for p in list_files(test)])
    assert picks[0] == picks[1]


def test_a_draw_killed_midway_leaves_no_test_set_and_the_next_draws_it_whole(tmp_path, monkeypatch):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    for ws in (killed, whole):
        write_class_folders(ws / "raw", per_class=10, n_classes=3)
    (killed / "test" / "class0").mkdir(parents=True)  # an empty folder, made ahead
    moved, move = [], shutil.move

    def killed_at_the_third_move(*args):
        if len(moved) == 2:
            raise KeyboardInterrupt
        moved.append(args)
        return move(*args)

    monkeypatch.setattr(shutil, "move", killed_at_the_third_move)
    with pytest.raises(KeyboardInterrupt):
        split_test_set(killed / "raw", killed / "test", 0.2, seed=0)
    assert not list_files(killed / "test")  # no partial test set to be taken as the fixed one
    monkeypatch.undo()

    assert split_test_set(killed / "raw", killed / "test", 0.2, seed=0) == 6
    split_test_set(whole / "raw", whole / "test", 0.2, seed=0)
    for part in ("raw", "test"):  # the same draw as without the kill, and no label lost
        assert [p.relative_to(killed) for p in list_files(killed / part)] == [
            p.relative_to(whole) for p in list_files(whole / part)
        ]
    assert sorted(p.name for p in killed.iterdir()) == ["raw", "test"]


def test_the_test_set_is_drawn_at_set_up_and_never_from_labels_of_later_rounds(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    raw, test = tmp_path / "data" / "raw", tmp_path / "data" / "test"
    write_class_folders(raw, per_class=1)  # one image per class: none can be held out
    (tmp_path / "data" / "pool").mkdir()  # an empty pool
    cfg = Config(data=DataConfig(image_size=[12, 12], channels=1))
    fixes = "put a fixed test set into data/test/<class>/, or label at least 2 images per class"
    with pytest.raises(
        ConfigError, match=re.escape(f"no test images in {test} to evaluate on: {fixes}")
    ):
        prepare_data(cfg)
    write_class_folders(raw, per_class=1, seed=1)  # a second one: the set-up draws one of each
    prepare_data(cfg)

    shutil.rmtree(test)  # later the test set is gone, and labels answered in rounds arrive ...
    write_class_folders(raw, per_class=3, seed=2)
    with pytest.raises(ConfigError, match=r"put a fixed test set into data/test/<class>/$"):
        prepare_data(cfg)
    assert not test.exists()  # ... and none of them is drawn into the test set
