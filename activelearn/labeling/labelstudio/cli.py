"""`python -m activelearn.labeling.labelstudio serve`: a local Label Studio server.

    python -m activelearn.labeling.labelstudio serve [--port 8080] [--data-dir DIR]
                                            [--workspace campaign] [--pool-dir DIR]

It installs Label Studio when missing (see `server`) and runs it on 127.0.0.1 until
interrupted, serving the pool of a campaign's workspace (`--workspace`, as the rounds
take it: relative to the current folder) or any pool (`--pool-dir`). The SDK is not
imported: the help and `serve` do not pay for it.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activelearn.config import Config, DataConfig
from activelearn.errors import LabelStudioError
from activelearn.labeling.labelstudio.server import (
    DEFAULT_DATA_DIR,
    LABEL_STUDIO_VERSION,
    PASSWORD_ENV,
    USERNAME_ENV,
    start_server,
)
from activelearn.labeling.labelstudio.transport import TOKEN_ENV

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command in `argv` (default: the command line); `pool_dir` is the workspace's
    pool unless `--pool-dir` gives another."""
    parser = argparse.ArgumentParser(
        prog="python -m activelearn.labeling.labelstudio",
        description="A local Label Studio server.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="install (when missing) and run Label Studio on 127.0.0.1",
        description="Run Label Studio on 127.0.0.1 until interrupted. Credentials from "
        f"{USERNAME_ENV}, {PASSWORD_ENV} and {TOKEN_ENV}. Relative paths are relative to "
        "the current folder.",
    )
    serve.add_argument(
        "--port", type=int, default=8080, help="on 127.0.0.1; a busy one fails (default: 8080)"
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"Label Studio's sqlite database and uploads (default: {DEFAULT_DATA_DIR}, "
        "in this checkout, whatever the current folder)",
    )
    serve.add_argument(
        "--workspace",
        type=Path,
        default=Path(Config.workspace),
        help="the campaign's workspace, as `python -m activelearn workspace=...` takes it "
        f"(default: {Config.workspace}, in the current folder)",
    )
    serve.add_argument(
        "--pool-dir",
        type=Path,
        help="the pool to serve; local files are served from its parent folder (default: "
        f"WORKSPACE/{DataConfig.pool_dir}, where a workspace keeps its pool unless its "
        "data.pool_dir says otherwise)",
    )
    args = parser.parse_args(argv)
    if args.pool_dir is None:
        args.pool_dir = args.workspace / DataConfig.pool_dir
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in `argv` (default: the command line); the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # `kill`, a closed terminal: as Ctrl-C
        signal.signal(signum, _interrupt)
    try:
        server = start_server(args.port, args.data_dir, args.pool_dir)
    except LabelStudioError as err:
        log.error("%s", err)
        return 1
    except KeyboardInterrupt:  # while starting: start_server stopped it
        return 0
    print(f"Label Studio {LABEL_STUDIO_VERSION} is up at {server.url} (log: {server.log_file})")
    print(f"It serves the images under {args.pool_dir.resolve().parent}.")
    print("Ctrl-C stops it.", flush=True)
    try:
        return server.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def _interrupt(signum: int, frame: Any) -> None:
    """Label Studio runs in its own session, which no signal to `serve` reaches: stop it
    as on Ctrl-C, or it outlives `serve` and keeps the port."""
    raise KeyboardInterrupt
