"""Figures of a round, and the report of a sweep of campaigns.

    python -m activelearn.tracking.report multirun/<date>/<time> [--target 0.9 0.95]

reads every campaign of a Hydra sweep (one workspace per job) and writes
`report/learning_curves.png`, `report/summary.csv` and `report/summary.md` in the sweep
folder: per configuration (the jobs' overrides that vary, seed aside), labels needed to
reach each target accuracy, area under the learning curve and accuracy at its end (mean ±
spread over seeds); and logs them to MLflow, on a run in the sweep's experiment beside
its campaigns' runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from activelearn.config import Config
from activelearn.data.images import preprocess
from activelearn.tracking import figures as plots
from activelearn.workspace.queue import QueueItem

log = logging.getLogger(__name__)


def round_figures(
    n: int,
    cfg: Config,
    queue: list[QueueItem],
    curve: list[tuple[int, float]],
    answer_curve: list[tuple[int, float]] = (),
) -> list[Path]:
    """PNG figures of round `n` in `rounds/<n>/` (run in the workspace); `answer_curve`:
    the learning curve over answers spent."""
    out = Path("rounds") / str(n)
    figures = []
    report = Path("evaluation/report.json")
    if report.exists():
        data = json.loads(report.read_text())
        names = list(data["per_class"])
        figures.append(
            plots.confusion_matrix(data["confusion_matrix"], names, out / "confusion_matrix.png")
        )
    scores = out / "scores.csv"
    if scores.exists():
        with scores.open() as f:  # a row the model gave no prediction for has no confidence
            confidence = np.array(
                [float(r["confidence"]) for r in csv.DictReader(f) if r["confidence"]]
            )
        if len(confidence):
            queued = [1 - q.confidence for q in queue if q.confidence is not None]
            figures.append(
                plots.histogram(
                    1 - confidence,
                    np.array(queued),
                    "uncertainty (1 - confidence)",
                    out / "pool_uncertainty.png",
                )
            )
    if queue:
        from activelearn.data.images import preprocessing

        prep = preprocessing(cfg)
        images = [preprocess(Path(cfg.data.pool_dir) / q.sample_id, prep) for q in queue[:64]]
        captions = [
            f"#{q.rank} {q.predicted} {q.confidence:.2f}" if q.predicted else f"#{q.rank}"
            for q in queue[:64]
        ]
        figures.append(plots.image_grid(images, captions, out / "queue.png"))
    if curve:
        labels, accuracy = zip(*curve, strict=True)
        figures.append(
            plots.learning_curves(
                {"this campaign": [(x, [y]) for x, y in zip(labels, accuracy, strict=True)]},
                out / "learning_curve.png",
            )
        )
    if answer_curve:
        figures.append(
            plots.learning_curves(
                {"this campaign": [(x, [y]) for x, y in answer_curve]},
                out / "learning_curve_answers.png",
                xlabel="answers spent",
            )
        )
    return figures


# ----------------------------------------------------------------------------- sweeps


def campaign_curve(workspace: Path, over: str = "labels") -> list[tuple[int, float]]:
    """(labels, test accuracy) of every trained round of one campaign workspace; with
    `over="answers"`, (answers spent, test accuracy): labels plus the images answered
    other, skipped or rejected (a round from before answers were counted: its labels)."""
    points = []
    for state_file in sorted(
        (workspace / "rounds").glob("*/state.json"), key=lambda p: int(p.parent.name)
    ):
        train = json.loads(state_file.read_text())["phases"].get("train", {})
        metrics = train.get("metrics")
        if metrics:
            x = metrics["labeled_images"]
            if over == "answers" and train.get("answers") is not None:
                x = train["answers"]
            points.append((x, metrics["accuracy"]))
    return points


def wasted_share(workspace: Path) -> float:
    """The share of a campaign's answers since its first trained round that bought no
    label (other, skipped, rejected); NaN before a second trained round."""
    spent = []
    for state_file in sorted(
        (workspace / "rounds").glob("*/state.json"), key=lambda p: int(p.parent.name)
    ):
        train = json.loads(state_file.read_text())["phases"].get("train", {})
        if train.get("metrics") and train.get("answers") is not None:
            spent.append((train["answers"], sum(train.get("not_labeled", {}).values())))
    if len(spent) < 2 or spent[-1][0] == spent[0][0]:
        return float("nan")
    return (spent[-1][1] - spent[0][1]) / (spent[-1][0] - spent[0][0])


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> float:
    """Labels at the first round reaching `target`; NaN if it never does."""
    return next((float(x) for x, y in curve if y >= target), float("nan"))


def area_under_curve(curve: list[tuple[int, float]], budget: tuple[int, int]) -> float:
    """Mean accuracy over the label budget [lo, hi], interpolated between rounds; NaN
    unless the curve covers the budget."""
    if not curve or not curve[0][0] <= budget[0] <= budget[1] <= curve[-1][0]:
        return float("nan")
    x, y = map(np.asarray, zip(*curve, strict=True))
    grid = np.arange(budget[0], budget[1] + 1)
    return float(np.interp(grid, x, y).mean())


def summarize(curves: dict[str, list[list[tuple[int, float]]]], targets: list[float]) -> list[dict]:
    """One row per configuration: mean and spread over seeds of each figure of merit.

    Every figure is read over the label range every run covers, so a run that ended early
    (crashed, or stopped by the stop rule) is never extended to the others': a target met
    only after that range's end counts as not reached.
    """
    lo = max(c[0][0] for cs in curves.values() for c in cs)
    hi = min(c[-1][0] for cs in curves.values() for c in cs)
    if lo > hi:
        ends = next(name for name, cs in curves.items() if any(c[-1][0] == hi for c in cs))
        starts = next(name for name, cs in curves.items() if any(c[0][0] == lo for c in cs))
        raise SystemExit(
            f"no label range is covered by every run: a run of {ends!r} ends at {hi} labels,"
            f" one of {starts!r} starts at {lo}; give the short campaign more rounds"
            " (campaign.rounds) to compare them"
        )
    rows = []
    for name, runs in sorted(curves.items()):
        row = {"strategy": name, "seeds": len(runs), "labels_lo": lo, "labels_hi": hi}
        in_range = [[(x, y) for x, y in c if x <= hi] for c in runs]
        figures = {f"labels_to_{t:g}": [labels_to_reach(c, t) for c in in_range] for t in targets}
        figures["auc"] = [area_under_curve(c, (lo, hi)) for c in runs]
        figures["final_accuracy"] = [float(np.interp(hi, *zip(*c, strict=True))) for c in runs]
        for key, values in figures.items():
            values = np.asarray(values, dtype=float)
            reached = values[~np.isnan(values)]
            row[key] = float(reached.mean()) if len(reached) else float("nan")
            row[f"{key}_std"] = float(reached.std()) if len(reached) else float("nan")
            if key.startswith("labels_to"):
                row[f"{key}_reached"] = f"{len(reached)}/{len(values)}"
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], targets: list[float]) -> str:
    lo, hi = rows[0]["labels_lo"], rows[0]["labels_hi"]
    head = ["strategy", *(f"labels to {t:.0%}" for t in targets)]
    head += [f"AUC ({lo}–{hi} labels)", f"accuracy at {hi} labels"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["strategy"]]
        for t in targets:
            key = f"labels_to_{t:g}"
            reached = row[key + "_reached"]
            if np.isnan(row[key]):
                cells.append(f"not reached ({reached})")
            else:
                cells.append(f"{row[key]:.0f} ± {row[key + '_std']:.0f} ({reached})")
        cells += [
            f"{row['auc']:.4f} ± {row['auc_std']:.4f}",
            f"{row['final_accuracy']:.4f} ± {row['final_accuracy_std']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sweep_curves(sweep: Path, over: str = "labels") -> dict[str, list[list[tuple[int, float]]]]:
    """{configuration: [curve per job]} from a Hydra sweep folder.

    Jobs that differ only in `seed` are one configuration; it is named by its strategy
    and the other overrides that vary across the sweep, e.g. `hybrid typical_per_class=5`.
    """
    from omegaconf import OmegaConf

    jobs = {}
    for path in sorted(sweep.glob("*/.hydra/overrides.yaml")):
        pairs = (o.lstrip("+~").partition("=") for o in OmegaConf.load(path))
        jobs[path.parent.parent] = {key: value for key, _, value in pairs}
    first_of = {}  # a campaign counted twice would pass for two seeds
    for job, overrides in jobs.items():
        first = first_of.setdefault(frozenset(overrides.items()), job)
        if first != job:
            raise SystemExit(
                f"{first} and {job} are jobs of the same settings: move one out of {sweep} "
                "(numbered job folders are from before jobs were named by their settings)"
            )
    keys = {key for overrides in jobs.values() for key in overrides}
    varying = sorted(
        key
        for key in keys - {"seed", "strategy", "strategy.name"}  # the name leads the label
        if len({overrides.get(key) for overrides in jobs.values()}) > 1
    )
    curves = defaultdict(list)
    for job, overrides in jobs.items():
        curve = campaign_curve(job / "campaign", over)
        if not curve:  # still running, or stopped before its first training
            if over == "labels":  # named once, not again for the curves over answers
                log.warning("left out %s: no trained round in its campaign", job)
            continue
        strategy = OmegaConf.load(job / ".hydra" / "config.yaml").strategy.name
        swept = [f"{k.rsplit('.', 1)[-1]}={overrides[k]}" for k in varying if k in overrides]
        curves[" ".join([strategy, *swept])].append(curve)
    return dict(curves)


def check_targets(targets: list[float]) -> None:
    """Refuse a target that is not an accuracy, such as 90 meant as 90%."""
    wrong = [t for t in targets if not 0 < t <= 1]
    if wrong:
        first = wrong[0]
        hint = f"give {first / 100:g} for {first:g}%" if 1 < first <= 100 else "give 0.9 for 90%"
        given = " ".join(f"{t:g}" for t in wrong)
        raise SystemExit(f"--target {given}: a target is a test accuracy in (0, 1]; {hint}")


def report_sweep(sweep: Path, targets: list[float]) -> list[dict]:
    check_targets(targets)
    curves = sweep_curves(sweep)
    if not curves:
        raise SystemExit(f"no finished campaign rounds under {sweep}/*/campaign: is it a sweep?")
    out = sweep / "report"
    out.mkdir(exist_ok=True)
    rows = summarize(curves, targets)
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.md").write_text(markdown_table(rows, targets))
    by_labels = {
        name: [
            (x, [dict(c).get(x) for c in runs if x in dict(c)])
            for x in sorted({x for c in runs for x, _ in c})
        ]
        for name, runs in curves.items()
    }
    plots.learning_curves(by_labels, out / "learning_curves.png", target=max(targets))
    answers_report(sweep, out, targets)
    from activelearn.tracking.tracker import log_sweep_report

    log_sweep_report(sweep, out, rows, targets)
    return rows


def answers_report(sweep: Path, out: Path, targets: list[float]) -> None:
    """The same figures over answers spent, and the share of answers wasted (other,
    skipped, rejected) per configuration: appended to summary.md, with
    learning_curves_answers.png."""
    curves = sweep_curves(sweep, over="answers")
    rows = summarize(curves, targets)
    wasted = defaultdict(list)
    for job in sorted(p.parent.parent for p in sweep.glob("*/.hydra/overrides.yaml")):
        for name, runs in curves.items():
            if campaign_curve(job / "campaign", "answers") in runs:
                wasted[name].append(wasted_share(job / "campaign"))
                break
    lines = ["", "Over answers spent (labels + other + skipped + rejected):", ""]
    lines.append(markdown_table(rows, targets).replace("labels", "answers"))
    lines += ["| configuration | share of answers wasted |", "|---|---|"]
    for name, shares in sorted(wasted.items()):
        shares = np.asarray(shares, dtype=float)
        known = shares[~np.isnan(shares)]
        lines.append(f"| {name} | " + (f"{known.mean():.1%}" if len(known) else "n/a") + " |")
    with (out / "summary.md").open("a") as f:
        f.write("\n".join(lines) + "\n")
    by_answers = {
        name: [
            (x, [dict(c)[x] for c in runs if x in dict(c)])
            for x in sorted({x for c in runs for x, _ in c})
        ]
        for name, runs in curves.items()
    }
    plots.learning_curves(
        by_answers, out / "learning_curves_answers.png", target=max(targets), xlabel="answers spent"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Report a sweep of simulated campaigns")
    parser.add_argument("sweep", type=Path, help="the Hydra multirun folder of the sweep")
    parser.add_argument(
        "--target", type=float, nargs="+", default=[0.9, 0.95], help="test accuracies in (0, 1]"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = report_sweep(args.sweep, args.target)
    print(markdown_table(rows, args.target))
    print(f"figures and tables in {args.sweep / 'report'}")
    from activelearn.tracking.tracker import sweep_ui_command

    print(f"MLflow, the campaigns' learning curves side by side: {sweep_ui_command(args.sweep)}")


if __name__ == "__main__":
    main()
