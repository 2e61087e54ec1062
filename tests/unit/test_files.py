"""Atomic writes: a file is replaced whole or not at all, and leftovers are never committed."""

from __future__ import annotations

import pytest

from activelearn.core.files import atomic_file, write_atomic


def test_a_write_that_fails_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "rounds" / "3" / "queue.jsonl"
    write_atomic(path, "old\n")
    with pytest.raises(RuntimeError), atomic_file(path) as f:
        f.write("half of the new")
        raise RuntimeError("killed here")
    assert path.read_text() == "old\n"
    assert list(path.parent.iterdir()) == [path]

    write_atomic(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert list(path.parent.iterdir()) == [path]
