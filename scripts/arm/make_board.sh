#!/usr/bin/env bash
# make_board.sh aarch64|armhf [ROOT] -- build (or reuse) an emulated ARM "board": a Debian bookworm
# sysroot with python3.11 and the board-side runtime wheels, run with qemu-user:
#     ROOT/run-python -m edgeformer_deploy.runtime.cli ...      (qemu-<arch>-static -L ROOT ...)
#   aarch64 (RK3566/RK3588 class): arm64 python3.11 + numpy, onnxruntime, ai-edge-litert, Pillow,
#           rknn-toolkit-lite2 wheels
#   armhf   (RK3288 class, 32-bit): armhf python3.11 + Debian's python3-numpy 1.24 / python3-pil 9.4
#           (PyPI has no armv7 numpy/Pillow wheels) + tflite-runtime 2.14.0 armv7l wheel (--no-deps)
# Everything comes from Debian and PyPI. Cached: unchanged inputs => immediate exit, no network.
# ROOT defaults to $EDGEFORMER_ARM_CACHE/boards/ARCH; EDGEFORMER_ARM_CACHE defaults to
# ~/.cache/edgeformer-deploy/arm. Needs: qemu-user-static, apt-get, dpkg-deb, python3 -m pip (host).
# The PyPI pins live in requirements-*.txt beside this script, which docker/board.Dockerfile installs too
# (tests/test_docker.py keeps the two in step); EDGEFORMER_ARM_PRINT_INPUTS=1 prints a board's inputs and exits.
set -euo pipefail
BOARD_NAME=${1:?usage: $0 aarch64|armhf [ROOT]}
CACHE=$(realpath -m "${EDGEFORMER_ARM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeformer-deploy/arm}")
ROOT=$(realpath -m "${2:-$CACHE/boards/$BOARD_NAME}")
# pip (23.x) does not expand manylinux tags for --platform: list every glibc level <= bookworm's 2.36
manylinux() { for v in 36 35 34 33 32 31 30 29 28 27 26 25 24 17; do printf 'manylinux_2_%s_%s ' "$v" "$1"; done
              printf 'manylinux2014_%s' "$1"; }
HERE=$(cd "$(dirname "$0")" && pwd)
# the pins of requirement files (comments and blank lines dropped), one line
pins() { local f; for f in "$@"; do sed -e 's/#.*//' "$HERE/$f"; done | xargs; }

case "$BOARD_NAME" in
aarch64)
  DEB_ARCH=arm64 TRIPLET=aarch64-linux-gnu QEMU=${ARM_QEMU:-qemu-aarch64-static}
  # RK3588's big core. qemu's default "max" model advertises SVE2/i8mm, on which ai-edge-litert's int8
  # kernels return wrong results under qemu 7.2 (cosine 0.12 vs x86); cortex-a72 lacks what litert needs.
  QEMU_CPU_MODEL=cortex-a76
  # the manylinux wheels bundle openblas, libjpeg etc.: Debian only provides python and libstdc++
  DEBS="python3.11 libstdc++6"
  # numpy, onnxruntime, ai-edge-litert, Pillow, rknn-toolkit-lite2 (+ click/rich), with their dependencies
  REQUIREMENTS="requirements-cli.txt requirements-aarch64.txt" NODEPS_REQUIREMENTS=""
  PIP_PLATFORMS=$(manylinux aarch64)
  SMOKE_IMPORTS="numpy onnxruntime ai_edge_litert.interpreter rknnlite.api PIL click rich"
  # /proc/cpuinfo the guest sees (2 x Cortex-A76). qemu does not emulate it for ARM guests, and
  # onnxruntime (at import) and ai-edge-litert (Interpreter()) segfault parsing the host's x86 one.
  CPU='BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1'
  CPUINFO="$(printf 'processor\t: 0\n%s\n\nprocessor\t: 1\n%s\n' "$CPU" "$CPU")"
  ;;
armhf)
  DEB_ARCH=armhf TRIPLET=arm-linux-gnueabihf QEMU=${ARM_QEMU:-qemu-arm-static}
  QEMU_CPU_MODEL=cortex-a15  # the closest qemu model to RK3288's Cortex-A17
  # python3-numpy pulls the reference libblas3/liblapack3 (alternatives links made by fix_alternatives)
  DEBS="python3.11 libstdc++6 python3-numpy python3-pil"
  # tflite-runtime requires numpy>=1.23.2 and there is no armv7l numpy wheel: Debian's 1.24.2 serves (--no-deps)
  REQUIREMENTS="requirements-cli.txt" NODEPS_REQUIREMENTS="requirements-armhf-nodeps.txt"
  PIP_PLATFORMS="$(manylinux armv7l) linux_armv7l"
  SMOKE_IMPORTS="numpy tflite_runtime.interpreter PIL PIL.Image click rich"
  # Raspberry-Pi-4-like Cortex-A72 in AArch32 mode, 2 cores (kept for the same reason as aarch64)
  CPU='model name	: ARMv7 Processor rev 3 (v7l)
BogoMIPS	: 108.00
Features	: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer	: 0x41
CPU architecture: 7
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3'
  CPUINFO="$(printf 'processor\t: 0\n%s\n\nprocessor\t: 1\n%s\n\nHardware\t: BCM2835\n' "$CPU" "$CPU")"
  ;;
*) echo "usage: $0 aarch64|armhf [ROOT]" >&2; exit 2 ;;
esac

# shellcheck disable=SC2086
WHEELS=$(pins $REQUIREMENTS) NODEPS_WHEELS=$(pins $NODEPS_REQUIREMENTS)

# shellcheck source=board_lib.sh
. "$(dirname "$0")/board_lib.sh"
board_main
