"""GET /health (and /): Label Studio's liveness check; GET /status: the model, the
retrain run and the annotation counts."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import BackendDep
from serving.schemas import HealthResponse, StatusResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
@router.get("/", response_model=HealthResponse, include_in_schema=False)
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


@router.get("/status", response_model=StatusResponse)
def status(backend: BackendDep) -> StatusResponse:
    """The model, the retrain run and the annotation counts per project."""
    return backend.status()
