"""`rounds/<N>/state.json`: typed phase results saved and loaded, and the files of the
version before the types, which load as they are (a round it left unfinished resumes)."""

import json

from activelearn.config import CampaignConfig, Config
from activelearn.rounds.campaign import campaign_over, next_round
from activelearn.rounds.state import (
    PHASES,
    CommitResult,
    IngestResult,
    PushResult,
    RoundState,
    SelectResult,
    TrackResult,
    TrainResult,
)

STATES_BEFORE_TYPES = [
    {
        "round": 0,
        "phases": {
            "ingest": {"answers": 0, "seconds": 0.0},
            "train": {"cold_start": True, "labeled": 0, "seconds": 0.045},
            "select": {
                "stop": False,
                "agreement": None,
                "strategy": "random",
                "cold_start": True,
                "scored": 0,
                "unreadable": 0,
                "queued": 6,
                "pool_confidence": None,
                "class_mix": {},
                "seconds": 2.178,
            },
            "track": {
                "run_id": "6257af010ca647419a9a1966cbd4c4ef",
                "model_version": None,
                "seconds": 6.59,
            },
            "push": {"pushed": 6, "seconds": 0.0},
            "commit": {"committed": False, "seconds": 0.0},
        },
        "late_seconds_logged": True,
    },
    {
        "round": 1,
        "phases": {
            "ingest": {"answers": 6, "open": 0, "accepted": 6, "seconds": 0.033},
            "train": {
                "labeled": 6,
                "per_class": {"c0": 3, "c1": 1, "c2": 2},
                "metrics": {
                    "accuracy": 1.0,
                    "macro_precision": 1.0,
                    "macro_recall": 1.0,
                    "macro_f1": 1.0,
                    "test_images": 18,
                    "labeled_images": 6,
                },
                "fit_seconds": 1.667,
                "repro_seconds": {
                    "prepare": 0.023,
                    "train": 5.997,
                    "evaluate": 0.098,
                    "dvc": 0.843,
                },
                "seconds": 6.98,
            },
            "select": {
                "stop": False,
                "agreement": None,
                "strategy": "margin",
                "cold_start": False,
                "scored": 84,
                "unreadable": 0,
                "queued": 6,
                "pool_confidence": 0.8562085053750447,
                "class_mix": {"c1": 6},
                "seconds": 0.26,
            },
            "track": {
                "run_id": "085a476dd19248bab451a2371714586c",
                "model_version": 1,
                "seconds": 0.731,
            },
            "push": {"pushed": 6, "seconds": 0.0},
            "commit": {"committed": False, "seconds": 0.0},
        },
        "late_seconds_logged": True,
    },
    {
        "round": 2,
        "phases": {
            "ingest": {"answers": 6, "open": 0, "accepted": 6, "seconds": 0.026},
            "train": {
                "labeled": 12,
                "per_class": {"c0": 3, "c1": 7, "c2": 2},
                "metrics": {
                    "accuracy": 1.0,
                    "macro_precision": 1.0,
                    "macro_recall": 1.0,
                    "macro_f1": 1.0,
                    "test_images": 18,
                    "labeled_images": 12,
                },
                "fit_seconds": 1.124,
                "repro_seconds": {
                    "prepare": 0.058,
                    "train": 1.417,
                    "evaluate": 0.069,
                    "dvc": 1.124,
                },
                "seconds": 2.688,
            },
            "select": {
                "stop": True,
                "agreement": 1.0,
                "agreement_images": 78,
                "reason": "predictions stable: agreement 1.000 for 1 rounds",
                "queued": 0,
                "seconds": 0.08,
            },
            "track": {
                "run_id": "d1c64e2e25ed4bf89e720f1633f736c2",
                "model_version": 2,
                "seconds": 0.676,
            },
            "push": {"pushed": 0, "seconds": 0.0},
            "commit": {"committed": False, "seconds": 0.0},
        },
        "late_seconds_logged": True,
    },
]


def kept(old: dict, new: dict) -> bool:
    """Every key of `old`, nested, is in `new` with its value."""
    return all(
        key in new and (kept(value, new[key]) if isinstance(value, dict) else value == new[key])
        for key, value in old.items()
    )


def test_state_files_of_the_version_before_the_types_load_and_keep_their_keys(tmp_path):
    for old in STATES_BEFORE_TYPES:
        (tmp_path / "rounds" / str(old["round"])).mkdir(parents=True)
        (tmp_path / "rounds" / str(old["round"]) / "state.json").write_text(json.dumps(old))
    cold, trained, stopped = (RoundState.load(n, tmp_path) for n in range(3))
    assert all(s.finished and s.late_seconds_logged for s in (cold, trained, stopped))
    assert cold.train.cold_start and cold.train.metrics is None and cold.train.per_class == {}
    assert cold.ingest.answers == 0 and cold.ingest.outcomes == {}
    assert (cold.select.strategy, cold.select.queued) == ("random", 6)
    assert cold.track.model_version is None and not cold.commit.committed
    assert trained.ingest == IngestResult(
        answers=6, open=0, outcomes={"accepted": 6}, seconds=0.033
    )
    assert trained.train.metrics["accuracy"] == 1.0 and trained.train.fit_seconds == 1.667
    assert trained.train.repro_seconds["dvc"] == 0.843 and trained.phases["select"].seconds == 0.26
    assert stopped.select.stop and stopped.select.agreement_images == 78
    assert stopped.select.reason == "predictions stable: agreement 1.000 for 1 rounds"

    assert next_round(tmp_path) == 3
    cfg = Config(campaign=CampaignConfig(stop_agreement=0.99, stop_patience=1))
    assert campaign_over(cfg, tmp_path) == (
        "campaign already finished at round 2: predictions stable: agreement 1.000 for 1 rounds"
    )
    patient = Config(campaign=CampaignConfig(stop_agreement=0.99, stop_patience=2))
    assert campaign_over(patient, tmp_path) == ""  # round 1 measured no agreement
    for state, old in zip((cold, trained, stopped), STATES_BEFORE_TYPES, strict=True):
        state.save()  # as a rerun would
        assert kept(old, json.loads(state.path.read_text())), old["round"]
        assert RoundState.load(state.round, tmp_path) == state


def test_ingest_outcomes_stay_keys_of_their_own_in_the_state_file():
    saved = {"answers": 6, "open": 3, "accepted": 2, "unknown_label": 1, "seconds": 0.1}
    result = IngestResult.from_json(saved)
    assert (result.answers, result.open) == (6, 3)
    assert result.outcomes == {"accepted": 2, "unknown_label": 1}
    assert result.to_json() == saved


def test_a_round_state_saves_every_phase_and_loads_as_it_was(tmp_path):
    state = RoundState(3, workspace=tmp_path)
    results = [
        IngestResult(answers=4, open=1, outcomes={"accepted": 2, "skipped": 1}),
        TrainResult(labeled=20, per_class={"a": 20}, metrics={"accuracy": 0.5}, fit_seconds=1.5),
        SelectResult(stop=False, agreement=0.8, agreement_images=9, strategy="margin", queued=4),
        TrackResult(run_id="abc", model_version=3),
        PushResult(pushed=4),
        CommitResult(committed=True, tag="round-3"),
    ]
    for phase, result in zip(PHASES, results, strict=True):
        result.seconds = 0.5
        state.record(phase, result)
        assert RoundState.load(3, tmp_path) == state, phase
    assert state.finished and list(state.phases.values()) == results
    saved = json.loads((tmp_path / "rounds" / "3" / "state.json").read_text())
    assert saved["phases"]["train"]["metrics"] == {"accuracy": 0.5}  # where reports read it
    assert [p["seconds"] for p in saved["phases"].values()] == [0.5] * len(PHASES)
    assert not RoundState.load(4, tmp_path).phases


def test_the_summary_line_gives_the_accuracy_with_its_interval():
    from activelearn.__main__ import accuracy_text

    three = {"accuracy": 2 / 3, "accuracy_low": 0.2077, "accuracy_high": 0.9385, "test_images": 3}
    assert accuracy_text(three) == (
        "test accuracy 0.6667 (95% interval 0.208-0.939) on 3 test images"
    )
    older = {"accuracy": 0.9, "test_images": 50}  # evaluated before the interval was kept
    assert accuracy_text(older) == "test accuracy 0.9000 on 50 test images"
