"""A dataset source (`data.source=PATH`): a folder every new workspace takes its data from.

    SOURCE/raw/<class>/<file>   the labeled seed images
    SOURCE/test/<class>/<file>  optional: the fixed test set (drawn from raw/ if absent)
    SOURCE/pool/**              the unlabeled images, nested folders allowed
    SOURCE/pool_labels.csv      optional: `path,label` answers for the simulated annotator

Files are hard-linked into the workspace where the file system allows (no copy of a large
pool), else copied; never symlinked, so a source file replaced later cannot change what a
finished round trained on. Nothing here writes to the source. The labeled and test images
taken are recorded with their checksums: a source whose labeled or test images changed
since is refused (a campaign's seed labels and test set are fixed), while pool images
added to it are taken at the next round, like images put into the pool by hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from activelearn.core.files import PARTIAL, write_atomic
from activelearn.data.images import list_files
from activelearn.errors import ConfigError, SourceChanged

log = logging.getLogger(__name__)

RAW, TEST, POOL, POOL_LABELS = "raw", "test", "pool", "pool_labels.csv"
FIXED = (RAW, TEST)  # the parts whose files must never change once taken


def check_source(source: str | Path) -> Path:
    """The source folder, absolute; refused unless it has labeled images and a pool."""
    root = Path(source).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"data.source={source}: no such folder; give a dataset folder")
    missing = [part for part in (RAW, POOL) if not list_files(root / part)]
    if missing:
        raise ConfigError(
            f"data.source={source}: no images in {', '.join(f'{m}/' for m in missing)}; a "
            "source holds raw/<class>/<file> (labeled), pool/** (unlabeled), optionally "
            "test/<class>/<file> and pool_labels.csv (`python -m activelearn.data.datasets "
            "split` makes one from a labeled folder)"
        )
    return root


def checksum(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fixed_checksums(root: Path) -> dict[str, str]:
    """`{raw/<class>/<file>: checksum}` of the source's labeled and test images."""
    return {
        path.relative_to(root).as_posix(): checksum(path)
        for part in FIXED
        for path in list_files(root / part)
    }


def link_or_copy(source: Path, target: Path) -> str:
    """`target` as a hard link to `source`, or a copy where links cannot be made (another
    file system); 'link' or 'copy'. Written under a temporary name and renamed, so a kill
    never leaves half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + PARTIAL)
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
        how = "link"
    except OSError:  # EXDEV (another device), EPERM (a file system without links), ...
        shutil.copyfile(source, partial)
        how = "copy"
    os.replace(partial, target)
    return how


def take_source(
    source: str | Path,
    record: Path,
    *,
    raw_dir: str | Path,
    test_dir: str | Path,
    pool_dir: str | Path,
    pool_labels: str | Path,
) -> dict[str, int]:
    """Take what the workspace (the current folder) lacks from the source: everything on
    first use, the pool images added since and the labels file afterwards. Refuses a
    source whose labeled or test images changed since they were taken. Counts of files
    taken, by part."""
    root = check_source(source)
    now = fixed_checksums(root)
    taken: dict[str, int] = {}
    if record.exists():
        was = json.loads(record.read_text())
        if was["source"] != str(root):
            raise ConfigError(
                f"data.source={source}: this workspace took its data from {was['source']}; "
                f"give that source, or start a new workspace for {root}"
            )
        _refuse_changes(root, was["checksums"], now)
    else:
        for part, target in ((RAW, raw_dir), (TEST, test_dir)):
            for path in list_files(root / part):
                how = link_or_copy(path, Path(target) / path.relative_to(root / part))
                taken[how] = taken.get(how, 0) + 1
        # Last: a set-up killed before it takes all again (the links are replaced).
        write_atomic(record, json.dumps({"source": str(root), "checksums": now}, indent=1))
    pool_root = root / POOL
    for path in list_files(pool_root):
        target = Path(pool_dir) / path.relative_to(pool_root)
        if not target.exists():
            how = link_or_copy(path, target)
            taken[how] = taken.get(how, 0) + 1
    labels = root / POOL_LABELS
    if labels.is_file() and not _same_file(labels, Path(pool_labels)):
        link_or_copy(labels, Path(pool_labels))
    if taken:
        log.info("took from the source %s: %s", root, taken)
    return taken


def _same_file(a: Path, b: Path) -> bool:
    if not b.exists():
        return False
    if os.path.samefile(a, b):
        return True
    return a.read_bytes() == b.read_bytes()


def _refuse_changes(root: Path, was: dict[str, str], now: dict[str, str]) -> None:
    changed = sorted(p for p in was.keys() & now.keys() if was[p] != now[p])
    removed = sorted(was.keys() - now.keys())
    added = sorted(now.keys() - was.keys())
    if not (changed or removed or added):
        return
    said = [
        f"{what} {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}"
        for what, files in (("changed", changed), ("removed", removed), ("added", added))
        if files
    ]
    raise SourceChanged(
        f"data.source={root}: its labeled or test images differ from those this workspace "
        f"took ({'; '.join(said)}): a campaign's seed labels and test set are fixed. Put "
        "the source back as it was, or run the new data in a new workspace (a new "
        "hydra.sweep.dir for a sweep); only pool/ may grow"
    )
