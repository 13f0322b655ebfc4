"""Region markers for the emulated-board instruction counter (``bench/qemu/insn_count.c``).

Around each timed inference the runner makes a system call nobody else makes: ``close()`` of a
descriptor that cannot exist. It fails at once (EBADF) and costs about a microsecond; the counting QEMU
plugin recognises the two magic descriptors and counts guest instructions only between them. Off
(no system call at all) unless ``EDGEFORMER_INSN_MARKERS=1``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

ENV = "EDGEFORMER_INSN_MARKERS"
# --emulate --profile: after each region, the guest's memory map (qemu-user shows guest addresses) is
# copied here, so the plugin's block addresses can be mapped to shared library + symbol on the host.
MAPS_ENV = "EDGEFORMER_GUEST_MAPS"
# Negative descriptors, compared by the plugin on the low 32 bits of the first syscall argument.
BEGIN_FD = -0x45460001
END_FD = -0x45460002


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass  # EBADF is the point: the call exists only for the plugin to see


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


@contextmanager
def counted_region(active: bool | None = None):
    """Mark the body as one counted region when markers are on."""
    active = enabled() if active is None else active
    if active:
        _close(BEGIN_FD)
    try:
        yield
    finally:
        if active:
            _close(END_FD)
            _save_maps()


def _save_maps() -> None:
    target = os.environ.get(MAPS_ENV)
    if target:  # outside the region: not counted
        with open("/proc/self/maps") as source, open(target, "w") as out:
            out.write(source.read())
