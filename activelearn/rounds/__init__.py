"""One round of a campaign, resumable, and a campaign of rounds.

    python -m activelearn round=N          one round
    python -m activelearn campaign.rounds=R  rounds up to R-1 with the simulated annotator

A round runs its phases in order: ingest the answers to earlier queues, retrain through
`dvc repro`, score the pool and select a batch, log to MLflow, push the batch to the
labeling side, commit and tag `round-N` in the workspace's git history. Each phase
records its result in `rounds/<N>/state.json` (written atomically) before the next
starts, and every phase is safe to run again, so a round killed at any point is
finished by running it again, and running a finished round changes nothing.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import OmegaConf

from activelearn import labeling
from activelearn.config import Config, LabelingKind
from activelearn.core.faults import kill_point
from activelearn.core.files import write_atomic
from activelearn.data.images import (
    UnreadableImage,
    class_folders,
    class_names_of,
    list_files,
    preprocess,
    preprocessing,
)
from activelearn.errors import RoundBlocked
from activelearn.pipeline.run import prepare_data, repro, write_params
from activelearn.workspace.layout import (
    CAMPAIGN_ID,
    EVALUATION,
    HISTORY,
    METRICS,
    MODEL_FILE,
    PREPARED,
    STOP_SET,
    round_dir,
    round_tag,
)
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.queue import QueueItem, read_queue, write_queue
from activelearn.workspace.repo import campaign_id, dvc_repo, init_workspace

if TYPE_CHECKING:
    from activelearn.tracking.tracker import CampaignTracker

log = logging.getLogger(__name__)


PHASES = ("ingest", "train", "select", "track", "push", "commit")


class RoundState:
    """`rounds/<N>/state.json`: the result of every finished phase."""

    def __init__(self, n: int, workspace: Path = Path()):
        self.path = workspace / round_dir(n) / "state.json"
        self.data = (
            json.loads(self.path.read_text()) if self.path.exists() else {"round": n, "phases": {}}
        )

    @property
    def phases(self) -> dict:
        return self.data["phases"]

    @property
    def finished(self) -> bool:
        return all(p in self.phases for p in PHASES)

    def record(self, phase: str, result: dict) -> None:
        self.phases[phase] = result
        self.save()

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=2))


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


def make_annotator(cfg: Config, class_names: list[str]) -> labeling.Annotator:
    """The configured annotator. A workspace whose people label in Label Studio (it has
    Label Studio state) refuses the simulated one, which would overwrite their answers."""
    if cfg.labeling.kind == LabelingKind.simulated:
        if Path(cfg.labeling.state_file).exists():
            raise RoundBlocked(
                f"{cfg.labeling.state_file} says people label this workspace in Label Studio: "
                "run it with labeling=labelstudio (and its labeling.url), not the simulated "
                "annotator, which would replace their answers with the labels file's"
            )
        try:
            return labeling.SimulatedAnnotator(
                cfg.data.pool_labels, class_names, cfg.labeling.error_rate, cfg.seed
            )
        except FileNotFoundError as err:
            raise RoundBlocked(f"{err}; with people labeling, use labeling=labelstudio") from None
    from activelearn.labeling.labelstudio import LabelStudioAnnotator

    return LabelStudioAnnotator(cfg.labeling, class_names, cfg.data.pool_dir)


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


def ingest(r: Round) -> dict:
    """Answers to earlier queues into the labeled set; stops if too few are answered."""
    items = open_queue(r)
    if not items:
        return {"answers": 0}
    answered = [s for s in r.manifest.samples.values() if s.state in ("labeled", "rejected")]
    answers = r.annotator.collect(r.n - 1, items, r.dir, answered)
    pool = Path(r.cfg.data.pool_dir)
    answers = [  # nobody can answer an image removed from the pool: it holds nothing up
        labeling.Answer(a.sample_id, labeling.REMOVED)
        if a.status == labeling.OPEN and not (pool / a.sample_id).exists()
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
    counts = Counter()
    for n in sorted(set(queued_in.values())):
        mine = [a for a in answers if queued_in[a.sample_id] == n]
        counts.update(
            labeling.apply_answers(
                mine, r.manifest, r.cfg.data.pool_dir, r.cfg.data.raw_dir, round=n
            )
        )
    if still_open:
        log.info("%d queued images still open: %s", len(still_open), still_open[:10])
    return {"answers": len(answers), "open": len(still_open), **counts}


def train(r: Round) -> dict:
    """Retrain through `dvc repro` on the labeled set; nothing to train at a cold start."""
    write_params(replace(r.cfg, round=r.n))  # dvc.yaml reads it, even with nothing to train
    counts = labeled_counts(r.cfg)
    if not sum(counts.values()):
        return {"cold_start": True, "labeled": 0}
    repro_seconds = repro(Path.cwd())
    metrics = json.loads(METRICS.read_text())
    with HISTORY.open() as f:
        fit_seconds = list(csv.DictReader(f))[-1].get("seconds")  # none from older versions
    return {
        "labeled": sum(counts.values()),
        "per_class": counts,
        "metrics": metrics,
        "fit_seconds": float(fit_seconds) if fit_seconds else None,
        "repro_seconds": repro_seconds,
    }


def select(r: Round) -> dict:
    """Score the pool, check the stopping rule, and queue the next batch."""
    from activelearn.scoring.select import predict_items, score_and_select

    cfg = r.cfg
    trained = not r.state.phases["train"].get("cold_start")
    classifier = None
    if trained:
        from activelearn.learner.classifier import Classifier

        classifier = Classifier.load(MODEL_FILE)
    labeled = r.state.phases["train"]["labeled"]
    # Images still queued from earlier rounds (campaign.min_answered < 1) will be paid for.
    waiting = sum(s.state == "queued" and s.round < r.n for s in r.manifest.samples.values())
    stop = stopping_signal(r, classifier)
    left = cfg.campaign.budget - labeled - waiting
    if stop["stop"] or left <= 0:
        reason = stop["reason"] if stop["stop"] else f"label budget of {cfg.campaign.budget} spent"
        if waiting and not stop["stop"]:
            reason += f" ({labeled} labeled, {waiting} still queued)"
        log.info("campaign stops at round %d: %s", r.n, reason)
        return {**stop, "stop": True, "reason": reason, "queued": 0}
    labeled_x = None
    if trained:
        with np.load(PREPARED / "train.npz") as f:
            labeled_x = f["x"]
    for sid in r.manifest.in_state("queued"):  # a select killed after saving: choose again
        if r.manifest.samples[sid].round == r.n:
            r.manifest.set_state(sid, "pool")
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
    )
    for item in result.queue:
        r.manifest.set_state(item.sample_id, "queued", round=r.n)
    r.manifest.save()
    kill_point("select:after-manifest")
    if classifier is not None:  # tasks still open from earlier rounds get this model's say
        open_items = predict_items(classifier, open_queue(r), cfg.data.pool_dir)
        write_queue(r.dir / "rescored.jsonl", open_items)
    return {**stop, **result.summary}


def stopping_signal(r: Round, classifier) -> dict:
    """Stabilizing predictions: agreement of consecutive models on a fixed unlabeled set.

    The set is drawn once from the pool; images in it that have been labeled since are
    left out of the agreement, since a model agrees with the labels it was trained on,
    and so are those removed from the pool folder (no prediction, `null`).
    """
    cfg = r.cfg.campaign
    if classifier is None or cfg.stop_patience <= 0:
        return {"stop": False, "agreement": None}
    if not STOP_SET.exists():
        pool = sorted(r.manifest.in_state("pool"))
        rng = np.random.default_rng(r.cfg.seed)
        chosen = sorted(rng.choice(pool, size=min(cfg.stop_set, len(pool)), replace=False))
        write_atomic(STOP_SET, json.dumps([str(s) for s in chosen]))
    ids = json.loads(STOP_SET.read_text())
    predicted = predict_stop_set(classifier, ids, Path(r.cfg.data.pool_dir))
    write_atomic(r.dir / "stop_predictions.json", json.dumps(predicted))  # aligned with ids
    unlabeled = [i for i, s in enumerate(ids) if r.manifest.samples[s].state != "labeled"]
    removed = [ids[i] for i in unlabeled if predicted[i] is None]
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
        return {"stop": False, "agreement": None}
    before = json.loads(previous.read_text())
    compared = [i for i in unlabeled if predicted[i] is not None and before[i] is not None]
    if not compared:
        log.warning(
            "every image of the stop set %s is labeled or removed from the pool: no stop signal",
            STOP_SET,
        )
        return {"stop": False, "agreement": None}
    agreement = float(np.mean([predicted[i] == before[i] for i in compared]))
    streak = 0
    if agreement >= cfg.stop_agreement:  # this round, and those in a row before it
        streak = 1 + stable_rounds(r.n - 1, cfg.stop_agreement)
    stop = streak >= cfg.stop_patience
    reason = f"predictions stable: agreement {agreement:.3f} for {streak} rounds" if stop else ""
    return {
        "stop": stop,
        "agreement": agreement,
        "agreement_images": len(compared),
        "reason": reason,
    }


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


def stable_rounds(n: int, agreement: float, workspace: Path = Path()) -> int:
    """Rounds in a row, back from round `n`, whose models agreed at least `agreement`."""
    streak = 0
    while n - streak >= 0:
        earlier = RoundState(n - streak, workspace).phases.get("select", {}).get("agreement")
        if earlier is None or earlier < agreement:
            break
        streak += 1
    return streak


def campaign_tracker(cfg: Config, ws: Path) -> CampaignTracker:
    """The campaign's MLflow runs; resumes the campaign run."""
    from activelearn.tracking.tracker import CampaignTracker, tracking_uri

    campaign = campaign_id(ws)
    return CampaignTracker(
        tracking_uri(cfg.tracking.uri, ws), cfg.tracking.experiment or campaign, campaign, ws
    )


def track(r: Round) -> dict:
    """Log the round to MLflow: a child run of the campaign run, resumed on a rerun."""
    from activelearn.tracking.report import campaign_curve, round_figures

    cfg = r.cfg
    tracker = campaign_tracker(cfg, Path.cwd())
    run_id = tracker.round_run(r.n)
    try:
        tracker.log_params(run_id, flat_params(cfg) | {"round": r.n})
        train_result, select_result = r.state.phases["train"], r.state.phases["select"]
        queue = read_queue(r.dir / "queue.jsonl") if (r.dir / "queue.jsonl").exists() else []
        metrics = {
            "labeled": train_result["labeled"],
            "pool_left": len(r.manifest.in_state("pool")),
            **{f"seconds_{p}": v["seconds"] for p, v in r.state.phases.items() if "seconds" in v},
        }
        if train_result.get("fit_seconds"):  # the optimizer steps alone, inside seconds_train
            metrics["seconds_fit"] = train_result["fit_seconds"]
        for part, seconds in train_result.get("repro_seconds", {}).items():  # the rest of it
            metrics["seconds_dvc" if part == "dvc" else f"seconds_stage_{part}"] = seconds
        test = train_result.get("metrics")
        if test:
            metrics |= {"test_accuracy": test["accuracy"], "macro_f1": test["macro_f1"]}
        uncertainty = [1 - q.confidence for q in queue if q.confidence is not None]
        if uncertainty:
            metrics |= {
                "batch_uncertainty_mean": float(np.mean(uncertainty)),
                "batch_uncertainty_max": float(np.max(uncertainty)),
            }
        if select_result.get("agreement") is not None:
            metrics["stop_agreement"] = select_result["agreement"]
        metrics |= {f"labeled_{c}": n for c, n in train_result.get("per_class", {}).items()}
        tracker.log_metrics(run_id, metrics, step=r.n)
        figures = round_figures(r.n, cfg, queue, campaign_curve(Path.cwd()))
        tracker.log_artifacts(
            run_id, [r.dir / "queue.jsonl", r.dir / "queue_summary.json", *figures]
        )
        version = None
        if test:
            tracker.log_campaign_point("test_accuracy", test["accuracy"], train_result["labeled"])
            version = tracker.register_model(
                run_id, MODEL_FILE.resolve(), f"{tracker.campaign}-classifier", r.n
            )
        kill_point("track:after-log")
    except BaseException:
        tracker.finish(run_id, failed=True)  # the rerun resumes it
        raise
    tracker.finish(run_id)
    if select_result.get("stop"):  # no round after this one: the campaign's run ends too
        tracker.finish(tracker.parent_id)
    return {"run_id": run_id, "model_version": version}


def push(r: Round) -> dict:
    path = r.dir / "queue.jsonl"
    queue = read_queue(path) if path.exists() else []
    rescored_path = r.dir / "rescored.jsonl"
    rescored = read_queue(rescored_path) if rescored_path.exists() else []
    if queue or rescored:
        r.annotator.push(r.n, queue, rescored)
    return {"pushed": len(queue)}


def commit(r: Round) -> dict:
    """Commit dvc.lock and the DVC pointers of the labeled data; tag the commit round-N."""
    if not r.cfg.campaign.git_commit:
        return {"committed": False}

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, check=True, capture_output=True, text=True)

    tracked = [p for p in (r.cfg.data.raw_dir, r.cfg.data.test_dir) if list_files(p)]
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
    return {"committed": True, "tag": round_tag(r.n)}


PHASE_FUNCTIONS = {
    "ingest": ingest,
    "train": train,
    "select": select,
    "track": track,
    "push": push,
    "commit": commit,
}


def flat_params(cfg: Config) -> dict:
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


def run_round(cfg: Config) -> dict:
    """Run (or finish) round `cfg.round`; returns its state. Raises RoundBlocked."""
    if cfg.round is None or cfg.round < 0:
        raise RoundBlocked(f"round={cfg.round}: give the round to run, e.g. round=0")
    ws = Path(cfg.workspace).resolve()
    init_workspace(ws)
    with contextlib.chdir(ws):
        n = cfg.round
        if n > 0 and not RoundState(n - 1).finished:
            raise RoundBlocked(
                f"round {n - 1} has not finished in {ws}: run `python -m activelearn "
                f"round={n - 1}` first"
            )
        state = RoundState(n)
        if state.finished:
            log_late_seconds(cfg, state)  # if it was killed before they were logged
            log.info("round %d already finished; nothing to do", n)
            return state.data
        prepare_data(cfg)
        if n == 0 and not state.phases:
            check_budget(cfg)
        class_names = class_names_of(cfg.data.raw_dir, cfg.data.test_dir)
        r = Round(cfg, n, state, Manifest.load(cfg.data.manifest), make_annotator(cfg, class_names))
        for phase in PHASES:
            if phase in state.phases:
                continue
            kill_point(f"before:{phase}")
            started = time.perf_counter()
            result = PHASE_FUNCTIONS[phase](r)
            result["seconds"] = round(time.perf_counter() - started, 3)
            state.record(phase, result)
            log.info("round %d: %s done in %.1f s", n, phase, result["seconds"])
        kill_point("before:late-seconds")
        log_late_seconds(cfg, state)
        return state.data


def log_late_seconds(cfg: Config, state: RoundState) -> None:
    """The seconds of `track` and the phases after it, on the round's MLflow run (they
    end after `track` logs the others), once."""
    if state.data.get("late_seconds_logged"):
        return
    phases = state.phases
    late = PHASES[PHASES.index("track") :]
    tracker = campaign_tracker(cfg, Path.cwd())
    n = state.data["round"]
    tracker.log_metrics(
        phases["track"]["run_id"], {f"seconds_{p}": phases[p]["seconds"] for p in late}, n
    )
    state.data["late_seconds_logged"] = True
    state.save()


def check_budget(cfg: Config) -> None:
    """Refuse a budget the labels a campaign starts with have spent already: it would
    train once and stop, and a budget raised later would retrain on the same labels."""
    labeled = sum(labeled_counts(cfg).values())
    if labeled >= cfg.campaign.budget:
        raise RoundBlocked(
            f"campaign.budget={cfg.campaign.budget} is spent before the first round: the "
            f"campaign starts with {labeled} labeled images in {cfg.data.raw_dir}/; give a "
            f"budget above {labeled}"
        )


def next_round(ws: Path) -> int:
    """The first round of the workspace that has not finished."""
    n = 0
    while RoundState(n, ws).finished:
        n += 1
    return n


def campaign_over(cfg: Config, ws: Path) -> str:
    """Why the campaign ended, if its last round stopped it for a reason that still holds
    under `cfg`; '' if it goes on (e.g. the budget was raised since)."""
    n = next_round(ws) - 1  # the last finished round; -1 (no state) before the first
    last = RoundState(n, ws).phases
    if not last.get("select", {}).get("stop"):
        return ""
    rule = cfg.campaign
    if last["train"]["labeled"] >= rule.budget or (
        rule.stop_patience > 0 and stable_rounds(n, rule.stop_agreement, ws) >= rule.stop_patience
    ):
        return f"campaign already finished at round {n}: {last['select']['reason']}"
    return ""


def run_campaign(cfg: Config) -> list[dict]:
    """Rounds until `campaign.rounds` are done, the budget is spent or predictions settle."""
    if cfg.labeling.kind != "simulated":
        raise RoundBlocked("campaign.rounds needs labeling=simulated: people answer between rounds")
    ws = Path(cfg.workspace).resolve()
    if over := campaign_over(cfg, ws):  # another round would only stop again
        log.info("%s", over)
        return []
    states = []
    for n in range(next_round(ws), cfg.campaign.rounds):
        state = run_round(replace(cfg, round=n))
        states.append(state)
        if state["phases"]["select"].get("stop"):
            break
    else:
        if states:  # campaign.rounds ran out: its run ends until more rounds continue it
            tracker = campaign_tracker(cfg, ws)
            tracker.finish(tracker.parent_id)
    return states
