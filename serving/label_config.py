"""Which control, object and task field a prediction belongs to, read from a labeling config."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from xml.etree import ElementTree

log = logging.getLogger(__name__)

# Used when the request carries no labeling config, or it has no <Choices>.
DEFAULT_FROM_NAME = "label"
DEFAULT_TO_NAME = "image"
DEFAULT_IMAGE_KEY = "image"


@dataclass(frozen=True)
class ChoiceTarget:
    from_name: str  # the <Choices name=...>
    to_name: str  # its toName: the <Image name=...>
    image_key: str  # the task data field the image URL is in: <Image value="$key">
    choices: tuple[str, ...]  # the labels the config offers; empty if unknown


DEFAULT_TARGET = ChoiceTarget(DEFAULT_FROM_NAME, DEFAULT_TO_NAME, DEFAULT_IMAGE_KEY, ())


@lru_cache(maxsize=64)
def choice_target(label_config: str | None) -> ChoiceTarget:
    """The first <Choices> control and the image it labels; defaults where the config is silent.

    Cached: Label Studio sends the same config with every request.
    """
    if not label_config or not label_config.strip():
        return DEFAULT_TARGET
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as err:
        log.warning("labeling config is not valid XML (%s): using the default names", err)
        return DEFAULT_TARGET
    choices = next((el for el in root.iter() if el.tag.lower() == "choices"), None)
    if choices is None:
        log.warning("labeling config has no <Choices>: using the default names")
        return DEFAULT_TARGET
    from_name = choices.get("name", DEFAULT_FROM_NAME)
    to_name = choices.get("toName", DEFAULT_TO_NAME).split(",")[0].strip()
    image_key = DEFAULT_IMAGE_KEY
    for el in root.iter():
        if el.get("name") == to_name and el.get("value", "").startswith("$"):
            image_key = el.get("value")[1:]
            break
    offered = tuple(
        el.get("alias") or el.get("value") or ""
        for el in choices.iter()
        if el.tag.lower() == "choice"
    )
    return ChoiceTarget(from_name, to_name, image_key, offered)
