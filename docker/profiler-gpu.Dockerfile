# The GPU profiler: torch with CUDA, TensorRT and onnxruntime-gpu from NVIDIA's PyTorch image. Build from the root:
#   docker build -f docker/profiler-gpu.Dockerfile -t vitlut-profiler-gpu .
# The base tag fixes the CUDA/torch/TensorRT versions a table records; override it with --build-arg BASE=...
ARG BASE=nvcr.io/nvidia/pytorch:25.01-py3
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VITLUT_ENGINE_CACHE=/cache/tensorrt

WORKDIR /app
COPY pyproject.toml README.md ./
COPY lut_server/ lut_server/
COPY profiler/ profiler/
COPY pruner/ pruner/
# Keep the image's own CUDA build of torch: install the project without its torch pin, then the rest by hand.
# The PyTorch image ships TensorRT's Python bindings; tensorrt-cu12 is installed only where they are missing.
RUN pip install --no-deps . \
    && pip install "numpy>=1.26" "scipy>=1.11" "fastapi>=0.110" "uvicorn>=0.29" "pydantic>=2.6" "httpx>=0.27" \
        "tqdm>=4.66" "onnx>=1.16" "onnxruntime-gpu>=1.18" \
    && (python -c "import tensorrt" 2>/dev/null || pip install "tensorrt-cu12>=10")

RUN useradd --uid 10001 --create-home --shell /bin/bash profiler \
    && mkdir -p /tables /cache/tensorrt && chown -R profiler:profiler /tables /cache
VOLUME ["/tables", "/cache"]
USER 10001:10001

# e.g. docker run --rm --gpus all -v "$PWD/tables:/tables" -v vitlut-engines:/cache vitlut-profiler-gpu \
#        profile --backend tensorrt --precision fp16 --batch 256 --tokens 197 --out /tables/h100-trt-fp16.json
ENTRYPOINT ["python", "-m", "profiler"]
CMD ["--help"]
