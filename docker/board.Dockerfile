# syntax=docker/dockerfile:1
# Board runtime image, multi-arch: the base package (edgeformer-predict, edgeformer-bench: numpy + Pillow + one
# runtime, never torch) and the board runtime of the architecture, pinned by the same requirement files as the
# emulated boards of tests/test_arm_boards.py (scripts/arm/requirements-*.txt, read by make_board.sh):
#   linux/arm64  (RK3566/RK3568/RK3588): python.org Python 3.11 + numpy, onnxruntime, ai-edge-litert, Pillow,
#                rknn-toolkit-lite2 manylinux wheels
#   linux/arm/v7 (RK3288, 32-bit):       Debian bookworm's python3.11, python3-numpy 1.24, python3-pil 9.4
#                + tflite-runtime 2.14 (--no-deps)
#
#   docker buildx build --platform linux/arm64,linux/arm/v7 -f docker/board.Dockerfile \
#       -t REGISTRY/edgeformer-board --push .          (one platform into the local engine: --platform X --load)
#   docker run --rm -v "$PWD/exports:/models:ro" -v "$PWD/photos:/photos:ro" edgeformer-board \
#       /photos --model /models/edgeformer_s_256.onnx
#   docker run --rm --entrypoint edgeformer-bench ... edgeformer-board ...
#
# RKNN (.rknn on the NPU): librknnrt.so is the board vendor's (not on PyPI) and the NPU a device node; both
# come from the host, see README "Docker images":
#   -v /usr/lib/librknnrt.so:/usr/lib/librknnrt.so:ro --device /dev/dri/renderD129 \
#   --group-add "$(stat -c %g /dev/dri/renderD129)" --security-opt systempaths=unconfined
# tests/test_docker.py lints this file and checks it against scripts/arm/make_board.sh.
ARG TARGETARCH
ARG TARGETVARIANT

# The package is pure python: one wheel, built natively on the build machine (no emulation).
FROM --platform=$BUILDPLATFORM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgeformer_deploy ./edgeformer_deploy
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# linux/arm64: the emulated aarch64 board's wheels, same pins.
FROM python:3.11-slim-bookworm AS board-arm64
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY scripts/arm/requirements-cli.txt scripts/arm/requirements-aarch64.txt /tmp/requirements/
RUN pip install --no-cache-dir -r /tmp/requirements/requirements-cli.txt \
        -r /tmp/requirements/requirements-aarch64.txt

# linux/arm/v7: PyPI has no armv7 numpy/Pillow wheels. Debian's, as on the emulated armhf board, in a venv
# that sees them (--system-site-packages); tflite-runtime without its deps (numpy is Debian's).
FROM debian:bookworm-slim AS board-armv7
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv libstdc++6 python3-numpy python3-pil \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv --system-site-packages /opt/edgeformer/venv
ENV PATH=/opt/edgeformer/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY scripts/arm/requirements-cli.txt scripts/arm/requirements-armhf-nodeps.txt /tmp/requirements/
RUN pip install --no-cache-dir -r /tmp/requirements/requirements-cli.txt \
    && pip install --no-cache-dir --no-deps -r /tmp/requirements/requirements-armhf-nodeps.txt

# The platform's stage (BuildKit sets TARGETARCH/TARGETVARIANT: arm64 + "", arm + v7) + the package. DL3006
# (untagged image) does not apply: board-* are this file's stages.
# --no-deps: numpy, Pillow, click and rich are the pinned ones above; pip check proves they satisfy it.
# (No import of onnxruntime/ai-edge-litert here: under qemu they crash reading the x86 /proc/cpuinfo.)
# hadolint ignore=DL3006
FROM board-${TARGETARCH}${TARGETVARIANT}
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && pip check \
    && python3 -c "import edgeformer_deploy.runtime.cli" \
    && rm -rf /tmp/wheels /tmp/requirements \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin edgeformer \
    && mkdir /work \
    && chown edgeformer:edgeformer /work
USER 1000:1000
WORKDIR /work

ENTRYPOINT ["edgeformer-predict"]
CMD ["--help"]
