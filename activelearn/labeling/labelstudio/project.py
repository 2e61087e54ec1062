"""Project upkeep: the campaign's one Label Studio project, made once and found again
(by the claim in its description, also after a kill), kept as the campaign wants it
(labeling config, answers per task, the pool's local-files storage), a Data Manager view
per round, and uncertainty sampling by the round's model version.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from pathlib import Path

from activelearn.config import LabelingConfig
from activelearn.core.faults import kill_point
from activelearn.errors import LabelStudioError
from activelearn.labeling.labelstudio.label_config import choices_of, label_config, our_fields
from activelearn.labeling.labelstudio.state import CampaignState
from activelearn.labeling.labelstudio.transport import Transport
from activelearn.workspace.layout import round_tag

log = logging.getLogger(__name__)

# In the description of the project a campaign creates: finds it again after a kill.
CLAIM_PREFIX = "activelearn campaign claim "

# Label Studio's name for serving unlabeled tasks lowest prediction score first.
UNCERTAINTY_SAMPLING = "Uncertainty sampling"


class Project:
    """The campaign's project at `transport`'s server, recorded in `state_path`."""

    def __init__(
        self,
        transport: Transport,
        settings: LabelingConfig,
        class_names: Sequence[str],
        pool_dir: Path,
        state_path: Path,
    ):
        self.transport = transport
        self.sdk = transport.sdk
        self.url = transport.url
        self.settings = settings
        self.class_names = list(class_names)
        self.pool_dir = pool_dir
        self.state_path = state_path

    def ensure(self, state: CampaignState) -> int:
        """The campaign's project id: created once (labeling config from the class names,
        local-files storage on the pool), recorded in `state` (saved), reused after.

        A random claim is saved before the create request and written into the project's
        description: a run killed between the create and saving the id (or a create whose
        answer was lost) leaves a project a rerun finds by its claim and adopts, instead of
        creating a second one. A project of another campaign with the same title never
        carries this claim.
        """
        config = label_config(self.class_names, self.settings.other_label or None)
        project_id = state.project_id
        if project_id is None:
            project_id = self._adopt_or_create(state, config)
            state.url = self.url
            state.project_id = project_id
            state.project_title = self.settings.project_title
            state.classes = self.class_names
            state.save(self.state_path)  # before anything else can fail
        else:
            ours_changed = state.classes != self.class_names
            self._keep_settings(project_id, self.recorded(state), config, ours_changed)
            if ours_changed:
                state.classes = self.class_names
                state.save(self.state_path)
        if state.storage_id is None or state.storage_path != str(self.pool_dir):
            state.storage_id = self._ensure_storage(project_id)
            state.storage_path = str(self.pool_dir)
            state.save(self.state_path)
        return project_id

    def _adopt_or_create(self, state: CampaignState, config: str) -> int:
        """The project a run killed before recording it made under the saved claim, or a
        new one under a new claim, saved first."""
        claim = state.project_claim
        if claim and (project_id := self._claimed(claim)) is not None:
            log.warning(
                "adopted Label Studio project %d at %s: an earlier run created it but "
                "stopped before recording it in %s",
                project_id,
                self.url,
                self.state_path,
            )  # it may have been edited since, or made with other settings
            self._keep_settings(project_id, self._get(project_id), config, True)
            return project_id
        if claim is None:
            claim = state.project_claim = secrets.token_hex(16)
            state.save(self.state_path)
        project = self.transport.call(
            "creating the project",
            lambda: self.sdk.projects.create(
                title=self.settings.project_title,
                description=f"{CLAIM_PREFIX}{claim}",
                label_config=config,
                sampling=UNCERTAINTY_SAMPLING,
                skip_queue="IGNORE_SKIPPED",  # a skip is an answer: back to our pool
                maximum_annotations=self.settings.annotations_per_task,
                show_skip_button=True,
            ),
            idempotent=False,
        )
        kill_point("project:after-create")  # crash tests: project made, id not saved
        log.info("created Label Studio project %d at %s", project.id, self.url)
        return project.id

    def recorded(self, state: CampaignState):
        """The project recorded in `state`, checked to be this campaign's: at the
        recorded URL, and carrying the campaign's claim. A project without any claim (made
        by a version before claims, or its description edited) gets the claim written in.
        """
        project_id = state.project_id
        if (state.url or self.url) != self.url:
            raise LabelStudioError(
                f"{self.state_path} is about project {project_id} at {state.url}, not at "
                f"labeling.url={self.url}: point labeling.url there, or, if that server "
                f"has moved, change the url in {self.state_path}"
            )
        project = self._get(project_id)
        description = project.description or ""
        claim = state.project_claim
        if claim and f"{CLAIM_PREFIX}{claim}" in description:
            return project
        if CLAIM_PREFIX in description:
            raise LabelStudioError(
                f"project {project_id} at {self.url} belongs to another campaign (its "
                f"description carries another claim than {self.state_path}): this is not "
                f"the server or data dir this campaign's project is on; start that one at "
                f"{self.url}, then run again"
            )
        if claim is None:
            claim = state.project_claim = secrets.token_hex(16)
            state.save(self.state_path)
        log.warning(
            "project %d at %s carried no campaign claim (made by an older version, or its "
            "description edited): the claim from %s is written into it",
            project_id,
            self.url,
            self.state_path,
        )
        marked = f"{description}\n{CLAIM_PREFIX}{claim}".strip()
        return self.transport.call(
            f"writing the campaign's claim into project {project_id}",
            lambda: self.sdk.projects.update(project_id, description=marked),
        )

    def _claimed(self, claim: str) -> int | None:
        """The project carrying `claim`, if an earlier run created it: found by the claim
        alone, as its title may have changed (in the UI, or labeling.project_title)."""
        projects = self.transport.call(
            "listing the projects", lambda: list(self.sdk.projects.list())
        )
        mark = f"{CLAIM_PREFIX}{claim}"
        return next((p.id for p in projects if mark in (p.description or "")), None)

    def _keep_settings(self, project_id: int, project, config: str, ours_changed: bool) -> None:
        """Put back the labeling config and the answers wanted per task where they differ
        from the campaign's: edited in Label Studio, or changed in our config. Fields added
        in Label Studio next to ours are kept (their answers would refuse a put-back)."""
        if our_fields(project.label_config) != our_fields(config):
            theirs = choices_of(project.label_config)
            if theirs != self.class_names and not ours_changed:
                log.warning(
                    "project %d offered the choices %s; the campaign's classes are %s: "
                    "labeling config restored (rename class folders to rename classes)",
                    project_id,
                    theirs,
                    self.class_names,
                )
            self.transport.call(
                f"updating label_config of project {project_id}",
                lambda: self.sdk.projects.update(project_id, label_config=config),
            )
        self.keep_answers_per_task(project_id, project)

    def keep_answers_per_task(self, project_id: int, project) -> None:
        """Make the project ask for `annotations_per_task` answers, as `decide` counts them:
        raised between rounds, Label Studio serves answered tasks again for the rest."""
        wanted = self.settings.annotations_per_task
        if project.maximum_annotations != wanted:
            self.transport.call(
                f"updating maximum_annotations of project {project_id}",
                lambda: self.sdk.projects.update(project_id, maximum_annotations=wanted),
            )

    def _get(self, project_id: int):
        project = self.transport.call(
            f"reading project {project_id}",
            lambda: self.sdk.projects.get(project_id),
            missing_ok=True,
        )
        if project is None:
            raise LabelStudioError(
                f"project {project_id} recorded in {self.state_path} does not exist at "
                f"{self.url}: if it is on another server or data dir, start that one at "
                f"{self.url}; if it was deleted, remove {self.state_path}: the next round "
                "sends the images still waiting for an answer back to the pool and pushes "
                "into a new project"
            )
        return project

    def _ensure_storage(self, project_id: int) -> int:
        """A local-files import storage covering the pool, so tasks can show pool images
        by reference. It is never synced: tasks come from `push` only."""
        storages = self.transport.call(
            "listing storages",
            lambda: self.sdk.import_storage.local.list(project=project_id),
        )
        for storage in storages:
            if storage.path == str(self.pool_dir):
                return storage.id
        try:
            storage = self.transport.call(
                f"adding local-files storage {self.pool_dir}",
                lambda: self.sdk.import_storage.local.create(
                    project=project_id,
                    path=str(self.pool_dir),
                    title="pool",
                    use_blob_urls=False,
                    recursive_scan=True,
                ),
                idempotent=False,
            )
        except LabelStudioError as err:
            raise LabelStudioError(
                f"{err}\nThe server must serve local files from the pool's parent: start it with "
                f"`python -m activelearn.labeling.labelstudio serve --pool-dir {self.pool_dir}`"
            ) from None
        return storage.id

    def ensure_view(self, project_id: int, round: int) -> int:
        """A Data Manager tab per round: its tasks, lowest prediction score (least
        confident) first, for "Label Tasks As Displayed"."""
        title = f"round {round}"
        views = self.transport.call(
            "listing views", lambda: self.sdk.views.list(project=project_id)
        )
        for view in views:
            if (view.data or {}).get("title") == title:
                return view.id
        data = {
            "title": title,
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:data.round",
                        "operator": "equal",
                        "type": "Number",
                        "value": round,
                    }
                ],
            },
            "ordering": ["tasks:predictions_score"],
        }
        view = self.transport.call(
            f"creating view {title!r}",
            lambda: self.sdk.views.create(project=project_id, data=data),
            idempotent=False,
        )
        return view.id

    def rank_by(self, project_id: int, round: int) -> None:
        """Serve open tasks by round `round`'s predictions, least confident first: Label
        Studio counts only predictions of the project's model version, and importing new
        ones does not change it."""
        self.transport.call(
            "setting uncertainty sampling",
            lambda: self.sdk.projects.update(
                project_id,
                sampling=UNCERTAINTY_SAMPLING,
                model_version=round_tag(round),
                skip_queue="IGNORE_SKIPPED",
            ),
        )
