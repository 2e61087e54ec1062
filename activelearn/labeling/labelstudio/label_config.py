"""The labeling config: built here for a campaign's project, and read here, by the client's
project upkeep and by the serving backend (`serving/label_config.py`).

Reading goes through label-studio-sdk's `LabelInterface`, the parser Label Studio's own
ML backends use. It is imported on the first read (about 0.5 s alone, nothing of
TensorFlow's; the SDK client imports it anyway), so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

from activelearn.errors import LabelStudioError

if TYPE_CHECKING:
    from label_studio_sdk.label_interface import LabelInterface

# The names of our fields in the labeling config: the class is read from LABEL_FIELD only,
# as fields added in the UI (say, an image quality Choices) answer something else.
IMAGE_FIELD = "image"
LABEL_FIELD = "label"
# The hint of the "other" choice (labeling.other_label): what marks it as no class, so
# reading a config never takes it for one, and serving never predicts it.
OTHER_HINT = "None of the classes: the image leaves the pool"


def label_config(class_names: Sequence[str], other_label: str | None = None) -> str:
    """Image + single Choices, one choice per class, in the given order, then
    `other_label` (if any) for an image of none of them; a choice is required, so an
    empty submit cannot pass for an answer."""
    lines = [f"    <Choice value={quoteattr(name)}/>" for name in class_names]
    if other_label:
        lines.append(f"    <Choice value={quoteattr(other_label)} hint={quoteattr(OTHER_HINT)}/>")
    choices = "\n".join(lines)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_FIELD}" value="${IMAGE_FIELD}"/>\n'
        f'  <Choices name="{LABEL_FIELD}" toName="{IMAGE_FIELD}" choice="single"'
        ' showInLine="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


@dataclass(frozen=True)
class ChoiceTarget:
    """A <Choices> control and what it labels: where a prediction's result goes."""

    from_name: str  # the <Choices name=...>
    to_name: str  # its (first) toName: the <Image name=...>
    image_key: str  # the task data field the image URL is in: <Image value="$key">
    choices: tuple[str, ...]  # the classes it offers (a choice's alias, else its value)
    other: str | None = None  # its "other" choice (of no class), never a class to predict


def parse(config: str) -> LabelInterface:
    """The SDK's view of a labeling config; LabelStudioError if it is not XML."""
    from label_studio_sdk._legacy.exceptions import LabelStudioXMLSyntaxErrorSentryIgnored
    from label_studio_sdk.label_interface import LabelInterface

    try:
        return LabelInterface(config)
    except LabelStudioXMLSyntaxErrorSentryIgnored as err:
        raise LabelStudioError(f"the labeling config is not valid XML: {err}") from None


def choice_targets(config: str) -> list[ChoiceTarget]:
    """Every <Choices> control of a labeling config, in order. The image key is the
    `$field` of the object it labels, IMAGE_FIELD when that has none."""
    interface = parse(config)
    objects = {tag.name: tag for tag in interface.objects}
    targets = []
    for control in interface.controls:
        if control.tag.lower() != "choices":
            continue
        to_name = control.to_name[0].strip()
        image = objects.get(to_name)
        image_key = image.value_name if image and image.value_is_variable else IMAGE_FIELD
        other = _other_choice(control)
        classes = tuple(label for label in control.labels if label != other)
        targets.append(ChoiceTarget(control.name, to_name, image_key, classes, other))
    return targets


def _other_choice(control) -> str | None:
    """The choice of a control that `label_config` marked as "other", if any."""
    for label, attrs in (control.labels_attrs or {}).items():
        if (getattr(attrs, "attr", None) or {}).get("hint") == OTHER_HINT:
            return label
    return None


def choices_of(config: str) -> list[str]:
    """The class choices of a labeling config (our Choices'), in order; "other" is none."""
    ours = [t.choices for t in choice_targets(config) if t.from_name == LABEL_FIELD]
    return list(ours[0]) if ours else []


def our_fields(config: str) -> tuple:
    """Our Image and Choices in a labeling config (tags, attributes, choices), to compare
    with another config's. Fields added next to them are not ours."""
    interface = parse(config)
    label = next((c for c in interface.controls if c.name == LABEL_FIELD), None)
    image = next((o for o in interface.objects if o.name == IMAGE_FIELD), None)
    return (
        label and (label.tag, label.attr, [choice.attr for choice in label.labels_attrs.values()]),
        image and (image.tag, image.attr),
    )
