"""The ML backend connected to a real Label Studio (see tests/labelstudio_server.py).

The app runs on uvicorn on a free loopback port with basic auth on; the test registers it
as the project's ML backend through Label Studio's API, asks Label Studio to retrieve
predictions, and reads back what Label Studio stored. Label Studio talks to the backend
over HTTP, as it does in production; the test talks to Label Studio over HTTP too.
"""

from __future__ import annotations

import base64
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from activelearn.config import ModelConfig
from activelearn.data.images import Preprocessing, class_names_of, load_labeled, preprocess
from activelearn.labeling.labelstudio import label_config
from activelearn.learner.classifier import Classifier
from serving.app import create_app
from serving.settings import ServingSettings
from tests.helpers import write_class_folders

pytest_plugins = ["tests.labelstudio_server"]

PREP = Preprocessing((12, 12), 1)
AUTH = ("label-studio", "backend-password-123")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UvicornThread:
    """The app on uvicorn in a thread; `started` once it serves (the model loads meanwhile)."""

    def __init__(self, app, port: int):
        # No logging set-up of uvicorn's: its dictConfig closes every handler, and absl's
        # (TensorFlow's) closes the stream it holds unless that is the stderr of the moment:
        # here pytest's capture file of an earlier test, whose loss ends the test session.
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start the serving app")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class ServedBackend:
    url: str
    pool: Path
    model_path: Path
    classifier: Classifier
    round2: Path


@pytest.fixture(scope="module")
def backend(labelstudio, tmp_path_factory) -> Iterator[ServedBackend]:
    root = tmp_path_factory.mktemp("serving-ls")
    pool = labelstudio.new_pool_dir("serving-pool")
    write_class_folders(pool, per_class=2, seed=5)
    (pool / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(root / "bentoml"))
        cfg = ModelConfig(filters=[8], dense_units=16, dropout=0.1, min_steps=40, min_epochs=2)
        write_class_folders(root / "train", per_class=12, seed=0)
        names = class_names_of(root / "train")
        train = load_labeled(root / "train", names, PREP)
        classifier = Classifier.build(names, PREP, cfg, seed=0, version="round-1")
        classifier.fit(train.x, train.y, cfg, seed=0)
        model_path = root / "model" / "classifier.bentomodel"
        classifier.save(model_path)
        round2 = root / "round2.bentomodel"
        Classifier.build(names, PREP, cfg, seed=1, version="round-2").save(round2)

        settings = ServingSettings(
            model_path=model_path,
            document_root=labelstudio.root,
            pool_dir=pool,
            label_studio_url=labelstudio.url,
            label_studio_token=labelstudio.token,
            basic_auth_user=AUTH[0],
            basic_auth_password=AUTH[1],
            retrain_log=root / "retrain.log",
            annotation_counts=root / "annotations.json",
        )
        with UvicornThread(create_app(settings), free_port()) as server:
            yield ServedBackend(server.url, pool, model_path, classifier, round2)


@pytest.fixture
def ls(labelstudio) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Token {labelstudio.token}"}
    with httpx.Client(base_url=labelstudio.url, headers=headers, timeout=120) as client:
        yield client


def expected_choice(classifier: Classifier, image: Path | bytes) -> tuple[str, float]:
    probas = classifier.predict_proba(preprocess(image, PREP)[None])[0]
    return classifier.class_names[int(probas.argmax())], float(probas.max())


def retrieve_predictions(ls: httpx.Client, project_id: int) -> list[dict]:
    ls.post(
        "/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": project_id},
        json={"selectedItems": {"all": True, "excluded": []}},
    ).raise_for_status()
    params = {"project": project_id, "fields": "all", "page_size": 100}
    tasks = ls.get("/api/tasks", params=params).raise_for_status().json()["tasks"]
    return sorted(tasks, key=lambda task: task["id"])


def connect_model(ls, project_id: int, backend_url: str) -> None:
    """Label Studio's "Connect Model", as a person does it in the project's settings."""
    ml = ls.post(
        "/api/ml",
        json={
            "project": project_id,
            "url": backend_url,
            "title": "activelearn",
            "is_interactive": False,
            "auth_method": "BASIC_AUTH",
            "basic_auth_user": AUTH[0],
            "basic_auth_pass": AUTH[1],
        },
    )
    assert ml.status_code == 201, ml.text


def test_label_studio_retrieves_and_stores_the_backends_predictions(backend, ls):
    project = ls.post(
        "/api/projects",
        json={
            "title": "serving backend",
            "label_config": label_config(["class0", "class1", "class2"]),
        },
    )
    project_id = project.raise_for_status().json()["id"]
    pool_files = sorted(backend.pool.glob("class*/*.png"))
    local = [
        f"/data/local-files/?d={backend.pool.name}/{f.relative_to(backend.pool)}"
        for f in pool_files
    ]
    broken = f"/data/local-files/?d={backend.pool.name}/broken.png"
    tasks = [{"data": {"image": url}} for url in [*local, broken]]
    ls.post(f"/api/projects/{project_id}/import", json=tasks).raise_for_status()
    upload = sorted((backend.pool / "class1").glob("*.png"))[0].read_bytes()
    ls.post(
        f"/api/projects/{project_id}/import",
        files={"file": ("uploaded.png", upload, "image/png")},
    ).raise_for_status()

    connect_model(ls, project_id, backend.url)

    stored = retrieve_predictions(ls, project_id)
    assert len(stored) == len(pool_files) + 2
    by_image = {task["data"]["image"]: task for task in stored}
    for url, file in zip(local, pool_files, strict=True):
        (prediction,) = by_image[url]["predictions"]
        label, confidence = expected_choice(backend.classifier, file)
        assert prediction["model_version"] == "round-1"
        assert prediction["result"] == [
            {
                "from_name": "label",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]
        assert prediction["score"] == pytest.approx(confidence, abs=1e-5)

    # The uploaded image was fetched from Label Studio with the token.
    (uploaded,) = [t for t in stored if t["data"]["image"].startswith("/data/upload/")]
    (prediction,) = uploaded["predictions"]
    label, confidence = expected_choice(backend.classifier, upload)
    assert prediction["result"][0]["value"]["choices"] == [label]
    assert prediction["score"] == pytest.approx(confidence, abs=1e-5)

    # The broken image: an empty prediction, the rest of the batch unharmed.
    (prediction,) = by_image[broken]["predictions"]
    assert prediction["result"] == [] and prediction["score"] is None

    # A new round's model file: served without restart, and Label Studio stores its version.
    tmp = backend.model_path.with_name("incoming.bentomodel")
    shutil.copyfile(backend.round2, tmp)
    tmp.replace(backend.model_path)
    stored = retrieve_predictions(ls, project_id)
    versions = {p["model_version"] for task in stored for p in task["predictions"]}
    assert versions == {"round-1", "round-2"}
    assert all(len(task["predictions"]) == 2 for task in stored)


def test_connect_model_makes_the_webhook_and_each_annotation_counts_once(backend, ls):
    """Connect Model adds a webhook to <backend>/webhook for all actions, without the basic
    auth; a second webhook, as a user may add, delivers every event again."""
    names = backend.classifier.class_names
    project = ls.post(
        "/api/projects", json={"title": "webhooks", "label_config": label_config(names)}
    )
    project_id = project.raise_for_status().json()["id"]
    image = f"/data/local-files/?d={backend.pool.name}/class0/s5-000.png"
    ls.post(
        f"/api/projects/{project_id}/import", json=[{"data": {"image": image}}]
    ).raise_for_status()
    connect_model(ls, project_id, backend.url)
    (made,) = ls.get("/api/webhooks/", params={"project": project_id}).json()
    assert made["url"] == f"{backend.url}/webhook"
    assert made["send_for_all_actions"] and made["send_payload"] and not made["headers"]

    basic = {"Authorization": "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()}
    ls.patch(f"/api/webhooks/{made['id']}/", json={"headers": basic}).raise_for_status()
    ls.post(
        "/api/webhooks/",
        json={
            "project": project_id,
            "url": f"{backend.url}/webhook",
            "send_payload": True,
            "send_for_all_actions": False,
            "actions": ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"],
            "headers": basic,
        },
    ).raise_for_status()
    (task,) = ls.get("/api/tasks", params={"project": project_id}).json()["tasks"]

    def answer(label: str) -> list[dict]:
        value = {"choices": [label]}
        return [{"from_name": "label", "to_name": "image", "type": "choices", "value": value}]

    annotation = ls.post(f"/api/tasks/{task['id']}/annotations/", json={"result": answer(names[0])})
    annotation_id = annotation.raise_for_status().json()["id"]
    ls.patch(
        f"/api/annotations/{annotation_id}/", json={"result": answer(names[1])}
    ).raise_for_status()

    deadline = time.monotonic() + 30
    while True:
        status = httpx.get(f"{backend.url}/status", auth=AUTH).json()
        counts = status["projects"].get(str(project_id))
        if counts and counts["updated"]:
            break
        assert time.monotonic() < deadline, f"no ANNOTATION_UPDATED counted: {status['projects']}"
        time.sleep(0.2)
    assert counts == {"created": 1, "updated": 1, "deleted": 0, "pending": 1}
