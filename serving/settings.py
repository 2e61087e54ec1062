"""The serving app's settings, from the environment only (prefix `ACTIVELEARN_SERVING_`).

Secrets (the Label Studio token, the basic-auth password) are `SecretStr`: they print as
`**********` in logs, reprs and error messages, and a refused value is not echoed either.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Annotated

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from activelearn.config import Config, DataConfig
from activelearn.workspace.layout import MODEL_FILE, SERVING_ANNOTATIONS, SERVING_RETRAIN_LOG

ENV_PREFIX = "ACTIVELEARN_SERVING_"


class ServingSettings(BaseSettings):
    """Every knob of the Label Studio ML backend. Relative paths are against `workspace`,
    except `workspace` and `retrain_cwd`, which are against the working directory."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", populate_by_name=True, hide_input_in_errors=True
    )

    # Where `python -m serving` binds; `uvicorn serving.app:app` takes its own flags.
    host: str = "127.0.0.1"
    port: int = 9090

    # The campaign's folder (Hydra's `workspace`). `model_path`, `pool_dir`,
    # `document_root`, `retrain_log` and `annotation_counts` are relative to it unless
    # absolute; their defaults are the workspace layout's (and Hydra's `data.pool_dir`).
    workspace: Path = Path(Config.workspace)

    # The model: loaded in the background at start-up and when the file changes, which a
    # `stat` every `model_check_seconds` (and on each request) notices.
    model_path: Path = MODEL_FILE
    model_check_seconds: float = Field(2.0, gt=0)
    batch_size: int = Field(64, ge=1)  # images per forward pass
    image_workers: int = Field(4, ge=1)  # threads reading and decoding a request's images

    # Images. `/data/local-files/?d=<path>` is read from disk: <path> is relative to
    # `document_root` (Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; default: the
    # pool's parent, as `labeling.document_root`) and must resolve inside `pool_dir`. Any
    # other Label Studio path (uploads) is fetched from `label_studio_url` with the token.
    # Other hosts only when listed in `allowed_hosts`.
    pool_dir: Path = Path(DataConfig.pool_dir)
    document_root: Path | None = None
    label_studio_url: str | None = "http://127.0.0.1:8080"
    label_studio_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(f"{ENV_PREFIX}LABEL_STUDIO_TOKEN", "LABEL_STUDIO_API_KEY"),
    )
    allowed_hosts: Annotated[list[str], NoDecode] = []  # comma-separated host[:port] list
    fetch_timeout: float = Field(10.0, gt=0)  # seconds per image download
    max_image_bytes: int = Field(20 * 2**20, ge=1)

    # Security: basic auth is on when both are set; bodies above the limit get 413.
    basic_auth_user: str | None = None
    basic_auth_password: SecretStr | None = None
    max_request_bytes: int = Field(16 * 2**20, ge=1)

    # Retraining. `retrain_command` is one command line (no shell), with `{next_round}`
    # (the loaded model's round + 1) and `{project}` replaced. Empty: webhooks only count.
    # It starts on START_TRAINING, or when a project's new annotations (created since
    # the last start, and not deleted) reach `retrain_threshold` (0: never automatically).
    # It runs in `retrain_cwd` (default: the server's working directory).
    retrain_command: str = ""
    retrain_threshold: int = Field(0, ge=0)
    retrain_cwd: Path = Path(".")
    retrain_log: Path = SERVING_RETRAIN_LOG
    # The annotations counted so far, kept across restarts of the server.
    annotation_counts: Path = SERVING_ANNOTATIONS

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_variables(cls, values: object) -> object:
        """A misspelled variable would otherwise be ignored and its default used silently."""
        for variable in sorted(os.environ):
            name = variable[len(ENV_PREFIX) :].lower()
            if variable.startswith(ENV_PREFIX) and name not in cls.model_fields:
                close = difflib.get_close_matches(name, cls.model_fields, n=1)
                hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}?" if close else ""
                raise ValueError(f"{variable} is not a serving setting{hint}")
        return values

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip().lower() for host in value.split(",") if host.strip()]
        return value

    @field_validator("label_studio_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"label_studio_url={value!r}: must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("label_studio_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        """A stray newline or space (an env file with CRLF) would break the Authorization
        header, and an HTTP header cannot carry other control or non-ASCII characters."""
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not (token.isascii() and token.isprintable()):
            raise ValueError(
                f"LABEL_STUDIO_API_KEY (or {ENV_PREFIX}LABEL_STUDIO_TOKEN) has control or "
                "non-ASCII characters: copy the token again from Label Studio"
            )
        return SecretStr(token) if token else None

    @model_validator(mode="after")
    def _auth_needs_both(self) -> ServingSettings:
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            raise ValueError(
                f"set both {ENV_PREFIX}BASIC_AUTH_USER and {ENV_PREFIX}BASIC_AUTH_PASSWORD "
                "to turn basic auth on, or neither"
            )
        return self

    @model_validator(mode="after")
    def _in_the_workspace(self) -> ServingSettings:
        self.model_path = self.workspace / self.model_path
        self.pool_dir = self.workspace / self.pool_dir
        self.retrain_log = self.workspace / self.retrain_log
        self.annotation_counts = self.workspace / self.annotation_counts
        if self.document_root is None:
            self.document_root = self.pool_dir.parent
        else:
            self.document_root = self.workspace / self.document_root
        return self

    @property
    def auth_enabled(self) -> bool:
        return self.basic_auth_user is not None


def describe(settings: ServingSettings) -> str:
    """The settings that matter, for the startup log; secrets only as set / not set."""
    retrain = "off"
    if settings.retrain_command:
        when = f"at {settings.retrain_threshold} new annotations or " * bool(
            settings.retrain_threshold
        )
        retrain = f"{settings.retrain_command!r} {when}on START_TRAINING"
    token = "set" if settings.label_studio_token else "not set"
    return (
        f"model {settings.model_path}; local files under {settings.document_root} "
        f"(pool {settings.pool_dir}); Label Studio {settings.label_studio_url} (token {token}); "
        f"allowed hosts {settings.allowed_hosts or 'none'}; "
        f"basic auth {'on' if settings.auth_enabled else 'off'}; retrain {retrain}"
    )


def settings_from_environment() -> ServingSettings:
    """The settings, or exit naming each bad variable on a line of its own: no traceback,
    under `uvicorn serving.app:app` too (uvicorn passes the exit through)."""
    try:
        return ServingSettings()
    except ValidationError as err:
        sys.exit("\n".join(f"{_variable(e['loc'])}{e['msg']}" for e in err.errors()))


def _variable(location: tuple) -> str:
    """A field's variable; a field with aliases is already located by its variable."""
    if not location:
        return ""
    name = str(location[0]).upper()
    return f"{name if name.startswith(ENV_PREFIX) else ENV_PREFIX + name}: "
