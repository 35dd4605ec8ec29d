"""One exception family for user-facing errors.

Raise these with a one-line message that names the file/option and the problem; the CLI
prints ``edgedet: error: <message>`` and exits non-zero without a traceback.
"""
from __future__ import annotations


class EdgedetError(Exception):
    """A user-facing error with a one-line message."""

    exit_code = 2
    exit_now = False  # end the process right after the line (see ClusterLost)


class DataError(EdgedetError):
    """Bad dataset, image or annotation."""


class ModelFileError(EdgedetError):
    """A model/weights file that is missing, truncated, corrupt or lacks metadata."""


class ConfigError(EdgedetError):
    """Unknown variant/target/device or an impossible setting."""


class ToolchainError(EdgedetError):
    """A missing optional toolchain or delegate (says what to install)."""


class ThresholdMissed(EdgedetError):
    """A validation threshold was missed (used for CI gating)."""

    exit_code = 1


def did_you_mean(word: str, choices, cutoff: float = 0.5) -> str:
    """Return ' (did you mean X?)' for the closest choice (similarity >= ``cutoff``), or ''."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""
