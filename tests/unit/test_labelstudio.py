"""The Label Studio client without a server: votes and decisions, the state file, the
labeling config, and retries against a failing stand-in HTTP server. The round trip
against a real server is in tests/integration/test_labelstudio.py."""

from __future__ import annotations

import json
import socket

import pytest

from activelearn.config import LabelingConfig
from activelearn.errors import (
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioUnreachable,
    ServerStartError,
)
from activelearn.labeling.answers import (
    DISAGREEMENT,
    EXCLUDED,
    OPEN,
    OTHER,
    REQUEUED,
    SKIPPED,
    UNKNOWN_LABEL,
)
from activelearn.labeling.labelstudio import (
    TOKEN_ENV,
    LabelStudioAnnotator,
    free_port,
    label_config,
    start_server,
)
from activelearn.labeling.labelstudio.annotator import keep_export
from activelearn.labeling.labelstudio.label_config import (
    ChoiceTarget,
    choice_targets,
    choices_of,
    our_fields,
)
from activelearn.labeling.labelstudio.state import CampaignState
from activelearn.labeling.labelstudio.tasks import agreement, decide
from activelearn.workspace.queue import QueueItem
from tests.helpers import CLASSES, choice

pytest_plugins = ["tests.labelstudio_server"]


# The state file as the client wrote it before it became a dataclass (keys sorted, no
# unset field): it must read and write back byte for byte.
STATE_FILE = {
    "classes": ["class0", "class1"],
    "project_claim": "0123456789abcdef0123456789abcdef",
    "project_id": 12,
    "project_title": "activelearn",
    "rounds": {
        "1": {"tasks": {"class0/a.png": 101, "class1/b.png": 102}, "view_id": 7},
        "10": {"tasks": {}, "view_id": 9},
        "2": {"tasks": {"class0/a.png": 140}, "view_id": 8},
    },
    "storage_id": 3,
    "storage_path": "/data/pool",
    "url": "http://127.0.0.1:8080",
}


def test_a_state_file_of_another_server_is_refused(tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"project_id": 3, "url": "http://10.0.0.7:8080"}))
    settings = LabelingConfig(url="http://127.0.0.1:1", state_file=str(state))
    annotator = LabelStudioAnnotator(settings, CLASSES, tmp_path / "pool", token="t" * 40)
    with pytest.raises(LabelStudioError, match="project 3 at http://10.0.0.7:8080, not at"):
        annotator.push(1, [])
    queue = [QueueItem("class0/a.png", 1, None, None, 0.5)]
    with pytest.raises(LabelStudioError, match="project 3 at http://10.0.0.7:8080, not at"):
        annotator.collect(1, queue, tmp_path / "rounds" / "2")  # before any answer is read
    assert not (tmp_path / "rounds").exists()


def test_server_down_says_where_and_how_to_start_it(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    settings = LabelingConfig(url=url, state_file=str(tmp_path / "state.json"))
    annotator = LabelStudioAnnotator(settings, CLASSES, tmp_path / "pool", token="t" * 40)
    with pytest.raises(LabelStudioUnreachable) as caught:
        annotator.push(1, [])
    message = str(caught.value)
    assert url in message and "python -m activelearn.labeling.labelstudio serve" in message
    assert "t" * 40 not in message


def test_missing_token_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(LabelStudioAuthError, match=TOKEN_ENV):
        LabelStudioAnnotator(LabelingConfig(), CLASSES, tmp_path / "pool")


def test_start_refuses_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"port {port}"):
            start_server(
                port,
                tmp_path / "ls",
                tmp_path / "pool",
                username="a@b.c",
                password="p" * 8,
                token="t" * 40,
            )


def test_votes_follow_the_policy():
    def task(*labels):
        anns = [
            {"was_cancelled": label is None, "result": [] if label is None else choice(label)}
            for label in labels
        ]
        return {"id": 7, "annotations": anns}

    assert decide(task("class0", "class0", "class1"), "s", CLASSES).answer.label == "class0"
    assert (
        decide(task("class0", "class0", "class1"), "s", CLASSES, vote="unanimous").answer.status
        == DISAGREEMENT
    )
    assert decide(task("class0", "class1"), "s", CLASSES).answer.status == REQUEUED
    assert decide(task("class0", None), "s", CLASSES).answer.label == "class0"
    assert decide(task(None), "s", CLASSES).answer.status == SKIPPED
    assert decide(task(None), "s", CLASSES, skipped="exclude").answer.status == EXCLUDED
    assert decide(task("class0"), "s", CLASSES, annotations_per_task=2).answer.status == OPEN
    assert decide(task(), "s", CLASSES).answer.status == OPEN
    starred = task("class0", "class0")
    starred["annotations"].append({"ground_truth": True, "result": choice("class1")})
    for policy in ("majority", "unanimous"):  # the ground truth beats any number of votes
        assert decide(starred, "s", CLASSES, vote=policy).answer.label == "class1"
    starred["annotations"][:2] = []  # and needs no other answer
    assert decide(starred, "s", CLASSES, annotations_per_task=3).answer.label == "class1"
    starred["annotations"].append({"ground_truth": True, "result": choice("class2")})
    assert decide(starred, "s", CLASSES).answer.status == DISAGREEMENT  # two that disagree
    starred["annotations"] = [{"ground_truth": True, "result": choice("zebra")}]
    assert decide(starred, "s", CLASSES).answer.status == UNKNOWN_LABEL
    assert agreement([["a", "a"], ["a", "b", "b"], ["a"]]) == {
        "tasks_with_several_annotations": 2,
        "pairwise": 0.5,
        "unanimous_share": 0.5,
    }


def test_label_config_escapes_class_names():
    config = label_config(['cat "big"', "a&b"])
    assert "value='cat \"big\"'" in config and 'value="a&amp;b"' in config


def test_the_labeling_config_built_is_read_back():
    names = ['cat "big"', "a&b", "class2"]
    ours = label_config(names)
    assert choice_targets(ours) == [ChoiceTarget("label", "image", "image", tuple(names))]
    assert choices_of(ours) == names
    # A field added in the UI next to ours (even before it) is not ours.
    quality = '<Choices name="quality" toName="image"><Choice value="ok"/></Choices>'
    added = ours.replace("<View>", f"<View>{quality}")
    assert [t.from_name for t in choice_targets(added)] == ["quality", "label"]
    assert choices_of(added) == names and our_fields(added) == our_fields(ours)
    assert our_fields(ours.replace('"a&amp;b"', '"kitty"')) != our_fields(ours)
    assert our_fields(ours.replace(' required="true"', "")) != our_fields(ours)
    aliased = "<View><Image name='x' value='$pic'/><Choices name='c' toName='x, y'>"
    aliased += "<Choice value='Long name' alias='a'/><Choice value='b'/></Choices></View>"
    assert choice_targets(aliased) == [ChoiceTarget("c", "x", "pic", ("a", "b"))]
    with pytest.raises(LabelStudioError, match="not valid XML"):
        choice_targets("<View><Choices")


def test_the_state_file_reads_and_writes_as_before(tmp_path):
    path = tmp_path / "rounds" / "labelstudio.json"
    assert CampaignState.load(path) == CampaignState()  # no file yet
    written = (json.dumps(STATE_FILE, indent=2, sort_keys=True) + "\n").encode()
    path.parent.mkdir()
    path.write_bytes(written)
    state = CampaignState.load(path)
    assert (state.project_id, state.url, state.rounds[1].tasks["class1/b.png"]) == (
        12,
        "http://127.0.0.1:8080",
        102,
    )
    assert state.pushed_tasks(1) == {"class0/a.png": (1, 101), "class1/b.png": (1, 102)}
    assert state.pushed_tasks(3) == {"class0/a.png": (2, 140), "class1/b.png": (1, 102)}
    state.save(path)
    assert path.read_bytes() == written
    CampaignState(project_claim="c").save(path)  # what a run killed before its create left
    assert json.loads(path.read_text()) == {"project_claim": "c"}
    for broken in ("{", '{"project_id": 1, "token": "x"}', '{"rounds": {"one": {}}}'):
        path.write_text(broken)
        with pytest.raises(LabelStudioError, match=f"{path} is not a Label Studio state file"):
            CampaignState.load(path)


def test_a_raw_export_is_never_overwritten(tmp_path):
    first = keep_export(tmp_path, b'[{"id": 1}]')
    assert keep_export(tmp_path, b'[{"id": 1}]') == first  # the same export: stored once
    second = keep_export(tmp_path, b'[{"id": 1}, {"id": 2}]')
    assert (first.name, second.name) == ("annotations.raw.json", "annotations.raw.2.json")
    assert first.read_bytes() == b'[{"id": 1}]'  # the earlier one untouched
    assert keep_export(tmp_path, b"[]").name == "annotations.raw.3.json"


def test_other_is_a_choice_and_a_vote_never_a_class():
    other = LabelingConfig().other_label
    config = label_config(CLASSES, other)
    assert f'<Choice value="{other}" hint=' in config  # last, after the classes
    assert choices_of(config) == CLASSES  # neither the project upkeep's class ...
    target = choice_targets(config)[0]
    assert (target.choices, target.other) == (tuple(CLASSES), other)  # ... nor serving's
    assert our_fields(config) != our_fields(label_config(CLASSES))  # a project without it
    answered = {"id": 4, "annotations": [{"result": choice(other)}]}
    outcome = decide(answered, "s", CLASSES, other_label=other).answer
    assert (outcome.status, outcome.label) == (OTHER, None)
    assert f"answered {other!r}" in outcome.detail
    split = {"id": 5, "annotations": [{"result": choice(x)} for x in (other, "class0", other)]}
    assert decide(split, "s", CLASSES, other_label=other).answer.status == OTHER  # 2 of 3
    assert decide(answered, "s", CLASSES).answer.status == UNKNOWN_LABEL  # other_label=""
