"""CPU placement for big.LITTLE boards (e.g. RK3588: cores 4-7 are the Cortex-A76 ones)."""
from __future__ import annotations

import os

from .errors import PredictError

MAX_CPU_ID = 4095  # Linux's largest CONFIG_NR_CPUS default (CPU_SETSIZE is 1024 in glibc)
_USAGE = "use e.g. 4-7 or 0,2,4-5"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def parse_cpus(text: str) -> list[int]:
    """'4-7' / '0,2,4-5' -> sorted core ids (each at most :data:`MAX_CPU_ID`)."""
    cores: set[int] = set()
    try:
        for part in str(text).split(","):
            first, _, last = part.strip().partition("-")
            low, high = int(first), int(last or first)
            if low < 0 or high < low:
                raise ValueError
            if high > MAX_CPU_ID:
                raise PredictError(f"bad CPU list {_short(text)!r}: CPU ids go up to {MAX_CPU_ID}")
            cores.update(range(low, high + 1))
    except ValueError:
        raise PredictError(f"bad CPU list {_short(text)!r}; {_USAGE}") from None
    if not cores:
        raise PredictError(f"bad CPU list {_short(text)!r}; {_USAGE}")
    return sorted(cores)


def describe(cores: list[int]) -> str:
    """[0, 1, 2, 3, 7] -> '0-3,7' (a summary, however many cores)."""
    runs, start = [], None
    for i, core in enumerate(cores):
        if start is None:
            start = core
        if i + 1 == len(cores) or cores[i + 1] != core + 1:
            runs.append(str(start) if start == core else f"{start}-{core}")
            start = None
    return _short(",".join(runs), 60)


def pin_to_cpus(cores) -> None:
    """Restrict this process to ``cores``. Call before the backend starts its thread pool:
    threads inherit the affinity of the thread that creates them."""
    cores = parse_cpus(cores) if isinstance(cores, str) else sorted(set(cores))
    if not hasattr(os, "sched_setaffinity"):
        raise PredictError("CPU affinity is not supported on this OS")
    online = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    try:
        os.sched_setaffinity(0, cores)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        available = f" (this process may use {describe(online)})" if online else ""
        raise PredictError(f"cannot pin to CPUs {describe(cores)}: {_short(reason, 60)}{available}") from None
