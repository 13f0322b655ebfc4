"""Managed virtual environments for converters whose pins clash with the main environment.

Each environment is created on first use from a lock file shipped in ``export/envs/<name>.txt`` (the same
files ``docker/`` installs), in ``$EDGEFORMER_ENVS`` (default: ``~/.cache/edgeformer-deploy/envs``), and
reused while its lock file is unchanged. Converters run as subprocesses inside it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ExportError

LOCK_DIR = Path(__file__).resolve().parent / "envs"
STAMP = ".edgeformer-env.sha256"


@dataclass(frozen=True)
class ConverterEnv:
    name: str
    purpose: str
    pip_args: tuple[str, ...] = ()  # extra pip arguments (e.g. --no-deps for a toolkit with impossible pins)

    @property
    def lock_file(self) -> Path:
        return LOCK_DIR / f"{self.name}.txt"

    @property
    def path(self) -> Path:
        return envs_root() / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def lock_hash(self) -> str:
        return hashlib.sha256(self.lock_file.read_bytes()).hexdigest()

    def is_ready(self) -> bool:
        stamp = self.path / STAMP
        return self.python.exists() and stamp.exists() and stamp.read_text().strip() == self.lock_hash()


ENVS: dict[str, ConverterEnv] = {
    "tflite": ConverterEnv("tflite", "onnx2tf + TensorFlow 2.19: ONNX -> TFLite"),
    "tflite-runtime": ConverterEnv("tflite-runtime", "tflite-runtime 2.14 (armv7 boards' runtime) for checks"),
    # the toolkit's own pins (torch<=2.4) are impossible next to torch 2.13; the lock pins everything instead
    "rknn": ConverterEnv("rknn", "rknn-toolkit2 2.5.0: ONNX -> RKNN + NPU simulator", pip_args=("--no-deps",)),
}


def envs_root() -> Path:
    if os.environ.get("EDGEFORMER_ENVS"):
        root = Path(os.environ["EDGEFORMER_ENVS"]).expanduser()
        if root.exists() and not root.is_dir():
            raise ExportError(f"EDGEFORMER_ENVS={root} is a file, not a folder for the converter environments")
        return root
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgeformer-deploy" / "envs"


def _die_with_parent() -> None:
    """In the worker, before exec: Linux sends it SIGTERM when the exporter dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def get_env(name: str) -> ConverterEnv:
    if name not in ENVS:
        raise ExportError(f"unknown converter environment {name!r}; choose one of: {', '.join(ENVS)}")
    return ENVS[name]


def create_env(name: str, log: Callable[[str], None] = print, force: bool = False) -> ConverterEnv:
    """Create (or re-create when its lock file changed) a converter environment, showing pip's progress."""
    env = get_env(name)
    if env.is_ready() and not force:
        return env
    from rich.console import Console

    # Built in place (venv scripts hard-code their interpreter path); without its stamp, written last, a
    # half-built environment never counts as ready.
    target = env.path
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    log(f"creating the {name} converter environment in {env.path} (one time; {env.purpose})")
    venv.EnvBuilder(with_pip=True, symlinks=True).create(target)
    command = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check",
               "--no-input", *env.pip_args, "-r", str(env.lock_file)]
    lines: list[str] = []
    with console.status(f"pip install -r {env.lock_file.name}") as status:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            lines.append(line.rstrip())
            status.update(f"[{name}] {line.strip()[:100]}")
        process.wait()
    if process.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        tail = next((line for line in reversed(lines) if line.strip()), "pip failed")
        raise ExportError(f"could not create the {name} environment ({tail.strip()[:300]}) — fix that, then "
                          f"run: edgeformer-export env create {name}")
    (target / STAMP).write_text(env.lock_hash() + "\n")
    return env


def require_env(name: str, log: Callable[[str], None] = print, create: bool = True) -> ConverterEnv:
    """The ready environment, created on first use; a broken one says how to re-create it."""
    env = get_env(name)
    if env.is_ready():
        if subprocess.run([str(env.python), "-c", "pass"], capture_output=True).returncode != 0:
            raise ExportError(f"the {name} environment in {env.path} is broken — re-create it with: "
                              f"edgeformer-export env create {name} --force")
        return env
    if not create:
        raise ExportError(f"the {name} environment is missing — create it with: edgeformer-export env create {name}")
    return create_env(name, log)


def remove_env(name: str) -> bool:
    env = get_env(name)
    existed = env.path.exists()
    shutil.rmtree(env.path, ignore_errors=True)
    return existed


def run_in_env(env: ConverterEnv, script: Path, args: list[str], cwd: Path, log_file: Path) -> None:
    """Run a worker script with the environment's interpreter; failure -> one-line ExportError."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    environment.update(TF_CPP_MIN_LOG_LEVEL="3", PATH=f"{env.python.parent}{os.pathsep}{environment.get('PATH', '')}",
                       PYTHONNOUSERSITE="1")
    with open(log_file, "w") as log:
        process = subprocess.Popen([str(env.python), str(script), *args], cwd=cwd, stdout=log,
                                   stderr=subprocess.STDOUT, env=environment,
                                   preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        try:
            process.wait()
        except BaseException:  # Ctrl-C, SIGTERM: the worker goes too, before its files are removed
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise
    if process.returncode != 0:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.startswith("WORKER-ERROR:")), None)
        reason = reason[len("WORKER-ERROR:"):].strip() if reason else (lines[-1] if lines else "no output")
        raise ExportError(f"{script.stem} failed: {reason[:300]}")


def run_worker(env: ConverterEnv, script: Path, args: list[str], work: Path, job, what: str) -> Path:
    """:func:`run_in_env` for an export job: the log lands in ``work`` and, with ``--verbose``, beside the output."""
    log_file = work / f"{what}.log"
    try:
        run_in_env(env, script, args, cwd=work, log_file=log_file)
    except ExportError as exc:
        if job.verbose:
            kept = Path(job.output) / f"{job.stem}.{what}.log"
            shutil.copy(log_file, kept)
            raise ExportError(f"{exc} (converter log: {kept})") from None
        raise ExportError(f"{exc} (re-run with --verbose to keep the converter log)") from None
    if job.verbose:
        shutil.copy(log_file, Path(job.output) / f"{job.stem}.{what}.log")
    return log_file


def describe_envs() -> list[tuple[str, str, str, str]]:
    """(name, state, path, purpose) for `edgeformer-export env list`."""
    rows = []
    for env in ENVS.values():
        state = "ready" if env.is_ready() else ("stale" if env.path.exists() else "missing")
        rows.append((env.name, state, str(env.path), env.purpose))
    return rows

