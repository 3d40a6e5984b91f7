# syntax=docker/dockerfile:1.7
# Two images from one source tree:
#   docker build --target api    -t spectra-api .     # FastAPI + Celery producer, no torch
#   docker build --target worker -t spectra-worker .  # Celery GPU worker, CUDA torch
ARG PYTHON_VERSION=3.11

# --- base: the project source (installed editable below, so `spectra migrate` finds alembic/ in /app) ---
FROM python:${PYTHON_VERSION}-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPECTRA_HOME=/var/lib/spectra
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 spectra \
    && mkdir -p /var/lib/spectra && chown spectra /var/lib/spectra
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY app ./app
COPY worker ./worker
COPY compression ./compression

# --- api: no torch, no transformers ------------------------------------------------------------------
FROM base AS api
RUN pip install -e '.[api,parquet]' && python -c "import app.main, sys; assert 'torch' not in sys.modules"
USER spectra
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]

# --- worker: CUDA torch (the wheel bundles the CUDA runtime; the host provides the driver) -------------
FROM base AS worker
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && pip install -e '.[worker]'
ENV HF_HOME=/var/lib/spectra/hf OMP_NUM_THREADS=4
USER spectra
# One process per GPU: run one container per GPU (CUDA_VISIBLE_DEVICES / device reservation).
CMD ["spectra", "worker", "--concurrency", "1", "--queues", "gpu"]
