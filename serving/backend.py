"""What the routes do, without HTTP: read the labeling config, predict tasks in batches,
count annotation events, report the state."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from activelearn.data.images import UnreadableImage, preprocess
from activelearn.learner.classifier import Classifier
from serving.images import ImageError, ImageSource
from serving.label_config import ChoiceTarget, choice_target
from serving.model_store import ModelStore
from serving.retrain import ANNOTATION_ACTIONS, AnnotationCounter, Retrainer
from serving.schemas import (
    ChoiceResult,
    ChoicesValue,
    ModelStatus,
    Prediction,
    StatusResponse,
    Task,
    WebhookRequest,
    WebhookResponse,
)
from serving.settings import ServingSettings

log = logging.getLogger(__name__)


class Backend:
    """The model, the image source, the counters and the retrainer of one running app."""

    def __init__(self, settings: ServingSettings):
        self.settings = settings
        self.models = ModelStore(settings.model_path, settings.model_check_seconds)
        self.http = httpx.Client(timeout=settings.fetch_timeout, follow_redirects=False)
        self.images = ImageSource(settings, self.http)
        self.decoders = ThreadPoolExecutor(settings.image_workers, thread_name_prefix="decode")
        self.counter = AnnotationCounter(settings.annotation_counts)
        self.retrainer = Retrainer(
            settings.retrain_command, settings.retrain_cwd, settings.retrain_log
        )
        self._warned_configs: set[tuple[ChoiceTarget, str]] = set()

    def close(self) -> None:
        self.models.close()
        self.retrainer.stop()
        self.decoders.shutdown(wait=True, cancel_futures=True)
        self.http.close()

    # /predict

    def predict(
        self, tasks: list[Task], label_config: str | None, classifier: Classifier
    ) -> list[Prediction]:
        """One prediction per task, in order: images decoded in parallel, inferred in batches."""
        target = self.check_labels(label_config, classifier)
        version = classifier.version
        predictions: list[Prediction] = []
        size = self.settings.batch_size
        for start in range(0, len(tasks), size):
            chunk = tasks[start : start + size]
            decoded = list(
                self.decoders.map(lambda task: self._decode(task, target, classifier), chunk)
            )
            arrays = [item for item in decoded if isinstance(item, np.ndarray)]
            probas = iter(self.models.predict_proba(classifier, np.stack(arrays)) if arrays else [])
            for task, item in zip(chunk, decoded, strict=True):
                if isinstance(item, str):
                    predictions.append(Prediction(result=[], model_version=version, error=item))
                    continue
                p = next(probas)
                best = int(np.argmax(p))
                if not np.isfinite(p[best]):
                    message = f"task {task.id}: model {version} gave {p[best]} as top probability"
                    predictions.append(Prediction(result=[], model_version=version, error=message))
                    continue
                choice = ChoiceResult(
                    from_name=target.from_name,
                    to_name=target.to_name,
                    value=ChoicesValue(choices=[classifier.class_names[best]]),
                )
                predictions.append(
                    Prediction(result=[choice], score=float(p[best]), model_version=version)
                )
        return predictions

    def _decode(self, task: Task, target: ChoiceTarget, classifier: Classifier) -> np.ndarray | str:
        """The model input for a task, or a message naming the task and what is wrong."""
        url = task.data.get(target.image_key)
        try:
            if url is None:
                fields = ", ".join(sorted(task.data)) or "none"
                raise ImageError(
                    f"no {target.image_key!r} field in the task data (fields: {fields}); "
                    "the labeling config's <Image value=...> names it"
                )
            return preprocess(self.images.read(url), classifier.prep)
        except (ImageError, UnreadableImage) as err:
            message = f"task {task.id}: {err}"
            log.warning("predict: %s", message)
        except Exception as err:  # e.g. a Pillow decoder bug: this task fails, not the request
            message = f"task {task.id}: cannot read the image ({type(err).__name__}: {err})"
            log.exception("predict: %s", message)
        return message

    def check_labels(self, label_config: str | None, classifier: Classifier) -> ChoiceTarget:
        """The control, object and task field the labeling config gives predictions; warns
        once per config and model when the model predicts labels the config lacks."""
        target = choice_target(label_config)
        key = (target, classifier.version)
        if not target.choices or key in self._warned_configs:
            return target
        self._warned_configs.add(key)
        missing = sorted(set(classifier.class_names) - set(target.choices))
        if missing:
            log.warning(
                "model %s predicts %s, which the labeling config's <Choices name=%r> does "
                "not offer: Label Studio may show or reject those predictions",
                classifier.version,
                missing,
                target.from_name,
            )
        return target

    # /webhook

    def webhook(self, event: WebhookRequest) -> WebhookResponse:
        action = event.action.upper()
        project = event.project_id()
        counted, started = False, False

        def version() -> str | None:  # the file's: a retrain just finished may have written one
            classifier = self.models.current(wait=True)
            return classifier.version if classifier else None

        ids = event.annotation_ids()
        if action in ANNOTATION_ACTIONS and not ids:
            detail = f"{action} without annotation ids ignored: turn on the webhook's Send payload"
        elif action in ANNOTATION_ACTIONS:
            new, counts = self.counter.record(project or "unknown", action, ids)
            counted = new > 0  # not when another webhook already delivered it
            threshold = self.settings.retrain_threshold
            if threshold and counts.pending >= threshold:
                started, detail = self.retrainer.start(
                    f"{counts.pending} new annotations in project {project}", project, version()
                )
                if started:
                    self.counter.reset_pending(project or "unknown")
            elif threshold:
                detail = f"{counts.pending} of {threshold} new annotations toward a retrain"
            else:
                detail = "counted (automatic retraining is off: retrain_threshold=0)"
        elif action == "START_TRAINING":
            started, detail = self.retrainer.start(
                f"START_TRAINING for project {project}", project, version()
            )
            if started:
                self.counter.reset_pending(project)
        else:
            detail = f"action {event.action!r} ignored"
        return WebhookResponse(
            action=action, project=project, counted=counted, retrain_started=started, detail=detail
        )

    # /status

    def status(self) -> StatusResponse:
        classifier = self.models.current()
        return StatusResponse(
            model=ModelStatus(
                path=str(self.models.path),
                state=self.models.state,
                version=classifier.version if classifier else None,
                class_names=classifier.class_names if classifier else [],
                loaded_at=self.models.loaded_at,
                error=self.models.error,
            ),
            retrain=self.retrainer.status(),
            retrain_threshold=self.settings.retrain_threshold,
            projects=self.counter.snapshot(),
        )
