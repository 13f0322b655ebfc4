"""Errors the command-line tools turn into one clear line and a non-zero exit (no traceback)."""


class EdgeformerError(Exception):
    """Base class for user-facing errors."""


class CheckpointError(EdgeformerError):
    """A weights file that cannot be loaded into the requested model."""


class ExportError(EdgeformerError):
    """An export that could not be produced or failed its verification gate."""
