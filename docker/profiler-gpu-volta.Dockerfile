# The GPU profiler for Volta (V100, compute capability 7.0). Build from the repository root:
#   docker build -f docker/profiler-gpu-volta.Dockerfile -t vitlut-profiler-gpu:volta .
# TensorRT 10.5 and later cannot build for Volta, and the NVIDIA PyTorch images that still ship TensorRT 10.4 or
# older (24.09 and before) are Ubuntu 22.04 images with Python 3.10, below this package's 3.11. So this image is
# not an NGC one: Ubuntu 24.04's Python 3.12 on NVIDIA's CUDA base, torch from PyPI before 2.8 (its CUDA 12.4/12.6
# wheels still carry sm_70 kernels), and the last TensorRT release that builds for Volta (10.4).
# The CUDA libraries come with the wheels; the base supplies the driver hook-up for `docker run --gpus`.
ARG BASE=nvidia/cuda:12.6.3-base-ubuntu24.04
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/vitlut

# The caches live under /cache, so any uid given with `docker run --user` finds them writable.
ENV PATH=/opt/vitlut/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VITLUT_ENGINE_CACHE=/cache/tensorrt \
    XDG_CACHE_HOME=/cache \
    TORCH_HOME=/cache/torch

WORKDIR /app
COPY pyproject.toml README.md ./
COPY lut_server/ lut_server/
COPY profiler/ profiler/
COPY pruner/ pruner/
# One resolve, so pip keeps torch's and TensorRT's CUDA wheels consistent; then a check that fails the build where
# the Python, torch, TensorRT or onnxruntime installed could not serve a V100 (read from package metadata: no GPU at
# build time). onnxruntime-gpu 1.19 to 1.26 are its CUDA 12 builds on PyPI (1.27 and later need CUDA 13, which has
# no Volta); the `profiler` extra does not bring the CPU onnxruntime, whose module would replace it.
RUN python -m pip install "torch>=2.5,<2.8" "tensorrt-cu12>=10,<10.5" "onnxruntime-gpu>=1.19,<1.27" ".[profiler]" \
    && python -c "import sys; from importlib.metadata import distributions, requires, version as v; \
major_minor = lambda name: tuple(int(p) for p in v(name).split('+')[0].split('.')[:2]); \
installed = {d.metadata['Name'].lower() for d in distributions()}; \
assert sys.version_info >= (3, 11), sys.version; \
assert major_minor('tensorrt-cu12') < (10, 5), v('tensorrt-cu12'); \
assert major_minor('torch') < (2, 8), v('torch'); \
assert 'onnxruntime' not in installed, 'the CPU onnxruntime is installed beside onnxruntime-gpu'; \
assert (1, 19) <= major_minor('onnxruntime-gpu') < (1, 27), v('onnxruntime-gpu'); \
assert any('cu12' in r for r in requires('onnxruntime-gpu') or []), requires('onnxruntime-gpu')"

RUN mkdir -p /tables /cache/tensorrt /cache/torch && chmod 1777 /tables /cache /cache/tensorrt /cache/torch
VOLUME ["/tables", "/cache"]

# First run `docker run --rm --gpus all --user "$(id -u):$(id -g)" vitlut-profiler-gpu:volta doctor`.
ENTRYPOINT ["python", "-m", "profiler"]
CMD ["--help"]
