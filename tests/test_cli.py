"""The installed command-line entry points."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def _script(name: str) -> str | None:
    """The console script installed beside this interpreter (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _run(*args):
    exe = _script("edgeformer-export")
    assert exe, "edgeformer-export is not installed (pip install -e '.[export,dev]')"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_help():
    result = _run("--help")
    assert result.returncode == 0 and "models" in result.stdout


def test_models_listing():
    result = _run("models", "--imgsz", "256")
    assert result.returncode == 0, result.stderr
    assert "5.037 M" in result.stdout and "5.579 M" in result.stdout  # EdgeFormer-S, MobileViT-S
    for name in ("edgeformer_xs", "edgeformer_h", "mobilevit_xxs"):
        assert name in result.stdout
