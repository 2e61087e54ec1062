"""The simulated annotator (answers from a labels file, careless at a set rate, alike on a
rerun), and answers becoming labeled images."""

import csv

import pytest
from PIL import Image

from activelearn.errors import ConfigError
from activelearn.labeling.answers import (
    ACCEPTED,
    MAX_NAME_BYTES,
    OTHER,
    REMOVED,
    SKIPPED,
    SKIPPED_TOO_OFTEN,
    Answer,
    apply_answers,
    labeled_name,
)
from activelearn.labeling.simulated import SimulatedAnnotator
from activelearn.workspace.manifest import NOT_IN_POOL, Manifest
from activelearn.workspace.queue import QueueItem

CLASSES = ["cat", "dog", "fox"]


def labels_file(tmp_path, n: int):
    path = tmp_path / "pool_labels.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(
            [("path", "label"), *((f"p/{i}.png", CLASSES[i % 3]) for i in range(n))]
        )
    return path


def queue(ids):
    return [QueueItem(sid, rank, None, None, 0.0) for rank, sid in enumerate(ids, start=1)]


def test_answers_are_the_labels_file_and_unknown_images_are_skipped(tmp_path):
    annotator = SimulatedAnnotator(labels_file(tmp_path, 30), CLASSES)
    answers = annotator.collect(0, queue(["p/4.png", "p/5.png", "elsewhere.png"]), tmp_path)
    assert [(a.sample_id, a.status, a.label) for a in answers[:2]] == [
        ("p/4.png", ACCEPTED, "dog"),
        ("p/5.png", ACCEPTED, "fox"),
    ]
    assert answers[2].status == SKIPPED and "not in the labels file" in answers[2].detail


def test_a_careless_annotator_flips_about_its_error_rate_the_same_way_on_a_rerun(tmp_path):
    path = labels_file(tmp_path, 3000)
    ids = [f"p/{i}.png" for i in range(3000)]
    truth = {sid: CLASSES[i % 3] for i, sid in enumerate(ids)}
    careless = SimulatedAnnotator(path, CLASSES, error_rate=0.2, seed=1)
    answers = careless.collect(4, queue(ids), tmp_path)
    wrong = [a for a in answers if a.label != truth[a.sample_id]]
    assert 0.17 < len(wrong) / len(ids) < 0.23  # binomial(3000, 0.2): within 4 sd
    assert all(a.status == ACCEPTED and a.label in CLASSES for a in answers)
    assert careless.collect(4, queue(ids), tmp_path) == answers  # a rerun answers alike
    assert careless.collect(5, queue(ids), tmp_path) != answers  # another round, other slips


def write_labels(tmp_path, rows, header=("path", "label"), encoding="utf-8"):
    path = tmp_path / "pool_labels.csv"
    with path.open("w", newline="", encoding=encoding) as f:
        csv.writer(f).writerows([header, *rows] if header else rows)
    return path


def test_a_label_that_is_not_a_class_is_answered_other_never_a_class_folder(tmp_path):
    rows = [("p/0.png", "../test/cat"), ("p/1.png", ""), ("p/2.png", "Cat"), ("p/3.png", "dog ")]
    annotator = SimulatedAnnotator(write_labels(tmp_path, rows), CLASSES)
    answers = annotator.collect(0, queue([r[0] for r in rows]), tmp_path)
    assert [a.status for a in answers] == [OTHER] * 3 + [ACCEPTED]
    assert "'../test/cat'" in answers[0].detail and "not a class" in answers[0].detail
    assert answers[3].label == "dog"  # surrounding spaces dropped

    pool, raw = tmp_path / "pool", tmp_path / "raw"
    manifest = Manifest(tmp_path / "manifest.csv")
    for sid, _ in rows:
        (pool / sid).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(pool / sid)
        manifest.set_state(sid, "queued", round=0)
    apply_answers(answers, manifest, pool, raw, 1)
    assert [manifest.samples[sid].state for sid, _ in rows] == ["other"] * 3 + ["labeled"]
    copies = sorted(p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*~*.png"))
    assert copies[-1] == ("raw", "dog")  # the three others: known negatives, no class folder
    assert [parts[0] for parts in copies[:3]] == ["other"] * 3


def test_a_labels_file_from_excel_with_its_bom_and_dot_slash_paths_is_read(tmp_path):
    rows = [("./p/0.png", "cat"), ("p/1.png", "dog")]
    path = write_labels(tmp_path, rows, encoding="utf-8-sig")
    answers = SimulatedAnnotator(path, CLASSES).collect(0, queue(["p/0.png", "p/1.png"]), tmp_path)
    assert [(a.status, a.label) for a in answers] == [(ACCEPTED, "cat"), (ACCEPTED, "dog")]


def test_a_labels_file_without_its_header_is_refused_naming_it(tmp_path):
    path = write_labels(tmp_path, [("p/0.png", "cat")], header=None)
    with pytest.raises(ConfigError, match="pool_labels.csv: its first row must be the header"):
        SimulatedAnnotator(path, CLASSES)


def test_a_labels_file_that_answers_none_of_the_queue_stops_the_round(tmp_path, caplog):
    path = write_labels(tmp_path, [("data/pool/p/0.png", "cat"), ("p/1.png", "dog")])
    annotator = SimulatedAnnotator(path, CLASSES)
    with pytest.raises(ConfigError, match="none of the 1 queued images is in the labels file"):
        annotator.collect(0, queue(["p/0.png"]), tmp_path)
    answers = annotator.collect(0, queue(["p/0.png", "p/1.png"]), tmp_path)  # one of two
    assert [a.status for a in answers] == [SKIPPED, ACCEPTED]
    assert "1 queued images are not in the labels file" in caplog.text


def test_a_deep_pool_path_gets_a_short_labeled_name(tmp_path):
    sid = "/".join(["d" * 120] * 4) + "/img.png"  # each part fits, the joined name not
    name = labeled_name(sid)
    assert len(name.encode()) <= MAX_NAME_BYTES and name.endswith(".png") and "img~" in name
    assert name != labeled_name(sid.replace("img", "other"))
    pool, raw = tmp_path / "pool", tmp_path / "raw"
    (pool / sid).parent.mkdir(parents=True)
    Image.new("L", (4, 4)).save(pool / sid)
    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.set_state(sid, "queued", round=0)
    apply_answers([Answer(sid, ACCEPTED, "cat")], manifest, pool, raw, 1)
    assert (raw / "cat" / name).is_file() and manifest.samples[sid].state == "labeled"


def test_a_missing_labels_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv not found"):
        SimulatedAnnotator(tmp_path / "nowhere.csv", CLASSES)


def test_each_answered_image_is_one_file_under_its_latest_label(tmp_path):
    pool, raw = tmp_path / "pool", tmp_path / "raw"
    (pool / "a").mkdir(parents=True)
    for shade, sid in enumerate(["a/b.png", "a__b.png"]):  # one flattened name, two images
        Image.new("L", (4, 4), shade * 100).save(pool / sid)
    (raw / "dog").mkdir(parents=True)
    (raw / "dog" / "a__b.png").write_bytes(b"a seed image of the same name")
    manifest = Manifest(tmp_path / "manifest.csv")
    for sid in ("a/b.png", "a__b.png"):
        manifest.set_state(sid, "queued", round=0)

    first = [Answer("a/b.png", ACCEPTED, "cat"), Answer("a__b.png", ACCEPTED, "dog")]
    apply_answers(first, Manifest(manifest.path, dict(manifest.samples)), pool, raw, 1)
    # Killed before the manifest was saved; meanwhile the annotator changed an answer.
    changed = [Answer("a/b.png", ACCEPTED, "dog"), first[1]]
    apply_answers(changed, manifest, pool, raw, 1)

    copies = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.png"))
    assert copies == sorted(
        ["dog/a__b.png", f"dog/{labeled_name('a/b.png')}", f"dog/{labeled_name('a__b.png')}"]
    )
    for sid in ("a/b.png", "a__b.png"):
        assert (raw / "dog" / labeled_name(sid)).read_bytes() == (pool / sid).read_bytes()
    assert (raw / "dog" / "a__b.png").read_bytes() == b"a seed image of the same name"


def test_an_answered_image_removed_from_the_pool_is_rejected_not_a_crash(tmp_path, caplog):
    """Killed after copying one image; meanwhile its answer changed and both pool files
    were removed: the rerun moves the copy to its new label and rejects the other."""
    pool, raw = tmp_path / "pool", tmp_path / "raw"
    pool.mkdir()
    for shade, sid in enumerate(["copied.png", "gone.png"]):
        Image.new("L", (4, 4), shade * 100).save(pool / sid)
    image = (pool / "copied.png").read_bytes()
    manifest = Manifest(tmp_path / "manifest.csv")
    for sid in ("copied.png", "gone.png"):
        manifest.set_state(sid, "queued", round=0)
    killed = Manifest(manifest.path, dict(manifest.samples))
    apply_answers([Answer("copied.png", ACCEPTED, "cat")], killed, pool, raw, 1)
    for sid in ("copied.png", "gone.png"):
        (pool / sid).unlink()

    answers = [Answer("copied.png", ACCEPTED, "dog"), Answer("gone.png", ACCEPTED, "fox")]
    assert apply_answers(answers, manifest, pool, raw, 1) == {ACCEPTED: 1, REMOVED: 1}
    assert manifest.samples["copied.png"].label == "dog"
    assert (raw / "dog" / labeled_name("copied.png")).read_bytes() == image
    assert [p.relative_to(raw).as_posix() for p in raw.rglob("*.png")] == [
        f"dog/{labeled_name('copied.png')}"
    ]
    assert not (raw / "fox").exists()  # no class folder without images
    gone = Manifest.load(manifest.path).samples["gone.png"]
    assert (gone.state, gone.reason, gone.round) == ("rejected", NOT_IN_POOL, None)
    assert "gone.png is no longer in" in caplog.text


def test_an_image_skipped_more_than_max_skips_times_is_excluded_with_that_reason(tmp_path):
    """labeling.max_skips=1: the first skip sends it back to the pool, the second ends it;
    the count survives a reload of the manifest (a round is a new process)."""
    pool, raw = tmp_path / "pool", tmp_path / "raw"
    pool.mkdir()
    Image.new("L", (4, 4)).save(pool / "a.png")
    path = tmp_path / "manifest.csv"
    manifest = Manifest(path)
    manifest.set_state("a.png", "queued", round=0)
    skip = [Answer("a.png", SKIPPED, detail="task 1: cancelled (1x)")]
    assert apply_answers(skip, manifest, pool, raw, 0, max_skips=1) == {SKIPPED: 1}
    manifest = Manifest.load(path)
    assert (manifest.samples["a.png"].state, manifest.samples["a.png"].skips) == ("pool", 1)
    manifest.set_state("a.png", "queued", round=3)  # queued again, skipped again
    assert apply_answers(skip, manifest, pool, raw, 3, max_skips=1) == {SKIPPED_TOO_OFTEN: 1}
    sample = Manifest.load(path).samples["a.png"]
    assert sample.state == "rejected"
    assert "skipped 2 times (labeling.max_skips=1)" in sample.reason
    # Without a limit (labeling.skipped=exclude decides at once, elsewhere) it comes back.
    unlimited = Manifest(tmp_path / "other.csv")
    for round in range(3):
        unlimited.set_state("a.png", "queued", round=round)
        apply_answers(skip, unlimited, pool, raw, round)
    assert (unlimited.samples["a.png"].state, unlimited.samples["a.png"].skips) == ("pool", 3)


def test_an_image_answered_other_leaves_the_pool_for_good_into_the_other_folder(tmp_path):
    pool, raw, other = tmp_path / "pool", tmp_path / "raw", tmp_path / "negatives"
    (pool / "sub").mkdir(parents=True)
    Image.new("L", (4, 4)).save(pool / "sub" / "x.png")
    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.set_state("sub/x.png", "queued", round=2)
    answer = Answer("sub/x.png", OTHER, detail="task 7: answered 'Other (none of these)'")
    apply_answers([answer], manifest, pool, raw, 2, other_dir=other)
    sample = Manifest.load(tmp_path / "manifest.csv").samples["sub/x.png"]
    assert (sample.state, sample.round, sample.reason) == ("other", 2, answer.detail)
    assert [p.parent for p in other.iterdir()] == [other] and not raw.exists()
    assert manifest.sync_pool(pool, None) == {}  # still in the pool folder: not queued again
    assert manifest.in_state("pool") == []


def test_a_skip_applied_twice_counts_once(tmp_path):
    """apply_answers is idempotent: the same answers again (a rerun) add no skip."""
    pool = tmp_path / "pool"
    pool.mkdir()
    Image.new("L", (4, 4)).save(pool / "a.png")
    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.set_state("a.png", "queued", round=0)
    skip = [Answer("a.png", SKIPPED)]
    for _ in range(3):
        apply_answers(skip, manifest, pool, tmp_path / "raw", 0, max_skips=1)
    assert (manifest.samples["a.png"].state, manifest.samples["a.png"].skips) == ("pool", 1)
