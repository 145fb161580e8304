# syntax=docker/dockerfile:1
# gw502d container image:
#   docker build -t gw502d:0.1.0 .
#   docker run -d -p 9502:9502 -v /var/log/nginx:/var/log/nginx:ro \
#     -v /etc/gw502d:/etc/gw502d:ro -v gw502d-state:/var/lib/gw502d gw502d:0.1.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build wheels of gw502d and its dependencies; the compiler-free final stage
# installs them offline.
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gw502d" \
      org.opencontainers.image.description="Classifies the incidents behind nginx 502/504 errors from logs and exports them to Prometheus" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GW502D_HEALTHCHECK_URL=http://127.0.0.1:9502/healthz

# A fixed numeric uid lets Kubernetes check runAsNonRoot, and lets a host
# give it read access to logs (e.g. `setfacl -m u:10001:r`).
RUN groupadd --system --gid 10001 gw502d \
 && useradd --system --uid 10001 --gid gw502d --no-create-home \
      --home-dir /var/lib/gw502d --shell /usr/sbin/nologin gw502d \
 && install -d -o gw502d -g gw502d -m 0700 /var/lib/gw502d

# The wheels are bind-mounted, so they do not stay in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/gw502d-*.whl

COPY deploy/gw502d.toml.example /etc/gw502d/gw502d.toml

USER 10001:10001
EXPOSE 9502
VOLUME ["/etc/gw502d", "/var/lib/gw502d"]

# slim has no curl; Python is there anyway. A 503 from /healthz raises
# HTTPError and exits non-zero as well. Change the URL for TLS or another
# listen address.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen(os.environ['GW502D_HEALTHCHECK_URL'], timeout=4).status != 200)"]

ENTRYPOINT ["gw502d"]
CMD ["run", "--config", "/etc/gw502d/gw502d.toml"]
