"""Simulated-annotator campaigns on the digits, every strategy against random, in one process.

    .venv/bin/python bench/campaigns.py [--strategies random entropy ...] [--seeds 0 1 2 3 4]
        [--start-per-class 2] [--batch 10] [--budget 400] [--out /tmp/campaigns-bench]
        [--jobs 2] [--summary-only] [--unknown-classes 7 8 9]
    .venv/bin/python bench/campaigns.py --compare-scorers   # in-memory scorer == score_and_select?

The protocol of `python -m activelearn campaign.rounds=R` without its subprocesses (DVC,
MLflow, git): per seed the digits are written once as PNGs with `write_digits` (test
fraction 0.2, `--start-per-class` labels per class to start) and decoded once with
`preprocess` at the size and channels of conf/data/digits.yaml. Then every round trains
a fresh `Classifier` from scratch on the labeled set with the recipe of conf/model/cnn.yaml
(model seed = campaign seed, as the train stage does), evaluates it on the fixed test set,
scores the pool and selects a batch with `activelearn.scoring`'s own pieces (its
`score_batch` on the same batches of 256, `CandidateSet`, seeded generator
`seed * 1000 + round`, and `select_candidates`, as `score_and_select` does;
`--compare-scorers` checks the picks are identical to `score_and_select`'s), and
answers the batch from the true labels, until `--budget` labels are spent. Strategy
settings come from conf/strategy/<name>.yaml; `hybrid_closed_set` is the hybrid with
its known-class weighting off (the default before "other" answers were learned from).

`--unknown-classes 7 8 9`: an open-set pool. Those digits get no class (no seed labels,
no test images), but their pool images stay in the pool (about 30% of it); the simulated
annotator answers "other" for them. The budget then counts answers (labels, seed set
included, plus "other" answers), the curves are accuracy on the known classes' test
images against answers spent, and the summary adds the share of answers wasted on
"other" per strategy and seed.

`--recipes name=key=value,...` runs every strategy with each training recipe (settings of
`model.` over conf/model/cnn.yaml, which holds the default recipe: spell out every option
a baseline turns off, e.g. `previous=augment.enabled=false,ema=0,class_balanced=false,
warm_start=false`) as campaigns `strategy@name`, and adds a table of round-to-round falls
of test accuracy, training time against the first recipe's, and ECE. `--dataset textures`
runs on bench/textures.py's harder generated set instead of the digits.

One CSV row per round goes to `<out>/rounds/seed-<seed>.csv` as soon as the round ends,
with the batch it queued, so a rerun skips finished campaigns and continues unfinished
ones from their last round (rows of other code or settings are not told apart: pass a
new --out after changing either). A seed's campaigns all run in one process, so each file
has one writer, even with --jobs. At the end the parent merges every seed's rows into
`<out>/rounds.csv` and writes `<out>/summary.md`, `<out>/summary.csv` and
`<out>/learning_curves.png` (over this run's --strategies and --seeds only), and prints
the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere

import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from activelearn.config import ModelConfig, StrategyConfig  # noqa: E402
from activelearn.core.files import atomic_file  # noqa: E402
from activelearn.data.datasets import write_digits  # noqa: E402
from activelearn.data.images import (  # noqa: E402
    Preprocessing,
    class_names_of,
    list_files,
    load_labeled,
    preprocess,
    sample_id,
)
from activelearn.scoring.select import score_and_select, select_candidates  # noqa: E402
from activelearn.scoring.stream import Batch, CandidateSet, ScoringPlan, score_batch  # noqa: E402
from activelearn.strategies import MeanConfidence  # noqa: E402
from activelearn.tracking import figures as plots  # noqa: E402
from activelearn.tracking.report import area_under_curve, markdown_table, summarize  # noqa: E402
from activelearn.workspace.manifest import Manifest  # noqa: E402

log = logging.getLogger("bench.campaigns")

DEFAULT_STRATEGIES = [
    "random",
    "entropy",
    "margin",
    "least_confidence",
    "cluster_margin",
    "typiclust",
    "hybrid",
    "ranked_batch",
    "bald",
    "variation_ratio",
]
DEFAULT_STRATEGY = "hybrid"  # conf/config.yaml's strategy
OPEN_SET_STRATEGIES = ["random", "hybrid_closed_set", "hybrid"]
# Strategies of the benchmark that are a conf/strategy file with other parameters.
VARIANTS = {
    "hybrid_closed_set": ("hybrid", {"known_class_weighting": False}),
    "hybrid_max_logit": ("hybrid", {"known_class_prior": "max_logit"}),  # from round 0
}
BASELINE = "random"
TEST_FRACTION = 0.2
TARGETS = [0.9, 0.95]
SCORE_BATCH = 256  # score_and_select's batch_size
COLUMNS = [
    "strategy",
    "seed",
    "round",
    "labels",
    "answers",  # labels (seed set included) + "other" answers
    "other",  # answers that were "other" (open-set pools), this round and before
    "accuracy",
    "macro_f1",
    "seconds",
    "train_seconds",
    "evaluate_seconds",
    "select_seconds",
    "stop",
    "queued",
]
COLUMNS += ["ece", "ece_uncalibrated", "temperature"]  # the round model's, on the test set
DROPS = [0.01, 0.015, 0.02]  # round-to-round falls of test accuracy counted (--recipes)


# ------------------------------------------------------------------------ configuration


def model_config(overrides: str = "") -> ModelConfig:
    """conf/model/cnn.yaml on the schema: the recipe the DVC train stage uses; then
    `overrides`, comma-separated `key=value` of `model.` (a --recipes entry)."""
    merged = OmegaConf.merge(
        OmegaConf.structured(ModelConfig),
        OmegaConf.load(ROOT / "conf/model/cnn.yaml"),
        OmegaConf.from_dotlist([o for o in overrides.split(",") if o]),
    )
    return OmegaConf.to_object(merged)


def parse_recipes(entries: list[str] | None) -> dict[str, str]:
    """--recipes `name=key=value,key=value` entries: {name: overrides} (checked now)."""
    recipes = {}
    for entry in entries or []:
        name, _, overrides = entry.partition("=")
        if not name or "@" in name:
            raise SystemExit(f"--recipes {entry!r}: give name=key=value,... (no @ in name)")
        try:
            model_config(overrides)  # a misspelled setting fails now, not after hours
        except Exception as err:
            raise SystemExit(f"--recipes {entry!r}: {err}") from err
        recipes[name] = overrides
    return recipes


def campaign_labels(strategies: list[str], recipes: dict[str, str]) -> list[str]:
    """A campaign's name in the rows: the strategy, or `strategy@recipe` with --recipes."""
    return [f"{s}@{r}" for s in strategies for r in recipes] if recipes else list(strategies)


def strategy_config(name: str) -> StrategyConfig:
    """conf/strategy/<name>.yaml on the schema, as `strategy=<name>` composes it (a
    VARIANTS name: its file with those parameters)."""
    name, params = VARIANTS.get(name, (name, {}))
    path = ROOT / "conf/strategy" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"--strategies: no {path}; choose from {' '.join(choices)}")
    merged = OmegaConf.merge(
        OmegaConf.structured(StrategyConfig), OmegaConf.load(path), {"params": params}
    )
    return OmegaConf.to_object(merged)


def digits_preprocessing() -> Preprocessing:
    data = OmegaConf.load(ROOT / "conf/data/digits.yaml")
    return Preprocessing(tuple(data.image_size), int(data.channels))


# --------------------------------------------------------------------------------- data


@dataclass
class Digits:
    """One seed's split, decoded once: labeled seed set, pool (with answers), test set."""

    root: Path  # the PNG layout written by write_digits
    class_names: list[str]
    seed_x: np.ndarray
    seed_y: np.ndarray
    pool_ids: list[str]  # manifest order: sorted pool-relative paths
    pool_x: np.ndarray
    pool_y: np.ndarray  # class index; -1 for an image of no class (answered "other")
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def pool_dir(self) -> Path:
        return self.root / "data/pool"


def load_digits_split(
    root: Path,
    seed: int,
    per_class: int,
    prep: Preprocessing,
    unknown: tuple[str, ...] = (),
    dataset: str = "digits",
) -> Digits:
    """Write the digits (or `dataset`) as PNGs under `root` and decode every split with
    `preprocess`; the `unknown` classes lose their seed labels and test images, not their
    pool images."""
    if dataset == "textures":
        from bench.textures import write_textures

        write_textures(root, seed=seed, per_class=per_class, test_fraction=TEST_FRACTION)
    else:
        write_digits(root, seed=seed, per_class=per_class, test_fraction=TEST_FRACTION)
    raw, test, pool = root / "data/raw", root / "data/test", root / "data/pool"
    for digit in unknown:
        for folder in (raw / digit, test / digit):
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
    class_names = class_names_of(raw, test)
    index = {name: i for i, name in enumerate(class_names)}
    seed_set = load_labeled(raw, class_names, prep)
    test_set = load_labeled(test, class_names, prep)
    with (root / "data/pool_labels.csv").open(newline="") as f:
        answers = {row["path"]: index.get(row["label"], -1) for row in csv.DictReader(f)}
    files = list_files(pool)
    ids = [sample_id(p, pool) for p in files]
    return Digits(
        root=root,
        class_names=class_names,
        seed_x=seed_set.x,
        seed_y=seed_set.y,
        pool_ids=ids,
        pool_x=np.stack([preprocess(p, prep) for p in files]),
        pool_y=np.array([answers[i] for i in ids], dtype=np.int64),
        test_x=test_set.x,
        test_y=test_set.y,
    )


# ---------------------------------------------------------------------------- selection


def select_in_memory(
    classifier,
    ids: list[str],
    x: np.ndarray,
    cfg: StrategyConfig,
    *,
    labeled_x: np.ndarray,
    seed: int,
    other_x: np.ndarray | None = None,
) -> list[str]:
    """`score_and_select`'s choice for a trained model, on already decoded pool arrays.

    The scorer's own per-batch work (`score_batch` under the same `ScoringPlan`) on the
    same batches, merged into a `CandidateSet`, then the same `select_candidates`: only
    the file decoding and the CSV/queue files of the real scorer are left out.
    """
    rng = np.random.default_rng(seed)
    plan = ScoringPlan.of(cfg, False, classifier.prep, seed)
    candidates = CandidateSet(plan.candidates)
    confidence = MeanConfidence()
    for start in range(0, len(ids), SCORE_BATCH):
        batch = Batch(ids[start : start + SCORE_BATCH], x[start : start + SCORE_BATCH], [])
        block = score_batch(classifier, batch, plan)
        candidates.absorb(block.candidates)
        confidence.add(block.confidence)
    chosen = candidates.merged()
    if not chosen or len(chosen["id"]) == 0:
        return []
    picks, _ = select_candidates(
        classifier, chosen, plan, cfg, rng, labeled_x, confidence.value, other_x=other_x
    )
    return [str(chosen["id"][i]) for i in picks]


def select_from_files(
    classifier,
    digits: Digits,
    labeled_ids: set[str],
    cfg: StrategyConfig,
    *,
    labeled_x: np.ndarray,
    seed: int,
    work_dir: Path,
    other_x: np.ndarray | None = None,
) -> list[str]:
    """The real scorer: `score_and_select` on the PNG files through a Manifest."""
    manifest = Manifest(work_dir / "manifest.csv")
    for sid in digits.pool_ids:
        manifest.set_state(sid, "labeled" if sid in labeled_ids else "pool")
    result = score_and_select(
        classifier,
        manifest,
        digits.pool_dir,
        cfg,
        work_dir / "round",
        labeled_x=labeled_x,
        prep=classifier.prep,
        seed=seed,
        other_x=other_x,
    )
    return [item.sample_id for item in result.queue]


# ---------------------------------------------------------------------------- campaigns


def train_model(
    digits: Digits, x: np.ndarray, y: np.ndarray, prep, mcfg, seed: int, warm_from=None
):
    """A fresh classifier trained from scratch, as the DVC train stage does each round
    (from `warm_from`, the last round's weights, with model.warm_start)."""
    import keras

    from activelearn.learner.classifier import Classifier

    keras.backend.clear_session()  # each real round is a fresh process
    classifier = Classifier.build(digits.class_names, prep, mcfg, seed)
    classifier.fit(x, y, mcfg, seed, warm_from=warm_from)
    return classifier


def run_campaign(
    digits: Digits,
    strategy: str,
    seed: int,
    args: argparse.Namespace,
    done: list[dict],
    writer: RowWriter,
    prep: Preprocessing,
    mcfg: ModelConfig,
) -> None:
    """Rounds from where `done` (this campaign's rows so far) stops, up to the budget."""
    from activelearn.learner.metrics import expected_calibration_error

    scfg = strategy_config(strategy.split("@")[0])
    if "@" in strategy:
        mcfg = model_config(args.recipes[strategy.split("@")[1]])
    warm_from = None  # a resumed warm-started campaign restarts from scratch once
    position = {sid: i for i, sid in enumerate(digits.pool_ids)}
    answered_ids: list[str] = [sid for row in done for sid in row["queued"].split()]
    n = len(done)
    while True:
        answered = np.array([position[s] for s in answered_ids], dtype=np.intp)
        picked = answered[digits.pool_y[answered] >= 0]
        other = answered[digits.pool_y[answered] < 0]  # answered "other": no label
        x = np.concatenate([digits.seed_x, digits.pool_x[picked]])
        y = np.concatenate([digits.seed_y, digits.pool_y[picked]])
        other_x = digits.pool_x[other] if len(other) else None
        spent = len(y) + len(other)
        start = time.perf_counter()
        classifier = train_model(digits, x, y, prep, mcfg, seed, warm_from)
        if mcfg.warm_start:
            warm_from = classifier.network.get_weights()
        trained = time.perf_counter()
        report = classifier.evaluate(digits.test_x, digits.test_y)
        raw = classifier.predict_proba(digits.test_x, calibrated=False)
        calibrated = classifier.predict_proba(digits.test_x)
        evaluated = time.perf_counter()
        left = args.budget - spent
        taken = set(answered_ids)
        remaining = [i for i, sid in enumerate(digits.pool_ids) if sid not in taken]
        queue, stop = [], ""
        if left <= 0:
            stop = "budget"
        elif not remaining:
            stop = "pool"
        else:
            cfg = replace(scfg, batch_size=min(args.batch, left))
            round_seed = seed * 1000 + n  # the round loop's scoring seed
            if args.scorer == "files":
                with tempfile.TemporaryDirectory() as work:
                    queue = select_from_files(
                        classifier,
                        digits,
                        taken,
                        cfg,
                        labeled_x=x,
                        seed=round_seed,
                        work_dir=Path(work),
                        other_x=other_x,
                    )
            else:
                queue = select_in_memory(
                    classifier,
                    [digits.pool_ids[i] for i in remaining],
                    digits.pool_x[remaining],
                    cfg,
                    labeled_x=x,
                    seed=round_seed,
                    other_x=other_x,
                )
        end = time.perf_counter()
        row = {
            "strategy": strategy,
            "seed": seed,
            "round": n,
            "labels": len(y),
            "answers": spent,
            "other": len(other),
            "accuracy": f"{report['accuracy']:.6f}",
            "macro_f1": f"{report['macro_f1']:.6f}",
            "seconds": f"{end - start:.3f}",
            "train_seconds": f"{trained - start:.3f}",
            "evaluate_seconds": f"{evaluated - trained:.3f}",
            "select_seconds": f"{end - evaluated:.3f}",
            "stop": stop,
            "queued": " ".join(queue),
            "ece": f"{expected_calibration_error(calibrated, digits.test_y):.5f}",
            "ece_uncalibrated": f"{expected_calibration_error(raw, digits.test_y):.5f}",
            "temperature": f"{classifier.temperature:.4f}",
        }
        writer.write(row)
        log.info(
            "%s seed %d round %d: %d labels, accuracy %.4f, %.1f s (train %.1f s)",
            strategy,
            seed,
            n,
            len(y),
            report["accuracy"],
            end - start,
            trained - start,
        )
        if stop or not queue:
            return
        answered_ids += queue
        n += 1


# ------------------------------------------------------------------------------- results


class RowWriter:
    """Appends one CSV row per round and flushes it, so a killed run loses one round."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS)
        if new:
            self.writer.writeheader()
            self.file.flush()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def seed_file(out: Path, seed: int) -> Path:
    """Where the rounds of one seed's campaigns go, written only by the process running them."""
    return out / "rounds" / f"seed-{seed}.csv"


def read_rows(out: Path) -> dict[tuple[str, int], list[dict]]:
    """{(strategy, seed): rows in round order} of earlier runs in `out` (a run older than
    the per-seed files left only rounds.csv)."""
    paths = sorted((out / "rounds").glob("seed-*.csv")) or [out / "rounds.csv"]
    campaigns: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for path in paths:
        if path.exists():
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    campaigns[row["strategy"], int(row["seed"])].append(row)
    for rows in campaigns.values():
        rows.sort(key=lambda r: int(r["round"]))
    return dict(sorted(campaigns.items()))


def write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_file(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def spent(row: dict) -> int:
    """Answers spent by the end of a round: labels, plus "other" answers (rows of runs
    before answers were counted have labels only)."""
    return int(row.get("answers") or row["labels"])


def resumable(rows: list[dict], budget: int) -> tuple[bool, list[dict]]:
    """(finished?, rows to continue from) of one campaign under this budget.

    Finished: a round at or past the budget, or the pool ran dry; all its rows are kept,
    also those past a smaller budget. Otherwise the rounds that queued a batch are kept
    (a round that stopped at a smaller budget is redone).
    """
    for row in rows:
        if spent(row) >= budget or row["stop"] == "pool":
            return True, rows
    return False, [r for r in rows if not r["stop"]]


def check_protocol(out: Path, args: argparse.Namespace) -> None:
    """Refuse to mix rounds of different starting sets or batch sizes in one --out."""
    protocol = {"start_per_class": args.start_per_class, "batch": args.batch}
    if args.unknown_classes:
        protocol["unknown_classes"] = args.unknown_classes
    path = out / "protocol.json"
    if args.dataset != "digits":
        protocol["dataset"] = args.dataset
    if args.recipes:  # a recipe's name must mean the same settings in every run of `out`
        known = json.loads(path.read_text()).get("recipes", {}) if path.exists() else {}
        if clash := [n for n, o in args.recipes.items() if known.get(n, o) != o]:
            raise SystemExit(f"{out}: recipes {clash} were run with other settings there")
        protocol["recipes"] = known | args.recipes
    if path.exists():
        earlier = json.loads(path.read_text())
        if {k: v for k, v in earlier.items() if k != "recipes"} != {
            k: v for k, v in protocol.items() if k != "recipes"
        }:
            raise SystemExit(
                f"{out} holds campaigns run with {earlier}, not {protocol}: "
                "pass another --out or remove that folder"
            )
    if not path.exists() or args.recipes:
        path.write_text(json.dumps(protocol))


def curves_of(
    campaigns: dict[tuple[str, int], list[dict]], budget: int
) -> dict[str, dict[int, list[tuple[int, float]]]]:
    """{strategy: {seed: [(answers, accuracy)]}} of finished campaigns, up to the budget
    (answers are labels in a pool without unknown classes)."""
    curves: dict[str, dict[int, list[tuple[int, float]]]] = defaultdict(dict)
    for (strategy, seed), rows in sorted(campaigns.items()):
        finished, rows = resumable(rows, budget)
        if finished:
            curves[strategy][seed] = [
                (spent(r), float(r["accuracy"])) for r in rows if spent(r) <= budget
            ]
    return dict(curves)


def write_summary(
    out: Path,
    campaigns: dict[tuple[str, int], list[dict]],
    args: argparse.Namespace,
    wall_seconds: float,
) -> str:
    """summary.md, summary.csv and learning_curves.png of this run's strategies and seeds;
    returns the Markdown."""
    campaigns = {
        (strategy, seed): rows
        for (strategy, seed), rows in campaigns.items()
        if strategy in args.strategies and seed in args.seeds
    }
    by_seed = curves_of(campaigns, args.budget)
    if not by_seed:
        raise SystemExit(f"no finished campaign of these --strategies and --seeds in {out}")
    curves = {name: list(runs.values()) for name, runs in by_seed.items()}
    rows = summarize(curves, TARGETS)
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    by_labels = {
        name: [
            (x, [dict(c)[x] for c in runs if x in dict(c)])
            for x in sorted({x for c in runs for x, _ in c})
        ]
        for name, runs in curves.items()
    }
    figure = plots.learning_curves(
        by_labels,
        out / "learning_curves.png",
        target=max(TARGETS),
        xlabel="answers spent" if args.unknown_classes else "labels",
    )

    lo = min(x for runs in curves.values() for c in runs for x, _ in c[:1])
    lines = [
        f"# Strategies on the {args.dataset}: {args.start_per_class} labels per class to start, "
        f"batches of {args.batch}, up to {args.budget} labels",
        "",
        f"Labels to reach each test accuracy (mean ± std over the seeds that reach it; "
        f"reached/seeds in brackets), area under the learning curve (mean test accuracy "
        f"over {lo}..{args.budget} labels) and final accuracy, mean ± std over seeds.",
        "",
        markdown_table(rows, TARGETS),
    ]
    if args.unknown_classes:
        lines[0] = lines[0].replace("labels per class", "labels per known class")
        lines[0] += f" answers; digits {' '.join(args.unknown_classes)} are no class"
        lines[0] = lines[0].replace("labels answers", "answers")
        lines[2] = lines[2].replace("labels", "answers") + (
            " Test accuracy is on the known classes' test images."
        )
        lines[-1] = lines[-1].replace("labels", "answers")
        lines += ["", *open_set_lines(campaigns, by_seed, args, lo)]
    if DEFAULT_STRATEGY in by_seed and BASELINE in by_seed:
        shared = sorted(set(by_seed[DEFAULT_STRATEGY]) & set(by_seed[BASELINE]))
        budget = (lo, args.budget)
        wins = [
            seed
            for seed in shared
            if area_under_curve(by_seed[DEFAULT_STRATEGY][seed], budget)
            > area_under_curve(by_seed[BASELINE][seed], budget)
        ]
        lines.append(
            f"{DEFAULT_STRATEGY} (the default) beats {BASELINE} on AUC in {len(wins)} of "
            f"{len(shared)} seeds (wins: {wins or 'none'}). AUC per seed, "
            f"{DEFAULT_STRATEGY} / {BASELINE}: "
            + ", ".join(
                f"{seed}: {area_under_curve(by_seed[DEFAULT_STRATEGY][seed], budget):.4f} / "
                f"{area_under_curve(by_seed[BASELINE][seed], budget):.4f}"
                for seed in shared
            )
            + "."
        )
        means = {
            name: {x: np.mean(values) for x, values in by_labels[name] if values}
            for name in (DEFAULT_STRATEGY, BASELINE)
        }
        shared_x = sorted(set(means[DEFAULT_STRATEGY]) & set(means[BASELINE]))
        behind = [x for x in shared_x if means[DEFAULT_STRATEGY][x] < means[BASELINE][x]]
        lines.append(
            f"- Mean accuracy of {DEFAULT_STRATEGY} below {BASELINE}'s at "
            f"{len(behind)} of {len(shared_x)} labeled-set sizes"
            + (f": {', '.join(map(str, behind))} labels." if behind else ".")
        )
        for row in rows:
            base = next(r for r in rows if r["strategy"] == BASELINE)
            if row["strategy"] != BASELINE and row["auc"] < base["auc"]:
                lines.append(
                    f"- {row['strategy']} loses to {BASELINE} on mean AUC "
                    f"({row['auc']:.4f} < {base['auc']:.4f})."
                )
        lines.append("")
    timed = [r for rs in campaigns.values() for r in rs if spent(r) <= args.budget]
    if timed:
        seconds = np.array([float(r["seconds"]) for r in timed])
        train = np.array([float(r["train_seconds"]) for r in timed])
        lines.append(
            f"Per round ({len(timed)} rounds, scorer `{args.scorer}`): {seconds.mean():.2f} s "
            f"mean wall time, of which training {train.mean():.2f} s "
            f"({train.sum() / seconds.sum():.0%}); evaluation and selection "
            f"{(seconds - train).mean():.2f} s. This run: {wall_seconds / 60:.1f} min."
        )
    if args.recipes:
        lines += ["", *recipe_table(campaigns, args)]
    lines += ["", f"Figure: {figure}", ""]
    markdown = "\n".join(lines)
    (out / "summary.md").write_text(markdown)
    return markdown


def wasted_share(rows: list[dict], budget: int) -> float:
    """The share of a campaign's bought answers (seed labels aside) that were "other"."""
    rows = [r for r in rows if spent(r) <= budget]
    bought = spent(rows[-1]) - spent(rows[0])
    return int(rows[-1]["other"] or 0) / bought if bought else float("nan")


def open_set_lines(
    campaigns: dict[tuple[str, int], list[dict]],
    by_seed: dict[str, dict[int, list[tuple[int, float]]]],
    args: argparse.Namespace,
    lo: int,
) -> list[str]:
    """The open-set figures: answers wasted per strategy and seed, and the issue's goals
    (the default wastes less than random in every seed and at most half of the closed-set
    hybrid's share; its AUC over answers beats both in every seed)."""
    wasted = {
        name: {seed: wasted_share(campaigns[name, seed], args.budget) for seed in runs}
        for name, runs in by_seed.items()
    }
    budget = (lo, args.budget)
    lines = [
        '| strategy | answers wasted on "other" | per seed |',
        "|---|---|---|",
    ]
    for name, shares in wasted.items():
        values = np.array(list(shares.values()))
        per_seed = ", ".join(f"{seed}: {share:.0%}" for seed, share in shares.items())
        lines.append(f"| {name} | {values.mean():.1%} ± {values.std():.1%} | {per_seed} |")
    lines.append("")
    if DEFAULT_STRATEGY not in by_seed:
        return lines
    default = DEFAULT_STRATEGY
    for other in (BASELINE, "hybrid_closed_set", "hybrid_max_logit"):
        if other not in by_seed:
            continue
        seeds = sorted(set(by_seed[default]) & set(by_seed[other]))
        less = [s for s in seeds if wasted[default][s] < wasted[other][s]]
        half = [s for s in seeds if wasted[default][s] <= wasted[other][s] / 2]
        auc = {
            s: (
                area_under_curve(by_seed[default][s], budget),
                area_under_curve(by_seed[other][s], budget),
            )
            for s in seeds
        }
        better = [s for s in seeds if auc[s][0] > auc[s][1]]
        lines.append(
            f"- {default} against {other}: wastes less in {len(less)} of {len(seeds)} seeds, "
            f"at most half as much in {len(half)}; AUC over answers higher in "
            f"{len(better)} of {len(seeds)} (per seed, {default} / {other}: "
            + ", ".join(f"{s}: {a:.4f} / {b:.4f}" for s, (a, b) in auc.items())
            + ")."
        )
    return lines


def recipe_table(campaigns: dict[tuple[str, int], list[dict]], args) -> list[str]:
    """Per campaign label: round-to-round drops of test accuracy over all seeds, the
    largest, training seconds a round against the first recipe's, and ECE before/after
    temperature scaling at 50, 100 and 200 labels (mean over seeds)."""
    head = " | ".join(f"drops > {d * 100:g}" for d in DROPS)
    lines = [
        "Round-to-round falls of test accuracy (pairs of consecutive rounds, all seeds), "
        "training time a round against the first recipe's, and the test ECE before -> "
        "after temperature scaling (mean over seeds):",
        "",
        f"| campaign | pairs | {head} | largest fall | train s/round | ratio | "
        "ECE 50 | ECE 100 | ECE 200 |",
        "|---" * (8 + len(DROPS)) + "|",
    ]
    trains = {
        name: float(np.mean([float(r["train_seconds"]) for r in rows]))
        for name in args.strategies
        if (rows := [r for (n, _), rs in campaigns.items() if n == name for r in rs])
    }
    for label in args.strategies:
        runs = [
            [r for r in rows if int(r["labels"]) <= args.budget]
            for (name, _), rows in campaigns.items()
            if name == label
        ]
        if not runs:
            continue
        falls = [
            float(a["accuracy"]) - float(b["accuracy"])
            for rows in runs
            for a, b in zip(rows, rows[1:], strict=False)
        ]
        train = trains[label]
        first = f"{label.split('@')[0]}@{next(iter(args.recipes))}" if args.recipes else label
        base_train = trains.get(first, train)
        ece = []
        for at in (50, 100, 200):
            pairs = [
                (float(r["ece_uncalibrated"]), float(r["ece"]))
                for rows in runs
                for r in rows
                if int(r["labels"]) == at and r.get("ece")
            ]
            ece.append(
                f"{np.mean([p[0] for p in pairs]):.3f} -> {np.mean([p[1] for p in pairs]):.3f}"
                if pairs
                else "-"
            )
        counts = " | ".join(str(sum(f > d + 1e-9 for f in falls)) for d in DROPS)
        lines.append(
            f"| {label} | {len(falls)} | {counts} | {max([0, *falls]) * 100:.1f} | "
            f"{train:.2f} | {train / base_train:.2f} | {' | '.join(ece)} |"
        )
    return lines


# ----------------------------------------------------------------------------- commands


def compare_scorers(args: argparse.Namespace, prep: Preprocessing, mcfg: ModelConfig) -> None:
    """One trained round, every strategy: the in-memory selection must pick what
    `score_and_select` picks from the files; and which of the two is faster."""
    seed = args.seeds[0]
    with tempfile.TemporaryDirectory(prefix="campaigns-bench-") as tmp:
        digits = load_digits_split(Path(tmp), seed, args.start_per_class, prep)
        x, y = digits.seed_x, digits.seed_y
        classifier = train_model(digits, x, y, prep, mcfg, seed)
        for strategy in args.strategies:
            cfg = replace(strategy_config(strategy), batch_size=args.batch)
            times = {"memory": [], "files": []}
            picks = {}
            for _ in range(3):
                start = time.perf_counter()
                picks["memory"] = select_in_memory(
                    classifier, digits.pool_ids, digits.pool_x, cfg, labeled_x=x, seed=seed
                )
                times["memory"].append(time.perf_counter() - start)
                with tempfile.TemporaryDirectory(dir=tmp) as work:
                    start = time.perf_counter()
                    picks["files"] = select_from_files(
                        classifier, digits, set(), cfg, labeled_x=x, seed=seed, work_dir=Path(work)
                    )
                    times["files"].append(time.perf_counter() - start)
            same = "identical picks" if picks["memory"] == picks["files"] else "PICKS DIFFER"
            print(
                f"{strategy:17s} {same}; best of 3: in memory {min(times['memory']):.3f} s, "
                f"score_and_select on files {min(times['files']):.3f} s"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+")
    parser.add_argument(
        "--unknown-classes",
        nargs="+",
        default=[],
        metavar="DIGIT",
        help="an open-set pool: these digits are no class, their pool images are answered "
        "'other'; budget and curves count answers (default strategies: "
        f"{' '.join(OPEN_SET_STRATEGIES)})",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--start-per-class", type=int, default=2)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("/tmp/campaigns-bench"),
        help="folder of rounds/seed-<seed>.csv (a seed's rounds, appended as they end by the "
        "one process running that seed; a rerun resumes from them), rounds.csv (every "
        "seed's rows, merged at the end), summary.md, summary.csv, learning_curves.png",
    )
    parser.add_argument(
        "--scorer",
        choices=("memory", "files"),
        default="memory",
        help="memory: decoded pool arrays (default); files: score_and_select on the PNGs",
    )
    parser.add_argument(
        "--compare-scorers",
        action="store_true",
        help="check both scorers pick the same batch for each strategy, time them, and exit",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="campaign processes in parallel, seeds split between them (2 on 2 cores)",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="write the summary of the rounds already in --out, run nothing",
    )
    parser.add_argument(
        "--recipes",
        nargs="+",
        metavar="NAME=KEY=VALUE,...",
        help="training recipes to compare, each `name=` + comma-separated model settings "
        "(e.g. `today=` `aug_ema=augment.enabled=true,ema=0.99`); every strategy runs "
        "with each, as campaign `strategy@name`, the first recipe the time baseline",
    )
    parser.add_argument(
        "--dataset",
        choices=("digits", "textures"),
        default="digits",
        help="textures: bench/textures.py's harder generated set (32x32 RGB, clutter, scale)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.strategies:
        args.strategies = OPEN_SET_STRATEGIES if args.unknown_classes else DEFAULT_STRATEGIES
    args.recipe_entries = args.recipes or []
    args.recipes = parse_recipes(args.recipes)
    args.base_strategies = list(dict.fromkeys(args.strategies))
    # Each campaign once: a seed's file must have one writer.
    args.strategies = list(dict.fromkeys(args.strategies))
    args.seeds = list(dict.fromkeys(args.seeds))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("activelearn.scoring", "activelearn.learner", "activelearn.data.datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing: one model per round
    for strategy in args.strategies:
        strategy_config(strategy)  # fail now on a misspelled name, not after hours
    args.strategies = campaign_labels(args.strategies, args.recipes)
    if args.compare_scorers:
        compare_scorers(args, digits_preprocessing(), model_config())
        return

    args.out.mkdir(parents=True, exist_ok=True)
    check_protocol(args.out, args)
    started = time.perf_counter()
    if not args.summary_only:
        kept = {key: resumable(rows, args.budget)[1] for key, rows in read_rows(args.out).items()}
        if args.worker:
            run_seeds(args, kept)
            return
        # Without the rows a rerun redoes (a round that stopped at a smaller budget), so
        # each round is in its seed's file once.
        by_seed = defaultdict(list)
        for (_, seed), rows in kept.items():
            by_seed[seed] += rows
        for seed, rows in by_seed.items():
            write_rows(seed_file(args.out, seed), rows)
        if args.jobs > 1:
            run_workers(args)
        else:
            run_seeds(args, kept)
    campaigns = read_rows(args.out)
    write_rows(args.out / "rounds.csv", [r for rows in campaigns.values() for r in rows])
    markdown = write_summary(args.out, campaigns, args, time.perf_counter() - started)
    print(markdown)


def run_seeds(args: argparse.Namespace, kept: dict) -> None:
    """Every unfinished campaign of `args.seeds`, seed by seed, appending to its seed's file."""
    prep, mcfg = digits_preprocessing(), model_config()
    if args.dataset == "textures":  # bench/textures.py: 32x32 RGB
        prep = Preprocessing((32, 32), 3)
    for seed in args.seeds:
        todo = [
            s for s in args.strategies if not resumable(kept.get((s, seed), []), args.budget)[0]
        ]
        if not todo:
            log.info("seed %d: every campaign already done", seed)
            continue
        writer = RowWriter(seed_file(args.out, seed))
        try:
            with tempfile.TemporaryDirectory(prefix=f"campaigns-bench-{seed}-") as tmp:
                digits = load_digits_split(
                    Path(tmp),
                    seed,
                    args.start_per_class,
                    prep,
                    tuple(args.unknown_classes),
                    args.dataset,
                )
                log.info(
                    "seed %d: %d labeled, %d pool, %d test images",
                    seed,
                    len(digits.seed_y),
                    len(digits.pool_ids),
                    len(digits.test_y),
                )
                for strategy in todo:
                    done = kept.get((strategy, seed), [])
                    run_campaign(digits, strategy, seed, args, done, writer, prep, mcfg)
        finally:
            writer.close()


def run_workers(args: argparse.Namespace) -> None:
    """`args.jobs` processes, each with its share of the seeds and of the cores.

    The digits CNN is too small to keep two cores busy in one process: two one-thread
    processes finish about 1.8 times as many rounds as one two-thread process. A seed goes
    to one worker, which alone appends to that seed's file.
    """
    threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1"}
    common = [
        *("--strategies", *args.base_strategies),
        *(("--recipes", *args.recipe_entries) if args.recipe_entries else ()),
        *("--dataset", args.dataset),
        *("--start-per-class", str(args.start_per_class), "--batch", str(args.batch)),
        *("--budget", str(args.budget), "--out", str(args.out), "--scorer", args.scorer),
        *(("--unknown-classes", *args.unknown_classes) if args.unknown_classes else ()),
        "--worker",
    ]
    groups = [args.seeds[i :: args.jobs] for i in range(args.jobs) if args.seeds[i :: args.jobs]]
    workers = [
        subprocess.Popen([sys.executable, __file__, *common, "--seeds", *map(str, group)], env=env)
        for group in groups
    ]
    try:
        failed = [group for group, w in zip(groups, workers, strict=True) if w.wait() != 0]
    finally:
        for worker in workers:  # interrupted: no orphan keeps appending rows
            worker.terminate()
    if failed:
        raise SystemExit(f"the workers for seeds {failed} failed; rerun to resume them")


if __name__ == "__main__":
    main()
