"""Rounds of a campaign, and campaigns of rounds.

    python -m activelearn round=N            one round
    python -m activelearn campaign.rounds=R  rounds up to R-1 with the simulated annotator

A round runs its phases in order (`phases`): ingest the answers to earlier queues,
retrain through `dvc repro`, ask the stopping criteria and select a batch, log to
MLflow, push the batch to the labeling side, commit and tag `round-N` in the workspace's
git history. Each phase records its typed result in `rounds/<N>/state.json` (`state`,
written atomically) before the next starts, and every phase is safe to run again, so a
round killed at any point is finished by running it again (`campaign`), and running a
finished round changes nothing. `sweep` runs many campaigns side by side; `checks`
refuses settings that cannot work before any of it.

The package imports nothing itself: the command line imports `checks` and `sweep` at
start-up, and they must not pull in the round loop (MLflow, DVC, scikit-learn).
"""
