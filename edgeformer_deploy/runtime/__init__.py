"""Board-side inference: numpy + Pillow + one runtime. Imports no torch and nothing from
``edgeformer_deploy.models`` / ``edgeformer_deploy.export``."""
from .errors import ArtifactError, BackendMissing, ImageError, PredictError
from .predictor import Prediction, Predictor

__all__ = ["Predictor", "Prediction", "PredictError", "ArtifactError", "BackendMissing", "ImageError"]
