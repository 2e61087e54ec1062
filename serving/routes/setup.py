"""POST /setup: Label Studio connects a project; GET /versions: the versions it may pick."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import BackendDep, loaded_model
from serving.schemas import SetupRequest, SetupResponse, VersionsResponse

router = APIRouter(tags=["setup"])


@router.post("/setup", response_model=SetupResponse)
def setup(body: SetupRequest, backend: BackendDep) -> SetupResponse:
    """Label Studio connects a project: answer with the model version it will store."""
    classifier = loaded_model(backend)
    backend.check_labels(body.schema_, classifier)
    return SetupResponse(model_version=classifier.version)


@router.get("/versions", response_model=VersionsResponse)
async def versions(backend: BackendDep) -> VersionsResponse:
    """The versions Label Studio may pick from: the one being served."""
    classifier = backend.models.current()
    return VersionsResponse(versions=[classifier.version] if classifier else [])
