# syntax=docker/dockerfile:1
# One image for the service (`perfectqueue serve`, the default) and the worker runtime
# (`perfectqueue run MODULE:CLASS`, in an image built FROM this one with your handlers added).
#   docker build -t perfectqueue .
#   docker run --rm -p 8000:8000 -e PERFECTQUEUE_URL=mysql://... -e PERFECTQUEUE_API_KEYS='[...]' perfectqueue
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/perfectqueue
ENV PATH=/opt/perfectqueue/bin:$PATH
WORKDIR /build
# The dependencies first, from the lock (every hash checked): this layer is rebuilt only when
# the lock changes, not on every change of the source.
COPY requirements/service.lock requirements/service.lock
RUN pip install --no-deps --require-hashes -r requirements/service.lock
COPY pyproject.toml README.md LICENSE ./
COPY src/ src/
COPY service/ service/
COPY client/ client/
COPY worker/ worker/
RUN pip install --no-deps --no-build-isolation .

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG TINI_VERSION=0.19.0-1+b3
# tini is PID 1: it passes signals on to the perfectqueue process (the worker's supervisor
# stops gracefully on TERM) and reaps every orphaned child.
RUN apt-get update \
    && apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 perfectqueue \
    && useradd --system --uid 10001 --gid perfectqueue --home-dir /var/lib/perfectqueue \
       --create-home --shell /usr/sbin/nologin perfectqueue
COPY --from=build /opt/perfectqueue /opt/perfectqueue
ENV PATH=/opt/perfectqueue/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PERFECTQUEUE_HOST=0.0.0.0 \
    PERFECTQUEUE_PORT=8000
WORKDIR /var/lib/perfectqueue
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["tini", "--", "perfectqueue"]
CMD ["serve"]
