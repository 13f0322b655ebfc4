"""Reference PyTorch models: EdgeFormer XS/S/H and MobileViT XXS/XS/S."""
from .checkpoint import load_weights, read_state_dict
from .edgeformer import EdgeFormer, GCCBlock
from .mobilevit import MobileViT
from .profile import count_macs, count_params
from .registry import OFFICIAL_CHANNEL_ORDER, ModelSpec, create_model, list_models, model_spec

__all__ = ["OFFICIAL_CHANNEL_ORDER", "EdgeFormer", "GCCBlock", "MobileViT", "ModelSpec", "count_macs",
           "count_params", "create_model", "list_models", "load_weights", "model_spec", "read_state_dict"]
