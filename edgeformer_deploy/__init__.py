"""edgeformer-deploy: EdgeFormer (ParC-Net) and MobileViT from PyTorch to ARM boards."""

__version__ = "0.1.0"
