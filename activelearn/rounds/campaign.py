"""Running rounds: one round, resumable, and a campaign of rounds until a stopping
criterion or `campaign.rounds` ends it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path

from activelearn import labeling
from activelearn.config import Config, LabelingKind
from activelearn.core.faults import kill_point
from activelearn.data.images import class_names_of
from activelearn.errors import RoundBlocked
from activelearn.pipeline.run import prepare_data
from activelearn.rounds.phases import PHASE_FUNCTIONS, Round, campaign_tracker, labeled_counts
from activelearn.rounds.state import PHASES, RoundState, agreement_history
from activelearn.strategies.stopping import Progress, campaign_criteria, stop_reason
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.repo import init_workspace

log = logging.getLogger(__name__)


def make_annotator(cfg: Config, class_names: list[str]) -> labeling.Annotator:
    """The configured annotator, made in the workspace (the current folder). A workspace
    whose people label in Label Studio (it has Label Studio state) refuses the simulated
    one, which would overwrite their answers."""
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
            raise RoundBlocked(
                f"{err}; data.pool_labels={cfg.data.pool_labels} is relative to the "
                f"workspace {Path.cwd()}; with people labeling, use labeling=labelstudio"
            ) from None
    from activelearn.labeling.labelstudio import LabelStudioAnnotator

    return LabelStudioAnnotator(cfg.labeling, class_names, cfg.data.pool_dir)


def run_round(cfg: Config) -> RoundState:
    """Run (or finish) round `cfg.round`; returns its state. Raises RoundBlocked."""
    if cfg.round is None or cfg.round < 0:
        raise RoundBlocked(f"round={cfg.round}: give the round to run, e.g. round=0")
    ws = Path(cfg.workspace).resolve()
    init_workspace(ws)
    with contextlib.chdir(ws):
        n = cfg.round
        if n > 0 and not RoundState.load(n - 1).finished:
            raise RoundBlocked(
                f"round {n - 1} has not finished in {ws}: run `python -m activelearn "
                f"round={n - 1}` first"
            )
        state = RoundState.load(n)
        if state.finished:
            log_late_seconds(cfg, state)  # if it was killed before they were logged
            log.info("round %d already finished; nothing to do", n)
            return state
        prepare_data(cfg, pool_required=True)
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
            result.seconds = round(time.perf_counter() - started, 3)
            state.record(phase, result)
            log.info("round %d: %s done in %.1f s", n, phase, result.seconds)
        kill_point("before:late-seconds")
        log_late_seconds(cfg, state)
        return state


def log_late_seconds(cfg: Config, state: RoundState) -> None:
    """The seconds of `track` and the phases after it, on the round's MLflow run (they
    end after `track` logs the others), once."""
    if state.late_seconds_logged:
        return
    late = PHASES[PHASES.index("track") :]
    seconds = {f"seconds_{p}": state.phases[p].seconds for p in late}
    campaign_tracker(cfg, Path.cwd()).log_metrics(state.track.run_id, seconds, state.round)
    state.late_seconds_logged = True
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
    while RoundState.load(n, ws).finished:
        n += 1
    return n


def campaign_over(cfg: Config, ws: Path) -> str:
    """Why the campaign ended, if its last round stopped it for a reason that still holds
    under `cfg`; '' if it goes on (e.g. the budget was raised since)."""
    n = next_round(ws) - 1  # the last finished round; -1 (no state) before the first
    last = RoundState.load(n, ws)
    if last.select is None or not last.select.stop:
        return ""
    progress = Progress(last.train.labeled, agreements=agreement_history(n, ws))
    if stop_reason(campaign_criteria(cfg.campaign), progress) is None:
        return ""
    return f"campaign already finished at round {n}: {last.select.reason}"


def run_campaign(cfg: Config) -> list[RoundState]:
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
        if state.select.stop:
            break
    else:
        if states:  # campaign.rounds ran out: its run ends until more rounds continue it
            tracker = campaign_tracker(cfg, ws)
            tracker.finish(tracker.parent_id)
    return states
