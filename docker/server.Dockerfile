# The latency-table server: numpy/scipy/FastAPI only, no torch. Build from the repository root:
#   docker build -f docker/server.Dockerfile -t vitlut-server .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LUT_SERVER_TABLES=/tables \
    LUT_SERVER_PORT=8000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY lut_server/ lut_server/
COPY profiler/ profiler/
COPY pruner/ pruner/
# the base dependencies only: the server extra-free install pulls no torch
RUN pip install . \
    && python -c "import sys, lut_server.app; assert 'torch' not in sys.modules"

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin lut \
    && mkdir -p /tables && chown lut:lut /tables
# the shipped tables seed a fresh named volume; mount your own directory over /tables to serve others
COPY --chown=lut:lut tables/ /tables/
VOLUME ["/tables"]

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# 0.0.0.0 inside the container only; compose.yaml publishes the port on the host's loopback.
# Writes need LUT_SERVER_TOKEN in the environment; without it, uploads and deletions are refused.
ENTRYPOINT ["python", "-m", "lut_server"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
