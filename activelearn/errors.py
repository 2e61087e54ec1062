"""Every error a run can end with, under one base class: the entry point catches
`ActivelearnError`, prints its message (what is wrong and the fix) in one line and
exits non-zero.

Each also keeps the built-in class it always had (ValueError, RuntimeError), so code
that caught those goes on catching them. Imports nothing.
"""


class ActivelearnError(Exception):
    """An error whose message names the file, task or setting, and what to do."""


class ConfigError(ActivelearnError, ValueError):
    """A setting that cannot work; the message names it and the fix."""


class SourceChanged(ConfigError):
    """A dataset source whose labeled or test images changed since a workspace took them."""


class StrategyError(ActivelearnError, ValueError):
    """A strategy setting that cannot work; the message names the setting and the fix."""


class UnreadableImage(ActivelearnError, ValueError):
    """An image file that cannot be decoded; the message names the file and why."""


class WorkspaceBusy(ActivelearnError, RuntimeError):
    """Another run is working in the workspace."""


class UnreadableModel(ActivelearnError, RuntimeError):
    """A model file that cannot be loaded; the message names it and how to get it back."""


class ScorerUnavailable(ActivelearnError, RuntimeError):
    """The scoring engine cannot run (a Ray cluster that does not answer, actors that do
    not start, a node that cannot read the pool); the message says what and the fix."""


class NodeCannotRead(ScorerUnavailable):
    """A Ray node cannot read the pool or the model at the path the driver gave."""


class StageFailed(ActivelearnError, RuntimeError):
    """A stage the worker ran failed; the message is the stage's own."""


class PipelineFailed(ActivelearnError, RuntimeError):
    """`dvc repro` failed; the message holds what DVC or the failed stage said."""


class RoundBlocked(ActivelearnError, RuntimeError):
    """The round cannot go on now; the message says why and what to do."""


class LabelStudioError(ActivelearnError, RuntimeError):
    """Label Studio could not do what was asked; the message says what and what to do."""


class LabelStudioUnreachable(LabelStudioError):
    """Nothing answers at the configured URL."""


class LabelStudioAuthError(LabelStudioError):
    """The API token is missing or refused."""


class ServerStartError(LabelStudioError):
    """The local Label Studio server could not be installed or started."""
