"""The ML backend's contract with FastAPI's TestClient, on a tiny model trained here.

Images come from a generated pool on disk (local-files URLs) and from a small HTTP file
server standing in for Label Studio's upload endpoint and for a foreign host, so the
token handling is checked on real HTTP requests. The real Label Studio is exercised in
tests/integration/test_serving_labelstudio.py.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from activelearn.data.images import Preprocessing, class_names_of, load_labeled, preprocess
from activelearn.labeling.labelstudio import free_port
from activelearn.learner.classifier import Classifier
from activelearn.workspace.layout import round_of_tag, round_tag
from serving.app import create_app
from serving.images import ImageError, ImageSource
from serving.label_config import DEFAULT_TARGET, choice_target
from serving.retrain import _child_environment, next_round
from serving.settings import ServingSettings, describe
from tests.helpers import LABEL_CONFIG, pattern_image, wait_for_model, write_class_folders

PREP = Preprocessing((12, 12), 1)
TOKEN = "secret-token-0123456789"


def local(relative: str) -> str:
    return f"/data/local-files/?d={relative}"


def png_bytes(label: int, seed: int = 7) -> bytes:
    buffer = io.BytesIO()
    pattern_image(label, np.random.default_rng(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


class FileServer:
    """A loopback HTTP server serving `files` by path; records each request's headers."""

    def __init__(self, files: dict[str, bytes], token: str | None = None):
        self.files, self.token, self.requests = files, token, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append((self.path, dict(self.headers)))
                if server.token and self.headers.get("Authorization") != f"Token {server.token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A pool with class folders, a broken file, a file outside the pool, and two models."""
    root = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(root / "bentoml"))
        from activelearn.config import ModelConfig

        cfg = ModelConfig(filters=[8], dense_units=16, dropout=0.1, min_steps=40, min_epochs=2)
        write_class_folders(root / "train", per_class=12, seed=0)
        write_class_folders(root / "pool", per_class=4, seed=5)
        (root / "pool" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
        pattern_image(0, np.random.default_rng(1)).save(root / "outside.png")
        names = class_names_of(root / "train")
        train = load_labeled(root / "train", names, PREP)
        classifier = Classifier.build(names, PREP, cfg, seed=0, version="round-1")
        classifier.fit(train.x, train.y, cfg, seed=0)
        classifier.save(root / "model" / "classifier.bentomodel")
        Classifier.build(names, PREP, cfg, seed=1, version="round-2").save(
            root / "round2.bentomodel"
        )
        yield {"root": root, "classifier": classifier}


@pytest.fixture(scope="module")
def label_studio():
    server = FileServer({"/data/upload/1/up.png": png_bytes(1)}, token=TOKEN)
    yield server
    server.close()


@pytest.fixture(scope="module")
def foreign():
    server = FileServer({"/img/x.png": png_bytes(2)})
    yield server
    server.close()


def settings_for(world, label_studio=None, **overrides) -> ServingSettings:
    root = world["root"]
    values = dict(
        model_path=root / "model" / "classifier.bentomodel",
        document_root=root,
        pool_dir=root / "pool",
        label_studio_url=f"http://127.0.0.1:{label_studio.port}" if label_studio else None,
        label_studio_token=TOKEN,
        batch_size=4,
        retrain_log=root / "retrain.log",
        retrain_cwd=root,
        annotation_counts=root / f"annotations-{uuid.uuid4().hex}.json",  # an app's own
    )
    values.update(overrides)
    return ServingSettings(**values)


@pytest.fixture(scope="module")
def client(world, label_studio, foreign):
    app = create_app(settings_for(world, label_studio, allowed_hosts=f"localhost:{foreign.port}"))
    with TestClient(app) as test_client:
        wait_for_model(test_client)
        yield test_client


def predict(client, urls, label_config=LABEL_CONFIG, key="picture", **kwargs):
    tasks = [{"id": i + 1, "data": {key: url}} for i, url in enumerate(urls)]
    body = {"tasks": tasks, "project": "1.1700000000", "label_config": label_config}
    return client.post("/predict", json=body, **kwargs)


# The contract


def test_health_and_setup_answer_with_the_loaded_round(client):
    assert client.get("/health").json() == {
        "status": "UP",
        "model_version": "round-1",
        "model_state": "loaded",
        "model_error": None,
        "retrain": "idle",
    }
    setup = {
        "project": "1.1700000000",
        "schema": LABEL_CONFIG,
        "hostname": "http://127.0.0.1:8080",
        "access_token": "not-echoed",
        "model_version": "",
        "extra_params": {},
    }
    response = client.post("/setup", json=setup)
    assert response.status_code == 200 and response.json() == {"model_version": "round-1"}
    assert "not-echoed" not in response.text
    assert client.get("/versions").json() == {"versions": ["round-1"]}


def test_predict_answers_every_task_in_order_across_batches(client, world):
    root = world["root"]
    files = sorted((root / "pool").glob("class*/*.png"))
    order = np.random.default_rng(0).permutation(len(files))  # classes interleaved
    files = [files[i] for i in order]  # 12 tasks, batch size 4
    response = predict(client, [local(f.relative_to(root).as_posix()) for f in files])
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "round-1" and len(body["results"]) == len(files)

    expected = world["classifier"].predict_proba(np.stack([preprocess(f, PREP) for f in files]))
    names = world["classifier"].class_names
    for result, probas in zip(body["results"], expected, strict=True):
        assert result["model_version"] == "round-1" and "error" not in result
        assert result["result"] == [
            {
                "from_name": "cls",
                "to_name": "img",
                "type": "choices",
                "value": {"choices": [names[int(probas.argmax())]]},
            }
        ]
        assert result["score"] == pytest.approx(float(probas.max()), abs=1e-5)
    predicted = [r["result"][0]["value"]["choices"][0] for r in body["results"]]
    truth = [f.parent.name for f in files]
    assert sum(p == t for p, t in zip(predicted, truth, strict=True)) >= 10  # it learned


def test_unreadable_refused_and_missing_images_fail_their_task_only(client, world):
    good = local("pool/class2/s5-000.png")
    urls = [
        good,
        local("pool/broken.png"),  # not an image
        local("pool/../outside.png"),  # a readable image, outside the pool
        local(str(world["root"] / "outside.png")),  # absolute path
        local("pool/class0/nope.png"),  # missing
        "http://example.com/cat.png",  # a host nobody allowed
        "file:///etc/passwd",
        good,
    ]
    response = predict(client, urls)
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(urls)
    assert results[0]["result"] and results[-1]["result"] == results[0]["result"]
    errors = [r.get("error", "") for r in results[1:-1]]
    assert all(r["result"] == [] and "score" not in r for r in results[1:-1])
    assert "task 2" in errors[0] and "not a readable image" in errors[0]
    assert "outside the pool" in errors[1] and "outside the pool" in errors[2]
    assert "no such file" in errors[3]
    assert "example.com" in errors[4] and "ALLOWED_HOSTS" in errors[4]
    assert "not a Label Studio" in errors[5]


def test_a_task_that_breaks_url_parsing_or_the_decoder_fails_alone(client):
    dds_without_pixel_format = b"DDS " + struct.pack("<I", 124) + bytes(120)
    good = local("pool/class2/s5-000.png")
    urls = [
        good,
        "http://[abc/x.png",  # urlsplit raises ValueError
        "/data/upload/1/a\x01b.png",  # httpx raises InvalidURL
        "data:image/dds;base64," + base64.b64encode(dds_without_pixel_format).decode(),
        good,
    ]
    response = predict(client, urls)
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["result"] and results[-1]["result"] == results[0]["result"]
    assert all(r["result"] == [] for r in results[1:-1])
    assert "task 2: http://[abc/x.png: not a valid URL" in results[1]["error"]
    assert "task 3:" in results[2]["error"] and "not a valid URL" in results[2]["error"]
    assert "task 4:" in results[3]["error"]  # Pillow raised NotImplementedError


def test_task_without_the_image_field_names_the_field(client):
    response = predict(client, [local("pool/class0/s5-000.png")], key="photo")
    [result] = response.json()["results"]
    assert result["result"] == [] and "'picture'" in result["error"] and "photo" in result["error"]


def test_default_names_without_a_labeling_config(client):
    response = predict(client, [local("pool/class1/s5-001.png")], label_config=None, key="image")
    [result] = response.json()["results"]
    assert result["result"][0]["from_name"] == "label" and result["result"][0]["to_name"] == "image"


def test_uploads_come_from_label_studio_with_the_token_and_only_there(
    client, label_studio, foreign, caplog
):
    caplog.set_level(logging.DEBUG)
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(0)).decode()
    urls = [
        "/data/upload/1/up.png",  # relative: Label Studio's
        f"http://127.0.0.1:{label_studio.port}/data/upload/1/up.png",  # absolute, same host
        f"http://localhost:{foreign.port}/img/x.png",  # allowed foreign host
        "/data/upload/1/missing.png",
        data_url,
    ]
    results = predict(client, urls).json()["results"]
    assert [bool(r["result"]) for r in results] == [True, True, True, False, True]
    assert "HTTP 404" in results[3]["error"]
    assert all(h.get("Authorization") == f"Token {TOKEN}" for _, h in label_studio.requests)
    assert foreign.requests and all("Authorization" not in h for _, h in foreign.requests)
    assert TOKEN not in caplog.text


def test_a_wrong_token_is_a_task_error_that_names_the_setting(world, label_studio, caplog):
    settings = settings_for(world, label_studio, label_studio_token="wrong-token")
    assert "wrong-token" not in repr(settings)
    with TestClient(create_app(settings)) as wrong:
        [result] = predict(wrong, ["/data/upload/1/up.png"]).json()["results"]
    assert "HTTP 401" in result["error"] and "LABEL_STUDIO_TOKEN" in result["error"]
    assert "wrong-token" not in caplog.text


def test_the_token_never_appears_in_a_response_or_the_log(world, label_studio, caplog):
    caplog.set_level(logging.DEBUG, logger="serving")  # httpcore's DEBUG trace quotes headers
    stray_newline = settings_for(world, label_studio, label_studio_token=f"{TOKEN}\r\n")
    # Past the settings' check on purpose: a token h11 refuses in the header, quoting it.
    refused = settings_for(world, label_studio)
    refused.label_studio_token = SecretStr(f"{TOKEN} ")
    for settings, works in ((stray_newline, True), (refused, False)):
        with TestClient(create_app(settings)) as app:
            response = predict(app, ["/data/upload/1/up.png"])
        [result] = response.json()["results"]
        assert bool(result["result"]) == works
        assert TOKEN not in response.text
    assert "cannot fetch (LocalProtocolError)" in result["error"]
    assert TOKEN not in caplog.text


def test_an_empty_request_gets_an_empty_answer(client):
    response = client.post("/predict", json={"tasks": []})
    assert response.status_code == 200 and response.json()["results"] == []


def test_a_malformed_request_is_a_422_naming_the_field(client):
    response = client.post("/predict", json={"task": []})
    assert response.status_code == 422 and "tasks" in response.text


# Security


def test_basic_auth_when_set(world):
    settings = settings_for(world, basic_auth_user="ls", basic_auth_password="pw-123")
    with TestClient(create_app(settings)) as guarded:
        for path in ("/health", "/status"):
            response = guarded.get(path)
            assert response.status_code == 401 and "Basic" in response.headers["www-authenticate"]
        assert guarded.get("/health", auth=("ls", "wrong")).status_code == 401
        assert guarded.get("/health", auth=("ls", "pw-123")).status_code == 200
        assert predict(guarded, [local("pool/class0/s5-000.png")]).status_code == 401
        ok = predict(guarded, [local("pool/class0/s5-000.png")], auth=("ls", "pw-123"))
        assert ok.status_code == 200 and ok.json()["results"][0]["result"]
        assert guarded.get("/openapi.json", auth=("ls", "pw-123")).status_code == 404


def test_no_auth_by_default(client):
    assert client.get("/health").status_code == 200


def test_basic_auth_needs_user_and_password():
    with pytest.raises(ValueError, match="BASIC_AUTH_PASSWORD"):
        ServingSettings(basic_auth_user="ls")


def test_request_size_limit(world):
    with TestClient(create_app(settings_for(world, max_request_bytes=2000))) as small:
        assert predict(small, [local("pool/class0/s5-000.png")]).status_code == 200
        too_big = predict(small, [local("pool/class0/s5-000.png")] * 60)
        assert too_big.status_code == 413 and "MAX_REQUEST_BYTES" in too_big.json()["detail"]

        def chunks():  # no Content-Length: counted while streaming
            yield b'{"tasks": ['
            for _ in range(100):
                yield b'{"data": {"image": "/data/local-files/?d=pool/class0/s5-000.png"}},'
            yield b'{"data": {}}]}'

        streamed = small.post(
            "/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ACTIVELEARN_SERVING_ALLOWED_HOSTS", "cdn.example.com, Images.Example.org")
    monkeypatch.setenv("ACTIVELEARN_SERVING_RETRAIN_THRESHOLD", "25")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "from-the-project-variable")
    settings = ServingSettings()
    assert settings.allowed_hosts == ["cdn.example.com", "images.example.org"]
    assert settings.retrain_threshold == 25 and settings.host == "127.0.0.1"
    assert settings.label_studio_token.get_secret_value() == "from-the-project-variable"
    assert "from-the-project-variable" not in repr(settings)
    assert "from-the-project-variable" not in describe(settings)
    assert "token set" in describe(settings)


def test_a_misspelled_setting_variable_is_an_error(monkeypatch):
    monkeypatch.setenv("ACTIVELEARN_SERVING_MODLE_PATH", "other.bentomodel")
    with pytest.raises(
        ValueError,
        match="MODLE_PATH is not a serving setting; did you mean ACTIVELEARN_SERVING_MODEL_PATH",
    ):
        ServingSettings()


@pytest.mark.parametrize(
    "command",
    [["serving"], ["uvicorn", "serving.app:app"]],  # the README's commands
)
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ACTIVELEARN_SERVING_PORT", "ninety", "ACTIVELEARN_SERVING_PORT: Input should be a valid"),
        (
            "LABEL_STUDIO_API_KEY",
            "t\u00f6ken",
            "ACTIVELEARN_SERVING_LABEL_STUDIO_TOKEN: Value error, ",
        ),
        (
            "ACTIVELEARN_SERVING_MODEL_CHECK_SECOND",
            "5",
            "Value error, ACTIVELEARN_SERVING_MODEL_CHECK_SECOND is not a serving setting; did "
            "you mean ACTIVELEARN_SERVING_MODEL_CHECK_SECONDS?\n",
        ),
    ],
)
def test_the_server_commands_name_a_bad_variable_without_a_traceback(
    command, variable, value, message
):
    env = os.environ | {variable: value}
    done = subprocess.run(
        [sys.executable, "-m", *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.startswith(message) and value not in done.stderr
    assert "Traceback" not in done.stderr


def test_the_server_command_refuses_several_workers(tmp_path):
    env = os.environ | {
        "WEB_CONCURRENCY": "2",  # what uvicorn takes as its worker count
        "ACTIVELEARN_SERVING_WORKSPACE": str(tmp_path),
        "ACTIVELEARN_SERVING_PORT": str(free_port()),  # if it did start, not on a shared port
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "serving"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its workers too can be ended if it starts
    )
    try:
        _, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 1
    assert stderr.startswith("WEB_CONCURRENCY=2: the ML backend runs as one uvicorn worker")
    assert "RETRAIN_THRESHOLD" in stderr and "Traceback" not in stderr


def test_the_token_is_stripped_and_refused_with_characters_no_header_can_carry(monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", f" {TOKEN}\r\n")  # an env file with CRLF
    assert ServingSettings().label_studio_token.get_secret_value() == TOKEN
    for bad in (f"{TOKEN}\nx", f"{TOKEN}\u00e9"):
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", bad)
        with pytest.raises(ValidationError, match="LABEL_STUDIO_API_KEY") as err:
            ServingSettings()
        assert TOKEN not in str(err.value)  # what `uvicorn serving.app:app` prints


def test_a_retrain_gets_this_python_but_not_the_servers_password(monkeypatch):
    monkeypatch.setenv("ACTIVELEARN_SERVING_BASIC_AUTH_PASSWORD", "secret")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "the-token")  # the round needs it
    env = _child_environment()
    assert not any(k.startswith("ACTIVELEARN_SERVING_BASIC_AUTH") for k in env)
    assert env["LABEL_STUDIO_API_KEY"] == "the-token"
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)


def test_paths_default_to_the_campaign_workspace(monkeypatch):
    for key in [k for k in os.environ if k.startswith("ACTIVELEARN_SERVING_")]:
        monkeypatch.delenv(key)
    settings = ServingSettings()
    assert settings.model_path == Path("campaign/model/classifier.bentomodel")
    assert settings.pool_dir == Path("campaign/data/pool")
    assert settings.document_root == Path("campaign/data")  # the pool's parent, as Label Studio's
    moved = ServingSettings(workspace="/srv/ws", document_root="/srv/files")
    assert moved.model_path == Path("/srv/ws/model/classifier.bentomodel")
    assert moved.document_root == Path("/srv/files")


# Model loading and hot reload


class SlowLoads:
    """`Classifier.load` held until `finish` is set: a stand-in for a big model whose load
    takes longer than Label Studio's 1 s /health timeout. Records which thread loads."""

    def __init__(self, monkeypatch):
        self.real = Classifier.load
        self.started, self.finish = threading.Event(), threading.Event()
        self.threads: list[str] = []
        monkeypatch.setattr(Classifier, "load", self.load)

    def load(self, path):
        self.threads.append(threading.current_thread().name)
        self.started.set()
        self.finish.wait(10)
        return self.real(path)


def health_at_once(client) -> dict:
    """/health, which must answer without waiting for a model load. The loads here are
    held back until the test lets them go, so a /health that waited would not come back
    at all: a generous bound tells the two apart without timing a loaded machine."""
    answers = []
    request = threading.Thread(target=lambda: answers.append(client.get("/health")), daemon=True)
    request.start()
    request.join(timeout=20)
    assert answers, "/health waited for the model load"
    health = answers[0]
    assert health.status_code == 200 and health.json()["status"] == "UP"
    return health.json()


WAITING = 45


def test_health_answers_at_once_while_the_model_loads_at_start_up(world, monkeypatch):
    slow = SlowLoads(monkeypatch)
    with TestClient(create_app(settings_for(world))) as app:
        assert slow.started.wait(10), "the model did not start loading"
        health = health_at_once(app)
        assert health["model_state"] == "loading" and health["model_version"] is None
        # They wait for the load, not start their own; more of them than AnyIO's 40 worker
        # threads, which /health does not need.
        with ThreadPoolExecutor(WAITING) as requests:
            waiting = [
                requests.submit(predict, app, [local("pool/class0/s5-000.png")])
                for _ in range(WAITING)
            ]
            time.sleep(1)
            assert not any(request.done() for request in waiting)
            assert health_at_once(app)["model_state"] == "loading"
            slow.finish.set()
            bodies = [request.result(timeout=60).json() for request in waiting]
        assert [body["model_version"] for body in bodies] == ["round-1"] * WAITING
        assert health_at_once(app)["model_state"] == "loaded"
    assert slow.threads == ["model-loader"]


def test_a_changed_model_file_is_loaded_in_the_background_not_by_a_request(
    world, tmp_path, monkeypatch
):
    model = tmp_path / "classifier.bentomodel"
    shutil.copyfile(world["root"] / "model" / "classifier.bentomodel", model)
    with TestClient(create_app(settings_for(world, model_path=model))) as app:
        assert wait_for_model(app)["model_version"] == "round-1"
        slow = SlowLoads(monkeypatch)
        incoming = tmp_path / "incoming.bentomodel"
        shutil.copyfile(world["root"] / "round2.bentomodel", incoming)
        incoming.replace(model)  # a round's new model; no request from here on
        assert slow.started.wait(10), "the new model file was not loaded without a request"
        health = health_at_once(app)  # the previous model answers meanwhile
        assert health["model_state"] == "loading" and health["model_version"] == "round-1"
        slow.finish.set()
        assert wait_for_model(app)["model_version"] == "round-2"
    assert slow.threads == ["model-loader"]


def test_a_request_waiting_for_a_file_that_goes_away_returns(world, tmp_path):
    from serving.model_store import ModelStore

    model = tmp_path / "classifier.bentomodel"
    shutil.copyfile(world["root"] / "model" / "classifier.bentomodel", model)
    store = ModelStore(model, check_seconds=60)
    try:
        assert store.current(wait=True).version == "round-1"
        looks = store._changed

        def slow_look():  # the loader looks late: after the request saw the new file
            if threading.current_thread().name == "model-loader":
                time.sleep(0.5)
            return looks()

        store._changed = slow_look
        shutil.copyfile(world["root"] / "round2.bentomodel", tmp_path / "new")
        (tmp_path / "new").replace(model)
        got = []
        request = threading.Thread(target=lambda: got.append(store.current(wait=True)))
        request.start()
        time.sleep(0.2)
        model.unlink()  # e.g. `dvc repro` removing the output it is about to write
        request.join(timeout=5)
        assert not request.is_alive(), "the request still waits for a file that is gone"
        assert got[0].version in ("round-1", "round-2")  # the loader may have been quicker
    finally:  # also ends a request left waiting
        store.close()


def test_a_broken_model_file_removed_is_no_longer_reported(world, tmp_path):
    from serving.model_store import ModelStore

    model = tmp_path / "classifier.bentomodel"
    model.write_bytes(b"not a model")
    store = ModelStore(model)
    try:
        store.current(wait=True)
        assert store.state == "failed" and "not a readable model" in store.error
        model.unlink()
        assert store.state == "missing" and store.error.startswith(f"no model at {model}")
    finally:
        store.close()


def test_a_broken_model_file_is_named_by_health_and_predict(world, tmp_path):
    model = tmp_path / "classifier.bentomodel"
    model.write_bytes(b"not a model")
    with TestClient(create_app(settings_for(world, model_path=model))) as app:
        response = predict(app, [local("pool/class0/s5-000.png")])
        assert response.status_code == 503
        assert f"{model}: not a readable model" in response.json()["detail"]
        health = app.get("/health").json()
        assert health["model_state"] == "failed" and health["model_version"] is None
        assert f"{model}: not a readable model" in health["model_error"]


def test_a_new_model_file_is_served_without_restart(world, tmp_path):
    root = world["root"]
    model = tmp_path / "classifier.bentomodel"
    shutil.copyfile(root / "model" / "classifier.bentomodel", model)
    with TestClient(create_app(settings_for(world, model_path=model))) as reloading:
        assert predict(reloading, [local("pool/class0/s5-000.png")]).json()["model_version"] == (
            "round-1"
        )
        model.write_bytes(b"half a file")  # a round writing the file: keep serving round-1
        body = predict(reloading, [local("pool/class0/s5-000.png")]).json()
        assert body["model_version"] == "round-1"
        error = reloading.get("/status").json()["model"]["error"]
        assert f"{model}: not a readable model" in error and "dvc checkout" in error

        tmp = tmp_path / "incoming.bentomodel"
        shutil.copyfile(root / "round2.bentomodel", tmp)
        tmp.replace(model)
        body = predict(reloading, [local("pool/class0/s5-000.png")]).json()
        assert body["model_version"] == "round-2"
        assert body["results"][0]["model_version"] == "round-2"
        assert reloading.get("/health").json()["model_version"] == "round-2"
        assert reloading.post("/setup", json={"project": "1.1"}).json() == {
            "model_version": "round-2"
        }
        assert reloading.get("/status").json()["model"]["error"] is None


def test_without_a_model_the_server_is_up_and_says_what_is_missing(world, tmp_path):
    settings = settings_for(world, model_path=tmp_path / "none.bentomodel")
    with TestClient(create_app(settings)) as empty:
        health = empty.get("/health").json()
        assert health["model_version"] is None and health["model_state"] == "missing"
        assert "none.bentomodel" in health["model_error"]
        response = predict(empty, [local("pool/class0/s5-000.png")])
        assert response.status_code == 503 and "none.bentomodel" in response.json()["detail"]
        assert empty.post("/setup", json={}).status_code == 503


# Webhook and the background retrain


def annotation_event(action: str, annotation: int, project: int = 7) -> dict:
    return {
        "action": action,
        "project": {"id": project, "title": "p"},
        "annotation": {"id": annotation},
    }


def wait_for_retrain(client, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        retrain = client.get("/status").json()["retrain"]
        if retrain["state"] not in ("idle", "running"):
            return retrain
        time.sleep(0.1)
    raise AssertionError(f"retrain still {retrain['state']} after {timeout} s")


def write_args_command(out: Path) -> str:
    script = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))"
    return f'python -c "{script}" {out} round={{next_round}} project={{project}}'


def test_webhook_counts_and_starts_the_retrain_at_the_threshold(world, tmp_path):
    out = tmp_path / "ran.txt"
    settings = settings_for(world, retrain_command=write_args_command(out), retrain_threshold=3)
    with TestClient(create_app(settings)) as app:
        first = app.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 1)).json()
        assert first["counted"] and not first["retrain_started"] and "1 of 3" in first["detail"]
        app.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 2))
        deleted = {"action": "ANNOTATIONS_DELETED", "project": 7, "annotations": [{"id": 2}]}
        app.post("/webhook", json=deleted)  # no longer new
        app.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 3, project=8))
        app.post("/webhook", json=annotation_event("ANNOTATION_UPDATED", 1))  # not new
        app.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 4))
        assert app.get("/status").json()["retrain"]["state"] == "idle"
        third = app.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 5)).json()
        assert third["retrain_started"] and third["project"] == "7"

        retrain = wait_for_retrain(app)
        assert retrain["state"] == "succeeded" and retrain["exit_code"] == 0
        assert "3 new annotations in project 7" in retrain["trigger"]
        assert out.read_text() == "round=2 project=7"  # round-1 is loaded
        status = app.get("/status").json()
        assert status["projects"]["7"] == {"created": 4, "updated": 1, "deleted": 1, "pending": 0}
        assert status["projects"]["8"]["pending"] == 1
        assert app.get("/health").json()["retrain"] == "succeeded"

        ignored = app.post("/webhook", json={"action": "PROJECT_UPDATED", "project": 7}).json()
        assert not ignored["counted"] and "ignored" in ignored["detail"]


def test_webhook_counts_each_annotation_once_however_many_webhooks_deliver_it(world, tmp_path):
    """Connect Model makes a webhook to /webhook, and a user may add another one."""
    out = tmp_path / "ran.txt"
    settings = settings_for(world, retrain_command=write_args_command(out), retrain_threshold=3)
    with TestClient(create_app(settings)) as app:

        def twice(event: dict) -> list[dict]:
            return [app.post("/webhook", json=event).json() for _ in range(2)]

        first, again = twice(annotation_event("ANNOTATION_CREATED", 1))
        assert first["counted"] and not again["counted"] and "1 of 3" in again["detail"]
        twice(annotation_event("ANNOTATION_UPDATED", 1))
        twice(annotation_event("ANNOTATION_CREATED", 2))
        twice({"action": "ANNOTATIONS_DELETED", "project": 7, "annotations": [{"id": 2}]})
        counts = app.get("/status").json()["projects"]["7"]
        assert counts == {"created": 2, "updated": 1, "deleted": 1, "pending": 1}
        twice(annotation_event("ANNOTATION_CREATED", 3))
        started, late = twice(annotation_event("ANNOTATION_CREATED", 4))
        assert started["retrain_started"] and not late["counted"]
        assert wait_for_retrain(app)["state"] == "succeeded"
        assert app.get("/status").json()["projects"]["7"]["pending"] == 0

        no_payload = app.post("/webhook", json={"action": "ANNOTATION_CREATED"}).json()
        assert not no_payload["counted"] and "Send payload" in no_payload["detail"]


def test_a_restarted_server_goes_on_counting_toward_the_threshold(world, tmp_path):
    out = tmp_path / "ran.txt"
    settings = settings_for(world, retrain_command=write_args_command(out), retrain_threshold=3)
    with TestClient(create_app(settings)) as app:
        app.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 1))
        app.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 2))
    with TestClient(create_app(settings)) as restarted:
        again = restarted.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 2)).json()
        assert not again["counted"]  # known from before the restart
        third = restarted.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 3)).json()
        assert third["retrain_started"], third
        assert wait_for_retrain(restarted)["state"] == "succeeded"
    with TestClient(create_app(settings)) as after_retrain:
        counts = after_retrain.get("/status").json()["projects"]["7"]
        assert counts == {"created": 3, "updated": 0, "deleted": 0, "pending": 0}


def test_unreadable_annotation_counts_start_from_0_with_a_warning(world, caplog):
    settings = settings_for(world)
    settings.annotation_counts.parent.mkdir(parents=True, exist_ok=True)
    settings.annotation_counts.write_text("{not json")
    with TestClient(create_app(settings)) as app:
        first = app.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 1)).json()
        assert first["counted"]
        assert app.get("/status").json()["projects"]["7"]["created"] == 1
    assert str(settings.annotation_counts) in caplog.text


def test_webhook_counts_each_annotation_of_a_bulk_event(client):
    project = {"id": 9, "title": "p"}
    created = {  # e.g. "Create annotations from predictions" on 3 tasks
        "action": "ANNOTATIONS_CREATED",
        "project": project,
        "annotation": [{"id": i, "task": i, "result": []} for i in range(3)],
        "task": [{"id": i, "data": {}} for i in range(3)],
    }
    deleted = {"action": "ANNOTATIONS_DELETED", "project": project, "annotations": [{"id": 0}]}
    for event in (created, deleted):
        response = client.post("/webhook", json=event)
        assert response.status_code == 200 and response.json()["counted"]
    counts = client.get("/status").json()["projects"]["9"]
    assert counts == {"created": 3, "updated": 0, "deleted": 1, "pending": 2}


def running(pid: int) -> bool:
    """Not exited, nor a zombie (an orphan's zombie stays until init reaps it, if ever)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


RETRAIN_WITH_A_STAGE = """
import os, signal, subprocess, sys, time
if len(sys.argv) == 2:  # the retrain: starts a stage, as dvc does
    subprocess.Popen([sys.executable, __file__, sys.argv[1], "stage"])
else:  # the stage: deaf to SIGTERM, so only SIGKILL ends it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(sys.argv[1], "w") as out:
        out.write(f"{os.getppid()} {os.getpid()}")
time.sleep(60)
"""


def test_start_training_runs_one_retrain_at_a_time_and_stops_with_the_server(world, tmp_path):
    script, pid_file = tmp_path / "retrain.py", tmp_path / "pids"
    script.write_text(RETRAIN_WITH_A_STAGE)
    settings = settings_for(world, retrain_command=f"python {script} {pid_file}")
    with TestClient(create_app(settings)) as app:
        started = app.post("/webhook", json={"action": "START_TRAINING", "project": "7.1700"})
        assert started.status_code == 200 and started.json()["retrain_started"]
        busy = app.post("/webhook", json={"action": "START_TRAINING", "project": "7.1700"}).json()
        assert not busy["retrain_started"] and "already running" in busy["detail"]
        assert app.get("/health").json()["retrain"] == "running"
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pids = [int(pid) for pid in pid_file.read_text().split()]
    deadline = time.monotonic() + 5  # the lifespan's end stopped the retrain and its stage
    while left := [pid for pid in pids if running(pid)]:
        assert time.monotonic() < deadline, f"still running: {left} of {pids}"
        time.sleep(0.05)


def test_a_retrain_follows_the_round_on_disk_not_the_one_in_memory(world, tmp_path):
    model, out = tmp_path / "classifier.bentomodel", tmp_path / "ran.txt"
    shutil.copyfile(world["root"] / "model" / "classifier.bentomodel", model)
    settings = settings_for(world, model_path=model, retrain_command=write_args_command(out))
    with TestClient(create_app(settings)) as app:
        incoming = tmp_path / "incoming.bentomodel"  # the last retrain wrote round-2 ...
        shutil.copyfile(world["root"] / "round2.bentomodel", incoming)
        incoming.replace(model)
        event = {"action": "START_TRAINING", "project": 7}  # ... and no request loaded it yet
        assert app.post("/webhook", json=event).json()["retrain_started"]
        assert wait_for_retrain(app)["state"] == "succeeded"
    assert out.read_text() == "round=3 project=7"


def test_start_training_without_a_command_says_how_to_set_one(client):
    body = client.post("/webhook", json={"action": "START_TRAINING", "project": 3}).json()
    assert not body["retrain_started"] and "RETRAIN_COMMAND" in body["detail"]


def test_a_failing_retrain_is_reported_with_its_log(world, tmp_path):
    settings = settings_for(
        world,
        retrain_command=f"{sys.executable} -c \"raise SystemExit('boom')\"",
        retrain_log=tmp_path / "logs" / "retrain.log",
    )
    with TestClient(create_app(settings)) as app:
        assert app.post("/webhook", json={"action": "START_TRAINING"}).json()["retrain_started"]
        retrain = wait_for_retrain(app)
    assert retrain["state"] == "failed" and retrain["exit_code"] == 1
    assert "boom" in (tmp_path / "logs" / "retrain.log").read_text()


def test_a_retrain_log_that_cannot_be_written_fails_the_retrain_not_the_webhook(world, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    log_path = not_a_folder / "retrain.log"
    settings = settings_for(world, retrain_command="python -c pass", retrain_log=log_path)
    with TestClient(create_app(settings)) as app:
        response = app.post("/webhook", json={"action": "START_TRAINING", "project": 7})
        assert response.status_code == 200 and not response.json()["retrain_started"]
        retrain = app.get("/status").json()["retrain"]
    assert retrain["state"] == "failed" and f"retrain log {log_path}" in retrain["detail"]
    assert retrain["detail"] == response.json()["detail"]


# The small parts


def test_choice_target_reads_names_key_and_choices():
    target = choice_target(LABEL_CONFIG)
    assert (target.from_name, target.to_name, target.image_key) == ("cls", "img", "picture")
    assert target.choices == ("class0", "class1", "class2")
    assert choice_target(None) == DEFAULT_TARGET
    assert choice_target("<View><Image name='x' value='$x'/></View>") == DEFAULT_TARGET
    assert choice_target("<View><Choices") == DEFAULT_TARGET  # broken XML


def test_next_round_from_the_model_version():
    assert next_round("round-3") == 4 and next_round("round-0") == 1
    assert next_round("dev") is None and next_round(None) is None
    assert [round_of_tag(round_tag(n)) for n in (0, 7, 12)] == [0, 7, 12]
    assert round_of_tag("round-3.bentomodel") is None and round_of_tag("xround-3") is None


def test_an_image_over_the_size_limit_is_refused(world, foreign):
    size = len(foreign.files["/img/x.png"])
    url = f"http://localhost:{foreign.port}/img/x.png"
    with httpx.Client() as http:
        for limit, fits in ((size, True), (size - 1, False)):
            settings = settings_for(
                world, allowed_hosts=f"localhost:{foreign.port}", max_image_bytes=limit
            )
            source = ImageSource(settings, http)
            if fits:
                assert source.read(url) == foreign.files["/img/x.png"]
            else:
                with pytest.raises(ImageError, match="over the image limit"):
                    source.read(url)


def test_image_source_refuses_before_touching_anything(world, foreign):
    root = world["root"]
    seen = len(foreign.requests)
    with httpx.Client() as http:
        source = ImageSource(settings_for(world, allowed_hosts="cdn.example.com"), http)
        assert source.read(local("pool/class0/s5-000.png")) == root / "pool/class0/s5-000.png"
        assert source.read(local("pool%2Fclass0%2Fs5-000.png")).is_file()  # URL-encoded
        for url in (
            local("pool/../../etc/passwd"),
            local("%2E%2E/outside.png"),
            local("/etc/passwd"),
            "http://evil.example.com/x.png",
            "https://user:pw@evil.example.com/x.png",
            f"http://localhost:{foreign.port}/img/x.png",  # a live host, not allowed
            "s3://bucket/x.png",
            "relative/path.png",
            "",
            None,
        ):
            with pytest.raises(ImageError) as err:
                source.read(url)
            assert "pw" not in str(err.value)
            if isinstance(url, str) and url.startswith("http"):
                assert str(err.value).endswith("refused")  # by the allow-list, not a failed fetch
        with pytest.raises(ImageError, match="not a valid URL") as err:
            source.read("https://user:pw@[evil.example.com/x.png")
        assert "pw" not in str(err.value)
    assert len(foreign.requests) == seen  # never asked


def test_serving_help_prints_its_flags_and_binds_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--host", "--port", "--workspace", "ACTIVELEARN_SERVING_PORT"):
        assert flag in result.stdout


def test_serving_flags_bind_the_port_and_read_the_workspace_given(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port), "--workspace", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "never answered"
                time.sleep(0.3)
        assert health["model_state"] == "missing"  # nothing trained in this workspace yet
        assert str(tmp_path / "model" / "classifier.bentomodel") in health["model_error"]
    finally:
        server.terminate()
        server.wait(timeout=30)
