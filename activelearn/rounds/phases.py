"""The six phases of a round, in order: ingest, train, select, track, push, commit.

Each takes the `Round` and returns its typed result, which the round records in
`state.json` before the next phase starts. Each is safe to run again after a kill: it
finds from the workspace's files what it already did.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import OmegaConf

from activelearn import labeling
from activelearn.config import Config
from activelearn.core.faults import kill_point
from activelearn.core.files import write_atomic
from activelearn.data.images import (
    UnreadableImage,
    class_folders,
    list_files,
    preprocess,
    preprocessing,
)
from activelearn.errors import RoundBlocked
from activelearn.pipeline.run import repro, write_params
from activelearn.rounds import discovery
from activelearn.rounds.discovery import NEW_CLASSES
from activelearn.rounds.state import (
    CommitResult,
    IngestResult,
    PhaseResult,
    PushResult,
    RoundState,
    SelectResult,
    TrackResult,
    TrainResult,
    agreement_history,
)
from activelearn.strategies.stopping import (
    Agreement,
    Progress,
    agreement,
    campaign_criteria,
    stop_reason,
)
from activelearn.workspace.layout import (
    CAMPAIGN_ID,
    EVALUATION,
    FEATURE_CACHE,
    HISTORY,
    METRICS,
    MODEL_FILE,
    PREPARED,
    SOURCE_RECORD,
    STOP_SET,
    round_dir,
    round_tag,
)
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.queue import QueueItem, read_queue, write_queue
from activelearn.workspace.repo import campaign_id, dvc_repo

if TYPE_CHECKING:
    from activelearn.tracking.tracker import CampaignTracker

log = logging.getLogger(__name__)


@dataclass
class Round:
    """What every phase of round `n` needs."""

    cfg: Config
    n: int
    state: RoundState
    manifest: Manifest
    annotator: labeling.Annotator

    @property
    def dir(self) -> Path:
        return round_dir(self.n)


def labeled_counts(cfg: Config) -> dict[str, int]:
    return {name: len(files) for name, files in class_folders(cfg.data.raw_dir).items()}


def not_labeled(manifest: Manifest) -> dict[str, int]:
    """The answers spent on images that bought no label: answered "other", skips (each
    time), and rejections by the annotators (unreadable or removed files cost none)."""
    samples = manifest.samples.values()
    return {
        "other": sum(s.state == "other" for s in samples),
        "skipped": sum(s.skips for s in samples),
        "rejected": sum(s.state == "rejected" and s.round is not None for s in samples),
    }


def answers_spent(r: Round) -> tuple[int, dict[str, int]]:
    """(answers spent, those that bought no label by kind) as the train phase recorded
    them; from the manifest for a round recorded before answers were counted."""
    trained = r.state.train
    if trained.answers is not None:
        return trained.answers, trained.not_labeled
    wasted = not_labeled(r.manifest)
    return trained.labeled + sum(wasted.values()), wasted


def open_queue(r: Round) -> list[QueueItem]:
    """Queue items of every earlier round whose sample is still waiting for an answer.

    Each from the round the manifest says it was queued in: a sample sent back to the
    pool and queued again is in two queue files, but waits for one answer.
    """
    queued_in = {sid: r.manifest.samples[sid].round for sid in r.manifest.in_state("queued")}
    items = []
    for n in range(r.n):
        path = round_dir(n) / "queue.jsonl"
        if path.exists():
            items += [item for item in read_queue(path) if queued_in.get(item.sample_id) == n]
    return items


def ingest(r: Round) -> IngestResult:
    """Answers to earlier queues into the labeled set; stops if too few are answered."""
    if promoted := labeling.promote_other(r.manifest, r.cfg.data.raw_dir, r.cfg.data.other_dir):
        log.info("%d images answered other are in a class folder now: labeled", promoted)
        r.manifest.save()
    items = open_queue(r)
    if not items:
        return IngestResult(answers=0)
    answered = [s for s in r.manifest.samples.values() if s.state in labeling.DONE]
    answers = r.annotator.collect(r.n - 1, items, r.dir, answered)
    pool = Path(r.cfg.data.pool_dir)
    answers = [  # nobody can answer an image removed from the pool: it holds nothing up
        labeling.Answer(a.sample_id, labeling.REMOVED)
        if a.status in (labeling.OPEN, labeling.REQUEUED) and not (pool / a.sample_id).exists()
        else a
        for a in answers
    ]
    still_open = [a.sample_id for a in answers if a.status == labeling.OPEN]
    # The share is of everything asked, the last queue included: after a kill that saved
    # its answers, a rerun finds only the open items left, but they are still a few of many.
    latest = round_dir(r.n - 1) / "queue.jsonl"
    asked = {i.sample_id for i in items + (read_queue(latest) if latest.exists() else [])}
    answered = 1 - len(still_open) / len(asked)
    if answered < r.cfg.campaign.min_answered:
        named = ", ".join(still_open[:5]) + (", ..." if len(still_open) > 5 else "")
        raise RoundBlocked(
            f"{len(still_open)} of {len(asked)} queued images are not labeled yet ({named}; "
            f"{answered:.0%} answered, campaign.min_answered={r.cfg.campaign.min_answered}); "
            f"label them, or lower campaign.min_answered, then run round={r.n} again"
        )
    queued_in = {item.sample_id: r.manifest.samples[item.sample_id].round for item in items}
    queues = sorted(set(queued_in.values()))
    outcomes = Counter()
    for n in queues:
        mine = [a for a in answers if queued_in[a.sample_id] == n]
        outcomes.update(
            labeling.apply_answers(
                mine,
                r.manifest,
                r.cfg.data.pool_dir,
                r.cfg.data.raw_dir,
                round=n,
                other_dir=r.cfg.data.other_dir,
                max_skips=r.cfg.labeling.max_skips if r.cfg.labeling.skipped == "pool" else None,
            )
        )
    if still_open:
        log.info("%d queued images still open: %s", len(still_open), still_open[:10])
    queues_named = (
        f"queues of rounds {', '.join(map(str, queues))}"
        if len(queues) > 1
        else f"queue of round {queues[0]}"
    )
    log.info(
        "round %d ingested the answers to the %s: %s",
        r.n,
        queues_named,
        labeling.describe_outcomes(outcomes),
    )
    outcomes.pop(labeling.OPEN, None)  # one answer per item: the open ones are `still_open`
    return IngestResult(answers=len(answers), open=len(still_open), outcomes=dict(outcomes))


def train(r: Round) -> TrainResult:
    """Retrain through `dvc repro` on the labeled set; nothing to train at a cold start."""
    write_params(replace(r.cfg, round=r.n))  # dvc.yaml reads it, even with nothing to train
    counts = labeled_counts(r.cfg)
    wasted = not_labeled(r.manifest)
    answers = sum(counts.values()) + sum(wasted.values())
    if not sum(counts.values()):
        return TrainResult(labeled=0, cold_start=True, answers=answers, not_labeled=wasted)
    repro_seconds = repro(Path.cwd())
    from activelearn.tracking.diagnostics import keep_predictions

    keep_predictions(EVALUATION / "report.json", r.dir)
    with HISTORY.open() as f:
        fit_seconds = list(csv.DictReader(f))[-1].get("seconds")  # none from older versions
    return TrainResult(
        labeled=sum(counts.values()),
        per_class=counts,
        metrics=json.loads(METRICS.read_text()),
        fit_seconds=float(fit_seconds) if fit_seconds else None,
        repro_seconds=repro_seconds,
        answers=answers,
        not_labeled=wasted,
    )


def select(r: Round) -> SelectResult:
    """Ask the stopping criteria, then score the pool and queue the next batch."""
    from activelearn.scoring.select import predict_items, score_and_select

    cfg = r.cfg
    trained = not r.state.train.cold_start
    classifier = None
    if trained:
        from activelearn.learner.classifier import Classifier

        classifier = Classifier.load(MODEL_FILE)
    labeled = r.state.train.labeled
    answers, _ = answers_spent(r)
    # Images still queued from earlier rounds (campaign.min_answered < 1) will be paid for.
    waiting = sum(s.state == "queued" and s.round < r.n for s in r.manifest.samples.values())
    measured = stop_set_agreement(r, classifier)
    share, images = (measured.share, measured.images) if measured else (None, None)
    progress = Progress(labeled, waiting, [*agreement_history(r.n - 1), share], answers)
    if reason := stop_reason(campaign_criteria(cfg.campaign), progress):
        log.info("campaign stops at round %d: %s", r.n, reason)
        return SelectResult(stop=True, agreement=share, agreement_images=images, reason=reason)
    labeled_x = labeled_files = other_x = None
    if trained:
        with np.load(PREPARED / "train.npz") as f:
            labeled_x = f["x"]
            labeled_files = [str(name) for name in f["files"]] if "files" in f else None
        other_paths, other_x = discovery.other_images(cfg.data.other_dir, classifier.prep)
        seed = cfg.seed * 1000 + r.n
        new_classes = cfg.labeling.new_class_after
        discovery.list_new_classes(classifier, other_paths, other_x, new_classes, r.dir, seed)
    for sid in r.manifest.in_state("queued"):  # a select killed after saving: choose again
        if r.manifest.samples[sid].round == r.n:
            r.manifest.set_state(sid, "pool")
    left = cfg.campaign.budget - answers - waiting
    strategy = replace(cfg.strategy, batch_size=min(cfg.strategy.batch_size, left))
    result = score_and_select(
        classifier,
        r.manifest,
        cfg.data.pool_dir,
        strategy,
        r.dir,
        labeled_x=labeled_x,
        prep=preprocessing(cfg),
        seed=cfg.seed * 1000 + r.n,
        scoring=cfg.scoring,
        model_path=MODEL_FILE.resolve() if trained else None,
        feature_cache=FEATURE_CACHE if cfg.model.feature_cache else None,
        labeled_files=labeled_files,
        other_x=other_x,
    )
    for item in result.queue:
        r.manifest.set_state(item.sample_id, "queued", round=r.n)
    r.manifest.save()
    kill_point("select:after-manifest")
    if classifier is not None:  # tasks still open from earlier rounds get this model's say
        open_items = predict_items(classifier, open_queue(r), cfg.data.pool_dir)
        write_queue(r.dir / "rescored.jsonl", open_items)
    return SelectResult(stop=False, agreement=share, agreement_images=images, **result.summary)


def stop_set_agreement(r: Round, classifier) -> Agreement | None:
    """This round's model against the last round's on a fixed unlabeled set, for the stop
    rule (`campaign.stop_patience` > 0); None without a model, or an earlier one to compare.

    The set is drawn once from the pool; images in it that have been labeled since are
    left out of the agreement, since a model agrees with the labels it was trained on,
    and so are those removed from the pool folder (no prediction, `null`).
    """
    cfg = r.cfg.campaign
    if classifier is None or cfg.stop_patience <= 0:
        return None
    if not STOP_SET.exists():
        pool = sorted(r.manifest.in_state("pool"))
        rng = np.random.default_rng(r.cfg.seed)
        chosen = sorted(rng.choice(pool, size=min(cfg.stop_set, len(pool)), replace=False))
        write_atomic(STOP_SET, json.dumps([str(s) for s in chosen]))
    ids = json.loads(STOP_SET.read_text())
    predicted = predict_stop_set(classifier, ids, Path(r.cfg.data.pool_dir))
    write_atomic(r.dir / "stop_predictions.json", json.dumps(predicted))  # aligned with ids
    labeled = [r.manifest.samples[s].state == "labeled" for s in ids]
    removed = [
        s for s, p, known in zip(ids, predicted, labeled, strict=True) if p is None and not known
    ]
    if removed:
        log.warning(
            "%d unlabeled images of the stop set %s are no longer readable in %s, left out "
            "of the agreement (put them back to compare on them): %s",
            len(removed),
            STOP_SET,
            r.cfg.data.pool_dir,
            removed[:5],
        )
    previous = round_dir(r.n - 1) / "stop_predictions.json"
    if not previous.exists():
        return None
    measured = agreement(json.loads(previous.read_text()), predicted, labeled)
    if measured is None:
        log.warning(
            "every image of the stop set %s is labeled or removed from the pool: no stop signal",
            STOP_SET,
        )
    return measured


def predict_stop_set(classifier, ids: list[str], pool_dir: Path) -> list[str | None]:
    """The model's class of each stop-set image (names, not indices: a class added later
    shifts those); None for an image no longer readable in the pool folder."""
    decoded = {}
    for sid in ids:
        with contextlib.suppress(UnreadableImage):  # removed since the set was drawn
            decoded[sid] = preprocess(pool_dir / sid, classifier.prep)
    if not decoded:
        return [None] * len(ids)
    names = classifier.class_names
    classes = classifier.predict_proba(np.stack(list(decoded.values()))).argmax(axis=1)
    predicted = dict(zip(decoded, (names[i] for i in classes), strict=True))
    return [predicted.get(sid) for sid in ids]


def campaign_tracker(cfg: Config, ws: Path) -> CampaignTracker:
    """The campaign's MLflow runs; resumes the campaign run."""
    from activelearn.tracking.tracker import CampaignTracker, tracking_uri

    return CampaignTracker(
        tracking_uri(cfg.tracking.uri, ws),
        cfg.tracking.experiment or ws.name,
        campaign_id(ws),
        cfg.tracking.run_name,
    )


def round_metrics(r: Round, queue: list[QueueItem]) -> dict[str, float]:
    """The round's MLflow metrics, from its state so far and the batch it queued."""
    trained, selected = r.state.train, r.state.select
    metrics = {
        "labeled": trained.labeled,
        "answers_spent": answers_spent(r)[0],
        **{f"answers_{kind}": n for kind, n in answers_spent(r)[1].items()},
        "pool_left": len(r.manifest.in_state("pool")),
        **{f"seconds_{p}": v.seconds for p, v in r.state.phases.items() if v.seconds is not None},
    }
    if trained.fit_seconds:  # the optimizer steps alone, inside seconds_train
        metrics["seconds_fit"] = trained.fit_seconds
    for part, seconds in trained.repro_seconds.items():  # the rest of it
        metrics["seconds_dvc" if part == "dvc" else f"seconds_stage_{part}"] = seconds
    if test := trained.metrics:
        metrics |= {"test_accuracy": test["accuracy"], "macro_f1": test["macro_f1"]}
        if "accuracy_low" in test:  # its 95% interval; rounds trained before lack it
            metrics |= {
                "test_accuracy_low": test["accuracy_low"],
                "test_accuracy_high": test["accuracy_high"],
            }
    uncertainty = [1 - q.confidence for q in queue if q.confidence is not None]
    if uncertainty:
        metrics |= {
            "batch_uncertainty_mean": float(np.mean(uncertainty)),
            "batch_uncertainty_max": float(np.max(uncertainty)),
        }
    if selected.agreement is not None:
        metrics["stop_agreement"] = selected.agreement
    if (r.dir / NEW_CLASSES).exists():
        metrics["new_class_candidates"] = len(json.loads((r.dir / NEW_CLASSES).read_text()))
    if test:
        metrics |= diagnostics(r, test)
    return metrics | {f"labeled_{c}": n for c, n in trained.per_class.items()}


def diagnostics(r: Round, test: dict) -> dict[str, float]:
    """Drop against the last trained round, flipped test images, per-class accuracy, ECE."""
    from activelearn.tracking.diagnostics import round_diagnostics

    earlier = (RoundState.load(n) for n in range(r.n - 1, -1, -1))
    previous = next((s for s in earlier if s.train is not None and s.train.metrics), None)
    classes_file = PREPARED / "classes.json"
    names = json.loads(classes_file.read_text()) if classes_file.is_file() else []
    return round_diagnostics(
        r.dir,
        round_dir(previous.round) if previous is not None else None,
        test,
        previous.train.metrics if previous is not None else None,
        names,
    )


def track(r: Round) -> TrackResult:
    """Log the round to MLflow: a child run of the campaign run, resumed on a rerun."""
    from activelearn.tracking.report import campaign_curve, round_figures

    cfg = r.cfg
    tracker = campaign_tracker(cfg, Path.cwd())
    run_id = tracker.round_run(r.n)
    try:
        tracker.log_params(run_id, flat_params(cfg) | {"round": r.n})
        queue = read_queue(r.dir / "queue.jsonl") if (r.dir / "queue.jsonl").exists() else []
        tracker.log_metrics(run_id, round_metrics(r, queue), step=r.n)
        figures = round_figures(
            r.n, cfg, queue, campaign_curve(Path.cwd()), campaign_curve(Path.cwd(), "answers")
        )
        figures += discovery.new_class_grids(r.dir, preprocessing(cfg))
        flips = [r.dir / "flipped.json"] if (r.dir / "flipped.json").is_file() else []
        tracker.log_artifacts(
            run_id,
            [
                r.dir / "queue.jsonl",
                r.dir / "queue_summary.json",
                r.dir / NEW_CLASSES,
                *figures,
                *flips,
            ],
        )
        version = None
        test = r.state.train.metrics
        if test:
            labeled = r.state.train.labeled
            tracker.log_params(tracker.parent_id, campaign_params(cfg))
            seed_labels = RoundState.load(0).train.labeled if r.n else labeled
            for metric, value in (
                ("test_accuracy", test["accuracy"]),
                ("macro_f1", test["macro_f1"]),
                ("labels_spent", labeled - seed_labels),
            ):
                tracker.log_campaign_point(metric, value, labeled)
            tracker.log_campaign_point(  # the same curve over answers spent
                "test_accuracy_by_answers", test["accuracy"], answers_spent(r)[0]
            )
            version = tracker.register_model(
                run_id, MODEL_FILE.resolve(), f"{tracker.campaign}-classifier", r.n
            )
        kill_point("track:after-log")
    except BaseException:
        tracker.finish(run_id, failed=True)  # the rerun resumes it
        raise
    tracker.finish(run_id)
    if r.state.select.stop:  # no round after this one: the campaign's run ends too
        tracker.finish(tracker.parent_id)
    return TrackResult(run_id=run_id, model_version=version)


def push(r: Round) -> PushResult:
    path = r.dir / "queue.jsonl"
    queue = read_queue(path) if path.exists() else []
    rescored_path = r.dir / "rescored.jsonl"
    rescored = read_queue(rescored_path) if rescored_path.exists() else []
    if queue or rescored:
        r.annotator.push(r.n, queue, rescored)
    return PushResult(pushed=len(queue))


def commit(r: Round) -> CommitResult:
    """Commit dvc.lock and the DVC pointers of the labeled data; tag the commit round-N."""
    if not r.cfg.campaign.git_commit:
        return CommitResult(committed=False)

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, check=True, capture_output=True, text=True)

    data = r.cfg.data
    tracked = [p for p in (data.raw_dir, data.test_dir, data.other_dir) if list_files(p)]
    if tracked:
        with dvc_repo(Path.cwd()) as repo:
            repo.add(tracked)
    files = [
        "dvc.yaml",
        "params.yaml",
        "dvc.lock",
        str(EVALUATION),  # metrics and plots live in git (cache: false): `dvc metrics diff`
        r.cfg.data.manifest,
        CAMPAIGN_ID,
        str(SOURCE_RECORD),
        str(r.dir),
        str(STOP_SET),
        r.cfg.labeling.state_file,
        *(f"{p}.dvc" for p in tracked),
        *(str(Path(p).parent / ".gitignore") for p in tracked),
        str(MODEL_FILE.parent / ".gitignore"),  # DVC's, for the model
        ".gitignore",
        ".dvcignore",
        ".dvc/config",
    ]
    run("git", "add", "--", *[f for f in files if Path(f).exists()])
    if subprocess.run(["git", "diff", "--cached", "--quiet"]).returncode:  # something staged
        run("git", "commit", "-q", "-m", f"round {r.n}")
    run("git", "tag", "-f", round_tag(r.n))
    return CommitResult(committed=True, tag=round_tag(r.n))


PHASE_FUNCTIONS: dict[str, Callable[[Round], PhaseResult]] = {
    "ingest": ingest,
    "train": train,
    "select": select,
    "track": track,
    "push": push,
    "commit": commit,
}


def campaign_params(cfg: Config) -> dict[str, Any]:
    """The campaign run's params: what it is made of, the strategy and seed under short
    names too, so the runs table groups a sweep's campaigns by them."""
    flat = flat_params(cfg)
    del flat["round"]
    return {"strategy": cfg.strategy.name, "seed": cfg.seed} | flat


def flat_params(cfg: Config) -> dict[str, Any]:
    """The resolved config as flat MLflow params, without secrets: tokens are env-only, and
    a user:password written into a URL (a database tracking URI, say) is left out."""
    flat = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[prefix] = _without_credentials(node)

    walk("", OmegaConf.to_container(OmegaConf.structured(cfg)))
    return flat


CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(.*)@")  # a URL's scheme, user info


def _without_credentials(value):
    """`scheme://user:password@host/...` without `user:password@`; a password may hold
    `/`, `?` or `#`, which urlsplit would take for the end of the host."""
    if not isinstance(value, str) or (found := CREDENTIALS.match(value)) is None:
        return value
    scheme, userinfo = found.groups()
    if ":" not in userinfo and "/" in userinfo:  # an `@` in a path, not a user
        return value
    return scheme + value[found.end() :]
