"""Parameter and MAC counts measured from the model itself (torch's FLOP counter)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, imgsz: int) -> int:
    """Multiply-accumulates of one forward pass at ``imgsz`` x ``imgsz`` (FLOPs / 2)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, 3, imgsz, imgsz))
    model.train(was_training)
    return counter.get_total_flops() // 2
