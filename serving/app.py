"""The Label Studio ML backend's FastAPI app: the factory, its lifespan and its routers.

    uvicorn serving.app:app --host 127.0.0.1 --port 9090     (or: python -m serving)

Settings come from `ACTIVELEARN_SERVING_*` environment variables (see `serving.settings`).
The model loads in the background from the lifespan on, never at import, and /health
never waits for it; the routes (`serving.routes`) that need the model are plain
functions, so FastAPI runs them in its thread pool and a slow request does not block the
others.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from serving.backend import Backend
from serving.deps import require_auth
from serving.middleware import RequestSizeLimit
from serving.routes import health, predict, setup, webhook
from serving.settings import ServingSettings, describe, settings_from_environment

log = logging.getLogger(__name__)


def log_to_console() -> None:
    """Under `uvicorn serving.app:app` nothing configures logging: show ours at INFO."""
    ours = logging.getLogger("serving")
    if not logging.getLogger().handlers and not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)


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
    for routes in (health, setup, predict, webhook):
        app.include_router(routes.router)
    return app


app = create_app()
