"""POST /webhook: Label Studio's annotation and training events."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import BackendDep
from serving.schemas import WebhookRequest, WebhookResponse

router = APIRouter(tags=["webhook"])


@router.post("/webhook", response_model=WebhookResponse)
def webhook(body: WebhookRequest, backend: BackendDep) -> WebhookResponse:
    """Annotation events are counted per project; a threshold or START_TRAINING starts
    the retrain command in the background."""
    return backend.webhook(body)
