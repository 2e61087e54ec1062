"""Where a real round's time goes: every phase against the training it is there for.

    .venv/bin/python bench/rounds.py [--rounds 4] [--out /tmp/rounds-bench]

Runs a digits campaign with the default config (simulated annotator, local sqlite MLflow,
DVC, git) twice, in fresh workspaces under `--out`:

- one process per round: `python -m activelearn round=N` for N = 0 .. rounds-1, as
  people run it between labeling sessions (every round pays the imports);
- one process for all: `python -m activelearn campaign.rounds=R`, as sweeps run.

The baseline is the training itself, measured in the same run: the seconds of the
optimizer steps (`fit_seconds` in the round's state). Printed per round: wall time of the
command (or of the round, in the campaign), each phase, the train phase split into its
DVC stages and DVC's own time (checks, hashes, cache, lock, starting the stage
commands), and the share of the wall time that is not training. The wall time outside
the phases is start-up and exit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHASES = ["ingest", "train", "select", "track", "push", "commit"]
REPRO_PARTS = ["prepare", "train", "evaluate", "dvc"]  # DVC stages, then DVC's own time


def activelearn(*overrides: str, ws: Path) -> float:
    """Run `python -m activelearn` with `overrides` on workspace `ws`; its wall seconds."""
    cmd = [sys.executable, "-m", "activelearn", *overrides, f"workspace={ws}"]
    started = time.perf_counter()
    done = subprocess.run(
        [*cmd, f"hydra.run.dir={ws.parent / 'hydra' / ws.name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def phases(ws: Path, n: int) -> dict:
    return json.loads((ws / "rounds" / str(n) / "state.json").read_text())["phases"]


def row(mode: str, n: int, wall: float, state: dict) -> dict:
    seconds = {p: state[p]["seconds"] for p in PHASES}
    fit = state["train"].get("fit_seconds") or 0.0
    repro = state["train"].get("repro_seconds", {})  # the train phase: stages, DVC's own
    return {
        "mode": mode,
        "round": n,
        "wall": wall,
        "outside phases": wall - sum(seconds.values()),
        **seconds,
        **{f"train: {part}": repro.get(part, 0.0) for part in REPRO_PARTS},
        "fit": fit,
        "not training": 1 - fit / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="at least 2: round 0 is cold")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rounds-bench"))
    parser.add_argument(
        "--kinds",
        action="store_true",
        help="only model=backbone (feature cache) against model=cnn on --pool images",
    )
    parser.add_argument("--pool", type=int, default=20_000, help="--kinds: pool size")
    parser.add_argument("--size", type=int, default=32, help="--kinds: PNG side, CNN input")
    parser.add_argument("--backbone-size", type=int, default=96, help="--kinds: its input")
    parser.add_argument("--batch", type=int, default=100, help="--kinds: images per round")
    parser.add_argument("--min-steps", type=int, default=300, help="--kinds: training floor")
    args = parser.parse_args()
    if args.kinds:
        kinds(args)
        return
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: rounds 1 and on are measured")
    mark = args.out / ".rounds-bench"  # the only folder this run may empty: one it made
    if args.out.exists() and any(args.out.iterdir()) and not mark.exists():
        parser.error(f"--out {args.out} holds files this benchmark did not write: pick another")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    mark.touch()

    rows = []
    apart = args.out / "round-per-process"
    for n in range(args.rounds):
        wall = activelearn(f"round={n}", ws=apart)
        rows.append(row("round=N", n, wall, phases(apart, n)))
        print(f"round={n}: {wall:.1f} s", flush=True)

    together = args.out / "one-process"
    total = activelearn(f"campaign.rounds={args.rounds}", ws=together)
    print(f"campaign.rounds={args.rounds}: {total:.1f} s", flush=True)
    campaign = [phases(together, n) for n in range(args.rounds)]
    start_and_exit = total - sum(p[q]["seconds"] for p in campaign for q in PHASES)
    for n, state in enumerate(campaign):  # start-up and exit shared out over the rounds
        wall = sum(state[q]["seconds"] for q in PHASES) + start_and_exit / args.rounds
        rows.append(row("campaign", n, wall, state))

    columns = list(rows[0])
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for r in rows:
        cells = [f"{v:.0%}" if k == "not training" else v for k, v in r.items()]
        print("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in cells))
    for mode in ("round=N", "campaign"):
        trained = [r for r in rows if r["mode"] == mode and r["round"] > 0 and r["fit"]]
        wall, fit, train, dvc = (
            sum(r[k] for r in trained) for k in ("wall", "fit", "train", "train: dvc")
        )
        print(
            f"\n{mode}, rounds 1-{args.rounds - 1}: {wall / len(trained):.1f} s a round; "
            f"training {fit / len(trained):.1f} s, so {1 - fit / wall:.0%} is not training; "
            f"{1 - train / wall:.0%} is outside the train phase (dvc repro); DVC's own "
            f"time alone is {dvc / len(trained):.1f} s, {dvc / fit:.0%} of the training"
        )


def kinds(args: argparse.Namespace) -> None:
    """model=backbone against model=cnn: seconds per round, train and scoring apart."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import os

    from kinds import run_kind
    from scoring import POOL_CACHE, generate_pool, image_id

    generate_pool(POOL_CACHE, args.pool, args.size, 0)
    pool_dir = POOL_CACHE / f"pool-{args.size}px-seed0"
    ids = [image_id(i) for i in range(args.pool)]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"{os.cpu_count()} cores, load avg {load}; pool {len(ids)} PNGs {args.size}px")
    rows = [r for kind in ("cnn", "backbone") for r in run_kind(kind, pool_dir, ids, args)]
    print("\n| model | round | train | score | round |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['round']} | {r['train']:.1f} s | {r['score']:.1f} s "
            f"| {r['round total']:.1f} s |"
        )
    back = {r["round"]: r for r in rows if r["kind"] == "backbone"}
    cnn = [r for r in rows if r["kind"] == "cnn" and r["round"] > 1]
    later = [r for r in back.values() if r["round"] > 1]
    print(
        f"\nbackbone: round 2's scoring / round 1's = "
        f"{back[2]['score'] / back[1]['score']:.3f} (goal < 0.1); from round 2 on "
        f"{np.mean([r['round total'] for r in later]):.1f} s a round against the CNN's "
        f"{np.mean([r['round total'] for r in cnn]):.1f} s; load avg after: "
        + ", ".join(f"{v:.1f}" for v in os.getloadavg())
    )


if __name__ == "__main__":
    main()
