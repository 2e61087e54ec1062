"""Label Studio round trip at 1,000 tasks: bulk import against one by one, and ingest time.

    .venv/bin/python bench/labelstudio.py [--tasks 1000] [--one-by-one 1000]
                                          [--url http://127.0.0.1:8080]

Without --url it starts its own Label Studio (the project's `start_server`, first start
about a minute) in a temporary folder and stops it afterwards; with --url it uses that
server and LABEL_STUDIO_API_KEY, and deletes the projects it made there at the end (the
pool goes in a temporary folder, which must then be under the server's local-files root:
set TMPDIR to a folder there). Each part gets its own project on the same server:

1. `LabelStudioAnnotator.push` of N tasks with predictions: one bulk import plus the
   bookkeeping around it (task listing, view, sampling); the import request alone too.
2. The same tasks sent one by one (`--one-by-one` of them), each with the fewest
   requests a task can take: one import request carrying the task and its prediction
   (plain HTTP), for the rate and the ratio. Creating the task, then its prediction,
   would take two.
3. Export and ingest of N annotated tasks: `collect` (export, raw file, votes, report)
   and `apply_answers` (copy images into data/raw, update the manifest).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from activelearn.config import LabelingConfig
from activelearn.labeling.answers import apply_answers
from activelearn.labeling.labelstudio import (
    LABEL_STUDIO_VERSION,
    TOKEN_ENV,
    LabelStudioAnnotator,
    free_port,
    start_server,
)
from activelearn.labeling.labelstudio.tasks import prediction_result
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.queue import QueueItem

CLASSES = ["class0", "class1", "class2"]
log = logging.getLogger("bench.labelstudio")


def write_pool(pool: Path, n: int, seed: int) -> dict[str, str]:
    """n small PNGs in class folders; returns {sample id: class}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        path = pool / label / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(path)
        truth[path.relative_to(pool).as_posix()] = label
    return truth


def make_queue(truth: dict[str, str], seed: int) -> list[QueueItem]:
    rng = np.random.default_rng(seed)
    confidences = rng.uniform(0.34, 0.99, len(truth))
    order = np.argsort(confidences)
    ids = list(truth)
    return [
        QueueItem(ids[i], rank, truth[ids[i]], float(confidences[i]), float(1 - confidences[i]))
        for rank, i in enumerate(order, start=1)
    ]


def timed(call) -> tuple[object, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def annotator_for(name: str, url: str, token: str, pool: Path, work: Path):
    settings = LabelingConfig(
        kind="labelstudio",
        url=url,
        project_title=f"bench {name}",
        state_file=str(work / name / "labelstudio.json"),
        timeout=300.0,
    )
    return LabelStudioAnnotator(settings, CLASSES, pool, token=token)


def delete_projects(url: str, token: str, work: Path) -> None:
    """Delete the projects this run made (those in its annotators' state files), and no
    other: the server is someone's."""
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as http:
        for state in sorted(work.glob("*/labelstudio.json")):
            project_id = json.loads(state.read_text()).get("project_id")
            if project_id is None:
                continue
            try:
                http.delete(f"/api/projects/{project_id}/").raise_for_status()
            except httpx.HTTPError as err:
                log.warning("could not delete bench project %d at %s: %s", project_id, url, err)


def run(url: str, token: str, pool: Path, work: Path, truth: dict[str, str], args) -> tuple:
    """Rows of (what, seconds, tasks/s), then the push, import and one-by-one seconds."""
    http = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=300)
    queue = make_queue(truth, args.seed)
    rows = []

    # 1. Bulk: the whole push, then the import request on its own.
    bulk = annotator_for("bulk", url, token, pool, work)
    bulk.ensure_project()
    _, push_s = timed(lambda: bulk.push(1, queue))
    raw = annotator_for("bulk-raw", url, token, pool, work)
    raw_project = raw.ensure_project()
    payload = [raw.task_payload(1, item, len(queue)) for item in queue]
    _, import_s = timed(
        lambda: http.post(f"/api/projects/{raw_project}/import", json=payload).raise_for_status()
    )
    rows.append((f"bulk: push() of {len(queue)} tasks", push_s, len(queue) / push_s))
    rows.append(("bulk: the one import request", import_s, len(queue) / import_s))

    # 2. One by one, one request per task: an import of the task with its prediction.
    slow = annotator_for("one-by-one", url, token, pool, work)
    slow_project = slow.ensure_project()
    few = queue[: args.one_by_one]

    def one_by_one():
        for item in few:
            task = raw.task_payload(1, item, len(queue))
            http.post(f"/api/projects/{slow_project}/import", json=[task]).raise_for_status()

    _, slow_s = timed(one_by_one)
    rows.append((f"one by one: {len(few)} tasks, 1 request each", slow_s, len(few) / slow_s))

    # 3. Export and ingest N annotated tasks (annotations imported with the tasks).
    ingest = annotator_for("ingest", url, token, pool, work)
    ingest_project = ingest.ensure_project()
    annotated = [
        {
            **ingest.task_payload(1, item, len(queue)),
            "annotations": [{"result": prediction_result(truth[item.sample_id])}],
        }
        for item in queue
    ]
    http.post(f"/api/projects/{ingest_project}/import", json=annotated).raise_for_status()
    manifest = Manifest(work / "data" / "manifest.csv")
    for item in queue:
        manifest.set_state(item.sample_id, "queued", round=1)
    manifest.save()
    round_dir = work / "rounds" / "1"
    answers, collect_s = timed(lambda: ingest.collect(1, queue, round_dir))
    counts, apply_s = timed(
        lambda: apply_answers(answers, manifest, pool, work / "data" / "raw", round=1)
    )
    assert counts.get("accepted") == len(queue), counts
    rows.append(("export + parse + report: collect()", collect_s, len(queue) / collect_s))
    rows.append(("copy + manifest: apply_answers()", apply_s, len(queue) / apply_s))
    rows.append(
        ("export and ingest, total", collect_s + apply_s, len(queue) / (collect_s + apply_s))
    )
    return rows, push_s, import_s, slow_s, len(few)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--one-by-one", type=int, default=1000, help="tasks created one by one")
    parser.add_argument("--url", help="use this running server (token from LABEL_STUDIO_API_KEY)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-labelstudio-") as tmp:
        tmp = Path(tmp)
        files = tmp / "files"
        pool = files / "pool"
        truth = write_pool(pool, args.tasks, args.seed)
        server = None
        if args.url:
            url, token = args.url, os.environ[TOKEN_ENV]
        else:
            token = secrets.token_hex(20)
            print("starting Label Studio (about a minute on a fresh database)...", flush=True)
            server = start_server(
                free_port(),
                tmp / "server",
                pool,
                username="bench@example.com",
                password=secrets.token_urlsafe(16),
                token=token,
            )
            url = server.url
        try:
            rows, push_s, import_s, slow_s, n_slow = run(
                url, token, pool, tmp / "work", truth, args
            )
        finally:
            if server is not None:
                server.stop()
            else:
                delete_projects(url, token, tmp / "work")

    print()
    print(f"Label Studio {LABEL_STUDIO_VERSION} at {url}, {args.tasks} tasks with predictions")
    header = f"{'':<44}{'seconds':>9}{'tasks/s':>10}"
    print(header)
    print("-" * len(header))
    for name, seconds, rate in rows:
        print(f"{name:<44}{seconds:>9.2f}{rate:>10.1f}")
    slow_rate = n_slow / slow_s
    print("-" * len(header))
    print(f"{'ratio push() / one by one (tasks/s)':<44}{args.tasks / push_s / slow_rate:>18.1f}x")
    print(f"{'ratio import request / one by one':<44}{args.tasks / import_s / slow_rate:>18.1f}x")


if __name__ == "__main__":
    main()
