"""Output folders the tools write into: created up front, and refused with one line when they cannot be."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def folder_problem(folder: Path, label: str) -> Optional[str]:
    """Create ``folder`` (and its parents); the one-line reason it cannot take files, or None."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{label} {folder} is an existing file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {label} {folder}: {exc.strerror or exc}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{label} {folder} is not writable"
    return None
