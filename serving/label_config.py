"""Which control, object and task field a prediction belongs to, read from the labeling
config a request carries (by `activelearn.labeling.labelstudio.label_config`, the module
that also builds the campaign's config); our own names where the config is silent."""

from __future__ import annotations

import logging
from functools import lru_cache

from activelearn.errors import LabelStudioError
from activelearn.labeling.labelstudio.label_config import (
    IMAGE_FIELD,
    LABEL_FIELD,
    ChoiceTarget,
    choice_targets,
)

__all__ = ["DEFAULT_TARGET", "ChoiceTarget", "choice_target"]

log = logging.getLogger(__name__)

# Used when the request carries no labeling config, or it has no <Choices>.
DEFAULT_TARGET = ChoiceTarget(LABEL_FIELD, IMAGE_FIELD, IMAGE_FIELD, ())


@lru_cache(maxsize=64)
def choice_target(label_config: str | None) -> ChoiceTarget:
    """The first <Choices> control and the image it labels; defaults where the config is silent.

    Cached: Label Studio sends the same config with every request.
    """
    if not label_config or not label_config.strip():
        return DEFAULT_TARGET
    try:
        targets = choice_targets(label_config)
    except LabelStudioError as err:
        log.warning("%s: using the default names", err)
        return DEFAULT_TARGET
    if not targets:
        log.warning("labeling config has no <Choices>: using the default names")
        return DEFAULT_TARGET
    return targets[0]
