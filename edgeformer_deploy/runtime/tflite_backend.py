"""TFLite artifacts: the first of ai-edge-litert, tflite-runtime, tensorflow that imports."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile

import numpy as np

from .backends import Backend, BackendOptions, install_hint
from .errors import ArtifactError, BackendMissing

# (package name, module, attribute path of the Interpreter class) in order of preference
INTERPRETERS = (("ai-edge-litert", "ai_edge_litert.interpreter", "Interpreter"),
                ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter"),
                ("tensorflow", "tensorflow", "lite.Interpreter"))


def find_interpreter(package: str | None = None):
    """-> (package name, Interpreter class). ``package`` forces one of INTERPRETERS."""
    for name, module, attribute in INTERPRETERS:
        if package not in (None, name):
            continue
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        for part in attribute.split("."):
            found = getattr(found, part)
        return name, found
    wanted = package or " / ".join(name for name, _, _ in INTERPRETERS)
    raise BackendMissing(f"no TFLite interpreter ({wanted}) is installed — {install_hint('tflite')}")


class TFLiteBackend(Backend):
    def __init__(self, artifact, options: BackendOptions = BackendOptions()):
        path, threads = artifact.path, options.threads
        self.name, interpreter_class = find_interpreter(None if options.backend in ("auto", "tflite")
                                                        else options.backend)
        try:
            with _native_info_hidden():
                self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"{path}: {self.name} cannot load it ({first})") from None
        inp = self.interpreter.get_input_details()[0]
        outputs = self.interpreter.get_output_details()
        self.input_index = inp["index"]
        self.output_indices = tuple(out["index"] for out in outputs)
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.input_dtype = np.dtype(inp["dtype"]).name
        self.input_quantization = _quantization(inp)
        self.output_names = tuple(out["name"] for out in outputs)
        self.output_quantization = tuple(_quantization(out) for out in outputs)

    def run(self, x: np.ndarray):
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(index) for index in self.output_indices]

    def close(self) -> None:
        self.interpreter = None


def _quantization(detail: dict):
    """(scale, zero_point) of a quantised tensor, else None."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zero_point)) if scale else None


@contextlib.contextmanager
def _native_info_hidden():
    """The interpreters' C++ side prints "INFO: Created TensorFlow Lite XNNPACK delegate" to fd 2 on
    every start; keep the CLI's stderr for real problems: pass on every line except INFO ones."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not line.startswith("INFO:"):
                    print(line, file=sys.stderr)
