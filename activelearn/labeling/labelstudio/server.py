"""A local Label Studio server: installed into its own virtual environment
(`.venv-labelstudio/`, its pins clash with the training stack) when missing, and run on
127.0.0.1 with a sqlite database in its data folder.

The admin comes from LABEL_STUDIO_USERNAME and LABEL_STUDIO_PASSWORD, its API token from
LABEL_STUDIO_API_KEY (the variable the client reads too). The `serve` command (`cli`) is
these steps for people; tests and benchmarks call `start_server` and `stop` themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from activelearn.config import Config, DataConfig
from activelearn.core.processes import stop_group
from activelearn.errors import ServerStartError
from activelearn.labeling.labelstudio.transport import TOKEN_ENV
from activelearn.workspace.layout import PROJECT_ROOT

log = logging.getLogger(__name__)

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_VENV = PROJECT_ROOT / ".venv-labelstudio"
DEFAULT_DATA_DIR = PROJECT_ROOT / ".labelstudio"
DEFAULT_POOL_DIR = Path(Config.workspace) / DataConfig.pool_dir  # the default workspace's

USERNAME_ENV = "LABEL_STUDIO_USERNAME"
PASSWORD_ENV = "LABEL_STUDIO_PASSWORD"
# Label Studio reads LABEL_STUDIO_X, then HEARTEX_X, then plain X: strays like these leak in.
_STRAY_ENV = ("USERNAME", "PASSWORD", "HOST", "PORT", "USER_TOKEN")


def install_label_studio(venv: str | Path = DEFAULT_VENV) -> Path:
    """The `label-studio` executable of `venv`, installed from PyPI first when missing.

    A lock file makes concurrent callers (two test sessions, say) install it once.
    """
    venv = Path(venv)
    exe = venv / "bin" / "label-studio"
    stamp = venv / f".installed-label-studio-{LABEL_STUDIO_VERSION}"
    if stamp.exists() and exe.exists():
        return exe
    venv.mkdir(parents=True, exist_ok=True)
    with (venv / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and exe.exists():
            return exe
        log.warning(
            "installing label-studio==%s into %s (about 1 GB, a few minutes, once)",
            LABEL_STUDIO_VERSION,
            venv,
        )
        install_log = venv / "install.log"
        python = venv / "bin" / "python"
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--upgrade", "pip"],
            [str(python), "-m", "pip", "install", f"label-studio=={LABEL_STUDIO_VERSION}"],
        ]
        with install_log.open("w") as out:
            for step in steps:
                result = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT)
                if result.returncode != 0:
                    raise ServerStartError(
                        f"installing Label Studio into {venv} failed at `{' '.join(step)}` "
                        f"(exit {result.returncode}); see {install_log}:\n"
                        f"{_tail(install_log)}"
                    )
        if not exe.exists():
            raise ServerStartError(
                f"{exe} missing after installing label-studio; see {install_log}"
            )
        stamp.touch()
    return exe


def port_is_busy(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on `port` or the port cannot be bound.

    Label Studio silently moves to the next port when its port is busy, so the caller
    checks first and fails instead.
    """
    for family, address in ((socket.AF_INET, host), (socket.AF_INET6, "::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((address, port)) == 0:
                return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    """A loopback port nobody listens on now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LabelStudioServer:
    """A Label Studio process started by `start_server`."""

    process: subprocess.Popen
    url: str
    data_dir: Path
    log_file: Path

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate the server and whatever it spawned (its own session), then wait."""
        stop_group(self.process, grace=timeout)


def server_environment(
    username: str, password: str, token: str, data_dir: Path, document_root: Path
) -> dict[str, str]:
    """The server's environment: ours minus stray settings, plus its configuration."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _STRAY_ENV
        and not key.startswith("HEARTEX_")
        and key not in (TOKEN_ENV, "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env.update(
        LABEL_STUDIO_USERNAME=username,
        LABEL_STUDIO_PASSWORD=password,
        LABEL_STUDIO_USER_TOKEN=token,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        LABEL_STUDIO_LATEST_VERSION_CHECK="false",
        LABEL_STUDIO_COLLECT_ANALYTICS="false",
        LABEL_STUDIO_SENTRY_DSN="",
        LABEL_STUDIO_FRONTEND_SENTRY_DSN="",
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),  # else it also touches ~/.local/share
        # Our ML backend (serving/) and its webhook live on loopback, which Label Studio
        # 1.23 refuses by default; this server is bound to 127.0.0.1 only.
        LABEL_STUDIO_ML_BLOCK_LOCAL_IP="false",
        LABEL_STUDIO_SSRF_PROTECTION_ENABLED="false",
    )
    return env


def start_server(
    port: int = 8080,
    data_dir: str | Path = DEFAULT_DATA_DIR,
    pool_dir: str | Path = DEFAULT_POOL_DIR,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    venv: str | Path = DEFAULT_VENV,
    startup_timeout: float = 300.0,
) -> LabelStudioServer:
    """Start Label Studio on 127.0.0.1:`port` and return once `/health` answers.

    sqlite and uploads live in `data_dir`; local-files serving is rooted at the pool's
    parent folder (Label Studio wants a storage path strictly inside the root). Missing
    credentials are read from LABEL_STUDIO_USERNAME / LABEL_STUDIO_PASSWORD /
    LABEL_STUDIO_API_KEY; they create the admin and its token at the first start.
    """
    username = username or os.environ.get(USERNAME_ENV)
    password = password or os.environ.get(PASSWORD_ENV)
    token = token or os.environ.get(TOKEN_ENV)
    missing = [
        name
        for name, value in ((USERNAME_ENV, username), (PASSWORD_ENV, password), (TOKEN_ENV, token))
        if not value
    ]
    if missing:
        raise ServerStartError(
            f"set {', '.join(missing)} to start Label Studio: the admin's e-mail, password and "
            f"API token (for instance `export {TOKEN_ENV}=$(python -c "
            "'import secrets; print(secrets.token_hex(20))')`)"
        )
    if len(token) < 8:
        raise ServerStartError(f"{TOKEN_ENV} is too short: use at least 8 characters")
    if port_is_busy(port):
        raise ServerStartError(
            f"port {port} on 127.0.0.1 is busy (is Label Studio already running at "
            f"http://127.0.0.1:{port}?): stop what uses it or pass another --port"
        )
    exe = install_label_studio(venv)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    document_root = Path(pool_dir).resolve().parent
    log_file = data_dir / "label_studio.log"
    command = [
        str(exe),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--database",
        str(data_dir / "label_studio.sqlite3"),
        "--enable-legacy-api-token",
        "--log-level",
        "WARNING",
    ]
    url = f"http://127.0.0.1:{port}"
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_environment(username, password, token, data_dir, document_root),
            cwd=data_dir,
            start_new_session=True,
        )
    server = LabelStudioServer(process, url, data_dir, log_file)
    log_start = log_file.stat().st_size
    try:
        _wait_for_health(server, startup_timeout, log_start)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_health(server: LabelStudioServer, timeout: float, log_start: int) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(
                f"Label Studio exited with code {server.process.returncode} while starting; "
                f"see {server.log_file}:\n{_tail(server.log_file)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{server.url}/health", timeout=2.0)
            if response.status_code == 200 and response.json().get("status") == "UP":
                with server.log_file.open("rb") as f:
                    f.seek(log_start)
                    if b"is in use" in f.read():  # it moved to another port after all
                        raise ServerStartError(
                            f"Label Studio did not get {server.url} (port taken while it "
                            "started); try another --port"
                        )
                return
        time.sleep(0.5)
    raise ServerStartError(
        f"Label Studio did not answer {server.url}/health within {timeout:.0f} s; "
        f"see {server.log_file}:\n{_tail(server.log_file)}"
    )


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
