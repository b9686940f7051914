# assetq worker image. GPU hosts: build with --build-arg EXTRAS=gpu (onnxruntime-gpu; the
# NVIDIA container runtime provides the driver). CUDA libraries come with the nvidia-* wheels.
FROM python:3.11-slim
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ASSETQ_MODEL_DIR=/models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cli ./cli
COPY config ./config
COPY contract ./contract
COPY producer ./producer
COPY worker ./worker
RUN pip install --no-cache-dir . \
 && if [ "$EXTRAS" = "gpu" ]; then pip uninstall -y onnxruntime \
      && pip install --no-cache-dir --force-reinstall --no-deps onnxruntime-gpu==1.31.1; fi
RUN useradd --create-home assetq && mkdir -p /models && chown assetq /models
USER assetq
CMD ["assetq", "worker"]
