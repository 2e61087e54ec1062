"""The only module that talks to MLflow.

One experiment per campaign store, named after the workspace folder, or per sweep, named
after the sweep folder (or the one `tracking.experiment` names); a parent run for the
campaign and one child run per round, found again by the campaign's id and the round
when a round is rerun, so reruns resume instead of duplicating.
The campaign run logs test accuracy, macro F1 and labels spent with the labeled count as
their step: the MLflow UI's chart view draws the learning curves from them, a sweep's
strategies side by side (`ui_command` says where to open it).
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

from activelearn.workspace.layout import round_tag

log = logging.getLogger(__name__)

CAMPAIGN_TAG = "activelearn.campaign"
ROUND_TAG = "activelearn.round"
SWEEP_TAG = "activelearn.sweep"
KIND_TAG = "activelearn.run"  # `campaign` on a campaign's run: the chart view's filter
CAMPAIGNS_ONLY = f"tags.`{KIND_TAG}` = 'campaign'"
# A model-training experiment (MLflow 3 otherwise takes it for a GenAI one).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
SQLITE = "sqlite:///"
# The sweep report's metrics, `report/<configuration>.<figure>`: the UI's chart view puts
# them in a section of their own, apart from the campaign runs' learning curves.
REPORT_SECTION = "report"


def tracking_uri(configured: str, workspace: Path) -> str:
    """`MLFLOW_TRACKING_URI` wins; a relative sqlite path lives in the workspace."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str(workspace / uri[len(prefix) :])
    return uri


def experiment_id(client, name: str, uri: str) -> str:
    """The model-training experiment `name`, created on first use (by whichever of a
    sweep's parallel jobs comes first)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A local store keeps artifacts beside its database, not in ./mlruns of the cwd.
    location = None
    if uri.startswith(SQLITE):
        location = (Path(uri[len(SQLITE) :]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    except MlflowException:  # another job created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def chart_url(base: str, experiment: str) -> str:
    """The MLflow UI's model-training runs page of `experiment`, on its chart view (MLflow
    3 opens an experiment on its GenAI overview otherwise), showing the campaign runs
    alone: their learning curves, without the round runs' or the report's metrics."""
    from urllib.parse import quote

    return (
        f"{base.rstrip('/')}/#/experiments/{experiment}/runs"
        f"?workflowType=machine_learning&compareRunsMode=CHART&searchFilter={quote(CAMPAIGNS_ONLY)}"
    )


def ui_command(uri: str, experiment: str, port: int = 5000) -> str:
    """How to look at `experiment` of the store `uri` in the MLflow UI: the command that
    serves it (none for a server) and the page to open."""
    if uri.startswith(("http://", "https://")):
        return f"open {chart_url(uri, experiment)}"
    return (
        f"mlflow ui --backend-store-uri {uri} --port {port}, then open "
        f"{chart_url(f'http://127.0.0.1:{port}', experiment)}"
    )


class CampaignTracker:
    def __init__(self, uri: str, experiment: str, campaign: str, run_name: str | None = None):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.campaign = campaign
        self.run_name = run_name or campaign
        if self.client.get_experiment_by_name(campaign) is not None:
            experiment = campaign  # made when each campaign's experiment had its id for name
        self.experiment_id = experiment_id(self.client, experiment, uri)
        self.parent_id = self._parent()

    def _search(self, filter_string: str):
        return self.client.search_runs([self.experiment_id], filter_string=filter_string)

    def _parent(self) -> str:
        runs = [
            r
            for r in self._search(f"tags.`{CAMPAIGN_TAG}` = '{self.campaign}'")
            if ROUND_TAG not in r.data.tags
        ]
        if runs:
            if KIND_TAG not in runs[0].data.tags:  # made before the tag was
                self.client.set_tag(runs[0].info.run_id, KIND_TAG, "campaign")
            return runs[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.run_name,
            tags={CAMPAIGN_TAG: self.campaign, KIND_TAG: "campaign"},
        )
        return run.info.run_id

    def round_run(self, round: int) -> str:
        """The child run of `round`: found by its tags, or created once. The campaign run
        is RUNNING again if it had ended (continued: more rounds, a raised budget)."""
        if self.client.get_run(self.parent_id).info.status != "RUNNING":
            self.client.update_run(self.parent_id, status="RUNNING")
        runs = self._search(
            f"tags.`{CAMPAIGN_TAG}` = '{self.campaign}' and tags.`{ROUND_TAG}` = '{round}'"
        )
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=round_tag(round),
            tags={
                CAMPAIGN_TAG: self.campaign,
                ROUND_TAG: str(round),
                "mlflow.parentRunId": self.parent_id,
            },
        )
        return run.info.run_id

    def log_params(self, run_id: str, params: dict) -> None:
        """Params not logged yet, in one call (a rerun must not re-log: params are immutable)."""
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for start in range(0, len(new), 100):  # MLflow's batch limit
            self.client.log_batch(run_id, params=new[start : start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Metrics the run does not hold yet: a rerun of the round adds no second point (a
        round's run has the one step)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        existing = self.client.get_run(run_id).data.metrics
        named = {metric_name(k): v for k, v in metrics.items()}
        batch = [Metric(k, float(v), now, step) for k, v in named.items() if k not in existing]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[start : start + 1000])

    def log_campaign_point(self, metric: str, value: float, labeled: int) -> None:
        """One learning-curve point on the campaign run; a rerun does not add it twice."""
        history = self.client.get_metric_history(self.parent_id, metric)
        if all(point.step != labeled for point in history):
            self.client.log_metric(self.parent_id, metric, float(value), step=labeled)

    def log_artifacts(self, run_id: str, paths: list[Path]) -> None:
        for path in paths:
            if path.exists():
                self.client.log_artifact(run_id, str(path))

    def register_model(self, run_id: str, model_file: Path, name: str, round: int) -> str:
        """Log the BentoML file and register it: one model version per round."""
        self.client.log_artifact(run_id, str(model_file), "model")
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        versions = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if versions:
            return versions[0].version
        version = self.client.create_model_version(
            name, source=f"runs:/{run_id}/model", run_id=run_id, tags={"round": str(round)}
        )
        return version.version

    def finish(self, run_id: str, failed: bool = False) -> None:
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def sweep_store(sweep: Path) -> tuple[str, str]:
    """The tracking URI and experiment name of a sweep's campaigns (`MLFLOW_TRACKING_URI`
    wins, as for the campaigns): one store in the sweep folder, its experiment named after
    the folder."""
    sweep = sweep.resolve()
    return tracking_uri(f"{SQLITE}mlruns.db", sweep), sweep.name


def sweep_ui_command(sweep: Path) -> str:
    """How to open the sweep's experiment in the MLflow UI, on its chart view."""
    from mlflow import MlflowClient

    uri, name = sweep_store(sweep)
    found = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return ui_command(uri, found.experiment_id if found else "0")


def log_sweep_report(
    sweep: Path, report: Path, rows: list[dict], targets: list[float], experiment_name: str = ""
) -> tuple[str, str]:
    """The report's figures and files on one run per sweep folder and targets, in the
    sweep's experiment: found again by the sweep's resolved path, so a rerun updates it
    however the path is spelled. Returns the store's URI and the experiment's id."""
    from mlflow import MlflowClient

    sweep = sweep.resolve()
    uri, name = sweep_store(sweep)
    client = MlflowClient(tracking_uri=uri)
    experiment = experiment_id(client, experiment_name or name, uri)
    target_list = " ".join(f"{t:g}" for t in sorted(set(targets)))
    found = client.search_runs(
        [experiment], f"tags.`{SWEEP_TAG}` = '{sweep}' and params.targets = '{target_list}'"
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run = client.create_run(experiment, run_name="sweep report", tags={SWEEP_TAG: str(sweep)})
        run_id = run.info.run_id
        client.log_param(run_id, "targets", target_list)
    status = "FAILED"
    try:
        for row in rows:
            for key, value in row.items():
                if isinstance(value, float) and not math.isnan(value):
                    name = metric_name(f"{REPORT_SECTION}/{row['strategy']}.{key}")
                    client.log_metric(run_id, name, value)
        for path in report.iterdir():
            client.log_artifact(run_id, str(path), "report")
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
    return uri, experiment


def metric_name(name: str) -> str:
    """`name` as MLflow takes it: a class folder called `t-shirt (top)` or a swept
    `k=5` has characters MLflow refuses in metric names."""
    return re.sub(r"[^\w./ -]", "_", name)
