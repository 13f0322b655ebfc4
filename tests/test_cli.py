"""The installed command-line entry points."""
from __future__ import annotations

from helpers import run_cli


def _run(*args):
    return run_cli("edgeformer-export", *args)


def test_help():
    result = _run("--help")
    assert result.returncode == 0 and "models" in result.stdout


def test_models_listing():
    result = _run("models", "--imgsz", "256")
    assert result.returncode == 0, result.stderr
    assert "5.037 M" in result.stdout and "5.579 M" in result.stdout  # EdgeFormer-S, MobileViT-S
    for name in ("edgeformer_xs", "edgeformer_h", "mobilevit_xxs"):
        assert name in result.stdout
