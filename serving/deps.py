"""What the routes depend on, in one place: the settings, the backend, the basic-auth check.

The dependencies are async, so FastAPI runs them on the event loop: /health answers even
while every worker thread holds a request waiting for a model load.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from activelearn.learner.classifier import Classifier
from serving.backend import Backend
from serving.settings import ServingSettings


async def get_settings(request: Request) -> ServingSettings:
    return request.app.state.settings


SettingsDep = Annotated[ServingSettings, Depends(get_settings)]


async def get_backend(request: Request) -> Backend:
    """The running app's backend, made by the lifespan."""
    return request.app.state.backend


BackendDep = Annotated[Backend, Depends(get_backend)]

_basic = HTTPBasic(auto_error=False, realm="activelearn")


async def require_auth(
    settings: SettingsDep,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> None:
    """401 unless basic auth is off or the request carries the configured user and password."""
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


def loaded_model(backend: Backend) -> Classifier:
    """The current model, after a load that is due; or 503 naming the missing or broken file.

    Called by the routes, not declared as a dependency: dependencies run before the body
    is validated, and a malformed request must get its 422 without waiting for a load."""
    classifier = backend.models.current(wait=True)
    if classifier is None:
        raise HTTPException(status_code=503, detail=f"no model loaded: {backend.models.error}")
    return classifier
