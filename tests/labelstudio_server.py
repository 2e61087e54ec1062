"""A real Label Studio for the integration tests: started once per test session.

Use it with `pytest_plugins = ["tests.labelstudio_server"]` in a test module. The server
runs on a free loopback port with its sqlite database in a temporary folder, started by
the same `start_server` as `python -m activelearn.labeling.labelstudio serve` (which installs
Label Studio into `.venv-labelstudio/` first when it is missing). Its local-files root is
`root`: every test puts its pool in a folder directly under it, and makes its own project.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from activelearn.labeling.labelstudio import LabelStudioServer, free_port, start_server


@dataclass
class RunningLabelStudio:
    url: str
    token: str
    root: Path  # the local-files document root: pools go in folders directly under it
    server: LabelStudioServer

    def new_pool_dir(self, name: str) -> Path:
        pool = self.root / name
        pool.mkdir(parents=True)
        return pool


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory) -> Iterator[RunningLabelStudio]:
    base = tmp_path_factory.mktemp("labelstudio")
    root = base / "files"
    root.mkdir()
    token = secrets.token_hex(20)
    server = start_server(
        free_port(),
        data_dir=base / "server",
        pool_dir=root / "pool",  # only its parent, the document root, matters
        username="admin@example.com",
        password=secrets.token_urlsafe(16),
        token=token,
    )
    try:
        yield RunningLabelStudio(server.url, token, root, server)
    finally:
        server.stop()
