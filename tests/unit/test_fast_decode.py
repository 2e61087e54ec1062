"""Large images decoded fast (JPEG at reduced DCT scale, `reduce` for the rest) give the
model the same inputs, within a few gray levels, as a full decode; the pool sync admits
files on their header, and one that then fails to decode is rejected at scoring."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from activelearn.config import StrategyConfig
from activelearn.data.images import Preprocessing, preprocess, read_header
from activelearn.errors import UnreadableImage
from activelearn.scoring.select import score_and_select
from activelearn.workspace.manifest import Manifest

RGB32 = Preprocessing((32, 32), 3)


def photo(label: int, seed: int, size=(1200, 800)) -> Image.Image:
    """A photo-like image: a smooth colour gradient, soft blobs and sensor noise; the
    class is the hue and place of a big bright disc (0 left red, 1 right green, 2 top blue)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 120, 3)
    img = base + (xx[..., None] / w) * rng.uniform(-40, 40, 3) + (yy[..., None] / h) * 30
    for _ in range(6):  # background blobs
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(40, 200)
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None] * rng.uniform(
            -40, 40, 3
        )
    cx, cy = [(0.25 * w, 0.5 * h), (0.75 * w, 0.5 * h), (0.5 * w, 0.25 * h)][label]
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < (0.18 * h) ** 2)[..., None]
    colour = np.zeros(3)
    colour[label] = 200
    img = np.where(disc, img * 0.3 + colour, img) + rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def full_decode(path, prep: Preprocessing) -> np.ndarray:
    """The reference: every pixel decoded, then one antialiased resize (the old way)."""
    with Image.open(path) as img:
        img = img.convert("RGB").resize(prep.image_size[::-1], Image.Resampling.BILINEAR)
        return np.asarray(img, np.float32) / 255.0


def nearest_centroid(train: np.ndarray, labels: np.ndarray):
    """A classifier fitted on full decodes (no training framework in unit tests)."""
    centroids = np.stack([train[labels == c].mean(axis=0) for c in np.unique(labels)])

    def predict(x: np.ndarray) -> np.ndarray:
        d = ((x[:, None] - centroids[None]) ** 2).reshape(len(x), len(centroids), -1).sum(-1)
        return d.argmin(axis=1)

    return predict


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    files, labels = [], []
    for i in range(12):
        path = root / f"p{i:02d}.jpg"
        photo(i % 3, seed=i).save(path, quality=90)
        files.append(path)
        labels.append(i % 3)
    return files, np.array(labels)


@pytest.mark.parametrize("prep", [RGB32, Preprocessing((64, 96), 3), Preprocessing((32, 32), 1)])
def test_a_large_jpeg_decoded_at_reduced_scale_is_within_a_few_gray_levels(photos, prep):
    files, _ = photos
    for path in files[:4]:
        fast = preprocess(path, prep)
        full = full_decode(path, Preprocessing(prep.image_size, 3))
        if prep.channels == 1:
            full = full @ np.array([0.299, 0.587, 0.114], np.float32)
            full = full[..., None]
        assert fast.shape == (*prep.image_size, prep.channels)
        error = np.abs(fast - full)
        assert error.mean() < 3 / 255 and np.percentile(error, 99) < 16 / 255


def test_the_reduced_scale_is_used_and_is_faster(photos, monkeypatch):
    """The draft is what makes it fast: without it Pillow decodes 1200x800 pixels."""
    from activelearn.data import images

    sizes = []
    real_load = Image.Image.load

    def spy(self):
        sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", spy)
    images.preprocess(photos[0][0], RGB32)
    assert sizes and max(w for w, _ in sizes) <= 1200 // 8 + 1  # 1/8 scale: 150 x 100


def test_fast_decode_gives_the_same_class_predictions_as_a_full_decode(photos):
    files, labels = photos
    full = np.stack([full_decode(p, RGB32) for p in files])
    predict = nearest_centroid(full, labels)
    fast = np.stack([preprocess(p, RGB32) for p in files])
    assert (predict(fast) == predict(full)).all()
    assert (predict(full) == labels).all()  # the check means something: classes differ


def test_other_large_formats_are_reduced_first_and_match_too(tmp_path):
    path = tmp_path / "big.png"
    photo(1, seed=3, size=(900, 600)).save(path)
    fast, full = preprocess(path, RGB32), full_decode(path, RGB32)
    assert np.abs(fast - full).mean() < 3 / 255


def test_exif_rotated_jpeg_is_still_upright_after_a_reduced_decode(tmp_path):
    img = photo(0, seed=1, size=(1200, 800))  # red disc on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: viewers rotate it 90 degrees clockwise
    path = tmp_path / "turned.jpg"
    img.save(path, exif=exif, quality=90)
    x = preprocess(path, Preprocessing((48, 32), 3))  # upright: 800 wide, 1200 high
    assert x.shape == (48, 32, 3)
    reference = full_decode_upright(path, (48, 32))
    assert np.abs(x - reference).mean() < 3 / 255


def full_decode_upright(path, size) -> np.ndarray:
    from PIL import ImageOps

    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        return np.asarray(img.resize(size[::-1], Image.Resampling.BILINEAR), np.float32) / 255


def test_scalings_put_pixels_in_the_range_the_network_expects(photos):
    path = photos[0][0]
    unit = preprocess(path, RGB32)
    raw = preprocess(path, Preprocessing((32, 32), 3, "raw"))
    symmetric = preprocess(path, Preprocessing((32, 32), 3, "symmetric"))
    caffe = preprocess(path, Preprocessing((32, 32), 3, "caffe"))
    np.testing.assert_allclose(raw, unit * 255, atol=1e-3)
    np.testing.assert_allclose(symmetric, unit * 2 - 1, atol=1e-5)
    np.testing.assert_allclose(caffe[..., 0], raw[..., 2] - 103.939, atol=1e-3)  # BGR
    assert Preprocessing.from_dict(RGB32.to_dict()) == RGB32
    old = {"image_size": [32, 32], "channels": 3}  # a model saved before scalings
    assert Preprocessing.from_dict(old).scaling == "unit"


class FirstClass:
    """A model stand-in: scoring needs only its predictions (no training in unit tests)."""

    class_names = ["a", "b"]

    def predict_with_features(self, x, mc_samples=0, seed=None):
        probas = np.tile([0.6, 0.4], (len(x), 1)).astype(np.float32)
        return probas, x.reshape(len(x), -1)[:, :4]

    def logits_from_features(self, features):
        return None  # no softmax layer to read


def test_a_truncated_jpeg_is_admitted_on_its_header_and_rejected_at_scoring(tmp_path, photos):
    pool = tmp_path / "pool"
    pool.mkdir()
    for path in photos[0][:5]:
        (pool / path.name).write_bytes(path.read_bytes())
    whole = photos[0][5].read_bytes()
    (pool / "cut.jpg").write_bytes(whole[: len(whole) // 3])  # a copy that stopped
    assert read_header(pool / "cut.jpg")[0] == "JPEG"
    with pytest.raises(UnreadableImage, match="cut.jpg"):
        preprocess(pool / "cut.jpg", RGB32)

    manifest = Manifest(tmp_path / "manifest.csv")
    assert manifest.sync_pool(pool, RGB32) == {"pool": 6}
    result = score_and_select(
        FirstClass(),
        manifest,
        pool,
        StrategyConfig(name="entropy", batch_size=6),
        tmp_path / "round",
        labeled_x=None,
        prep=RGB32,
        seed=0,
    )
    assert "cut.jpg" not in [item.sample_id for item in result.queue]
    assert len(result.queue) == 5 and result.summary["unreadable"] == 1
    assert manifest.samples["cut.jpg"].state == "rejected"
    assert "cut.jpg" in manifest.samples["cut.jpg"].reason
    # Next sync: a known unreadable file is decoded in full, so it stays out.
    assert manifest.sync_pool(pool, RGB32) == {}
    assert manifest.samples["cut.jpg"].state == "rejected"


def test_header_read_refuses_what_is_not_an_image_or_too_big(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnreadableImage, match="notes.txt"):
        read_header(tmp_path / "notes.txt")
    Image.new("L", (9000, 8000)).save(tmp_path / "huge.png")  # 72 MP, over the limit
    with pytest.raises(UnreadableImage, match="over the limit"):
        read_header(tmp_path / "huge.png")
