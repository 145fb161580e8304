# syntax=docker/dockerfile:1
# gw502d container image:
#   docker build -t gw502d:0.1.0 .
#   docker run -d -p 9502:9502 -v /var/log/nginx:/var/log/nginx:ro \
#     -v /etc/gw502d:/etc/gw502d:ro -v gw502d-state:/var/lib/gw502d gw502d:0.1.0
# Any Debian bookworm image with python3 and python3-venv can be the base
# (--build-arg PYTHON_IMAGE=...): gw502d lives in its own virtual environment,
# so a distribution Python that refuses system-wide pip installs (PEP 668)
# works the same as the python image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build wheels of gw502d and its dependencies, install them offline into a
# virtual environment without pip, and copy only that environment into the
# final stage: no wheels, sources or build tools there. (Not installed from a
# bind mount of the wheels: podman before 4.4, Debian 12's, cannot mount a
# stage that came from the layer cache, podman#16281.)
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY . .
# Behind a proxy, a mirror or a TLS-intercepting CA, pass pip's settings as
# build secrets: --secret id=pip.conf,src=FILE (and id=pip-ca.crt,src=FILE
# for the file its `cert` names, /run/secrets/pip-ca.crt). Secrets are
# mounted for this step only and never stored in a layer; without them pip
# uses its defaults.
RUN --mount=type=secret,id=pip.conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip-ca.crt,target=/run/secrets/pip-ca.crt \
    python3 -m venv /opt/gw502d \
 && PIP_CONFIG_FILE=/run/secrets/pip.conf \
    /opt/gw502d/bin/pip wheel --no-cache-dir --wheel-dir /wheels . \
 && /opt/gw502d/bin/pip install --no-cache-dir --no-index --find-links=/wheels \
      /wheels/gw502d-*.whl \
 && /opt/gw502d/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gw502d" \
      org.opencontainers.image.description="Classifies the incidents behind nginx 502/504 errors from logs and exports them to Prometheus" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/gw502d/bin:$PATH \
    GW502D_HEALTHCHECK_URL=http://127.0.0.1:9502/healthz

# journalctl, to read a host's journal mounted read-only. Debian ships it
# only in systemd; 252.* keeps to bookworm's release and its security fixes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends systemd=252.* \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid lets Kubernetes check runAsNonRoot, and lets a host
# give it read access to logs (e.g. `setfacl -m u:10001:r`).
RUN groupadd --system --gid 10001 gw502d \
 && useradd --system --uid 10001 --gid gw502d --no-create-home \
      --home-dir /var/lib/gw502d --shell /usr/sbin/nologin gw502d \
 && install -d -o gw502d -g gw502d -m 0700 /var/lib/gw502d

COPY --from=builder /opt/gw502d /opt/gw502d
COPY deploy/gw502d.toml.example /etc/gw502d/gw502d.toml

USER 10001:10001
EXPOSE 9502
VOLUME ["/etc/gw502d", "/var/lib/gw502d"]

# The image has no curl; Python is there anyway. A 503 from /healthz raises
# HTTPError and exits non-zero as well. Change the URL for TLS or another
# listen address.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen(os.environ['GW502D_HEALTHCHECK_URL'], timeout=4).status != 200)"]

ENTRYPOINT ["gw502d"]
CMD ["run", "--config", "/etc/gw502d/gw502d.toml"]
