"""POST /predict: the model's choice and confidence for each task Label Studio sends."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import BackendDep, loaded_model
from serving.schemas import PredictRequest, PredictResponse

router = APIRouter(tags=["predict"])


@router.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
def predict(body: PredictRequest, backend: BackendDep) -> PredictResponse:
    """One prediction per task, in request order; a task whose image fails gets an
    empty result with `error`, the others are still predicted."""
    classifier = loaded_model(backend)
    results = backend.predict(body.tasks, body.label_config, classifier)
    return PredictResponse(results=results, model_version=classifier.version)
