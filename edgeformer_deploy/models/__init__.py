"""Reference PyTorch models: EdgeFormer XS/S/H and MobileViT XXS/XS/S."""
from .checkpoint import load_weights, read_state_dict
from .edgeformer import EdgeFormer, GCCBlock
from .mobilevit import MobileViT
from .profile import count_macs, count_params
from .registry import create_model, list_models

__all__ = ["EdgeFormer", "GCCBlock", "MobileViT", "count_macs", "count_params", "create_model",
           "list_models", "load_weights", "read_state_dict"]
