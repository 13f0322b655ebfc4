"""Shared test helpers (not fixtures): running console scripts, making random models non-trivial."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeformer_deploy.runtime.artifact import manifest_path


def script(name: str) -> str:
    """The console script installed beside this interpreter (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed (pip install -e '.[export,dev]')"
    return found


def _can_unshare_network() -> bool:
    unshare = shutil.which("unshare")
    return bool(unshare) and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0


def run_cli(name: str, *args, env=None, timeout=600, offline=False) -> subprocess.CompletedProcess:
    """Run an installed console script; ``offline`` runs it in a network namespace with no interfaces up
    (where the machine allows it), proving that nothing downloads at run time."""
    command = [script(name), *map(str, args)]
    if offline and _can_unshare_network():
        command = ["unshare", "-n", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


@torch.no_grad()
def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, and scale the classifier, so a
    randomly initialised model has O(1) logits that really depend on BN folding being right."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
    if getattr(model, "classifier", None) is not None:
        model.classifier.fc.weight.mul_(25)
    return model.eval()


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 1, exactly one ``error:`` line holding every needle, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def assert_same_detections(found, labels, scores, boxes) -> None:
    """Labels and their order exactly (every threshold, NMS and top-200 decision identical); probabilities
    and boxes to float32 resolution (measured: 6.0e-8 and 1.2e-7 at most). Not bit for bit: torch's CPU
    softmax / exp are vectorised approximations (SLEEF, FMA polynomials) that numpy's float32 exp differs from
    by 1 ulp on ~30 % of the values (the fixture README's bit-exact numpy replay does not hold on this CPU)."""
    assert np.array_equal(found.labels, labels)
    one = np.spacing(np.float32(1))  # 1.19e-7: float32 resolution of a probability
    assert np.abs(found.scores.astype(np.float64) - scores).max() <= one
    assert np.abs(found.boxes - boxes).max() <= 2 * one


def read_manifest(artifact: Path) -> dict:
    """The manifest (JSON) of an exported artifact."""
    return json.loads(manifest_path(artifact).read_text())


def official_io(folder: Path, name: str) -> dict:
    """``<name>_io.pt`` of an official-code fixture folder (inputs and the official outputs)."""
    return torch.load(Path(folder) / f"{name}_io.pt", weights_only=True)


TORCH_BLOCKER = textwrap.dedent("""
    import atexit, importlib.abc, runpy, sys

    FORBIDDEN = ("torch", "edgeformer_deploy.models", "edgeformer_deploy.export")

    class Blocker(importlib.abc.MetaPathFinder):  # as if torch were not installed
        def find_spec(self, name, path=None, target=None):
            if name.startswith(FORBIDDEN):
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, Blocker())
    atexit.register(lambda: sys.stderr.write(
        "loaded: %s\\n" % sorted(m for m in sys.modules if m.startswith(FORBIDDEN))))
    prog, module = sys.argv[1:3]
    sys.argv = [prog] + sys.argv[3:]
    runpy.run_module(module, run_name="__main__")
""")


def run_without_torch(prog: str, module: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    """Run a board-side CLI (``python -m module``) where torch and the export toolchain cannot be imported;
    its stderr ends with ``loaded: [...]``, the forbidden modules that were imported anyway."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", TORCH_BLOCKER, prog, module, *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd)
