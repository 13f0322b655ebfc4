"""Loading official ml-cvnets / ParC-Net checkpoints, strictly and safely.

Pickles are only ever read with ``weights_only=True``: a file whose unpickling would construct
arbitrary objects (and so could run code) is refused, never executed.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema")
# Official EdgeFormer keeps a second reference to layer_5.0 ("residual"), at the top level of a classifier and
# under "encoder." in the detection / segmentation wrappers.
_ALIASES = (("residual.", "layer_5.0."), ("encoder.residual.", "encoder.layer_5.0."))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth`` (plain or wrapped state dict) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file is empty: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    other = _other_file_kind(path)
    if other:
        raise CheckpointError(f"{path}: this is {other}, not a PyTorch checkpoint — --weights takes the "
                              f".pt/.pth state dict (or .safetensors) the model was trained to")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: the one refusal line is the message
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise CheckpointError(f"{path}: refused — the pickle holds objects other than tensors "
                                  f"(loading it could run code)") from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # torch's unpickler raises anything from EOFError to IndexError on garbage
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(exc)})") from None
    return _unwrap(obj, path)


def _other_file_kind(path: Path) -> str | None:
    """Deployment artifacts people pass as --weights by mistake, by suffix and magic bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if head[:4] == b"RKNN" or path.suffix.lower() == ".rknn":
        return "an RKNN model"
    if head[4:8] == b"TFL3" or path.suffix.lower() == ".tflite":
        return "a TFLite model"
    if path.suffix.lower() == ".onnx":
        return "an ONNX model"
    return None


def check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """NaN/inf weights export into NaN outputs: refuse them at load, naming a few tensors."""
    bad = [name for name, tensor in state.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise CheckpointError(f"{path}: {_summary('tensor(s) with NaN or infinite values', bad)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and not _all_tensors(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not _all_tensors(obj):
        raise CheckpointError(f"{path}: not a model checkpoint (expected a state dict of tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _all_tensors(d: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def _drop_official_alias(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    aliases = [(a, t) for a, t in _ALIASES if not any(k.startswith(a) for k in expected)]
    out = {}
    for key, value in state.items():
        alias = next(((a, t) for a, t in aliases if key.startswith(a)), None)
        if alias is not None:
            twin = state.get(alias[1] + key[len(alias[0]):])
            if twin is not None and twin.shape == value.shape and torch.equal(twin, value):
                continue  # identical alias of layer_5.0.*: nothing to load
        out[key] = value
    return out


def _summary(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:3]) + (f", … (+{len(keys) - 3})" if len(keys) > 3 else "")
    return f"{len(keys)} {label} ({shown})"


def _checkpoint_task(state: dict[str, torch.Tensor]) -> str | None:
    """What the official wrappers name their heads: ssd_heads.* / seg_head.* / classifier.fc.*."""
    if any(k.startswith("ssd_heads.") for k in state):
        return "detection"
    if any(k.startswith("seg_head.") for k in state):
        return "segmentation"
    if any(k.startswith("classifier.fc.") for k in state):
        return "classification"
    return None


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Strictly load ``path`` into ``model``; one clear :class:`CheckpointError` on any mismatch."""
    expected = model.state_dict()
    state = _drop_official_alias(read_state_dict(path), set(expected))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}" for k, v in expected.items()
                 if k in state and state[k].shape != v.shape]
    if missing or unexpected or misshaped:
        name = getattr(model, "model_name", type(model).__name__)
        parts = [_summary(label, keys) for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
        kind = _checkpoint_task(state)
        hint = f" — it looks like a {kind} checkpoint" if kind and kind != getattr(model, "task", kind) else ""
        raise CheckpointError(f"{path} does not fit {name}{hint}: " + "; ".join(parts))
    check_finite(state, Path(path))
    model.load_state_dict(state, strict=True)
    return model
