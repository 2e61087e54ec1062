"""Annotation counts per project, and the one background retrain the webhook may start.

The retrain is a configured command line run as a subprocess, never inside a request and
never two at a time. Its output goes to a log file; its state is read by /health and
/status. The new model it writes is picked up by the model store's hot reload.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from activelearn.core.files import write_atomic
from activelearn.core.processes import stop_group
from activelearn.workspace.layout import round_of_tag
from activelearn.workspace.repo import python_environment
from serving.schemas import ProjectCounts, RetrainStatus
from serving.settings import ENV_PREFIX

log = logging.getLogger(__name__)

# Label Studio's annotation events (label_studio/webhooks/models.py) and what they count as
ANNOTATION_ACTIONS = {
    "ANNOTATION_CREATED": "created",
    "ANNOTATIONS_CREATED": "created",  # in bulk, e.g. from predictions
    "ANNOTATION_UPDATED": "updated",
    "ANNOTATIONS_DELETED": "deleted",  # the only deletion event, single or bulk
}


def next_round(model_version: str | None) -> int | None:
    """`round-3` -> 4; None when the version is not a round tag."""
    current = round_of_tag(model_version)
    return None if current is None else current + 1


@dataclass
class _ProjectAnnotations:
    """Annotation ids, so an annotation counts once however many webhooks deliver it."""

    created: set = field(default_factory=set)
    updated: set = field(default_factory=set)
    deleted: set = field(default_factory=set)
    pending: set = field(default_factory=set)  # created since the last retrain, not deleted

    def counts(self) -> ProjectCounts:
        return ProjectCounts(
            created=len(self.created),
            updated=len(self.updated),
            deleted=len(self.deleted),
            pending=len(self.pending),
        )


class AnnotationCounter:
    """Annotations per project, by id; `pending` are those created since the last retrain
    and not deleted (an updated annotation is not a new one). Kept in the JSON file
    `path`, so a restarted server goes on counting toward the retrain threshold."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._projects: dict[str, _ProjectAnnotations] = {}
        try:
            saved = json.loads(self.path.read_text()) if self.path.exists() else {}
            self._projects = {
                project: _ProjectAnnotations(**{name: set(ids) for name, ids in counts.items()})
                for project, counts in saved.items()
            }
        except (OSError, ValueError, TypeError, AttributeError) as err:
            log.warning("annotation counts in %s unreadable (%s): counting from 0", path, err)

    def record(self, project: str, action: str, ids: list) -> tuple[int, ProjectCounts]:
        """Returns how many of `ids` were not counted for this action yet, and the counts."""
        field_name = ANNOTATION_ACTIONS[action]
        with self._lock:
            annotations = self._projects.setdefault(project, _ProjectAnnotations())
            seen = getattr(annotations, field_name)
            new = set(ids) - seen
            seen |= new
            if field_name == "created":
                annotations.pending |= new
            elif field_name == "deleted":
                annotations.pending -= new
            if new:
                self._save()
            return len(new), annotations.counts()

    def reset_pending(self, project: str | None) -> None:
        with self._lock:
            if project in self._projects:
                self._projects[project].pending.clear()
                self._save()

    def _save(self) -> None:
        """Under the lock. A file that cannot be written costs the counts a restart, not
        the webhook: Label Studio would retry it, and count nothing more."""
        saved = {
            project: {name: list(ids) for name, ids in vars(annotations).items()}
            for project, annotations in self._projects.items()
        }
        try:
            write_atomic(self.path, json.dumps(saved))
        except OSError as err:
            log.warning("annotation counts not kept in %s: %s", self.path, err)

    def snapshot(self) -> dict[str, ProjectCounts]:
        with self._lock:
            return {name: annotations.counts() for name, annotations in self._projects.items()}


class Retrainer:
    """Runs `command` in the background, one run at a time."""

    def __init__(self, command: str, cwd: Path, log_path: Path):
        self.command = command.strip()
        self.cwd = Path(cwd)
        self.log_path = Path(log_path)
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._status = RetrainStatus(command=self.command or None)

    def start(
        self, trigger: str, project: str | None, model_version: str | None
    ) -> tuple[bool, str]:
        """Start a run unless one is running; returns (started, what happened)."""
        if not self.command:
            return False, f"no retrain command configured ({ENV_PREFIX}RETRAIN_COMMAND)"
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return False, f"a retrain is already running (pid {self._process.pid})"
            try:
                args = self._arguments(project, model_version)
            except ValueError as err:
                return False, str(err)
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                output = self.log_path.open("ab")
                output.write(f"\n=== {time.ctime()}: {trigger}: {shlex.join(args)}\n".encode())
                output.flush()
            except OSError as err:
                detail = f"cannot write the retrain log {self.log_path}: {err}"
                return self._not_started(args, trigger, detail)
            try:
                process = subprocess.Popen(
                    args,
                    cwd=self.cwd,
                    env=_child_environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C on the server does not kill a round
                )
            except OSError as err:
                output.close()
                detail = f"could not start {args[0]!r} in {self.cwd}: {err}"
                return self._not_started(args, trigger, detail)
            self._process = process
            self._status = RetrainStatus(
                state="running",
                command=shlex.join(args),
                trigger=trigger,
                pid=process.pid,
                started_at=time.time(),
                log=str(self.log_path),
            )
        log.info("retrain started (%s): pid %d, output in %s", trigger, process.pid, self.log_path)
        threading.Thread(
            target=self._wait, args=(process, output), name="retrain-wait", daemon=True
        ).start()
        return True, f"retrain started (pid {process.pid}), output in {self.log_path}"

    def status(self) -> RetrainStatus:
        with self._lock:
            return self._status.model_copy()

    def stop(self, timeout: float = 10.0) -> None:
        """At shutdown: end a running retrain and the processes it started (a round can be
        run again) rather than orphan them."""
        with self._lock:
            process = self._process
        if process is None or process.poll() is not None:
            return
        log.warning("server stopping: terminating the running retrain (pid %d)", process.pid)
        stop_group(process, grace=timeout)  # its session: dvc and the stages too

    def _not_started(self, args: list[str], trigger: str, detail: str) -> tuple[bool, str]:
        """A run that could not start is a failed one, saying why (called under the lock)."""
        self._status = RetrainStatus(
            state="failed", command=shlex.join(args), trigger=trigger, detail=detail
        )
        log.error("retrain: %s", detail)
        return False, detail

    def _arguments(self, project: str | None, model_version: str | None) -> list[str]:
        args = shlex.split(self.command)
        if any("{next_round}" in arg for arg in args):
            round_number = next_round(model_version)
            if round_number is None:
                raise ValueError(
                    f"cannot fill {{next_round}}: the loaded model's version {model_version!r} "
                    "is not a round tag like 'round-3'"
                )
            args = [arg.replace("{next_round}", str(round_number)) for arg in args]
        return [arg.replace("{project}", project or "") for arg in args]

    def _wait(self, process: subprocess.Popen, output) -> None:
        code = process.wait()
        output.close()
        with self._lock:
            if self._process is process:
                self._status.state = "succeeded" if code == 0 else "failed"
                self._status.exit_code = code
                self._status.finished_at = time.time()
        if code == 0:
            log.info("retrain (pid %d) finished", process.pid)
        else:
            log.error(
                "retrain (pid %d) failed with exit code %d: see %s",
                process.pid,
                code,
                self.log_path,
            )


def _child_environment() -> dict[str, str]:
    """The server's environment without its own auth settings; `python` is this interpreter."""
    return python_environment(
        {k: v for k, v in os.environ.items() if not k.startswith(f"{ENV_PREFIX}BASIC_AUTH")}
    )
