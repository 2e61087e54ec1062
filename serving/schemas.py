"""Request and response bodies of Label Studio's ML backend contract, field for field.

Label Studio sends more than we read (task annotations, meta, project settings):
requests keep unknown fields instead of rejecting them, so a newer Label Studio does not
break the backend. Secrets in requests are `SecretStr` and never echoed or logged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


# GET /health


ModelState = Literal["loaded", "loading", "failed", "missing"]
MODEL_STATE = (
    "loaded | loading (a new file, the previous model still served) | failed (the file "
    "would not load, see the error) | missing (no file, no model)"
)


class HealthResponse(BaseModel):
    status: Literal["UP"] = "UP"
    model_version: str | None = Field(None, description="the loaded model's round tag")
    model_state: ModelState = Field(description=MODEL_STATE)
    model_error: str | None = Field(None, description="why the model file is not served")
    retrain: str = Field("idle", description="idle | running | succeeded | failed")


# POST /setup


class SetupRequest(_Lenient):
    project: str | int | None = Field(None, description='"<project id>.<created timestamp>"')
    schema_: str | None = Field(None, alias="schema", description="the labeling config XML")
    hostname: str | None = None  # Label Studio's URL as it sees itself (not used)
    access_token: SecretStr | None = None  # not used: the token comes from the environment
    model_version: str | None = None
    extra_params: dict[str, Any] | None = None


class SetupResponse(BaseModel):
    model_version: str


# GET /versions (Label Studio's model version dropdown)


class VersionsResponse(BaseModel):
    versions: list[str]


# POST /predict


class Task(_Lenient):
    id: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class PredictParams(_Lenient):
    login: str | None = None
    password: SecretStr | None = None
    context: Any = None


class PredictRequest(_Lenient):
    tasks: list[Task]
    model_version: str | None = None
    project: str | int | None = None
    label_config: str | None = None
    params: PredictParams | None = None


class ChoicesValue(BaseModel):
    choices: list[str]


class ChoiceResult(BaseModel):
    from_name: str
    to_name: str
    type: Literal["choices"] = "choices"
    value: ChoicesValue


class Prediction(BaseModel):
    """One task's answer; `error` (ours, ignored by Label Studio) says why `result` is empty."""

    result: list[ChoiceResult]
    score: float | None = Field(None, description="the model's confidence in its choice")
    model_version: str
    error: str | None = None


class PredictResponse(BaseModel):
    results: list[Prediction] = Field(description="one per task, in the order of the request")
    model_version: str


# POST /webhook


class WebhookRequest(_Lenient):
    """Label Studio's event: bulk ones carry lists (ANNOTATIONS_CREATED in `annotation` and
    `task`, ANNOTATIONS_DELETED in `annotations`, ids only)."""

    action: str
    project: dict[str, Any] | int | str | None = None
    annotation: dict[str, Any] | list[dict[str, Any]] | None = None
    annotations: list[dict[str, Any]] | None = None
    task: dict[str, Any] | list[dict[str, Any]] | None = None

    def project_id(self) -> str | None:
        """Label Studio sends the project as an object, an id, or '<id>.<timestamp>'."""
        project = self.project
        if isinstance(project, dict):
            project = project.get("id")
        if project is None:
            return None
        return str(project).split(".")[0]

    def annotation_ids(self) -> list:
        """The ids of the annotations the event is about; none when sent without payload."""
        annotations = self.annotation if self.annotations is None else self.annotations
        if isinstance(annotations, dict):
            annotations = [annotations]
        return [annotation["id"] for annotation in annotations or [] if "id" in annotation]


class WebhookResponse(BaseModel):
    action: str
    project: str | None
    counted: bool = Field(
        description="an annotation event with an annotation not counted yet, now counted"
    )
    retrain_started: bool
    detail: str


# GET /status


class ProjectCounts(BaseModel):
    """Annotations, each counted once however many webhooks deliver its events."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    pending: int = Field(0, description="created since the last retrain started, not deleted")


class RetrainStatus(BaseModel):
    state: Literal["idle", "running", "succeeded", "failed"] = "idle"
    command: str | None = None
    trigger: str | None = None
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    log: str | None = None
    detail: str | None = None


class ModelStatus(BaseModel):
    path: str
    state: ModelState = Field(description=MODEL_STATE)
    version: str | None
    class_names: list[str]
    loaded_at: float | None
    error: str | None = Field(None, description="why the current file could not be loaded")


class StatusResponse(BaseModel):
    model: ModelStatus
    retrain: RetrainStatus
    retrain_threshold: int
    projects: dict[str, ProjectCounts]
