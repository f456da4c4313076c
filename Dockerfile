# The Tidzam processes' image (docker-compose.yml). Inference only: LiteRT, no TensorFlow.
FROM python:3.11-slim-bookworm
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ffmpeg && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/tidzam
COPY pyproject.toml README.md ./
COPY bus_schemas bus_schemas
COPY producers producers
COPY consumers consumers
COPY projections projections
COPY learning learning
COPY tidzam_ctl tidzam_ctl
COPY models models
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/tidzam tidzam \
    && mkdir -p /var/lib/tidzam && chown tidzam /var/lib/tidzam
USER tidzam
