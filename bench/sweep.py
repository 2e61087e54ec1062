"""A sweep's jobs one after another against two at a time (Hydra's joblib launcher).

    .venv/bin/python bench/sweep.py [--rounds 2] [--seeds 0,1,2] [--jobs 2] [--out /tmp/sweep-bench]

Runs the same digits sweep, `strategy=hybrid,random` x `--seeds` (2 x 3 = 6 campaigns of
`--rounds` rounds, the default config: DVC, git, the sweep's MLflow store), twice in fresh
sweep folders under `--out`: sequential (Hydra's basic launcher, one process, every job
with all the cores) and parallel (`hydra/launcher=joblib hydra.launcher.n_jobs=--jobs`,
each job's TensorFlow given cores / jobs threads, an MLflow server as the store's one
writer). The baseline is the sequential run, measured in the same run.

Printed per mode: the wall time of the command; the sum over jobs and rounds of the
optimizer steps (`fit_seconds` in each round's state) and of the rounds' phases; their
ratio to the sequential run. Then a model fitted to these figures predicts both modes on
more cores (`--predict 16`): a job is its fits plus the rest (DVC, git, MLflow, Python,
single-threaded); fits follow Amdahl's law with the parallel share the two runs' fits give
(1 thread each in parallel, all cores in sequence); the parallel run pays the MLflow
server's start once and runs min(jobs, cores) jobs at a time with one thread each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = "hybrid,random"


def sweep(out: Path, rounds: int, seeds: str, jobs: int) -> float:
    """Run the sweep into `out`; its wall seconds."""
    cmd = [
        *(sys.executable, "-m", "activelearn", "-m", f"campaign.rounds={rounds}"),
        *(f"strategy={STRATEGIES}", f"seed={seeds}", f"hydra.sweep.dir={out}"),
        "campaign.stop_patience=0",  # every campaign runs all its rounds: like with like
    ]
    if jobs > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    env = {k: v for k, v in os.environ.items() if k != "BENTOML_HOME"}  # each workspace's own
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def job_seconds(out: Path) -> dict[str, float]:
    """Sums over the sweep's jobs and rounds: optimizer steps, and all the phases."""
    fit = phases = 0.0
    count = 0
    for state in out.glob("*/campaign/rounds/*/state.json"):
        data = json.loads(state.read_text())["phases"]
        fit += data["train"].get("fit_seconds") or 0.0
        phases += sum(p["seconds"] or 0.0 for p in data.values())
        count += 1
    return {"fit": fit, "phases": phases, "rounds": count}


def amdahl_share(one_thread: float, many: float, threads: int) -> float:
    """The parallel share p of a task taking `one_thread` s on one thread and `many` s on
    `threads`: many = one_thread * ((1 - p) + p / threads); clipped to [0, 1]."""
    if threads <= 1 or one_thread <= 0:
        return 0.0
    p = (1 - many / one_thread) / (1 - 1 / threads)
    return min(1.0, max(0.0, p))


def predict(seq: dict, par: dict, jobs: int, cores_now: int, n_jobs: int, cores: int) -> dict:
    """Wall seconds of both modes on `cores`, from the two runs measured on `cores_now`
    with `n_jobs` at once (see the module's docstring)."""
    fit_all = seq["fit"] / jobs  # a job's fits with every core (sequential run)
    fit_share = par["fit"] / jobs  # with cores_now / n_jobs threads (parallel run)
    share = max(1, cores_now // n_jobs)
    p = amdahl_share(fit_share, fit_all, cores_now // share)  # fit_share as the 1-thread time
    fit_one = fit_share  # measured with `share` threads; 1 when n_jobs = cores

    def fit_on(threads: int) -> float:
        return fit_one * ((1 - p) + p * share / threads) if threads >= share else fit_one

    rest = max(0.0, (seq["wall"] - seq["fit"]) / jobs)  # everything else of a job, serial
    waves_now = math.ceil(jobs / n_jobs)
    overhead = max(0.0, par["wall"] - waves_now * (rest + fit_one))  # server start, imports
    at_once = min(jobs, cores)
    return {
        "sequential": jobs * (rest + fit_on(cores)),
        "parallel": overhead + math.ceil(jobs / at_once) * (rest + fit_on(cores // at_once)),
        "p": p,
        "rest": rest,
        "overhead": overhead,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once in the parallel run")
    parser.add_argument("--predict", type=int, default=16, help="cores to predict for")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sweep-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    jobs = 2 * len(args.seeds.split(","))
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    runs = {}
    for mode, n_jobs in (("sequential", 1), (f"parallel n_jobs={args.jobs}", args.jobs)):
        out = args.out / mode.split()[0]
        wall = sweep(out, args.rounds, args.seeds, n_jobs)
        runs[mode] = {"wall": wall, **job_seconds(out)}
    base = runs["sequential"]
    print(
        f"\n{jobs} jobs x {args.rounds} rounds, {cores} cores, load average before "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print("| mode | wall s | sum of fits s | sum of phases s | rounds | wall vs sequential |")
    print("|---|---|---|---|---|---|")
    for mode, r in runs.items():
        print(
            f"| {mode} | {r['wall']:.1f} | {r['fit']:.1f} | {r['phases']:.1f} | {r['rounds']} "
            f"| {base['wall'] / r['wall']:.2f}x faster |"
        )
    par = runs[f"parallel n_jobs={args.jobs}"]
    model = predict(base, par, jobs, cores, args.jobs, args.predict)
    print(
        f"\nmodel: fit's parallel share p={model['p']:.2f}, rest of a job {model['rest']:.1f} s"
        f" (serial), parallel run's fixed cost {model['overhead']:.1f} s (server, imports)"
    )
    print(
        f"predicted on {args.predict} cores, {jobs} jobs at once: sequential "
        f"{model['sequential']:.0f} s, parallel {model['parallel']:.0f} s, "
        f"{model['sequential'] / model['parallel']:.1f}x"
    )


if __name__ == "__main__":
    main()
