"""Image folders, the one preprocessing function, and the fixed test split.

Layout: labeled images in `<raw>/<class>/<file>`, the fixed held-out set in
`<test>/<class>/<file>`, unlabeled images anywhere under `<pool>/`. A pool sample's
id is its path relative to the pool folder (POSIX separators): stable as long as the
file stays put, and readable by the people who label it.
"""

from __future__ import annotations

import io
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from activelearn.core.files import PARTIAL
from activelearn.errors import UnreadableImage

if TYPE_CHECKING:
    import numpy as np

    from activelearn.config import Config

log = logging.getLogger(__name__)

# Truncated files must fail loudly, not decode as half-grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False


# Larger images are refused before decoding: a small compressed file can hold gigabytes
# of pixels. 64 megapixels still admits any camera's photo (48 MP: 8000 x 6000).
MAX_PIXELS = 64_000_000
EXIF_ORIENTATION = 0x0112


# How pixel values in [0, 255] become model inputs: the network's own convention,
# recorded with the model so that training, scoring and serving feed it the same.
SCALINGS = {  # name: (divisor, offset)
    "unit": (255.0, 0.0),  # [0, 1]: the project's CNN and most own models
    "raw": (1.0, 0.0),  # [0, 255]: networks with their own rescaling layer (MobileNetV3)
    "symmetric": (127.5, -1.0),  # [-1, 1]: MobileNetV2, Xception, Inception
}
CAFFE_MEAN = np.array([103.939, 116.779, 123.68], np.float32)  # BGR, ResNet50 and VGG
# Decode a JPEG at reduced DCT scale when the target is at least this many times smaller
# in both sides, keeping this many times the target's pixels for the antialiased resize.
DRAFT_MARGIN = 2


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes a model input; stored with the model so every consumer matches."""

    image_size: tuple[int, int]  # height, width
    channels: int  # 1 = grayscale, 3 = RGB
    scaling: str = "unit"  # a SCALINGS name, or "caffe" (BGR minus the ImageNet mean)

    def __post_init__(self) -> None:
        size = list(self.image_size)
        if len(size) != 2 or not all(isinstance(n, int) and n > 0 for n in size):
            raise ValueError(f"image_size={size}: give height and width in pixels, e.g. [32,32]")
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels}: use 1 (grayscale) or 3 (RGB)")
        if self.scaling not in (*SCALINGS, "caffe"):
            raise ValueError(f"scaling={self.scaling!r}: use one of {[*SCALINGS, 'caffe']}")
        if self.scaling == "caffe" and self.channels != 3:
            raise ValueError("scaling=caffe needs channels=3 (it subtracts a BGR mean)")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def to_dict(self) -> dict:
        return {
            "image_size": list(self.image_size),
            "channels": self.channels,
            "scaling": self.scaling,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            image_size=tuple(d["image_size"]),
            channels=int(d["channels"]),
            scaling=d.get("scaling", "unit"),  # models saved before scaling was recorded
        )


def preprocess(source: str | Path | bytes | BinaryIO, prep: Preprocessing) -> np.ndarray:
    """Decode one image of any common format, mode and size into a float32 array.

    First frame of animations, turned upright by its EXIF orientation (as viewers and
    Label Studio show it); 16-bit and float images rescaled to 8-bit range; transparency
    composited on white; then converted to gray or RGB, resized to `prep.image_size`
    (antialiased) and scaled by `prep.scaling` ([0, 1] by default).
    Shape: (height, width, channels). Training, scoring and serving all call this function.

    A large JPEG is decoded at reduced scale (libjpeg's DCT scaling, 1/2 to 1/8) when the
    target is much smaller, still keeping DRAFT_MARGIN times the target's size for the
    resize; other formats are shrunk by whole-pixel box averaging first (`reduce`): a
    3000x2000 photo to 224x224 costs ~6 ms instead of ~57 ms, within a few levels of gray.
    """
    name = source if isinstance(source, (str, Path)) else "<bytes>"
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    mode, (height, width) = ("L" if prep.channels == 1 else "RGB"), prep.image_size
    try:
        with Image.open(source) as img:
            _check_pixels(img, name)
            img.seek(0)
            if img.format == "JPEG":
                _draft(img, (width, height))
            img.load()
            if _rotated(img):
                img = ImageOps.exif_transpose(img)
            img = _to_8bit(img)
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img.alpha_composite(rgba)
            if img.mode != mode:  # each step only when needed: an unneeded one is a copy
                img = img.convert(mode)
            if img.size != (width, height):
                # reducing_gap: box-average by whole factors down to 2x the target first
                img = img.resize(
                    (width, height), Image.Resampling.BILINEAR, reducing_gap=DRAFT_MARGIN
                )
            array = _scaled(np.asarray(img, dtype=np.float32), prep.scaling)
    except UnreadableImage:
        raise
    except Exception as err:  # whatever a broken file makes the decoders raise
        raise UnreadableImage(f"{name}: not a readable image ({err})") from err
    if array.ndim == 2:
        array = array[..., None]
    return array


def read_header(source: str | Path) -> tuple[str, tuple[int, int]]:
    """(format, (width, height)) from the file's header alone, without decoding pixels;
    UnreadableImage when it is not an image Pillow knows or is over MAX_PIXELS. A file
    cut short after its header passes: it is refused when it is decoded."""
    try:
        with Image.open(source) as img:
            _check_pixels(img, source)
            return img.format or "?", img.size
    except UnreadableImage:
        raise
    except Exception as err:
        raise UnreadableImage(f"{source}: not a readable image ({err})") from err


def _check_pixels(img: Image.Image, name) -> None:
    if img.width * img.height > MAX_PIXELS:
        raise UnreadableImage(
            f"{name}: {img.width} x {img.height} pixels, over the limit of "
            f"{MAX_PIXELS:,}; downscale it"
        )


def _draft(img: Image.Image, target: tuple[int, int]) -> None:
    """Ask libjpeg for the smallest DCT scale that still covers DRAFT_MARGIN times the
    target in both sides (the sides swapped when EXIF will turn the image)."""
    width, height = target
    if _rotated(img) and img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
        width, height = height, width
    if img.width >= 2 * DRAFT_MARGIN * width and img.height >= 2 * DRAFT_MARGIN * height:
        img.draft(None, (DRAFT_MARGIN * width, DRAFT_MARGIN * height))


def _scaled(pixels: np.ndarray, scaling: str) -> np.ndarray:
    if scaling == "caffe":  # RGB to BGR, minus the ImageNet mean
        return pixels[..., ::-1] - CAFFE_MEAN
    divisor, offset = SCALINGS[scaling]
    if divisor != 1.0:
        pixels = pixels / divisor
    return pixels + offset if offset else pixels


def _rotated(img: Image.Image) -> bool:
    """Whether EXIF says to turn the image; only images that carry EXIF are asked, since
    parsing it costs more than decoding a small PNG."""
    has_exif = "exif" in img.info or img.format in ("TIFF", "MPO")
    return has_exif and img.getexif().get(EXIF_ORIENTATION, 1) != 1


def _to_8bit(img: Image.Image) -> Image.Image:
    """Integer modes (16-bit range, as Pillow reads PNG, TIFF and PGM) and float mode
    (range [0, 1]) to 8-bit grayscale: a fixed scale, so a pixel's value never depends on
    the other pixels of its image."""
    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
        return img
    high = 1.0 if img.mode == "F" else 65535.0
    values = np.asarray(img, dtype=np.float64)
    return Image.fromarray(np.clip(values / high * 255.0, 0, 255).round().astype(np.uint8))


def list_files(root: str | Path) -> list[Path]:
    """Every non-hidden file under `root`, recursively, in a stable order."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def sample_id(path: str | Path, pool_root: str | Path) -> str:
    """The stable id of a pool image: its path relative to the pool, POSIX separators."""
    return Path(path).relative_to(pool_root).as_posix()


def class_folders(root: str | Path) -> dict[str, list[Path]]:
    """`{class name: [files]}` of a `<root>/<class>/<file>` folder."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {
        d.name: list_files(d)
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }


@dataclass
class LabeledArrays:
    x: np.ndarray  # [n, height, width, channels] float32
    y: np.ndarray  # [n] int class indices into class_names
    rejected: list[tuple[str, str]]  # (file, reason)
    files: list[str] = None  # the file of each row of x

    def __post_init__(self) -> None:
        if self.files is None:
            self.files = []


def load_labeled(root: str | Path, class_names: list[str], prep: Preprocessing) -> LabeledArrays:
    """Decode a class-folder tree; unreadable files are skipped, logged and returned."""
    xs, ys, rejected, decoded = [], [], [], []
    index = {name: i for i, name in enumerate(class_names)}
    for name, files in class_folders(root).items():
        for path in files:
            try:
                xs.append(preprocess(path, prep))
            except UnreadableImage as err:
                log.warning("skipped %s", err)
                rejected.append((str(path), str(err)))
                continue
            ys.append(index[name])
            decoded.append(str(path))
    x = np.stack(xs) if xs else np.zeros((0, *prep.input_shape), np.float32)
    return LabeledArrays(x, np.asarray(ys, dtype=np.int64), rejected, decoded)


def split_test_set(raw_dir: str | Path, test_dir: str | Path, fraction: float, seed: int) -> int:
    """Move a stratified, seeded `fraction` of the labeled set into the test folder, at once.

    Does nothing when the test folder already holds images. The draw is moved into a
    folder next to it and renamed into place, so a kill leaves no partial test set; the
    next call first puts the images of such a folder back into the labeled set.
    Returns the number of files moved.
    """
    raw_dir, test_dir = Path(raw_dir), Path(test_dir)
    drawing = test_dir.with_name(test_dir.name + PARTIAL)
    for path in list_files(drawing):  # a draw that was killed: no labeled image is lost
        _move(path, raw_dir / path.relative_to(drawing))
    shutil.rmtree(drawing, ignore_errors=True)
    if list_files(test_dir):
        return 0
    if not 0 < fraction < 1:
        raise ValueError(
            f"data.test_fraction={fraction}: must be between 0 and 1 to draw a test set "
            f"from {raw_dir}, or put a fixed test set into {test_dir}/<class>/"
        )
    rng = random.Random(seed)
    moved = 0
    for files in class_folders(raw_dir).values():
        files = list(files)
        rng.shuffle(files)
        take = int(round(len(files) * fraction))
        if len(files) > 1:
            take = min(max(take, 1), len(files) - 1)  # every class on both sides
        for path in files[:take]:
            _move(path, drawing / path.relative_to(raw_dir))  # subfolders kept: no name clash
            moved += 1
    if moved:
        for hidden in [p for p in test_dir.rglob("*") if p.is_file()]:  # .DS_Store, .gitkeep
            _move(hidden, drawing / hidden.relative_to(test_dir))
        for folder in sorted(test_dir.glob("**/"), reverse=True):  # empty now, made ahead
            folder.rmdir()
        drawing.rename(test_dir)
    log.info("fixed the test set: moved %d labeled images to %s", moved, test_dir)
    return moved


def _move(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)


def class_names_of(*roots: str | Path) -> list[str]:
    """The sorted union of class folder names under the given roots."""
    return sorted({name for root in roots for name in class_folders(root)})


def preprocessing(cfg: Config) -> Preprocessing:
    """The model's input from the config: `model.image_size` and `model.scaling` when set
    (a backbone's own), else the data's size and [0, 1]; a backbone always takes RGB."""
    model = cfg.model
    size = model.image_size or cfg.data.image_size
    if model.kind == "backbone":
        return Preprocessing(tuple(size), 3, model.scaling or backbone_scaling(model.backbone))
    return Preprocessing(tuple(size), cfg.data.channels, model.scaling or "unit")


# keras.applications networks by the input they expect (their `preprocess_input`).
_BACKBONE_SCALINGS = (
    (("MobileNetV3", "EfficientNet", "ConvNeXt", "RegNet"), "raw"),  # rescale inside
    (("ResNet50V2", "ResNet101V2", "ResNet152V2"), "symmetric"),
    (("ResNet", "VGG"), "caffe"),
    (("MobileNet", "Xception", "Inception", "NASNet"), "symmetric"),
)


def backbone_scaling(name: str) -> str:
    """The pixel scaling a keras.applications network expects, by its name."""
    for prefixes, scaling in _BACKBONE_SCALINGS:
        if name.startswith(prefixes):
            return scaling
    raise ValueError(
        f"model.backbone={name}: its input scaling is not known here; set model.scaling "
        f"to one of {[*SCALINGS, 'caffe']} (see its keras.applications preprocess_input)"
    )
