"""Label Studio: the one module that talks to it, and the command that starts a local server.

    python -m activelearn.labeling.labelstudio serve [--port 8080] [--data-dir .labelstudio]
                                            [--pool-dir campaign/data/pool]

`serve` installs Label Studio into its own virtual environment (`.venv-labelstudio/`, its
pins clash with the training stack) when missing and runs it on 127.0.0.1 with a sqlite
database in the data folder. The admin comes from LABEL_STUDIO_USERNAME and
LABEL_STUDIO_PASSWORD, its API token from LABEL_STUDIO_API_KEY (the variable the client
reads too). `start_server` / `LabelStudioServer.stop` are the same steps as functions, for
tests and benchmarks.

`LabelStudioAnnotator` is the labeling side's Label Studio implementation (see
`activelearn.labeling`): `push` sends a round's queue as one bulk import with the model's
predictions and makes Label Studio serve it most uncertain first; `collect` exports the
project, keeps the raw export in the round folder, and turns every queued sample into one
`Answer` (majority vote, skips, unknown labels, deleted tasks) plus a report, which also
lists answers changed in Label Studio after they were ingested.

label-studio-sdk is imported lazily: `serve` and the CLI help do not pay for it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

import httpx

from activelearn.config import LabelingConfig
from activelearn.core.faults import kill_point
from activelearn.core.files import write_atomic
from activelearn.core.processes import stop_group
from activelearn.errors import (
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioUnreachable,
    ServerStartError,
)
from activelearn.labeling.answers import (
    ACCEPTED,
    DELETED,
    DISAGREEMENT,
    EXCLUDED,
    OPEN,
    SKIPPED,
    UNKNOWN_LABEL,
    Answer,
)
from activelearn.workspace.layout import PROJECT_ROOT, round_tag
from activelearn.workspace.manifest import Sample
from activelearn.workspace.queue import QueueItem

log = logging.getLogger(__name__)

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_VENV = PROJECT_ROOT / ".venv-labelstudio"
DEFAULT_DATA_DIR = PROJECT_ROOT / ".labelstudio"
DEFAULT_POOL_DIR = Path("campaign/data/pool")  # the default workspace's (`workspace=campaign`)

TOKEN_ENV = "LABEL_STUDIO_API_KEY"  # the client's token; given to the server as its admin token
USERNAME_ENV = "LABEL_STUDIO_USERNAME"
PASSWORD_ENV = "LABEL_STUDIO_PASSWORD"
# Label Studio reads LABEL_STUDIO_X, then HEARTEX_X, then plain X: strays like these leak in.
_STRAY_ENV = ("USERNAME", "PASSWORD", "HOST", "PORT", "USER_TOKEN")


# In the description of the project a campaign creates: finds it again after a kill.
CLAIM_PREFIX = "activelearn campaign claim "

SERVE_HINT = "start it with `python -m activelearn.labeling.labelstudio serve` or set labeling.url"

T = TypeVar("T")


# --------------------------------------------------------------------------------------
# The server


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


# --------------------------------------------------------------------------------------
# Pure parts: labeling config, task payloads, votes, the report


# The names of our fields in the labeling config: the class is read from LABEL_FIELD only,
# as fields added in the UI (say, an image quality Choices) answer something else.
IMAGE_FIELD = "image"
LABEL_FIELD = "label"


def label_config(class_names: Sequence[str]) -> str:
    """Image + single Choices, one choice per class, in the given order; a choice is
    required, so an empty submit cannot pass for an answer."""
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in class_names)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_FIELD}" value="$image"/>\n'
        f'  <Choices name="{LABEL_FIELD}" toName="{IMAGE_FIELD}" choice="single"'
        ' showInLine="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def our_fields(config: str) -> list:
    """Our Image and Choices in a labeling config: tags, attributes and choices, in order.
    Fields added next to them are not ours."""
    return [
        (element.tag, element.attrib, [child.attrib for child in element])
        for element in ElementTree.fromstring(config).iter()
        if element.get("name") in (IMAGE_FIELD, LABEL_FIELD)
    ]


def choices_of(config: str) -> list[str]:
    """The class choices of a labeling config (our Choices'), in order."""
    return [
        choice.get("value")
        for choices in ElementTree.fromstring(config).iter("Choices")
        if choices.get("name") == LABEL_FIELD
        for choice in choices.iter("Choice")
    ]


def prediction_score(item: QueueItem, queue_length: int) -> float:
    """Label Studio serves the lowest score first, so the score is the model's confidence.

    Without a model (cold start) the queue's rank stands in: rank 1 gets the lowest score.
    """
    if item.confidence is not None:
        return float(item.confidence)
    return item.rank / (queue_length + 1)


def prediction_result(label: str | None) -> list[dict]:
    if label is None:
        return []
    return [
        {
            "from_name": LABEL_FIELD,
            "to_name": IMAGE_FIELD,
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def annotation_labels(annotation: dict) -> list[str]:
    """The classes chosen in one annotation (normally one), from our Choices only."""
    return [
        choice
        for region in annotation.get("result") or []
        if region.get("type") == "choices" and region.get("from_name") == LABEL_FIELD
        for choice in (region.get("value") or {}).get("choices") or []
    ]


@dataclass
class TaskOutcome:
    """One task's answer plus what the round report needs."""

    answer: Answer
    votes: list[str] = field(default_factory=list)


def decide(
    task: dict,
    sample_id: str,
    class_names: Sequence[str],
    *,
    vote: str = "majority",
    skipped: str = "pool",
    annotations_per_task: int = 1,
) -> TaskOutcome:
    """Turn one exported task into an Answer.

    Cancelled annotations (and ones without a choice) do not vote. A label the project
    does not know rejects the task. One vote is the label; several are decided by `vote`:
    `majority` needs more than half of the votes, `unanimous` all of them; anything else
    is a disagreement. A task with fewer finished annotations than `annotations_per_task`
    is still open.

    An annotation marked ground truth (a reviewer's star in Label Studio, at most one per
    task there) is decisive: its label is the answer whatever the other votes say and
    however many there are; only its own label is checked. The other votes still count
    for the agreement report.
    """
    task_id = task.get("id")
    votes: list[str] = []
    ground_truth: list[str] = []
    cancelled = 0
    for annotation in task.get("annotations") or []:
        labels = annotation_labels(annotation)
        if annotation.get("was_cancelled") or not labels:
            cancelled += 1
            continue
        votes.append(labels[0])
        if annotation.get("ground_truth"):
            ground_truth.append(labels[0])
    deciding = ground_truth or votes
    known = set(class_names)
    unknown = sorted({label for label in deciding if label not in known})
    if unknown:
        return TaskOutcome(
            Answer(
                sample_id,
                UNKNOWN_LABEL,
                detail=f"task {task_id}: label {unknown[0]!r} is not one of the project's "
                f"classes {list(class_names)}",
            ),
            votes,
        )
    done = len(votes) + cancelled
    if not ground_truth and (done < annotations_per_task or not done):
        return TaskOutcome(
            Answer(
                sample_id, OPEN, detail=f"task {task_id}: {done} of {annotations_per_task} answers"
            ),
            votes,
        )
    if not votes:
        status = SKIPPED if skipped == "pool" else EXCLUDED
        return TaskOutcome(
            Answer(sample_id, status, detail=f"task {task_id}: cancelled ({cancelled}x)"), votes
        )
    counts = Counter(deciding)
    (label, top), *_ = counts.most_common(1)
    # Several ground truths (Label Studio keeps one per task, an import may bring more)
    # must agree among themselves.
    policy = "ground truth" if ground_truth else vote
    agreed = 2 * top > len(deciding) if policy == "majority" else top == len(deciding)
    if agreed:
        detail = f"task {task_id}: {top} of {len(deciding)} ({policy})"
        return TaskOutcome(Answer(sample_id, ACCEPTED, label, detail=detail), votes)
    summary = ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))
    return TaskOutcome(
        Answer(sample_id, DISAGREEMENT, detail=f"task {task_id}: votes {summary} ({policy})"),
        votes,
    )


def agreement(vote_lists: Iterable[Sequence[str]]) -> dict[str, Any]:
    """Annotator agreement over tasks with two or more votes.

    `pairwise`: the share of annotation pairs on the same task that chose the same class
    (None without any such task); `unanimous_share`: the share of those tasks where all
    votes agree.
    """
    tasks = pairs = agreeing = unanimous = 0
    for votes in vote_lists:
        if len(votes) < 2:
            continue
        tasks += 1
        counts = Counter(votes)
        pairs += len(votes) * (len(votes) - 1) // 2
        agreeing += sum(n * (n - 1) // 2 for n in counts.values())
        unanimous += len(counts) == 1
    return {
        "tasks_with_several_annotations": tasks,
        "pairwise": round(agreeing / pairs, 4) if pairs else None,
        "unanimous_share": round(unanimous / tasks, 4) if tasks else None,
    }


def round_report(
    round: int,
    export_file: str | None,
    outcomes: Sequence[TaskOutcome],
    late_changes: Sequence[dict] = (),
) -> dict:
    """Counts, agreement, every answer that was not a plain acceptance, and the answers
    changed after their ingest (see `LabelStudioAnnotator.late_changes`)."""
    answers = [o.answer for o in outcomes]
    listed = defaultdict(list)
    for outcome in outcomes:
        a = outcome.answer
        if a.status != ACCEPTED:
            entry = {"sample_id": a.sample_id, "detail": a.detail}
            if outcome.votes:
                entry["votes"] = dict(sorted(Counter(outcome.votes).items()))
            listed[a.status].append(entry)
    return {
        "round": round,
        "export": export_file,
        "queued": len(answers),
        "counts": dict(sorted(Counter(a.status for a in answers).items())),
        "agreement": agreement(o.votes for o in outcomes),
        "disagreements": listed[DISAGREEMENT],
        "unknown_labels": listed[UNKNOWN_LABEL],
        "skipped": listed[SKIPPED] + listed[EXCLUDED],
        "deleted": listed[DELETED],
        "open": listed[OPEN],
        "late_changes": list(late_changes),
    }


def keep_export(round_dir: Path, raw: bytes) -> Path:
    """Store a raw export in the round folder, never overwriting an earlier one.

    The first is `annotations.raw.json`; a later export with different content goes to
    `annotations.raw.2.json`, `.3.json`...; an identical one is not stored twice.
    """
    for n in itertools.count(1):
        path = round_dir / ("annotations.raw.json" if n == 1 else f"annotations.raw.{n}.json")
        if not path.exists():
            write_atomic(path, raw)
            return path
        if path.stat().st_size == len(raw) and path.read_bytes() == raw:
            return path


# --------------------------------------------------------------------------------------
# The client


class LabelStudioAnnotator:
    """The `Annotator` for people labeling in Label Studio (one project per campaign).

    The project id, its pool storage, each round's view and task ids are kept in
    `settings.state_file` (no secrets). The API token comes from LABEL_STUDIO_API_KEY
    unless given, and is never logged or written.
    """

    def __init__(
        self,
        settings: LabelingConfig,
        class_names: Sequence[str],
        pool_dir: str | Path,
        *,
        token: str | None = None,
    ):
        if not class_names:
            raise LabelStudioError("Label Studio needs at least one class name")
        url = urllib.parse.urlsplit(settings.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise LabelStudioError(
                f"labeling.url={settings.url!r}: give the server's address with its scheme, "
                "e.g. http://127.0.0.1:8080"
            )
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self.class_names = list(class_names)
        self.pool_dir = Path(pool_dir).resolve()
        root = settings.document_root
        self.document_root = Path(root).resolve() if root else self.pool_dir.parent
        if not self.pool_dir.is_relative_to(self.document_root):
            raise LabelStudioError(
                f"labeling.document_root={root!r} does not contain the pool {self.pool_dir}: "
                "it must be the server's local-files root, a parent of the pool"
            )
        self.state_path = Path(settings.state_file)
        self.last_report: dict | None = None
        self._token = (token or os.environ.get(TOKEN_ENV) or "").strip()
        if not self._token:
            raise LabelStudioAuthError(
                f"no Label Studio API token: set {TOKEN_ENV} to the admin's token "
                f"(the one the server was started with) for {self.url}"
            )
        self._client = self._call("connecting", self._make_client)

    def _make_client(self):
        from label_studio_sdk import LabelStudio

        # Retries are ours (`_call`): the SDK would also retry 409s, never timeouts.
        return LabelStudio(
            base_url=self.url,
            api_key=self._token,
            timeout=self.settings.timeout,
            max_retries=0,
        )

    # ---- errors and retries

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _call(self, what: str, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run one request; transient failures (5xx, 429, timeouts, dropped connections)
        are retried with exponential backoff, the rest become one clear error.

        A request that creates something (`idempotent=False`) is retried only when it was
        surely not done (no connection, or 429). After a timeout or a 5xx it may have been
        done, or may still be in progress on the server: the error says so instead.
        """
        from label_studio_sdk.core.api_error import ApiError

        attempts = self.settings.retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                return fn()
            except httpx.ConnectError:
                raise LabelStudioUnreachable(
                    f"Label Studio is not reachable at {self.url} ({what}): {SERVE_HINT}"
                ) from None
            except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as err:
                last = f"{type(err).__name__}"
                sent = not isinstance(err, httpx.ConnectTimeout)
                if attempt == attempts - 1 and not sent:
                    raise LabelStudioUnreachable(
                        f"Label Studio at {self.url} did not accept a connection ({what}, "
                        f"{attempts} attempts): {SERVE_HINT}"
                    ) from None
                if sent and not idempotent:
                    raise self._maybe_done(what, last) from None
            except ApiError as err:
                status = err.status_code
                body = self._redact(str(err.body))[:800]
                if status == 401:
                    raise LabelStudioAuthError(
                        f"Label Studio at {self.url} refused the API token ({what}: 401 {body}): "
                        f"set {TOKEN_ENV} to the admin's token, the one the server was "
                        "started with (Account & Settings shows it)"
                    ) from None
                if status == 403:
                    raise LabelStudioAuthError(
                        f"Label Studio at {self.url} forbids {what} (403 {body}): the user of "
                        f"{TOKEN_ENV} needs access to the project"
                    ) from None
                if status is not None and status < 500 and status != 429:
                    raise LabelStudioError(
                        f"Label Studio at {self.url}: {what} failed with HTTP {status}: {body}"
                    ) from None
                last = f"HTTP {status}: {body}"
                if status != 429 and not idempotent:
                    raise self._maybe_done(what, last) from None
            if attempt < attempts - 1:
                wait = self.settings.backoff * 2**attempt * random.uniform(0.8, 1.2)
                log.warning(
                    "Label Studio %s: %s; retry %d of %d in %.1f s",
                    what,
                    last,
                    attempt + 1,
                    attempts - 1,
                    wait,
                )
                time.sleep(wait)
        raise LabelStudioError(
            f"Label Studio at {self.url}: {what} still failing after {attempts} attempts "
            f"({last}); check the server and its log, then run again"
        )

    def _maybe_done(self, what: str, failure: str) -> LabelStudioError:
        return LabelStudioError(
            f"Label Studio at {self.url}: {what} got no answer ({failure}) and may have been "
            "done anyway, or still be in progress: wait until Label Studio has finished "
            "(its task list stops changing), then run again; nothing is sent twice then"
        )

    # ---- campaign state

    def _load_state(self) -> dict:
        if self.state_path.is_file():
            return json.loads(self.state_path.read_text())
        return {}

    def _save_state(self, state: dict) -> None:
        write_atomic(self.state_path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())

    # ---- project

    def ensure_project(self) -> int:
        """The campaign's project id: created once (labeling config from the class names,
        local-files storage on the pool), recorded in the state file, reused after.

        A random claim is saved before the create request and written into the project's
        description: a run killed between the create and saving the id (or a create whose
        answer was lost) leaves a project a rerun finds by its claim and adopts, instead of
        creating a second one. A project of another campaign with the same title never
        carries this claim.
        """
        state = self._load_state()
        config = label_config(self.class_names)
        project_id = state.get("project_id")
        if project_id is None:
            project_id = self._adopt_or_create(state, config)
            state.update(
                url=self.url,
                project_id=project_id,
                project_title=self.settings.project_title,
                classes=self.class_names,
            )
            self._save_state(state)  # before anything else can fail
        else:
            ours_changed = state.get("classes") != self.class_names
            self._keep_settings(project_id, self._recorded_project(state), config, ours_changed)
            if ours_changed:
                state["classes"] = self.class_names
                self._save_state(state)
        if state.get("storage_id") is None or state.get("storage_path") != str(self.pool_dir):
            state["storage_id"] = self._ensure_storage(project_id)
            state["storage_path"] = str(self.pool_dir)
            self._save_state(state)
        return project_id

    def _adopt_or_create(self, state: dict, config: str) -> int:
        """The project a run killed before recording it made under the saved claim, or a
        new one under a new claim, saved first."""
        claim = state.get("project_claim")
        if claim and (project_id := self._claimed_project(claim)) is not None:
            log.warning(
                "adopted Label Studio project %d at %s: an earlier run created it but "
                "stopped before recording it in %s",
                project_id,
                self.url,
                self.state_path,
            )  # it may have been edited since, or made with other settings
            self._keep_settings(project_id, self._get_project(project_id), config, True)
            return project_id
        if claim is None:
            claim = state["project_claim"] = secrets.token_hex(16)
            self._save_state(state)
        project = self._call(
            "creating the project",
            lambda: self._client.projects.create(
                title=self.settings.project_title,
                description=f"{CLAIM_PREFIX}{claim}",
                label_config=config,
                sampling="Uncertainty sampling",
                skip_queue="IGNORE_SKIPPED",  # a skip is an answer: back to our pool
                maximum_annotations=self.settings.annotations_per_task,
                show_skip_button=True,
            ),
            idempotent=False,
        )
        kill_point("project:after-create")  # crash tests: project made, id not saved
        log.info("created Label Studio project %d at %s", project.id, self.url)
        return project.id

    def _recorded_project(self, state: dict):
        """The project recorded in the state file, checked to be this campaign's: at the
        recorded URL, and carrying the campaign's claim. A project without any claim (made
        by a version before claims, or its description edited) gets the claim written in.
        """
        project_id = state["project_id"]
        if state.get("url", self.url) != self.url:
            raise LabelStudioError(
                f"{self.state_path} is about project {project_id} at {state['url']}, not at "
                f"labeling.url={self.url}: point labeling.url there, or, if that server "
                f"has moved, change the url in {self.state_path}"
            )
        project = self._get_project(project_id)
        description = project.description or ""
        claim = state.get("project_claim")
        if claim and f"{CLAIM_PREFIX}{claim}" in description:
            return project
        if CLAIM_PREFIX in description:
            raise LabelStudioError(
                f"project {project_id} at {self.url} belongs to another campaign (its "
                f"description carries another claim than {self.state_path}): this is not "
                f"the server or data dir this campaign's project is on; start that one at "
                f"{self.url}, then run again"
            )
        if claim is None:
            claim = state["project_claim"] = secrets.token_hex(16)
            self._save_state(state)
        log.warning(
            "project %d at %s carried no campaign claim (made by an older version, or its "
            "description edited): the claim from %s is written into it",
            project_id,
            self.url,
            self.state_path,
        )
        marked = f"{description}\n{CLAIM_PREFIX}{claim}".strip()
        return self._call(
            f"writing the campaign's claim into project {project_id}",
            lambda: self._client.projects.update(project_id, description=marked),
        )

    def _claimed_project(self, claim: str) -> int | None:
        """The project carrying `claim`, if an earlier run created it: found by the claim
        alone, as its title may have changed (in the UI, or labeling.project_title)."""
        projects = self._call("listing the projects", lambda: list(self._client.projects.list()))
        mark = f"{CLAIM_PREFIX}{claim}"
        return next((p.id for p in projects if mark in (p.description or "")), None)

    def _keep_settings(self, project_id: int, project, config: str, ours_changed: bool) -> None:
        """Put back the labeling config and the answers wanted per task where they differ
        from the campaign's: edited in Label Studio, or changed in our config. Fields added
        in Label Studio next to ours are kept (their answers would refuse a put-back)."""
        if our_fields(project.label_config) != our_fields(config):
            theirs = choices_of(project.label_config)
            if theirs != self.class_names and not ours_changed:
                log.warning(
                    "project %d offered the choices %s; the campaign's classes are %s: "
                    "labeling config restored (rename class folders to rename classes)",
                    project_id,
                    theirs,
                    self.class_names,
                )
            self._call(
                f"updating label_config of project {project_id}",
                lambda: self._client.projects.update(project_id, label_config=config),
            )
        self._keep_answers_per_task(project_id, project)

    def _keep_answers_per_task(self, project_id: int, project) -> None:
        """Make the project ask for `annotations_per_task` answers, as `decide` counts them:
        raised between rounds, Label Studio serves answered tasks again for the rest."""
        wanted = self.settings.annotations_per_task
        if project.maximum_annotations != wanted:
            self._call(
                f"updating maximum_annotations of project {project_id}",
                lambda: self._client.projects.update(project_id, maximum_annotations=wanted),
            )

    def _get_project(self, project_id: int):
        from label_studio_sdk.core.api_error import ApiError

        def get():
            try:
                return self._client.projects.get(project_id)
            except ApiError as err:
                if err.status_code == 404:
                    return None
                raise

        project = self._call(f"reading project {project_id}", get)
        if project is None:
            raise LabelStudioError(
                f"project {project_id} recorded in {self.state_path} does not exist at "
                f"{self.url}: if it is on another server or data dir, start that one at "
                f"{self.url}; if it was deleted, remove {self.state_path}: the next round "
                "sends the images still waiting for an answer back to the pool and pushes "
                "into a new project"
            )
        return project

    def _ensure_storage(self, project_id: int) -> int:
        """A local-files import storage covering the pool, so tasks can show pool images
        by reference. It is never synced: tasks come from `push` only."""
        storages = self._call(
            "listing storages",
            lambda: self._client.import_storage.local.list(project=project_id),
        )
        for storage in storages:
            if storage.path == str(self.pool_dir):
                return storage.id
        try:
            storage = self._call(
                f"adding local-files storage {self.pool_dir}",
                lambda: self._client.import_storage.local.create(
                    project=project_id,
                    path=str(self.pool_dir),
                    title="pool",
                    use_blob_urls=False,
                    recursive_scan=True,
                ),
                idempotent=False,
            )
        except LabelStudioError as err:
            raise LabelStudioError(
                f"{err}\nThe server must serve local files from the pool's parent: start it with "
                f"`python -m activelearn.labeling.labelstudio serve --pool-dir {self.pool_dir}`"
            ) from None
        return storage.id

    def image_url(self, sample_id: str) -> str:
        relative = (self.pool_dir / sample_id).relative_to(self.document_root).as_posix()
        return "/data/local-files/?d=" + urllib.parse.quote(relative)

    def list_tasks(self, project_id: int) -> list:
        """Every task of the project: data and counters, without annotations and
        predictions (which would about double the cost)."""
        return self._call(
            "listing tasks",
            lambda: list(
                self._client.tasks.list(project=project_id, fields="task_only", page_size=1000)
            ),
        )

    # ---- push

    def push(self, round: int, queue: list[QueueItem], rescored: Sequence[QueueItem] = ()) -> None:
        """Send the round's queue as one bulk import with predictions, then rank the open
        queue by this round's model.

        `rescored`: this round's model output for samples still open from earlier rounds;
        their tasks get this round's prediction from it. An open task missing from it keeps
        its latest prediction, re-tagged with this round (a warning says how many), since
        Label Studio only serves tasks with a prediction of the project's model version.
        Pushing the same queue again adds nothing; a task deleted in Label Studio is not
        re-created within its round.
        """
        project_id = self.ensure_project()
        tag = round_tag(round)
        state = self._load_state()
        recorded = state.setdefault("rounds", {}).setdefault(str(round), {}).setdefault("tasks", {})
        tasks = self.list_tasks(project_id)
        present = {(_data(t).get("sample_id"), _data(t).get("round")) for t in tasks}
        missing, gone = [], []
        for item in queue:
            if (item.sample_id, round) in present:
                continue
            (gone if item.sample_id in recorded else missing).append(item)
        if gone:
            log.warning(
                "%d task(s) of round %d were deleted in Label Studio and are not re-created "
                "(e.g. %s); `collect` reports them as deleted",
                len(gone),
                round,
                gone[0].sample_id,
            )
        for t in tasks:
            if _data(t).get("round") == round:
                recorded[_data(t)["sample_id"]] = t.id
        if missing:
            payload = [self.task_payload(round, item, len(queue)) for item in missing]
            imported = self._import_tasks(project_id, payload)
            kill_point("push:after-import")  # crash tests: tasks in, our state not yet
            if imported is None:  # ask Label Studio what arrived
                imported = {
                    _data(t)["sample_id"]: t.id
                    for t in self.list_tasks(project_id)
                    if _data(t).get("round") == round
                }
            recorded.update(imported)
            log.info("pushed %d task(s) of round %d to project %d", len(missing), round, project_id)
        state["rounds"][str(round)]["view_id"] = self._ensure_view(project_id, round)
        self._save_state(state)
        self._repredict_open_tasks(project_id, round, tasks, rescored)
        self._call(
            "setting uncertainty sampling",
            lambda: self._client.projects.update(
                project_id,
                sampling="Uncertainty sampling",
                model_version=tag,
                skip_queue="IGNORE_SKIPPED",
            ),
        )

    def task_payload(self, round: int, item: QueueItem, queue_length: int) -> dict:
        return {
            "data": {
                "image": self.image_url(item.sample_id),
                "sample_id": item.sample_id,
                "round": round,
                "rank": item.rank,
                "uncertainty": item.score,
            },
            "predictions": [self._prediction(round, item, queue_length)],
        }

    def _prediction(self, round: int, item: QueueItem, queue_length: int) -> dict:
        return {
            "model_version": round_tag(round),
            "score": prediction_score(item, queue_length),
            "result": prediction_result(item.predicted),
        }

    def _import_tasks(self, project_id: int, payload: list[dict]) -> dict[str, int] | None:
        """One bulk import; returns {sample id: task id}, or None when Label Studio did not
        say which tasks it made (editions that import in the background).

        Never retried automatically: after a timeout the server may still be importing,
        and tasks sent again then would be duplicates. A rerun imports only what is missing.
        """

        def attempt() -> dict[str, int] | None:
            response = self._client.projects.import_tasks(
                project_id, request=payload, return_task_ids=True
            )
            task_ids = _field(response, "task_ids")
            if not task_ids or len(task_ids) != len(payload):
                return None
            return {p["data"]["sample_id"]: t for p, t in zip(payload, task_ids, strict=True)}

        return self._call(f"importing {len(payload)} task(s)", attempt, idempotent=False)

    def _repredict_open_tasks(
        self, project_id: int, round: int, tasks: list, rescored: Sequence[QueueItem]
    ) -> None:
        """Give open tasks of earlier rounds a prediction tagged with this round (one bulk
        call): Label Studio's uncertainty sampling only serves tasks with a prediction of
        the project's model version."""
        tag = round_tag(round)
        open_tasks = {
            t.id: t
            for t in tasks
            if _data(t).get("round", round) < round  # round 0 is a round too
            and not _field(t, "is_labeled")
            and not _field(t, "cancelled_annotations")
        }
        if not open_tasks:
            return
        by_task = defaultdict(list)
        for p in self._call(
            "listing predictions",
            lambda: self._client.predictions.list(project=project_id),
        ):
            if p.task in open_tasks:
                by_task[p.task].append(p)
        fresh = {item.sample_id: item for item in rescored}
        new, carried = [], 0
        for task_id, t in open_tasks.items():
            predictions = by_task[task_id]
            if any(p.model_version == tag for p in predictions):
                continue
            item = fresh.get(_data(t).get("sample_id"))
            if item is not None:
                prediction = self._prediction(round, item, len(rescored))
            elif predictions:
                latest = max(predictions, key=lambda p: p.id)
                prediction = {"model_version": tag, "score": latest.score, "result": latest.result}
                carried += 1
            else:
                continue
            new.append({"task": task_id, **prediction})
        if carried:
            log.warning(
                "%d open task(s) from earlier rounds were not rescored: their last prediction "
                "was carried over to %s (pass `rescored` to rank them by the current model)",
                carried,
                tag,
            )
        if new:
            self._call(
                f"adding {tag} predictions to {len(new)} open task(s)",
                lambda: self._client.projects.import_predictions(project_id, request=new),
                idempotent=False,
            )

    def _ensure_view(self, project_id: int, round: int) -> int:
        """A Data Manager tab per round: its tasks, lowest prediction score (least
        confident) first, for "Label Tasks As Displayed"."""
        title = f"round {round}"
        views = self._call("listing views", lambda: self._client.views.list(project=project_id))
        for view in views:
            if (view.data or {}).get("title") == title:
                return view.id
        data = {
            "title": title,
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:data.round",
                        "operator": "equal",
                        "type": "Number",
                        "value": round,
                    }
                ],
            },
            "ordering": ["tasks:predictions_score"],
        }
        view = self._call(
            f"creating view {title!r}",
            lambda: self._client.views.create(project=project_id, data=data),
            idempotent=False,
        )
        return view.id

    # ---- collect

    def export_project(self, project_id: int) -> bytes:
        """Every task with its annotations (cancelled ones included), as Label Studio's
        JSON export."""
        return self._call(
            "exporting annotations",
            lambda: b"".join(
                self._client.projects.exports.download_sync(
                    project_id, export_type="JSON", download_all_tasks=True
                )
            ),
        )

    def collect(
        self,
        round: int,
        queue: list[QueueItem],
        round_dir: Path,
        answered: Sequence[Sample] = (),
    ) -> list[Answer]:
        """One Answer per queued sample; the raw export is stored in `round_dir` first.

        Samples are matched to tasks by `sample_id` (this round's task when there is one,
        else the newest), so a queue may also hold samples still open from earlier rounds.
        The round report (counts, agreement, every non-accepted answer, and the `answered`
        samples Label Studio now decides otherwise) is written to
        `round_dir/labelstudio_report.json` and kept in `last_report`.
        """
        round_dir = Path(round_dir)
        state = self._load_state()
        project_id = state.get("project_id")
        if project_id is None:  # removed after its project was deleted (`_get_project`)
            log.warning(
                "no Label Studio project recorded in %s: the %d image(s) still waiting for "
                "an answer go back to the pool",
                self.state_path,
                len(queue),
            )
            detail = f"no Label Studio project recorded in {self.state_path}"
            outcomes = [TaskOutcome(Answer(i.sample_id, DELETED, detail=detail)) for i in queue]
            return self._report(round, round_dir, None, outcomes)
        project = self._recorded_project(state)  # before anything is read or written
        self._keep_answers_per_task(project_id, project)
        raw = self.export_project(project_id)
        export_file = keep_export(round_dir, raw)
        tasks = json.loads(raw)
        by_sample: dict[str, list[dict]] = defaultdict(list)
        for task in tasks:
            sample = _data(task).get("sample_id")
            if sample is not None:
                by_sample[sample].append(task)
        exported = {task.get("id") for task in tasks}
        # The task each sample should have: this round's, else the newest pushed.
        expected: dict[str, tuple[int, int]] = {}  # sample -> (round, task id)
        for r, entry in sorted(state.get("rounds", {}).items(), key=lambda kv: int(kv[0])):
            for sample, task_id in entry.get("tasks", {}).items():
                if expected.get(sample, (None,))[0] != round:
                    expected[sample] = (int(r), task_id)
        outcomes = []
        for item in queue:
            candidates = by_sample.get(item.sample_id)
            pushed = expected.get(item.sample_id)
            if pushed is not None and pushed[1] not in exported:
                answer = Answer(
                    item.sample_id,
                    DELETED,
                    detail=f"task {pushed[1]} (round {pushed[0]}) was deleted in Label Studio",
                )
                outcomes.append(TaskOutcome(answer))
                continue
            if not candidates:
                answer = Answer(item.sample_id, OPEN, detail="not pushed to Label Studio")
                outcomes.append(TaskOutcome(answer))
                continue
            task = max(
                candidates,
                key=lambda t: (t["data"].get("round") == round, t["data"].get("round") or 0),
            )
            outcomes.append(self._decide(task, item.sample_id))
        changes = self.late_changes(tasks, answered)
        return self._report(round, round_dir, export_file.name, outcomes, changes)

    def _decide(self, task: dict, sample_id: str) -> TaskOutcome:
        return decide(
            task,
            sample_id,
            self.class_names,
            vote=self.settings.vote,
            skipped=self.settings.skipped,
            annotations_per_task=self.settings.annotations_per_task,
        )

    def late_changes(self, tasks: list[dict], answered: Sequence[Sample]) -> list[dict]:
        """The answered samples whose task Label Studio now decides otherwise: a labeled
        sample now with another label, skipped or rejected, a rejected one now with a
        label. Each is matched to the task of the round it was queued in. A task deleted
        since, or open again (its annotations deleted, or more asked per task), gives no
        new answer, so it is no change.

        The labeled set keeps what was ingested (see `apply_answers`); these are reported
        so that a correction made in Label Studio is never lost silently.
        """
        task_of = {(_data(t).get("sample_id"), _data(t).get("round")): t for t in tasks}
        changes = []
        for sample in answered:
            task = task_of.get((sample.sample_id, sample.round))
            if task is None or sample.state not in ("labeled", "rejected"):
                continue
            now = self._decide(task, sample.sample_id).answer
            if now.status == OPEN:
                continue
            if sample.state == "labeled":
                changed = (now.status, now.label) != (ACCEPTED, sample.label)
            else:
                changed = now.status == ACCEPTED
            if changed:
                changes.append(
                    {
                        "sample_id": sample.sample_id,
                        "queued_round": sample.round,
                        "ingested_label": sample.label,  # None: it was rejected
                        "label_studio_label": now.label,  # None: no label now
                        "label_studio_status": now.status,
                        "detail": now.detail,
                    }
                )
        return changes

    def _report(
        self,
        round: int,
        round_dir: Path,
        export_file: str | None,
        outcomes: list[TaskOutcome],
        late_changes: Sequence[dict] = (),
    ) -> list[Answer]:
        """Write the round report (kept in `last_report`), warn about late changes; the
        answers."""
        report = round_report(round, export_file, outcomes, late_changes)
        report_file = round_dir / "labelstudio_report.json"
        write_atomic(report_file, (json.dumps(report, indent=2) + "\n").encode())
        if late_changes:
            first = late_changes[0]
            log.warning(
                "%d answer(s) ingested in earlier rounds read differently in Label Studio now "
                "(e.g. %s: ingested %s, now %s); the labeled set keeps the ingested ones: see "
                "late_changes in %s, and the README on applying a correction by hand",
                len(late_changes),
                first["sample_id"],
                first["ingested_label"] or "as rejected",
                first["label_studio_label"] or first["label_studio_status"],
                report_file,
            )
        self.last_report = report
        log.info("round %d answers: %s", round, report["counts"])
        return [o.answer for o in outcomes]


def _field(obj: Any, name: str) -> Any:
    """A field of an SDK model (declared or extra) or of a plain dict."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _data(task: Any) -> dict:
    return _field(task, "data") or {}


# --------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m activelearn.labeling.labelstudio", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="install (when missing) and run Label Studio on 127.0.0.1",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run Label Studio on 127.0.0.1 until interrupted. Credentials from "
        f"{USERNAME_ENV}, {PASSWORD_ENV} and {TOKEN_ENV}.",
    )
    serve.add_argument("--port", type=int, default=8080, help="on 127.0.0.1; a busy one fails")
    serve.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="sqlite, uploads")
    serve.add_argument(
        "--pool-dir",
        type=Path,
        default=DEFAULT_POOL_DIR,
        help="the pool; local files are served from its parent folder",
    )
    args = parser.parse_args(argv)
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
