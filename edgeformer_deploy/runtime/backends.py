"""The backend interface every runtime implements, the options that travel to it, and which backend runs
which artifact (from the formats table)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .artifact import Artifact
from .errors import BackendMissing, PredictError
from .formats import BACKEND_CHOICES, BACKEND_FORMATS, FORMATS, format_of  # noqa: F401 (re-exported)

Quantization = Optional[Tuple[float, int]]  # (scale, zero_point) of a quantised tensor


@dataclass(frozen=True)
class BackendOptions:
    """Everything a user can say about how to run an artifact, as one object."""
    backend: str = "auto"  # "auto" (by file type) or a name from BACKEND_CHOICES
    threads: Optional[int] = None  # the runtime's CPU threads
    npu_cores: str = "auto"  # RKNN core mask

    def check(self) -> "BackendOptions":
        if self.backend not in BACKEND_CHOICES:
            raise PredictError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKEND_CHOICES)}")
        if self.threads is not None and self.threads < 1:
            raise PredictError(f"threads must be at least 1 (got {self.threads})")
        return self


class Backend:
    """What the session needs of a runtime: the input it takes and every output it returns.

    ``run`` takes one batch in the artifact's input layout/dtype and returns all outputs, raw (still
    quantised where ``output_quantization`` says so), in the backend's own order; ``output_names`` names
    them so the session can put them in the manifest's order.
    """

    name: str = "backend"
    input_shape: Tuple[Optional[int], ...] = ()
    input_dtype: str = "float32"
    input_quantization: Quantization = None
    output_names: Tuple[str, ...] = ()
    output_quantization: Tuple[Quantization, ...] = ()

    def run(self, x: np.ndarray) -> List[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def install_hint(fmt: str, machine: Optional[str] = None) -> str:
    """The package to install for ``fmt`` on this board (by CPU architecture)."""
    return FORMATS[fmt].install_hint(machine)


def require(module: str, fmt: str):
    """Import ``module`` or fail with the one line saying what to install on this board."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendMissing(f"{module} is not installed — {install_hint(fmt)}") from None


def open_backend(artifact: Artifact, options: BackendOptions = BackendOptions()) -> Backend:
    """Create the backend for ``artifact`` (``options.backend="auto"`` chooses by file format)."""
    options.check()
    info = format_of(artifact.path)
    if options.backend != "auto" and BACKEND_FORMATS[options.backend] != info.name:
        raise PredictError(f"backend {options.backend} cannot run .{info.name} artifacts")
    module, _, cls = info.backend_module.partition(":")
    return getattr(importlib.import_module(module), cls)(artifact, options)


def run_in_batches(run: Callable[[np.ndarray], Sequence[np.ndarray]], tensor: np.ndarray,
                   batch: Optional[int]) -> List[np.ndarray]:
    """Run a fixed-batch model over any number of inputs: chunks of ``batch``, the last one padded by
    repeating its last item (``batch=None``: one call). Returns every output, concatenated over chunks."""
    if batch is None:
        return list(run(tensor))
    chunks = []
    for start in range(0, len(tensor), batch):
        chunk = tensor[start:start + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        chunks.append([out[:batch - pad] for out in run(np.ascontiguousarray(chunk))])
    return [np.concatenate(parts) for parts in zip(*chunks)]
