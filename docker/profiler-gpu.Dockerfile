# The GPU profiler: torch with CUDA, TensorRT and onnxruntime-gpu from an NVIDIA PyTorch image. Build from the root.
# The base fixes the CUDA/torch/TensorRT versions a table records, and which GPUs TensorRT can build for
# (docs/gpu.md, "Images per architecture"):
#   Turing, Ampere, Ada, Hopper and later (T4, A100, RTX 3080, L4, H100):
#     docker build -f docker/profiler-gpu.Dockerfile -t vitlut-profiler-gpu .
#   Volta (V100): TensorRT 10.5 and later cannot build for it, and the NVIDIA PyTorch images that still ship an
#   older TensorRT have Python 3.10 (this package needs 3.11): use docker/profiler-gpu-volta.Dockerfile.
ARG BASE=nvcr.io/nvidia/pytorch:25.01-py3
FROM ${BASE}
# Installed only where the base lacks TensorRT's Python bindings (the NVIDIA PyTorch images ship them).
ARG TENSORRT="tensorrt-cu12>=10"

# The caches live under /cache, so any uid given with `docker run --user` finds them writable.
# NVIDIA's PyTorch images set TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1, which makes torch use TF32 for every fp32 matmul
# whatever it is told: torch-cuda refuses a strict-fp32 table under it. 0 gives the choice back to the table's
# `--tf32` (off by default; recorded).
ENV TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=0 \
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
# Keep the image's own CUDA build of torch: install the project without its torch pin, then the rest by hand.
# onnxruntime-gpu provides the `onnxruntime` module with the CUDA provider; the CPU-only onnxruntime package is
# not installed beside it (both write the same module). 1.19 to 1.26 are its CUDA 12 builds on PyPI (1.27 and later
# need CUDA 13), as the image's CUDA is; the build fails where another onnxruntime ended up installed. onnx 1.17 is
# the first that knows opset 22, which bf16 graphs are converted to.
RUN pip install --no-deps . \
    && pip install "numpy>=1.26" "scipy>=1.11" "fastapi>=0.110" "uvicorn>=0.29" "pydantic>=2.6" "httpx>=0.27" \
        "tqdm>=4.66" "onnx>=1.17" "matplotlib>=3.8" "onnxruntime-gpu>=1.19,<1.27" \
    && (python -c "import tensorrt" 2>/dev/null || pip install "${TENSORRT}") \
    && python -c "from importlib.metadata import distributions, requires, version as v; \
major_minor = lambda name: tuple(int(p) for p in v(name).split('+')[0].split('.')[:2]); \
installed = {d.metadata['Name'].lower() for d in distributions()}; \
assert 'onnxruntime' not in installed, 'the CPU onnxruntime is installed beside onnxruntime-gpu'; \
assert (1, 19) <= major_minor('onnxruntime-gpu') < (1, 27), v('onnxruntime-gpu'); \
assert any('cu12' in r for r in requires('onnxruntime-gpu') or []), requires('onnxruntime-gpu')"

# No fixed user: the image runs as root unless `docker run --user "$(id -u):$(id -g)"` is given (recommended, so
# tables written to a bind-mounted directory belong to you). /tables and /cache are writable by any uid, so named
# volumes work either way; a bind mount is as writable as the host directory is for that uid.
RUN mkdir -p /tables /cache/tensorrt /cache/torch && chmod 1777 /tables /cache /cache/tensorrt /cache/torch
VOLUME ["/tables", "/cache"]

# e.g. docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD/tables:/tables" -v vitlut-engines:/cache \
#        vitlut-profiler-gpu profile --backend tensorrt --precision fp16 --batch 256 --tokens 197 \
#        --out /tables/h100-trt-fp16.json
# First run `... vitlut-profiler-gpu doctor`: it says which backends work on that GPU.
ENTRYPOINT ["python", "-m", "profiler"]
CMD ["--help"]
