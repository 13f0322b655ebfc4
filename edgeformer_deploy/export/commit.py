"""Putting finished files into the output folder all together or not at all, one exporter at a time.

An artifact and its manifest (and reports such as an RKNN accuracy analysis) are a unit: a reader must
never find a new artifact beside an old or missing manifest. The commit holds an exclusive ``flock`` on
the output folder itself (no lock file is left behind), moves what it replaces aside first, and puts it
back if any move fails. A second exporter of the same names waits for the lock, then commits its own
complete set.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence, Tuple

from ..errors import ExportError


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for a concurrent exporter's commit
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def commit(moves: Sequence[Tuple[Path, Path]], backup_dir: Path) -> None:
    """``os.replace`` every (source, destination) pair, or none of them (what they replace is restored)."""
    folder = moves[0][1].parent
    with folder_lock(folder):
        backups: list[Tuple[Path, Path]] = []
        done: list[Path] = []
        try:
            for i, (_, destination) in enumerate(moves):
                if destination.exists() or destination.is_symlink():
                    aside = backup_dir / f"replaced-{i}-{destination.name}"
                    os.replace(destination, aside)
                    backups.append((aside, destination))
            for source, destination in moves:
                os.replace(source, destination)
                done.append(destination)
        except OSError as exc:
            for destination in done:
                with contextlib.suppress(OSError):
                    _remove(destination)
            for aside, destination in backups:
                with contextlib.suppress(OSError):
                    os.replace(aside, destination)
            where = exc.filename or folder
            raise ExportError(f"cannot write {where}: {exc.strerror or exc} — nothing was changed in "
                              f"{folder}") from None
