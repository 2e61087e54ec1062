"""Label Studio: the client that has people label a campaign's queue, and a local server.

- `annotator`: `LabelStudioAnnotator`, the labeling side's Label Studio implementation
  (`push` a round's queue, `collect` its answers), composing
- `transport` (HTTP: retries, the token, errors), `project` (project upkeep), `state`
  (the campaign's state file), `tasks` (task bodies, votes, reports; no HTTP) and
  `label_config` (building and reading the labeling config, also for `serving/`);
- `server`: installing and starting Label Studio; `cli`: the `serve` command
  (`python -m activelearn.labeling.labelstudio serve`).

label-studio-sdk is imported lazily: `serve` and the CLI help do not pay for it.
"""

from activelearn.labeling.labelstudio.annotator import LabelStudioAnnotator
from activelearn.labeling.labelstudio.label_config import label_config
from activelearn.labeling.labelstudio.server import (
    LABEL_STUDIO_VERSION,
    LabelStudioServer,
    free_port,
    start_server,
)
from activelearn.labeling.labelstudio.transport import TOKEN_ENV

__all__ = [
    "LABEL_STUDIO_VERSION",
    "TOKEN_ENV",
    "LabelStudioAnnotator",
    "LabelStudioServer",
    "free_port",
    "label_config",
    "start_server",
]
