"""The model protocol on tiny generated data: it learns, and the BentoML file round-trips."""

import os
import shutil

import numpy as np
import pytest

from activelearn.config import ModelConfig
from activelearn.data.images import Preprocessing, class_names_of, load_labeled
from activelearn.learner import classifier as model
from activelearn.learner.classifier import Classifier, UnreadableModel, training_epochs
from activelearn.learner.metrics import classification_report, wilson_interval
from tests.helpers import write_class_folders

PREP = Preprocessing((12, 12), 1)


@pytest.fixture
def trained(tmp_path, bentoml_home, tiny_model_cfg):
    write_class_folders(tmp_path / "train", per_class=12, seed=0)
    write_class_folders(tmp_path / "test", per_class=6, seed=1)
    names = class_names_of(tmp_path / "train")
    train = load_labeled(tmp_path / "train", names, PREP)
    test = load_labeled(tmp_path / "test", names, PREP)
    classifier = Classifier.build(names, PREP, tiny_model_cfg, seed=0, version="round-3")
    history = classifier.fit(train.x, train.y, tiny_model_cfg, seed=0)
    return classifier, history, test


def test_training_length_has_a_floor_of_optimizer_steps():
    cfg = ModelConfig(batch_size=32, min_steps=300, min_epochs=10)
    assert training_epochs(20, cfg) == 300  # one step per epoch
    assert training_epochs(3200, cfg) == 10  # 100 steps per epoch, min_epochs rules
    assert training_epochs(640, cfg) == 15


def test_fit_learns_the_patterns_and_evaluate_reports_them(trained):
    classifier, history, test = trained
    assert 0 < len(history) <= 20 and history[-1]["step"] >= 40  # the floor of steps
    seconds = [point["seconds"] for point in history]  # the wall time of the fit so far
    assert 0 < seconds[0] and seconds == sorted(seconds)
    report = classifier.evaluate(test.x, test.y)
    assert report["accuracy"] >= 0.9
    assert set(report["per_class"]) == {"class0", "class1", "class2"}
    assert np.array(report["confusion_matrix"]).sum() == len(test.y)
    probas = classifier.predict_proba(test.x)
    assert probas.shape == (18, 3) and np.allclose(probas.sum(axis=1), 1, atol=1e-5)


def test_a_class_neither_tested_nor_predicted_is_left_out_of_the_macro_average():
    report = classification_report(np.array([0, 0, 1]), np.array([0, 0, 1]), ["a", "b", "c"])
    assert report["macro_f1"] == report["macro_precision"] == report["macro_recall"] == 1.0
    assert report["per_class"]["c"]["support"] == 0  # still listed
    wrong = classification_report(np.array([0, 1]), np.array([0, 2]), ["a", "b", "c"])
    assert wrong["macro_f1"] == pytest.approx(1 / 3)  # c was predicted: it counts


def test_accuracy_comes_with_its_95_percent_interval():
    # 3 of 3 right: Wilson's interval is 0.44 to 1, not the point 1.0
    report = classification_report(np.array([0, 1, 2]), np.array([0, 1, 2]), ["a", "b", "c"])
    assert report["accuracy"] == 1.0 == report["accuracy_high"]
    assert report["accuracy_low"] == pytest.approx(0.4385, abs=1e-4)
    assert wilson_interval(2, 3) == pytest.approx((0.2077, 0.9385), abs=1e-4)
    low, high = wilson_interval(900, 1000)  # a big test set: a narrow interval around 0.9
    assert low < 0.9 < high and high - low < 0.04
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no test image: nothing known


def test_fit_shows_its_progress_in_optimizer_steps(tmp_path, tiny_model_cfg, monkeypatch):
    import io

    from tqdm import tqdm

    shown = io.StringIO()  # a terminal stands here: tqdm hides the bar from pipes
    monkeypatch.setattr(model, "tqdm", lambda **kw: tqdm(**kw | {"disable": False, "file": shown}))
    write_class_folders(tmp_path, per_class=4)
    names = class_names_of(tmp_path)
    data = load_labeled(tmp_path, names, PREP)
    classifier = Classifier.build(names, PREP, tiny_model_cfg, seed=0, version="x")
    history = classifier.fit(data.x, data.y, tiny_model_cfg, seed=0)
    steps = history[-1]["step"]
    assert steps >= tiny_model_cfg.min_steps
    assert "training" in shown.getvalue() and f"{steps}/{steps}" in shown.getvalue()


def test_the_graphs_traced_to_train_a_model_go_with_it(tmp_path, tiny_model_cfg):
    """A campaign trains a new model every round in one process: a model's training
    graphs must not outlive it (TensorFlow's custom-gradient registry used to keep them)."""
    import gc
    import weakref

    from tensorflow.python.framework.func_graph import FuncGraph

    def live_graphs() -> list:
        gc.collect()
        return [o for o in gc.get_objects() if isinstance(o, FuncGraph)]

    write_class_folders(tmp_path, per_class=4)
    names = class_names_of(tmp_path)
    data = load_labeled(tmp_path, names, PREP)
    before = live_graphs()
    classifier = Classifier.build(names, PREP, tiny_model_cfg, seed=0, version="x")
    classifier.fit(data.x, data.y, tiny_model_cfg, seed=0)
    traced = [weakref.ref(g) for g in live_graphs() if not any(g is b for b in before)]
    assert traced
    del classifier
    gc.collect()
    assert [r().name for r in traced if r() is not None] == []


def test_the_scoring_passes_are_traced_once_for_any_batch_size(trained):
    classifier, _, test = trained
    for size in (3, 5, 7):  # a pool's batches, its last one, the open tasks: sizes vary
        classifier.predict_with_features(test.x[:size])
        classifier.predict_with_features(test.x[:size], mc_samples=2, seed=0)
    passes = classifier._passes()
    for traced in (passes.deterministic, passes.head, passes.deterministic_tail):
        assert traced.experimental_get_tracing_count() == 1
    assert passes.stochastic_tail.experimental_get_tracing_count() == 1


def test_bentoml_export_and_import_give_identical_predictions(trained, tmp_path, bentoml_home):
    classifier, _, test = trained
    path = tmp_path / "model" / "classifier.bentomodel"
    assert classifier.save(path) == "classifier:round-3"
    assert Classifier.load(path) is classifier  # this process saved it: no need to read it
    model._IN_MEMORY.clear()  # as another process would, from the file
    loaded = Classifier.load(path)
    assert loaded is not classifier and loaded.version == "round-3"
    assert loaded.class_names == classifier.class_names and loaded.prep == PREP
    assert np.array_equal(loaded.predict_proba(test.x), classifier.predict_proba(test.x))


def test_a_copy_put_in_place_of_the_saved_file_is_not_read_again(trained, tmp_path):
    classifier, _, _ = trained
    path = tmp_path / "classifier.bentomodel"
    classifier.save(path)
    shutil.copy(path, tmp_path / "cached")  # as DVC does: its cache's copy, a new inode
    os.replace(tmp_path / "cached", path)
    assert Classifier.load(path) is classifier


def test_load_prefers_the_file_over_a_stale_store_entry(trained, tmp_path, tiny_model_cfg):
    classifier, _, test = trained
    path = tmp_path / "classifier.bentomodel"
    classifier.save(path)
    # Another model under the same tag lands in the store; the file must still win.
    other = Classifier.build(
        classifier.class_names, PREP, tiny_model_cfg, seed=5, version="round-3"
    )
    other.save(tmp_path / "other.bentomodel")
    loaded = Classifier.load(path)  # `other` is the one in memory now: this reads the file
    assert np.array_equal(loaded.predict_proba(test.x), classifier.predict_proba(test.x))


def test_a_file_replaced_by_another_process_is_read_again(trained, tmp_path, tiny_model_cfg):
    classifier, _, test = trained
    path = tmp_path / "classifier.bentomodel"
    classifier.save(path)
    other = Classifier.build(classifier.class_names, PREP, tiny_model_cfg, seed=5, version="x")
    other.save(tmp_path / "other.bentomodel")
    classifier.save(path)  # in memory again, as the file at `path`
    shutil.copy(tmp_path / "other.bentomodel", tmp_path / "incoming")
    os.replace(tmp_path / "incoming", path)  # a new round's export from another process
    loaded = Classifier.load(path)
    assert loaded is not classifier and loaded.version == "x"
    assert np.array_equal(loaded.predict_proba(test.x), other.predict_proba(test.x))


def test_a_file_replaced_while_it_loads_is_read_again(
    trained, tmp_path, tiny_model_cfg, monkeypatch
):
    classifier, _, test = trained
    path = tmp_path / "classifier.bentomodel"
    classifier.save(path)
    other = Classifier.build(classifier.class_names, PREP, tiny_model_cfg, seed=5, version="x")
    other.save(tmp_path / "other.bentomodel")
    model._IN_MEMORY.clear()  # as another process would, from the file
    real_import = model._import

    def import_then_replace(bentoml, store, file):  # a new round's export lands mid-load
        imported = real_import(bentoml, store, file)
        shutil.copy(tmp_path / "other.bentomodel", tmp_path / "incoming")
        os.replace(tmp_path / "incoming", path)
        return imported

    monkeypatch.setattr(model, "_import", import_then_replace)
    assert Classifier.load(path).version == "round-3"  # what it read
    monkeypatch.setattr(model, "_import", real_import)
    loaded = Classifier.load(path)
    assert loaded.version == "x"
    assert np.array_equal(loaded.predict_proba(test.x), other.predict_proba(test.x))


def test_load_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="classifier.bentomodel"):
        Classifier.load(tmp_path / "classifier.bentomodel")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_load_names_a_damaged_file_and_the_way_back(trained, tmp_path, bentoml_home, damage):
    classifier, *_ = trained
    path = tmp_path / "classifier.bentomodel"
    classifier.save(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2] if damage == "truncated" else b"not a model" * 50)
    with pytest.raises(UnreadableModel, match=f"{path}: not a readable model .*dvc checkout"):
        Classifier.load(path)
