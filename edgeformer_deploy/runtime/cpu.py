"""CPU placement for big.LITTLE boards (e.g. RK3588: cores 4-7 are the Cortex-A76 ones)."""
from __future__ import annotations

import os

from .errors import PredictError


def parse_cpus(text: str) -> list[int]:
    """'4-7' / '0,2,4-5' -> sorted core ids."""
    cores: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            cores.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise PredictError(f"bad CPU list {text!r}; use e.g. 4-7 or 0,2,4-5") from None
    if not cores:
        raise PredictError(f"bad CPU list {text!r}; use e.g. 4-7 or 0,2,4-5")
    return sorted(cores)


def pin_to_cpus(cores) -> None:
    """Restrict this process to ``cores``. Call before the backend starts its thread pool:
    threads inherit the affinity of the thread that creates them."""
    cores = parse_cpus(cores) if isinstance(cores, str) else sorted(set(cores))
    if not hasattr(os, "sched_setaffinity"):
        raise PredictError("CPU affinity is not supported on this OS")
    try:
        os.sched_setaffinity(0, cores)
    except (OSError, ValueError) as exc:
        raise PredictError(f"cannot pin to CPUs {cores}: {exc}") from None
