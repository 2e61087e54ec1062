"""`bench/scoring.py --against-tfdata`: the project's scorer against a plain tf.data
pipeline in the same run, on camera-sized JPEGs and on small PNGs.

The tf.data side: `list_files` order, `decode_jpeg` with DCT downscaling (`ratio`
1/2/4/8, INTEGER_FAST) or `decode_png`, parallel map (AUTOTUNE), antialiased resize,
batches, the same Keras network, top-k entropy. Ours: `score_and_select` (entropy,
top-k, scores.csv written) as a round calls it; and `Manifest.sync_pool` on the same
files (header reads), against one scoring pass.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from activelearn.data.images import Preprocessing
from activelearn.workspace.manifest import Manifest

JPEG_CACHE = Path(tempfile.gettempdir()) / "activelearn-bench-photos"


def generate_photos(n: int, width: int = 3000, height: int = 2000, seed: int = 0) -> Path:
    """`n` photo-like JPEGs (smooth colour fields upsampled, soft edges, mild noise,
    quality 90: about 1 MB each, like a camera's), generated once and reused."""
    folder = JPEG_CACHE / f"{width}x{height}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    if have >= n:
        return folder
    print(f"generating {n - have} {width}x{height} JPEGs into {folder} ...", flush=True)
    rng = np.random.default_rng(seed)
    noise = rng.integers(-6, 7, (height, width, 3), dtype=np.int16)  # one field, shifted
    for i in range(have, n):
        r = np.random.default_rng([seed, i])
        coarse = Image.fromarray(r.integers(0, 256, (6, 9, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), np.int16)
        shift = int(r.integers(0, width))
        pixels = np.clip(smooth + np.roll(noise, shift, axis=1), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return folder


_PREDICT: dict = {}


def tfdata_top_k(network, files: list[str], prep: Preprocessing, batch: int, k: int, ratio: int):
    """The plain tf.data pipeline: top-k entropy file names."""
    import tensorflow as tf

    height, width = prep.image_size
    jpeg = files[0].lower().endswith((".jpg", ".jpeg"))

    def load(path):
        data = tf.io.read_file(path)
        if jpeg:
            img = tf.io.decode_jpeg(data, channels=3, ratio=ratio, dct_method="INTEGER_FAST")
        else:
            img = tf.io.decode_png(data, channels=3)
        img = tf.image.resize(img, (height, width), antialias=True)
        return img / 255.0

    ds = (
        tf.data.Dataset.from_tensor_slices(files)
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch)
        .prefetch(tf.data.AUTOTUNE)
    )
    predict = _PREDICT.get(id(network))
    if predict is None:  # traced once per network, as a long-lived scorer would
        predict = _PREDICT[id(network)] = tf.function(lambda x: network(x, training=False))
    scores = []
    for x in ds:
        p = predict(x).numpy()
        scores.append(-(p * np.log(np.clip(p, 1e-12, 1))).sum(axis=1))
    scores = np.concatenate(scores)
    return [files[i] for i in np.argsort(-scores)[:k]]


def jpeg_ratio(size: tuple[int, int], prep: Preprocessing) -> int:
    """tf.data's DCT scale: the largest of 1/2/4/8 still at least twice the target."""
    width, height = size
    for ratio in (8, 4, 2):
        if width // ratio >= 2 * prep.image_size[1] and height // ratio >= 2 * prep.image_size[0]:
            return ratio
    return 1


def compare(
    classifier,
    pool_dir: Path,
    ids: list[str],
    prep: Preprocessing,
    batch: int,
    repeat: int,
    score_ours,
    sync: bool,
) -> dict:
    """Best-of-`repeat` seconds of ours and tf.data (interleaved), and the sync's."""
    files = [str(pool_dir / sid) for sid in ids]
    with Image.open(files[0]) as img:
        ratio = jpeg_ratio(img.size, prep)
    score_ours(classifier, ids[:batch], pool_dir, prep, batch)  # warm-ups: tracing
    tfdata_top_k(classifier.network, files[:batch], prep, batch, 10, ratio)
    ours, theirs, synced = [], [], []
    for _ in range(repeat):
        start = time.perf_counter()
        score_ours(classifier, ids, pool_dir, prep, batch)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        tfdata_top_k(classifier.network, files, prep, batch, 100, ratio)
        theirs.append(time.perf_counter() - start)
        if sync:
            with tempfile.TemporaryDirectory() as work:
                start = time.perf_counter()
                Manifest(Path(work) / "m.csv").sync_pool(pool_dir, prep)
                synced.append(time.perf_counter() - start)
    return {
        "ours": min(ours),
        "tfdata": min(theirs),
        "sync": min(synced) if synced else None,
        "ratio": ratio,
    }
