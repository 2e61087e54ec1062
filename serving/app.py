"""The Label Studio ML backend: FastAPI routes over the served BentoML model.

    uvicorn serving.app:app --host 127.0.0.1 --port 9090     (or: python -m serving)

Settings come from `ACTIVELEARN_SERVING_*` environment variables (see `serving.settings`).
The model loads in the background from the lifespan on, never at import, and /health
never waits for it; routes are plain functions, so FastAPI runs them in its thread pool
and a slow request does not block the others.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from activelearn.learner.classifier import Classifier
from serving.backend import Backend
from serving.label_config import choice_target
from serving.schemas import (
    HealthResponse,
    PredictRequest,
    PredictResponse,
    SetupRequest,
    SetupResponse,
    StatusResponse,
    VersionsResponse,
    WebhookRequest,
    WebhookResponse,
)
from serving.settings import ServingSettings, settings_from_environment

log = logging.getLogger(__name__)

_basic = HTTPBasic(auto_error=False, realm="activelearn")


async def require_auth(
    request: Request, credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> None:
    """401 unless basic auth is off or the request carries the configured user and password."""
    settings: ServingSettings = request.app.state.settings
    if not settings.auth_enabled:
        return
    if credentials is not None:
        user_ok = secrets.compare_digest(
            credentials.username.encode(), settings.basic_auth_user.encode()
        )
        password_ok = secrets.compare_digest(
            credentials.password.encode(), settings.basic_auth_password.get_secret_value().encode()
        )
        if user_ok and password_ok:
            return
    raise HTTPException(
        status_code=401,
        detail="basic auth required: wrong or missing user/password (set them on the ML backend "
        "connection in Label Studio)",
        headers={"WWW-Authenticate": 'Basic realm="activelearn"'},
    )


class RequestSizeLimit:
    """413 for request bodies over `max_bytes`, declared or streamed, before any parsing."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        detail = (
            f'{{"detail":"request body over {self.max_bytes} bytes: send fewer tasks per '
            f'request or raise ACTIVELEARN_SERVING_MAX_REQUEST_BYTES"}}'
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(detail)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": detail})


async def backend_of(request: Request) -> Backend:
    return request.app.state.backend


BackendDep = Annotated[Backend, Depends(backend_of)]


def loaded_model(backend: Backend) -> Classifier:
    """The current model, after a load that is due; or 503 naming the missing or broken file."""
    classifier = backend.models.current(wait=True)
    if classifier is None:
        raise HTTPException(status_code=503, detail=f"no model loaded: {backend.models.error}")
    return classifier


def log_to_console() -> None:
    """Under `uvicorn serving.app:app` nothing configures logging: show ours at INFO."""
    ours = logging.getLogger("serving")
    if not logging.getLogger().handlers and not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)


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


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The app; settings from the environment unless given (tests give them)."""
    settings = settings or settings_from_environment()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log_to_console()
        log.info("starting: %s", describe(settings))
        backend = Backend(settings)  # starts loading the model in the background
        if backend.models.state == "missing":
            log.warning("starting without a model: %s", backend.models.error)
        app.state.backend = backend
        try:
            yield
        finally:
            backend.close()

    docs = {} if not settings.auth_enabled else {"docs_url": None, "redoc_url": None}
    app = FastAPI(
        title="activelearn ML backend",
        summary="Label Studio ML backend serving the activelearn classifier",
        lifespan=lifespan,
        dependencies=[Depends(require_auth)],
        openapi_url=None if settings.auth_enabled else "/openapi.json",
        **docs,
    )
    app.state.settings = settings
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes)

    @app.get("/health", response_model=HealthResponse)
    @app.get("/", response_model=HealthResponse, include_in_schema=False)
    async def health(backend: BackendDep) -> HealthResponse:
        """Label Studio's liveness check (1 s timeout): UP while the server runs, with or
        without a model; answers at once, even while a model loads. On the event loop, with
        its dependencies: requests waiting for a load hold every worker thread."""
        classifier = backend.models.current()
        return HealthResponse(
            model_version=classifier.version if classifier else None,
            model_state=backend.models.state,
            model_error=backend.models.error,
            retrain=backend.retrainer.status().state,
        )

    @app.post("/setup", response_model=SetupResponse)
    def setup(body: SetupRequest, backend: BackendDep) -> SetupResponse:
        """Label Studio connects a project: answer with the model version it will store."""
        classifier = loaded_model(backend)
        backend.check_labels(choice_target(body.schema_), classifier)
        return SetupResponse(model_version=classifier.version)

    @app.get("/versions", response_model=VersionsResponse)
    async def versions(backend: BackendDep) -> VersionsResponse:
        """The versions Label Studio may pick from: the one being served."""
        classifier = backend.models.current()
        return VersionsResponse(versions=[classifier.version] if classifier else [])

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
    def predict(body: PredictRequest, backend: BackendDep) -> PredictResponse:
        """One prediction per task, in request order; a task whose image fails gets an
        empty result with `error`, the others are still predicted."""
        classifier = loaded_model(backend)
        target = choice_target(body.label_config)
        results = backend.predict(body.tasks, target, classifier)
        return PredictResponse(results=results, model_version=classifier.version)

    @app.post("/webhook", response_model=WebhookResponse)
    def webhook(body: WebhookRequest, backend: BackendDep) -> WebhookResponse:
        """Annotation events are counted per project; a threshold or START_TRAINING starts
        the retrain command in the background."""
        return backend.webhook(body)

    @app.get("/status", response_model=StatusResponse)
    def status(backend: BackendDep) -> StatusResponse:
        """The model, the retrain run and the annotation counts per project."""
        return backend.status()

    return app


app = create_app()
