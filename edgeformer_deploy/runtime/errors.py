"""User-facing runtime errors: the CLI prints each as one line (no traceback)."""
from __future__ import annotations

from ..errors import EdgeformerError


class PredictError(EdgeformerError):
    """Base class of everything the board runtime reports to the user."""


class ArtifactError(PredictError):
    """A model file that cannot be used: wrong type, no/invalid manifest, manifest does not match it."""


class BackendMissing(PredictError):
    """The runtime package an artifact needs is not installed on this board."""


class ImageError(PredictError):
    """One input image that cannot be read (the others are still processed)."""
