# One image for the studio and the GPU workers (docker-compose.yml). CUDA wheels of torch by default;
# build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu for a CPU-only image.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TUNESTUDIO_HOME=/data

WORKDIR /app
# torch (with its CUDA packages) from its own index; everything else exactly as locked (docs/dependencies.md).
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY locks ./locks
RUN pip install --require-hashes --no-deps -r locks/studio.txt -r locks/bundled.txt
COPY pyproject.toml README.md ./
COPY tuners ./tuners
COPY worker ./worker
COPY app ./app
COPY migrations ./migrations
RUN pip install --no-deps --no-build-isolation .

RUN useradd --create-home --uid 1000 studio && mkdir -p /data && chown studio /data
USER studio
VOLUME /data
EXPOSE 7860
CMD ["tunestudio", "serve"]
