# syntax=docker/dockerfile:1
# Converter host image (linux/amd64): edgeformer-export with the export extra (torch CPU, onnx, onnxruntime)
# and all managed converter environments — tflite (onnx2tf/TensorFlow), tflite-runtime and rknn
# (rknn-toolkit2) — created at build time by `edgeformer-export env create` from the lock files shipped in the
# package (edgeformer_deploy/export/envs/*.txt), exactly as on a plain install. Exporting downloads nothing.
#
#   docker build --platform linux/amd64 -f docker/converter.Dockerfile -t edgeformer-converter .
#   docker run --rm --network none -v "$PWD/weights:/weights:ro" -v "$PWD/exports:/work/exports" \
#       edgeformer-converter --model edgeformer_s --weights /weights/checkpoint_ema_avg.pt \
#       --format rknn --target rk3588 --imgsz 256 --output exports
#
# It runs as uid 1000; with another host uid add: -u "$(id -u):$(id -g)" -e HOME=/tmp
# tests/test_docker.py lints this file and checks it against .ci/run and the lock files.
FROM python:3.11-slim-bookworm

# rknn-toolkit2 imports OpenCV (opencv-python, not headless): GL, GLib and X11 client libraries
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libsm6 libxext6 \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    EDGEFORMER_ENVS=/opt/edgeformer/envs

# torch first, from the PyTorch CPU index (PyPI's linux torch is the multi-GB CUDA build); the same version
# .ci/run installs and envs/rknn.txt pins
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md /tmp/src/
COPY edgeformer_deploy /tmp/src/edgeformer_deploy
# the project from the build context, its export extra resolved as .ci/run does (ranges, not pins: DL3013)
# hadolint ignore=DL3013
RUN pip install --no-cache-dir torch==2.13.0 "/tmp/src[export]" \
    && rm -rf /tmp/src

# Every converter environment (no NAME: all of them) into $EDGEFORMER_ENVS, where the toolchain finds them
# at run time. rknn.txt pins torch==2.13.0+cpu, served by the PyTorch CPU index.
RUN PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu edgeformer-export env create \
    && edgeformer-export env list

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin edgeformer \
    && mkdir /work \
    && chown edgeformer:edgeformer /work
USER 1000:1000
WORKDIR /work

ENTRYPOINT ["edgeformer-export"]
CMD ["--help"]
