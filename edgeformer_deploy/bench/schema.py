"""The ``edgeformer-bench`` result document: version, atomic writing, reading with a version check.

The fields, units (ms, bytes, MiB, images/s) and versioning rule are documented in ``SCHEMA.md`` beside
this file. Standard library only (board side).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Union

from ..errors import EdgeformerError

SCHEMA_NAME = "edgeformer-bench"
SCHEMA_MAJOR = 1
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_MAJOR}"


class ResultError(EdgeformerError):
    """A result file that cannot be read: missing, not JSON, not ours, or from a newer schema."""


def write_atomic(path: Union[str, Path], data: Union[str, bytes]) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``:
    a reader (or a Ctrl-C) never sees half a file."""
    path = Path(path)
    folder = path.parent
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def write_result(document: dict, path: Union[str, Path]) -> Path:
    """Write a result document as JSON, atomically; raises :class:`ResultError` with one line."""
    path = Path(path)
    try:
        return write_atomic(path, dumps(document))
    except OSError as exc:
        raise ResultError(f"cannot write {path}: {exc.strerror or exc}") from None


def schema_major(value, name: str = SCHEMA_NAME) -> Optional[int]:
    """``"edgeformer-bench/1"`` -> 1 (for ``name``'s documents); anything else -> None."""
    if not isinstance(value, str) or not value.startswith(name + "/"):
        return None
    major = value[len(name) + 1:].split(".")[0]
    return int(major) if major.isdigit() else None


def read_document(path: Union[str, Path], name: str, newest_major: int, error: type = ResultError) -> dict:
    """A JSON document whose ``"schema"`` is ``name/<major>``; a missing or unreadable file, invalid JSON,
    someone else's document or a newer major schema raise ``error`` with one line."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    major = schema_major(document.get("schema"), name) if isinstance(document, dict) else None
    if major is None:
        raise error(f"{path}: not an {name} result (no \"schema\": \"{name}/{newest_major}\" field)")
    if major > newest_major:
        raise error(f"{path}: written with schema {document['schema']}, newer than this {name} reads "
                    f"({name}/{newest_major}) — upgrade edgeformer-deploy")
    return document


def read_result(path: Union[str, Path]) -> dict:
    """Load a result document; refuses files that are not ours or come from a newer major schema."""
    document = read_document(path, SCHEMA_NAME, SCHEMA_MAJOR)
    if not isinstance(document.get("artifacts"), list):
        raise ResultError(f"{path}: malformed result (no \"artifacts\" list)")
    return document


def instructions_per_inference(artifact: dict) -> Optional[float]:
    """Guest instructions per timed inference from an artifact's optional ``instructions`` object
    (added by the emulated-board counter); None when absent."""
    value = artifact.get("instructions")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        for key in ("per_inference", "median", "mean"):
            number = value.get(key)
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                return float(number)
    return None
